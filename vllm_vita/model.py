"""`VitaForConditionalGeneration` for vLLM: VITA's towers around one of vLLM's own LLMs.

- LLM: vLLM's `Qwen2ForCausalLM` (VITA-1.5), `MixtralForCausalLM` (VITA-1.0) or `LlamaForCausalLM`, chosen from
  `text_config.model_type` and built by `init_vllm_registered_model`, so paged attention, tensor parallelism and
  vLLM's fused MoE apply to it unchanged.
- Vision: transformers' `InternVLVisionModel` (the class the converted folder's `model.vision_tower.*` weights were
  saved from; replicated on every rank, as InternViT-300M is small next to the LLM), last layer without CLS, the
  checkpoint's feature scale, 2x2 pixel shuffle, the two-layer projector.
- Audio: `audio.VitaAudioTower`, a port of VITA's encoder and adapter.
Weights load straight from the converted folder's safetensors: `hf_to_vllm_mapper` renames the transformers keys
(`model.language_model.*` -> `language_model.model.*`, ...) and drops the speech decoder and codec, which vLLM does
not run (speech out stays with transformers).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from transformers import InternVLVisionModel
from transformers.activations import ACT2FN
from vllm.config import VllmConfig
from vllm.model_executor.models.interfaces import MultiModalEmbeddings, SupportsMultiModal, SupportsPP
from vllm.model_executor.models.utils import AutoWeightsLoader, WeightsMapper, init_vllm_registered_model
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.sequence import IntermediateTensors

from .audio import VitaAudioTower
from .config import VitaVllmConfig
from .processing import VitaDummyInputsBuilder, VitaMultiModalProcessor, VitaProcessingInfo

logger = logging.getLogger(__name__)

PLACEHOLDERS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}


def pixel_shuffle(features: torch.Tensor, ratio: float) -> torch.Tensor:
    """(N, H, W, C) -> (N, H*W/k^2, C*k^2) with k = 1/ratio; channels ordered (row offset, column offset, C)."""
    block = round(1 / ratio)
    num, height, width, channels = features.shape
    features = features.view(num, height // block, block, width // block, block, channels).permute(0, 1, 3, 2, 4, 5)
    return features.reshape(num, (height // block) * (width // block), block * block * channels)


class VitaVisionProjector(nn.Module):
    """VITA's `mlp2x_gelu`: pixel-shuffled vision features -> LLM width (names as in the converted folder)."""

    def __init__(self, config: VitaVllmConfig) -> None:
        super().__init__()
        width = config.text_config.hidden_size
        self.linear_1 = nn.Linear(config.vision_config.hidden_size * round(1 / config.downsample_ratio) ** 2, width)
        self.act = ACT2FN[config.projector_hidden_act]
        self.linear_2 = nn.Linear(width, width)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(features)))


def _items(value: Any, item_ndim: int) -> list[torch.Tensor]:
    """vLLM hands a batched field over as one stacked tensor when its items share a shape, else as a list of
    tensors: here always a list of `item_ndim`-dimensional tensors, one per item."""
    if isinstance(value, torch.Tensor):
        return [value] if value.ndim == item_ndim else [t for item in value for t in _items(item, item_ndim)]
    return [t for item in value for t in _items(item, item_ndim)]


def _as_tiles(value: Any) -> torch.Tensor:
    """Flat image tiles or video frames, (num_tiles, 3, H, W), from a tensor or a list of per-item tensors."""
    if isinstance(value, torch.Tensor):
        return value.reshape(-1, *value.shape[-3:])
    return torch.cat([_as_tiles(item) for item in value])


def _sizes(value: Any) -> list[int]:
    return [int(n) for n in (value.flatten().tolist() if isinstance(value, torch.Tensor) else _flat(value))]


def _flat(value: Any) -> list[Any]:
    if isinstance(value, torch.Tensor):
        return value.flatten().tolist()
    return [x for item in value for x in _flat(item)] if isinstance(value, (list, tuple)) else [value]


