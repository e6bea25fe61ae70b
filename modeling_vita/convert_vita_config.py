"""The `VitaConfig` of a released VITA checkpoint (1.0 or 1.5), read from its own configuration files as published.

A release is a checkpoint folder whose `config.json` holds the LLM's fields (Mixtral for VITA-1.0, Qwen2 for
VITA-1.5) and LLaVA-style `mm_*` fields; `mm_vision_tower` and `mm_audio_encoder` name the two tower folders, whose
own files give their shapes: InternViT's `config.json` and the whale audio encoder's `train.yaml` (hyphenated
argparse-style keys such as `transformer-num-blocks`). `detect_release` tells the releases apart, `read_internvit`
and `read_whale` translate the tower files, and `build_vita_config` assembles the config; every value that none of
the files gave and that keeps the released model's default is listed in the returned report.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .configuration_vita import INTERNVIT_300M_448PX, VitaAudioEncoderConfig, VitaConfig

logger = logging.getLogger(__name__)

# What tells the releases apart, and what each one answers with.
RELEASES: dict[str, dict[str, Any]] = {
    "1.0": {
        "model_types": ("vita-mixtral",),
        "architectures": ("VITAMixtralForCausalLM",),
        "text_model_type": "mixtral",
        "state_tokens": {"query_audio": "<1>", "noisy_audio": "<2>", "query_text": "<3>"},
        "chat_format": "vita-1.0",
    },
    "1.5": {
        "model_types": ("vita-Qwen2", "vita-qwen2"),
        "architectures": ("VITAQwen2ForCausalLM",),
        "text_model_type": "qwen2",
        "state_tokens": {"query_audio": "☞", "noisy_audio": "☟", "query_text": "☜"},
        "chat_format": "vita-1.5",
    },
}

_TEXT_FIELDS = {
    "mixtral": "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads num_key_value_heads "
    "head_dim num_local_experts num_experts_per_tok rms_norm_eps hidden_act max_position_embeddings sliding_window "
    "router_aux_loss_coef bos_token_id eos_token_id tie_word_embeddings initializer_range",
    "qwen2": "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads num_key_value_heads "
    "rms_norm_eps hidden_act max_position_embeddings sliding_window use_sliding_window max_window_layers "
    "bos_token_id eos_token_id tie_word_embeddings initializer_range attention_dropout",
}
_INTERNVIT_FIELDS = {
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "image_size": "image_size",
    "patch_size": "patch_size",
    "layer_norm_eps": "layer_norm_eps",
    "hidden_act": "hidden_act",
    "qkv_bias": "attention_bias",
    "qk_normalization": "use_qk_norm",
}
# whale `train.yaml` key (hyphens read as underscores, as the original's argparse does) -> audio config field
_WHALE_FIELDS = {
    "transformer_output_dim": "hidden_size",
    "transformer_attention_heads": "num_attention_heads",
    "transformer_linear_units": "intermediate_size",
    "transformer_num_blocks": "num_hidden_layers",
}
# Settings the native encoder implements; anything else is refused rather than converted wrongly.
_WHALE_REQUIRED = {
    "transformer_pos_enc_class": ("rel-enc",),
    "transformer_normalize_before": (True,),
    "transformer_concat_after": (False,),
    "transformer_positionwise_layer_type": ("linear",),
}


@dataclass
class ConfigReport:
    """Where the config's values came from: `read` (field -> source file) and `defaulted` (field -> value kept)."""

    read: dict[str, str] = field(default_factory=dict)
    defaulted: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        return [f"defaulted {name} = {value!r} (no file gave it)" for name, value in self.defaulted.items()]


def detect_release(original_config: dict, path: str | Path = "config.json") -> str:
    """ "1.0" or "1.5" from the checkpoint's `config.json` (`model_type`, else `architectures`)."""
    model_type, architectures = original_config.get("model_type"), original_config.get("architectures") or []
    for version, release in RELEASES.items():
        if model_type in release["model_types"] or any(a in release["architectures"] for a in architectures):
            return version
    known = {v: r["model_types"][0] + " / " + r["architectures"][0] for v, r in RELEASES.items()}
    raise ValueError(
        f"{path}: model_type {model_type!r} with architectures {architectures} is not a VITA release; expected one of "
        f"{known}. Point --input at a released VITA checkpoint folder, or pass --version 1.0 or 1.5."
    )


def read_internvit(folder: Path) -> dict[str, Any]:
    """The vision config fields from an InternViT folder's `config.json` (InternViT's own schema)."""
    path = folder / "config.json"
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{path}: cannot read the vision tower's config ({error}); expected InternViT's config.json"
        ) from error
    raw = raw.get("vision_config", raw)  # an InternVL chat config nests the vision tower's fields
    if raw.get("norm_type", "layer_norm") != "layer_norm":
        raise ValueError(f"{path}: norm_type {raw['norm_type']!r}; expected 'layer_norm' (InternViT-300M style)")
    return {ours: raw[theirs] for theirs, ours in _INTERNVIT_FIELDS.items() if theirs in raw}


