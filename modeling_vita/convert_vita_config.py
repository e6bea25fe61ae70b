"""The `VitaConfig` of a released VITA-1.0 checkpoint, read from its own configuration files.

`build_vita_config` takes the original `config.json` (Mixtral fields and LLaVA-style `mm_*` fields, InternViT fields
under `vision_config` when present) and the audio encoder's `train.yaml`; what they do not give keeps the released
model's value. `expected_shapes` lists the tensors such a config needs, without allocating them.
"""

from __future__ import annotations

import logging

import torch

from .configuration_vita import VitaConfig

logger = logging.getLogger(__name__)


def _audio_config_from_train_yaml(train: dict) -> dict:
    """Audio encoder dims from the whale `train.yaml`; field names follow the wenet-style conf the original reads."""
    encoder = ((train.get("encoder_conf") or {}).get("para_conf") or {}).get("transformer") or {}
    model = train.get("model_conf") or {}
    found = {
        "num_mel_bins": train.get("input_dim"),
        "hidden_size": encoder.get("output_size", encoder.get("attention_dim", model.get("enc_out_dim"))),
        "num_hidden_layers": encoder.get("num_blocks"),
        "num_attention_heads": encoder.get("attention_heads"),
        "intermediate_size": encoder.get("linear_units"),
        "adapter_kernel_size": model.get("kernel_size"),
        "adapter_hidden_act": model.get("activation_func"),
    }
    return {k: v for k, v in found.items() if v is not None}


def _vision_config_from_internvit(vision: dict) -> dict:
    renamed = {"qkv_bias": "attention_bias", "qk_normalization": "use_qk_norm"}
    out = {}
    names = "hidden_size num_hidden_layers num_attention_heads intermediate_size image_size patch_size layer_norm_eps"
    for key in names.split() + ["hidden_act", "qkv_bias", "qk_normalization"]:
        if key in vision:
            out[renamed.get(key, key)] = vision[key]
    return out


_TEXT_FIELDS = (
    "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads num_key_value_heads head_dim "
    "num_local_experts num_experts_per_tok rms_norm_eps hidden_act max_position_embeddings sliding_window "
    "router_aux_loss_coef bos_token_id eos_token_id tie_word_embeddings initializer_range"
).split()


def build_vita_config(original_config: dict, audio_train_yaml: dict | None = None, **overrides) -> VitaConfig:
    """`VitaConfig` from the original `config.json` (Mixtral fields + LLaVA-style `mm_*` fields), InternViT fields
    from `vision_config` if present, audio dims from `train.yaml` if given; released-model defaults otherwise."""
    text = {"model_type": "mixtral"}
    text.update({k: original_config[k] for k in _TEXT_FIELDS if original_config.get(k) is not None})
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": float(original_config.get("rope_theta", 1e6))}
    vision = {}
    if isinstance(original_config.get("vision_config"), dict):
        vision = _vision_config_from_internvit(original_config["vision_config"])
    audio = _audio_config_from_train_yaml(audio_train_yaml) if audio_train_yaml else {}
    arguments = {"text_config": text, "vision_config": vision or None, "audio_config": audio or None}
    arguments.update({k: original_config[k] for k in ("bos_token_id", "eos_token_id") if k in original_config})
    arguments.update(overrides)
    config = VitaConfig(**arguments)
    mm_hidden = original_config.get("mm_hidden_size")
    shuffled = config.vision_config.hidden_size * round(1 / config.downsample_ratio) ** 2
    if mm_hidden is not None and mm_hidden != shuffled:
        raise ValueError(
            f"config.json has mm_hidden_size {mm_hidden}, but the vision config gives {shuffled} "
            f"({config.vision_config.hidden_size} x {round(1 / config.downsample_ratio) ** 2} after the pixel "
            "shuffle); add the InternViT fields as `vision_config` to config.json."
        )
    if original_config.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ValueError(f"mm_projector_type is {original_config['mm_projector_type']!r}; only 'mlp2x_gelu' converts.")
    return config


def expected_shapes(config: VitaConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of `VitaForConditionalGeneration(config)`, built on the meta device (no memory)."""
    from .modeling_vita import VitaForConditionalGeneration

    with torch.device("meta"):
        model = VitaForConditionalGeneration(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


__all__ = ["build_vita_config", "expected_shapes"]
