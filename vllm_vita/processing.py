"""VITA's multimodal processing inside vLLM: `VitaProcessor` itself turns media into tensors.

vLLM tokenizes the prompt (the chat template writes one `<image>`, `<video>` or `<audio>` per item), calls the HF
processor on the media alone, then replaces each placeholder by the item's run of placeholder tokens. Here the HF
processor is the checkpoint's `VitaProcessor` (image tiling, video frames, Kaldi fbank + CMVN), given one placeholder
per item as its text, and the runs have exactly the lengths `VitaProcessor` expands to: `image_seq_length` per tile or
frame, `get_audio_token_count(frames)` per clip. So a prompt served by vLLM carries the same tokens and features as
`VitaProcessor(text=..., images=..., audio=...)` gives transformers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature
from vllm.multimodal.inputs import MultiModalFieldConfig, MultiModalKwargsItems
from vllm.multimodal.parse import MultiModalDataItems, MultiModalDataParser
from vllm.multimodal.processing import (
    BaseDummyInputsBuilder,
    BaseMultiModalProcessor,
    BaseProcessingInfo,
    PromptReplacement,
    PromptUpdate,
)
from vllm.multimodal.processing.processor import HFMultiModalInputs

from processing_vita import VitaProcessor

from .audio import audio_token_count
from .config import VitaVllmConfig

logger = logging.getLogger(__name__)

# The longest audio clip a request may carry, in seconds. vLLM sizes its encoder cache and its start-up profiling
# run by the largest item; the feature extractor's own bound (about 200 s) would reserve ~2,500 tokens a clip.
MAX_AUDIO_SECONDS = float(os.environ.get("VITA_VLLM_MAX_AUDIO_SECONDS", "30"))
# Media text given to VitaProcessor: one placeholder per item, which it checks against the media it is given.
_PLACEHOLDERS = {"image": "<image>", "video": "<video>", "audio": "<audio>"}
_TEXT_KEYS = ("input_ids", "attention_mask")


class VitaProcessingInfo(BaseProcessingInfo):
    """What vLLM asks of VITA before serving: config, processor, modalities and the most tokens an item takes."""

    def get_hf_config(self) -> VitaVllmConfig:
        return self.ctx.get_hf_config(VitaVllmConfig)

    def get_hf_processor(self, **kwargs: object) -> VitaProcessor:
        return self.ctx.get_hf_processor(VitaProcessor, **kwargs)

    def get_data_parser(self) -> MultiModalDataParser:
        # Audio reaches VitaProcessor mono at its rate (16 kHz), resampled by vLLM where a request's differs.
        return MultiModalDataParser(
            target_sr=self.get_hf_processor().feature_extractor.sampling_rate,
            target_channels=1,
            expected_hidden_size=self._get_expected_hidden_size(),
            allow_missing_mm_embeddings=self.allow_missing_mm_embeddings,
        )

    def get_supported_mm_limits(self) -> Mapping[str, int | None]:
        return {"image": None, "video": None, "audio": None}

    def max_tiles_per_image(self) -> int:
        image_processor = self.get_hf_processor().image_processor
        tiles = image_processor.max_dynamic_patch
        return tiles + 1 if image_processor.use_thumbnail and tiles > 1 else tiles

    def max_audio_frames(self) -> int:
        # 10 ms fbank hop: 100 frames a second.
        return int(MAX_AUDIO_SECONDS * 100)

    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        processor = self.get_hf_processor()
        per_tile = processor.image_seq_length
        return {
            "image": per_tile * self.max_tiles_per_image(),
            "video": per_tile * processor.video_processor.max_frames,
            "audio": audio_token_count(self.max_audio_frames()),
        }


class VitaDummyInputsBuilder(BaseDummyInputsBuilder[VitaProcessingInfo]):
    """The largest items of each modality, for vLLM's memory profiling at start-up."""

    def get_dummy_text(self, mm_counts: Mapping[str, int]) -> str:
        return "".join(_PLACEHOLDERS[m] * mm_counts.get(m, 0) for m in _PLACEHOLDERS)

    def get_dummy_mm_data(self, seq_len: int, mm_counts: Mapping[str, int], mm_options: Mapping[str, Any]) -> dict:
        processor = self.info.get_hf_processor()
        size = processor.image_processor.image_size
        tiles = processor.image_processor.max_dynamic_patch
        # A tiles:1 aspect ratio gives the most tiles (a 1 x tiles grid).
        data = {
            "image": self._get_dummy_images(
                width=size * tiles,
                height=size,
                num_images=mm_counts.get("image", 0),
                overrides=mm_options.get("image"),
            ),
            "video": self._get_dummy_videos(
                width=size,
                height=size,
                num_frames=processor.video_processor.max_frames,
                num_videos=mm_counts.get("video", 0),
                overrides=mm_options.get("video"),
            ),
            "audio": self._get_dummy_audios(
                length=int(MAX_AUDIO_SECONDS * processor.feature_extractor.sampling_rate),
                num_audios=mm_counts.get("audio", 0),
                overrides=mm_options.get("audio"),
            ),
        }
        return {modality: items for modality, items in data.items() if items}