def read_whale(train: dict, path: str | Path = "train.yaml") -> dict[str, Any]:
    """The audio config fields from a whale `train.yaml` in the original schema (see the module docstring)."""
    encoder_conf = train.get("encoder_conf") or {}
    overview = _underscored(encoder_conf.get("overview_conf") or {})
    layers = str(overview.get("encoder_layer_config", "subsampling-transformer"))
    if layers != "subsampling-transformer":
        raise ValueError(f"{path}: encoder-layer-config {layers!r}; expected 'subsampling-transformer'")
    transformer = _underscored((encoder_conf.get("para_conf") or {}).get("transformer") or {})
    found = {ours: transformer[theirs] for theirs, ours in _WHALE_FIELDS.items() if theirs in transformer}
    for key, allowed in _WHALE_REQUIRED.items():
        if key in transformer and transformer[key] not in allowed:
            raise ValueError(f"{path}: {key.replace('_', '-')} is {transformer[key]!r}; expected {allowed[0]!r}")
    if "input_dim" in train:
        found["num_mel_bins"] = train["input_dim"]
    model_conf = train.get("model_conf") or {}
    if model_conf.get("adpter_type", "subsampling") != "subsampling" or model_conf.get("norm", "layer") != "layer":
        raise ValueError(
            f"{path}: model_conf adpter_type {model_conf.get('adpter_type')!r} norm {model_conf.get('norm')!r}; "
            "expected 'subsampling' and 'layer' (the released adapter)"
        )
    for theirs, ours in (("kernel_size", "adapter_kernel_size"), ("activation_func", "adapter_hidden_act")):
        if theirs in model_conf:
            found[ours] = model_conf[theirs]
    hidden, enc_out = found.get("hidden_size"), model_conf.get("enc_out_dim")
    if hidden is not None and enc_out is not None and hidden != enc_out:
        raise ValueError(f"{path}: model_conf enc_out_dim {enc_out} differs from transformer-output-dim {hidden}")
    if "llm_embed_dim" in model_conf:
        found["llm_embed_dim"] = model_conf["llm_embed_dim"]  # checked against the LLM by `build_vita_config`
    return found


def _underscored(section: dict) -> dict:
    return {str(key).replace("-", "_"): value for key, value in section.items()}


def build_vita_config(
    original_config: dict,
    version: str,
    vision: dict[str, Any] | None = None,
    audio: dict[str, Any] | None = None,
    sources: dict[str, str] | None = None,
    **overrides: Any,
) -> tuple[VitaConfig, ConfigReport]:
    """`VitaConfig` of a `version` release from its `config.json`, its InternViT fields (`read_internvit`, else a
    `vision_config` inside config.json) and its whale fields (`read_whale`); returns it with the report of what was
    read and what kept the released default. `sources` names the file each part came from, for the report."""
    release, sources, report = RELEASES[version], sources or {}, ConfigReport()
    text_type = release["text_model_type"]
    text = {"model_type": text_type}
    for key in _TEXT_FIELDS[text_type].split():
        if original_config.get(key) is not None:
            text[key] = original_config[key]
            report.read[f"text_config.{key}"] = sources.get("config", "config.json")
    rope_theta = original_config.get("rope_theta")
    if rope_theta is None:
        rope_theta = 1e6
        report.defaulted["text_config.rope_theta"] = rope_theta
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": float(rope_theta)}
    if vision is None and isinstance(original_config.get("vision_config"), dict):
        vision = {ours: original_config["vision_config"][theirs] for theirs, ours in _INTERNVIT_FIELDS.items()
                  if theirs in original_config["vision_config"]}  # fmt: skip
    vision = dict(vision or {})
    audio = dict(audio or {})
    llm_embed_dim = audio.pop("llm_embed_dim", None)
    for name, default in INTERNVIT_300M_448PX.items():
        if name not in vision and name in _INTERNVIT_FIELDS.values():
            report.defaulted[f"vision_config.{name}"] = default
    for name in ("num_mel_bins", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "adapter_kernel_size", "adapter_hidden_act"):  # fmt: skip
        if name not in audio:
            report.defaulted[f"audio_config.{name}"] = getattr(VitaAudioEncoderConfig(), name)
    arguments: dict[str, Any] = {"text_config": text, "vision_config": vision or None, "audio_config": audio or None}
    arguments["state_tokens"] = release["state_tokens"]
    arguments.update({k: original_config[k] for k in ("bos_token_id", "eos_token_id") if k in original_config})
    arguments.update(overrides)
    config = VitaConfig(**arguments)
    if llm_embed_dim is not None and llm_embed_dim != config.text_config.hidden_size:
        raise ValueError(
            f"{sources.get('audio', 'train.yaml')}: model_conf llm_embed_dim {llm_embed_dim} differs from the LLM's "
            f"hidden_size {config.text_config.hidden_size} in {sources.get('config', 'config.json')}"
        )
    mm_hidden = original_config.get("mm_hidden_size")
    shuffled = config.vision_config.hidden_size * round(1 / config.downsample_ratio) ** 2
    if mm_hidden is not None and mm_hidden != shuffled:
        raise ValueError(
            f"{sources.get('config', 'config.json')} has mm_hidden_size {mm_hidden}, but the vision tower "
            f"({sources.get('vision', 'its defaults')}) gives {shuffled} ({config.vision_config.hidden_size} x "
            f"{round(1 / config.downsample_ratio) ** 2} after the pixel shuffle); expected them to agree: point "
            "--vision-tower at the InternViT folder the checkpoint was trained with"
        )
    if original_config.get("mm_projector_type", "mlp2x_gelu") != "mlp2x_gelu":
        raise ValueError(
            f"{sources.get('config', 'config.json')}: mm_projector_type {original_config['mm_projector_type']!r}; "
            "expected 'mlp2x_gelu', the only projector the releases use"
        )
    return config, report


def expected_shapes(config: VitaConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of `VitaForConditionalGeneration(config)`, built on the meta device (no memory)."""
    from .modeling_vita import VitaForConditionalGeneration

    with torch.device("meta"):
        model = VitaForConditionalGeneration(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


__all__ = [
    "RELEASES",
    "ConfigReport",
    "build_vita_config",
    "detect_release",
    "expected_shapes",
    "read_internvit",
    "read_whale",
]
