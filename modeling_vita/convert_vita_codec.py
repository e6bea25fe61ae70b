"""Conversion of VITA-1.5's released TiCodec codec (`vita_tts_ckpt/codec/`) into `VitaCodecModel`.

The release holds `model.json` (the codec's hyper-parameters, training settings included) and `final.pt`, a dict of
three state dicts: `generator`, `quantizer` and `encoder`. The generator and most encoder convolutions carry weight
norm (`weight_g`, `weight_v`); it is folded here into plain weights, w = g * v / ||v|| with the norm over every dim
but the first, which is what the original does (`remove_weight_norm`) before inference. `final.pt` is read with
`torch.load(weights_only=True)` only: a pickle that needs any other code is refused, never run.

Every original key is either mapped, or dropped because the original never uses it (the encoder's `linear`, built but
never called); any other key is an error that names it, so a different release cannot be converted silently wrong.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from .configuration_vita_codec import VitaCodecConfig

logger = logging.getLogger(__name__)

# Widths the original code fixes rather than reading from `model.json`. A model.json may still give them under these
# names (small test folders do); the released one does not, so the original's numbers apply.
ORIGINAL_FIXED_WIDTHS = {"codebook_dim": 512, "speaker_width": 128, "encoder_initial_channel": 32}

SECTIONS = ("generator", "quantizer", "encoder")

# (original key pattern, native key template); matched against "<section>.<key>" with weight norm already folded.
_KEY_RULES = [
    (r"quantizer\.quantizer_modules\.0\.embedding\.weight", "quantizer.codebook.weight"),
    (r"quantizer\.quantizer_modules_globaltokens\.(\d+)\.embedding\.weight", r"quantizer.global_codebooks.\1.weight"),
    (r"generator\.(conv_pre|conv_post)\.(weight|bias)", r"generator.\1.\2"),
    (r"generator\.ups\.(\d+)\.(weight|bias)", r"generator.upsampler.\1.\2"),
    (
        r"(generator|encoder)\.resblocks\.(\d+)\.(convs1|convs2|convs)\.(\d+)\.(weight|bias)",
        r"\1.resblocks.\2.\3.\4.\5",
    ),
    (r"encoder\.(conv_pre|conv_post)\.(weight|bias)", r"encoder.\1.\2"),
    (r"encoder\.ups\.(\d+)\.(weight|bias)", r"encoder.downsampler.\1.\2"),
    (r"encoder\.normalize\.(\d+)\.(weight|bias)", r"encoder.norms.\1.\2"),
    # The speaker encoder's Sequential puts LeakyReLUs at odd indices: convs at 0, 2, 4; linear 0 and BatchNorm 2.
    (r"encoder\.GlobalTokenEncoder\.conv\.0\.weight", "encoder.speaker_encoder.convs.0.weight"),
    (r"encoder\.GlobalTokenEncoder\.conv\.2\.weight", "encoder.speaker_encoder.convs.1.weight"),
    (r"encoder\.GlobalTokenEncoder\.conv\.4\.weight", "encoder.speaker_encoder.convs.2.weight"),
    (r"encoder\.GlobalTokenEncoder\.fn\.0\.(weight|bias)", r"encoder.speaker_encoder.linear.\1"),
    (
        r"encoder\.GlobalTokenEncoder\.fn\.2\.(weight|bias|running_mean|running_var|num_batches_tracked)",
        r"encoder.speaker_encoder.norm.\1",
    ),
]
# Built by the original encoder but never called in its forward pass.
_UNUSED_KEYS = re.compile(r"encoder\.linear\.0\.(weight|bias)")
# Extra codebooks of multi-group or residual quantisation: the released codec has neither.
_UNSUPPORTED_KEYS = re.compile(r"quantizer\.(quantizer_modules\.[1-9]\d*|quantizer_modules[234])\.")


def fold_weight_norm(weight_g: torch.Tensor, weight_v: torch.Tensor, name: str = "weight") -> torch.Tensor:
    """The plain weight of a weight-normed layer: g * v / ||v||, the norm taken over every dim but the first."""
    expected = (weight_v.shape[0],) + (1,) * (weight_v.dim() - 1)
    if tuple(weight_g.shape) != expected:
        raise ValueError(
            f"`{name}_g` has shape {tuple(weight_g.shape)} but `{name}_v` {tuple(weight_v.shape)} needs a magnitude "
            f"of shape {expected} (weight norm over dim 0); the checkpoint is not a weight-normed TiCodec."
        )
    v = weight_v.float()
    norm = v.flatten(1).norm(dim=1).reshape(expected)  # one norm per output row (input row for ConvTranspose1d)
    return (weight_g.float() * v / norm).to(weight_v.dtype)


def _flatten_sections(original_sd: dict) -> dict[str, torch.Tensor]:
    """`{"generator": {...}, ...}` as saved in `final.pt`, or already flat "<section>.<key>" names, as one dict."""
    if any(isinstance(original_sd.get(section), dict) for section in SECTIONS):
        missing = [section for section in SECTIONS if not isinstance(original_sd.get(section), dict)]
        if missing:
            raise ValueError(
                f"The codec checkpoint lacks the state dicts {missing}; expected {list(SECTIONS)} as in VITA-1.5's "
                f"`vita_tts_ckpt/codec/final.pt`, found top-level entries {sorted(original_sd)}."
            )
        ignored = sorted(set(original_sd) - set(SECTIONS))
        if ignored:
            logger.info(
                "Ignoring codec checkpoint entries %s (not weights of the generator, quantizer or encoder)", ignored
            )
        return {f"{section}.{key}": value for section in SECTIONS for key, value in original_sd[section].items()}
    return dict(original_sd)


def convert_codec_state_dict(original_sd: dict) -> dict[str, torch.Tensor]:
    """Original TiCodec weights (`final.pt`'s dict, or flat "<section>.<key>" names) -> `VitaCodecModel` keys.

    Weight norm is folded; the original's unused encoder `linear` is dropped. Unknown keys, a `weight_g` without its
    `weight_v` and codebooks of multi-group or residual quantisation raise a `ValueError` naming them.
    """
    flat = _flatten_sections(original_sd)
    folded: dict[str, torch.Tensor] = {}
    for key, value in flat.items():
        if key.endswith("_g") or key.endswith("_v"):
            base = key[:-2]
            if f"{base}_g" not in flat or f"{base}_v" not in flat:
                raise ValueError(
                    f"`{key}` has no matching `{base}_g` / `{base}_v` pair; the checkpoint is incomplete."
                )
            if key.endswith("_g"):
                folded[base] = fold_weight_norm(flat[f"{base}_g"], flat[f"{base}_v"], base)
        else:
            folded[key] = value

    converted: dict[str, torch.Tensor] = {}
    unknown, unsupported = [], []
    for key, value in folded.items():
        if _UNUSED_KEYS.fullmatch(key):
            continue
        if _UNSUPPORTED_KEYS.match(key):
            unsupported.append(key)
            continue
        for pattern, template in _KEY_RULES:
            match = re.fullmatch(pattern, key)
            if match:
                converted[match.expand(template)] = value
                break
        else:
            unknown.append(key)
    if unsupported:
        raise ValueError(
            f"The codec checkpoint has extra codebooks ({unsupported[:4]}...): multi-group or residual quantisation "
            "(n_code_groups or residul_layer > 1) is not supported; VITA-1.5's codec uses one codebook."
        )
    if unknown:
        raise ValueError(
            f"{len(unknown)} codec checkpoint keys are not TiCodec weights this converter knows: {sorted(unknown)[:8]}"
            f"{' ...' if len(unknown) > 8 else ''}. Expected keys of the original generator, quantizer and encoder."
        )
    return converted


def codec_config_from_original(model_json: dict) -> VitaCodecConfig:
    """`VitaCodecConfig` from the original `codec/model.json` (its training-only settings are ignored)."""
    required = [
        "resblock",
        "upsample_rates",
        "upsample_kernel_sizes",
        "upsample_initial_channel",
        "resblock_kernel_sizes",
        "resblock_dilation_sizes",
        "n_codes",
        "global_code_num",
        "global_feature_conv",
        "global_tokens",
        "sampling_rate",
    ]
    missing = [key for key in required if key not in model_json]
    if missing:
        raise ValueError(f"The codec's model.json lacks {missing}; expected TiCodec settings such as {required}.")
    for key in ("n_code_groups", "residul_layer"):
        if model_json.get(key, 1) != 1:
            raise ValueError(
                f"model.json has {key}={model_json[key]}; only one code group and one quantiser layer (1) are "
                "supported, as in VITA-1.5's codec."
            )
    widths = {key: model_json.get(key, default) for key, default in ORIGINAL_FIXED_WIDTHS.items()}
    speaker_width = widths["speaker_width"]
    global_code_num = model_json["global_code_num"]
    if global_code_num < 1 or speaker_width % global_code_num:
        raise ValueError(
            f"model.json has global_code_num={global_code_num}; the original splits a {speaker_width}-wide "
            "speaker vector into that many codes, so it must divide it."
        )
    global_tokens = model_json["global_tokens"]
    while isinstance(global_tokens, list) and len(global_tokens) == 1 and isinstance(global_tokens[0], list):
        global_tokens = global_tokens[0]  # the original reshapes them to (1, 1, N) anyway
    dilations = model_json["resblock_dilation_sizes"]
    if str(model_json["resblock"]) == "2":
        # The original's second block type reads only the first two dilations of each list.
        dilations = [list(d)[:2] for d in dilations]
    return VitaCodecConfig(
        sampling_rate=model_json["sampling_rate"],
        codebook_size=model_json["n_codes"],
        codebook_dim=widths["codebook_dim"],
        upsample_rates=model_json["upsample_rates"],
        upsample_kernel_sizes=model_json["upsample_kernel_sizes"],
        upsample_initial_channel=model_json["upsample_initial_channel"],
        resblock_kernel_sizes=model_json["resblock_kernel_sizes"],
        resblock_dilation_sizes=dilations,
        resblock_type=str(model_json["resblock"]),
        global_code_num=global_code_num,
        global_codebook_size=model_json["n_codes"],
        global_code_dim=speaker_width // global_code_num,
        global_tokens=global_tokens,
        speaker_channels=speaker_width,
        encoder_initial_channel=widths["encoder_initial_channel"],
        global_feature_conv=model_json["global_feature_conv"],
    )


def load_original_codec(codec_dir: str | Path) -> tuple[VitaCodecConfig, dict[str, torch.Tensor]]:
    """Read `model.json` and `final.pt` of an original codec folder; returns the config and converted weights."""
    codec_dir = Path(codec_dir)
    config_path, weights_path = codec_dir / "model.json", codec_dir / "final.pt"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ValueError(
                f"{path} not found; expected VITA-1.5's `vita_tts_ckpt/codec/` with model.json and final.pt."
            )
    config = codec_config_from_original(json.loads(config_path.read_text(encoding="utf-8")))
    try:
        checkpoint = torch.load(weights_path, map_location="cpu", weights_only=True)
    except Exception as error:  # an unpickling error: the file needs code to load, which is never run here
        raise ValueError(f"{weights_path} cannot be read as plain tensors (weights_only=True): {error}") from error
    if not isinstance(checkpoint, dict):
        raise ValueError(f"{weights_path} holds a {type(checkpoint).__name__}, expected a dict of state dicts.")
    return config, convert_codec_state_dict(checkpoint)


def convert_original_codec(codec_dir: str | Path):
    """An original codec folder as a `VitaCodecModel` in eval mode, every weight loaded (strict)."""
    from .codec_vita import VitaCodecModel

    config, state_dict = load_original_codec(codec_dir)
    model = VitaCodecModel(config)
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches: model.json and final.pt disagree
        raise ValueError(f"The codec weights do not fit the sizes in model.json: {error}") from error
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"The converted codec does not fit VitaCodecModel: missing {result.missing_keys[:8]}, unexpected "
            f"{result.unexpected_keys[:8]}."
        )
    return model.eval()


__all__ = [
    "codec_config_from_original",
    "convert_codec_state_dict",
    "convert_original_codec",
    "fold_weight_norm",
    "load_original_codec",
]