@MULTIMODAL_REGISTRY.register_processor(
    VitaMultiModalProcessor, info=VitaProcessingInfo, dummy_inputs=VitaDummyInputsBuilder
)
class VitaForConditionalGeneration(nn.Module, SupportsMultiModal, SupportsPP):
    """VITA served by vLLM: images, videos and audio clips become embeddings on their placeholder tokens."""

    hf_to_vllm_mapper = WeightsMapper(
        orig_to_new_prefix={
            "model.language_model.": "language_model.model.",
            "lm_head.": "language_model.lm_head.",
            "model.vision_tower.": "vision_tower.",
            "model.multi_modal_projector.": "multi_modal_projector.",
            "model.audio_tower.": "audio_tower.",
            # VITA-1.5's speech decoder and codec: speech out runs in transformers, not here.
            "speech_model.": None,
        }
    )

    @classmethod
    def get_placeholder_str(cls, modality: str, i: int) -> str | None:
        if modality in PLACEHOLDERS:
            return PLACEHOLDERS[modality]
        raise ValueError(f"VITA takes images, videos and audio; got modality {modality!r}.")

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__()
        config: VitaVllmConfig = vllm_config.model_config.hf_config
        self.config = config
        vision_config = config.vision_config
        # SDPA: the implementation transformers' reference runs by default, and no eager score matrices.
        vision_config._attn_implementation = "sdpa"
        with self._mark_tower_model(vllm_config, {"image", "video"}):
            self.vision_tower = InternVLVisionModel(vision_config)
            self.multi_modal_projector = VitaVisionProjector(config)
        with self._mark_tower_model(vllm_config, "audio"):
            self.audio_tower = VitaAudioTower(config.audio_config)
        with self._mark_language_model(vllm_config):
            self.language_model = init_vllm_registered_model(
                vllm_config=vllm_config,
                hf_config=config.text_config,
                prefix=f"{prefix}.language_model" if prefix else "language_model",
                architectures=[config.text_architecture],
            )
        self.make_empty_intermediate_tensors = self.language_model.make_empty_intermediate_tensors

    # ------------------------------------------------------------------ towers

    def _vision_embeddings(self, tiles: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
        """Tiles (or frames) of several items -> one `(tiles x image_seq_length, width)` tensor per item."""
        dtype = self.multi_modal_projector.linear_1.weight.dtype
        layer = self.config.vision_feature_layer
        outputs = self.vision_tower(pixel_values=tiles.to(dtype), output_hidden_states=layer != -1)
        features = outputs.last_hidden_state if layer == -1 else outputs.hidden_states[layer]
        features = features[:, 1:, :]  # no CLS
        grid = int(features.shape[1] ** 0.5)
        features = features.reshape(features.shape[0], grid, grid, -1) * self.config.vision_feature_scale
        projected = self.multi_modal_projector(pixel_shuffle(features, self.config.downsample_ratio))
        return [item.flatten(0, 1) for item in projected.split(sizes)]

    def _audio_embeddings(self, features: Any, masks: Any) -> list[torch.Tensor]:
        embeddings = []
        # One clip at a time: clips processed in different requests arrive padded to different lengths.
        for clip, mask in zip(_items(features, 2), _items(masks, 1)):
            length = int(mask.sum())
            embeddings.extend(self.audio_tower(clip[None, :length], torch.tensor([length], device=clip.device)))
        return embeddings

    def embed_multimodal(self, **kwargs: object) -> MultiModalEmbeddings:
        embeddings: list[torch.Tensor] = []
        # Keys arrive grouped by modality, in prompt order; each group is embedded in the order it came.
        for key in kwargs:
            if key == "pixel_values":
                tiles, sizes = _as_tiles(kwargs[key]), _sizes(kwargs["image_num_patches"])
                embeddings.extend(self._vision_embeddings(tiles, sizes))
            elif key == "pixel_values_videos":
                frames, sizes = _as_tiles(kwargs[key]), _sizes(kwargs["video_num_frames"])
                embeddings.extend(self._vision_embeddings(frames, sizes))
            elif key == "input_features":
                embeddings.extend(self._audio_embeddings(kwargs[key], kwargs["input_features_mask"]))
        return embeddings

    # ------------------------------------------------------------------ LLM

    def forward(
        self,
        input_ids: torch.Tensor | None,
        positions: torch.Tensor,
        intermediate_tensors: IntermediateTensors | None = None,
        inputs_embeds: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor | IntermediateTensors:
        if intermediate_tensors is not None:
            inputs_embeds = None
        return self.language_model.model(input_ids, positions, intermediate_tensors, inputs_embeds=inputs_embeds)

    def compute_logits(self, hidden_states: torch.Tensor) -> torch.Tensor | None:
        return self.language_model.compute_logits(hidden_states)

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        return AutoWeightsLoader(self).load_weights(weights, mapper=self.hf_to_vllm_mapper)


__all__ = ["VitaForConditionalGeneration", "pixel_shuffle"]