class VitaMultiModalProcessor(BaseMultiModalProcessor[VitaProcessingInfo]):
    """Media through `VitaProcessor`; each placeholder token becomes its item's run of placeholder tokens."""

    def _get_hf_mm_text(self, mm_counts: Mapping[str, int]) -> str:
        return self.dummy_inputs.get_dummy_text(mm_counts)

    def _get_hf_mm_inputs(self, mm_items: MultiModalDataItems, hf_kwargs: Mapping[str, object]) -> HFMultiModalInputs:
        hf_inputs = super()._get_hf_mm_inputs(mm_items, hf_kwargs)
        data = dict(hf_inputs.hf_data)
        kwargs = dict(hf_inputs.hf_kwargs)
        if "audio" in data:
            # The parser has brought every clip to the feature extractor's rate.
            kwargs["sampling_rate"] = self.info.get_hf_processor().feature_extractor.sampling_rate
            limit = self.info.max_audio_frames() * 160
            for clip in data["audio"]:
                if len(clip) > limit:
                    raise ValueError(
                        f"An audio clip of {len(clip) / 16000:.1f} s exceeds the {MAX_AUDIO_SECONDS:.0f} s this "
                        "server takes (VITA_VLLM_MAX_AUDIO_SECONDS); split it or raise the limit."
                    )
        if "videos" in data:
            # vLLM may pair a video with its metadata; VitaProcessor takes the (T, H, W, C) frames.
            data["videos"] = [v[0] if isinstance(v, tuple) else np.asarray(v) for v in data["videos"]]
        return hf_inputs._replace(hf_data=data, hf_kwargs=kwargs)

    def _postprocess_hf_mm_data(
        self,
        mm_inputs: Mapping[str, object],
        hf_processor_mm_kwargs: Mapping[str, object],
        processed_data: BatchFeature,
    ) -> BatchFeature:
        # The token ids of the placeholder-only text are not the prompt's; vLLM places the runs itself.
        for key in _TEXT_KEYS:
            processed_data.pop(key, None)
        return processed_data

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        image_tiles = hf_inputs.get("image_num_patches", torch.empty(0, dtype=torch.long))
        video_frames = hf_inputs.get("video_num_frames", torch.empty(0, dtype=torch.long))
        return {
            "pixel_values": MultiModalFieldConfig.flat_from_sizes("image", image_tiles),
            "image_num_patches": MultiModalFieldConfig.batched("image", keep_on_cpu=True),
            "pixel_values_videos": MultiModalFieldConfig.flat_from_sizes("video", video_frames),
            "video_num_frames": MultiModalFieldConfig.batched("video", keep_on_cpu=True),
            "input_features": MultiModalFieldConfig.batched("audio"),
            "input_features_mask": MultiModalFieldConfig.batched("audio", keep_on_cpu=True),
        }

    def _get_prompt_updates(
        self,
        mm_items: MultiModalDataItems,
        hf_processor_mm_kwargs: Mapping[str, object],
        out_mm_kwargs: MultiModalKwargsItems,
    ) -> Sequence[PromptUpdate]:
        processor = self.info.get_hf_processor(**hf_processor_mm_kwargs)
        data = out_mm_kwargs.get_data()
        per_tile = processor.image_seq_length

        def counts(key: str) -> list[int]:
            value = data.get(key)
            if value is None:
                return []
            if isinstance(value, torch.Tensor) and value.ndim <= 1:
                return [int(n) for n in value.flatten()]
            return [int(torch.as_tensor(n).sum()) for n in value]

        image_tokens = [per_tile * n for n in counts("image_num_patches")]
        video_tokens = [per_tile * n for n in counts("video_num_frames")]
        audio_tokens = [audio_token_count(n) for n in counts("input_features_mask")]
        runs = {
            "image": (processor.image_token_id, image_tokens),
            "video": (processor.video_token_id, video_tokens),
            "audio": (processor.audio_token_id, audio_tokens),
        }
        return [
            PromptReplacement(
                modality=modality,
                target=[token_id],
                replacement=lambda i, token_id=token_id, lengths=lengths: [token_id] * lengths[i],
            )
            for modality, (token_id, lengths) in runs.items()
        ]


__all__ = ["MAX_AUDIO_SECONDS", "VitaDummyInputsBuilder", "VitaMultiModalProcessor", "VitaProcessingInfo"]
