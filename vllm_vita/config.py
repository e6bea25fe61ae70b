"""VITA's configuration as vLLM reads it, written against the transformers versions vLLM pins (5.16-5.19).

`modeling_vita.configuration_vita.VitaConfig` uses `configuration_utils.SubConfigSpec` (transformers >= 5.20), so it
cannot be imported beside vLLM 0.32. This class reads the same `config.json` (`model_type: "vita"`) into the objects
the vLLM model needs: the LLM config (`text_config`, any model type transformers knows), transformers' InternVL
vision config, and the audio encoder's sizes. Keys it does not declare (`auto_map`, `custom_pipelines`,
`speech_config`, ...) are kept as plain attributes, as `PreTrainedConfig` does with any extra key.
"""

from __future__ import annotations

import logging

from huggingface_hub.dataclasses import strict
from transformers import CONFIG_MAPPING, InternVLVisionConfig, PreTrainedConfig

logger = logging.getLogger(__name__)

# The LLM classes of vLLM each backbone is served with (`text_config.model_type` -> vLLM architecture).
TEXT_ARCHITECTURES = {
    "qwen2": "Qwen2ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "llama": "LlamaForCausalLM",
}


@strict
class VitaAudioVllmConfig(PreTrainedConfig):
    """Sizes of VITA's audio encoder ("whale") and its CNN adapter; the fields of `VitaAudioEncoderConfig`."""

    model_type = "vita_audio_encoder"
    base_config_key = "audio_config"

    num_mel_bins: int = 80
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "relu"
    layer_norm_eps: float = 1e-5
    dropout: float | int = 0.1
    attention_dropout: float | int = 0.0
    max_source_positions: int = 5000
    adapter_kernel_size: int = 5
    adapter_layer_norm_eps: float = 1e-3
    adapter_hidden_act: str = "gelu"
    output_size: int = 4096
    initializer_range: float = 0.02


@strict
class VitaVllmConfig(PreTrainedConfig):
    """`config.json` of a converted VITA folder, for vLLM (see the module docstring)."""

    model_type = "vita"
    sub_configs = {
        "text_config": PreTrainedConfig,
        "vision_config": InternVLVisionConfig,
        "audio_config": VitaAudioVllmConfig,
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    audio_config: dict | PreTrainedConfig | None = None
    image_token_id: int = 51747
    video_token_id: int = 51748
    audio_token_id: int = 51749
    downsample_ratio: float = 0.5
    vision_feature_layer: int = -1
    vision_feature_scale: float = 0.5
    projector_hidden_act: str = "gelu"
    state_tokens: dict | list | None = None
    tie_word_embeddings: bool = False
    speech_config: dict | PreTrainedConfig | None = None

    def __post_init__(self, **kwargs):
        if isinstance(self.text_config, dict):
            text = dict(self.text_config)
            # The released VITA-1.0 LLM is Mixtral, VitaConfig's default too.
            self.text_config = CONFIG_MAPPING[text.pop("model_type", "mixtral")](**text)
        elif self.text_config is None:
            self.text_config = CONFIG_MAPPING["mixtral"]()
        if isinstance(self.vision_config, dict):
            vision = {k: v for k, v in self.vision_config.items() if k != "model_type"}
            self.vision_config = InternVLVisionConfig(**vision)
        elif self.vision_config is None:
            self.vision_config = InternVLVisionConfig()
        if isinstance(self.audio_config, dict):
            audio = {k: v for k, v in self.audio_config.items() if k != "model_type"}
            self.audio_config = VitaAudioVllmConfig(**audio)
        elif self.audio_config is None:
            self.audio_config = VitaAudioVllmConfig()
        # As VitaConfig does: the adapter maps audio to the LLM width by definition.
        self.audio_config.output_size = self.text_config.hidden_size
        super().__post_init__(**kwargs)

    @property
    def image_seq_length(self) -> int:
        """LLM tokens per tile or video frame: (image_size / patch_size)^2 x downsample_ratio^2."""
        size = self.vision_config.image_size
        patch = self.vision_config.patch_size
        size = size[0] if isinstance(size, (list, tuple)) else size
        patch = patch[0] if isinstance(patch, (list, tuple)) else patch
        return int((size // patch) ** 2 * self.downsample_ratio**2)

    @property
    def text_architecture(self) -> str:
        """The vLLM class that serves this checkpoint's LLM."""
        model_type = self.text_config.model_type
        if model_type not in TEXT_ARCHITECTURES:
            raise ValueError(
                f"VITA's vLLM plugin serves the LLM types {sorted(TEXT_ARCHITECTURES)}; this checkpoint's "
                f"text_config.model_type is {model_type!r}."
            )
        return TEXT_ARCHITECTURES[model_type]


__all__ = ["TEXT_ARCHITECTURES", "VitaAudioVllmConfig", "VitaVllmConfig"]
