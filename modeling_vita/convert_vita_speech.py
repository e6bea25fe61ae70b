"""Conversion of VITA-1.5's speech decoder (`vita_tts_ckpt/decoder/`) and its wiring into the release conversion.

The decoder folder holds `model.json`, `[idim, odim, {args}]` with the original's argument names, and `final.pt`, the
state dict of `LLM2TTSCodecAR` (under `model`, or plain), read with `torch.load(weights_only=True)` only: a pickle
that needs any other code is refused, never run. Keys map one to one (`embedding` -> `embed_tokens`,
`layers_pre_nn` -> `pre_layers`, `out_fnn` -> `out_proj`, the Llama layers as they are); the `layers_prefix` weights,
which the original builds but never runs, are dropped with a note; any other key is an error naming it.

`add_release_speech` is what `vita-convert-original` calls for a release folder with `vita_tts_ckpt/`: the decoder
(here) and the codec (`convert_vita_codec.py`) become `VitaConfig.speech_config` and the `speech_model.*` weights,
written as one more safetensors shard listed in the folder's index.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .configuration_vita import VitaConfig, check_speech_width
from .configuration_vita_speech import VitaSpeechConfig, VitaSpeechDecoderConfig
from .convert_vita_codec import load_original_codec
from .convert_vita_release import inside_folder

logger = logging.getLogger(__name__)

TTS_FOLDER = "vita_tts_ckpt"
# original key pattern -> native key template
_DECODER_RULES = [
    (r"embedding\.weight", "embed_tokens.weight"),
    (r"layers_pre_nn\.(\d+)\.(.+)", r"pre_layers.\1.\2"),
    (r"layers\.(\d+)\.(.+)", r"layers.\1.\2"),
    (r"norm\.weight", "norm.weight"),
    (r"out_fnn\.(weight|bias)", r"out_proj.\1"),
]
# Built by the original but never run by VITA (`prefix` is always None), and rotary tables some versions saved.
_UNUSED = re.compile(r"(layers_prefix\.|.*inv_freq$)")
# model.json args -> VitaSpeechDecoderConfig fields
_ARGS = {
    "transformer_attention_dim": "hidden_size",
    "transformer_linear_units": "intermediate_size",
    "transformer_num_blocks": "num_hidden_layers",
    "transformer_attention_heads": "num_attention_heads",
}


def decoder_config_from_original(model_json: Any, source: str = "model.json") -> VitaSpeechDecoderConfig:
    """`VitaSpeechDecoderConfig` from the decoder's `model.json` content, `[idim, odim, {args}]`."""
    if not (isinstance(model_json, list) and len(model_json) == 3 and isinstance(model_json[2], dict)):
        found = type(model_json).__name__ + (f" of {len(model_json)}" if isinstance(model_json, list) else "")
        raise ValueError(f"{source} holds a {found}; expected [idim, odim, {{args}}] as the original decoder writes")
    idim, odim, args = model_json
    missing = [name for name in _ARGS if name not in args]
    if missing:
        raise ValueError(f"{source} lacks {missing} in its args; expected the decoder's transformer settings")
    fields = {field: args[name] for name, field in _ARGS.items()}
    # The original reads idim and odim from the args (the list's own two numbers are not used).
    fields["input_dim"] = args.get("idim", idim)
    fields["codec_vocab_size"] = args.get("odim", odim)
    fields["num_pre_layers"] = fields["num_hidden_layers"] // 2
    fields["attention_dropout"] = float(args.get("transformer_dropout_rate", 0.0))
    width, output_width = fields["hidden_size"], args.get("encoder_output_dim", fields["hidden_size"])
    if output_width != width:
        raise ValueError(
            f"{source}: encoder_output_dim is {output_width} but transformer_attention_dim is {width}; expected them "
            "equal (the output layer reads the transformer's output)"
        )
    try:
        return VitaSpeechDecoderConfig(**fields)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{source}: {error}") from error


def convert_decoder_state_dict(original_sd: dict[str, torch.Tensor], source: str = "final.pt") -> dict:
    """The original decoder's state dict under `VitaSpeechDecoder` names; unused weights dropped with a note."""
    converted, dropped, unknown = {}, [], []
    for key, tensor in original_sd.items():
        if _UNUSED.match(key):
            dropped.append(key)
            continue
        for pattern, template in _DECODER_RULES:
            if re.fullmatch(pattern, key):
                converted[re.sub(pattern, template, key)] = tensor
                break
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(
            f"{source} holds {len(unknown)} key(s) the speech decoder does not have: {unknown[:8]}; expected the "
            "keys of VITA-1.5's LLM2TTSCodecAR (embedding, layers_pre_nn, layers, layers_prefix, norm, out_fnn)"
        )
    if dropped:
        logger.info(
            "%s: dropped %d weights the original never runs (layers_prefix, rotary tables)", source, len(dropped)
        )
    return converted


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # UnpicklingError (code refused), not a torch file, truncated ...
        raise ValueError(
            f"{path} cannot be read as weights only ({type(error).__name__}: {str(error).splitlines()[0]}); expected "
            "a state dict written by torch.save (a pickle that would run other code is refused, never run)"
        ) from error
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(
            f"{path} holds a {type(state).__name__} that is not a state dict; expected {{'model': sd}} or sd"
        )
    return state


def _checked_against(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    problems = [f"{k}: found {tuple(v.shape)}, expected {expected[k]}" for k, v in state.items()
                if k in expected and tuple(v.shape) != expected[k]]  # fmt: skip
    problems += [f"{k}: missing" for k in expected if k not in state]
    problems += [f"{k}: not a weight of the model" for k in state if k not in expected]
    if problems:
        raise ValueError(
            f"{source} does not fit its model.json ({len(problems)} problems): " + "; ".join(problems[:8])
        )


def load_original_decoder(folder: str | Path) -> tuple[VitaSpeechDecoderConfig, dict[str, torch.Tensor]]:
    """Config and converted weights of an original decoder folder (`model.json`, `final.pt`), shapes checked."""
    from .speech_decoder_vita import VitaSpeechDecoder

    folder = Path(folder)
    config_path, weights_path = folder / "model.json", folder / "final.pt"
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ValueError(f"{path} not found; expected VITA-1.5's vita_tts_ckpt/decoder/ with model.json, final.pt")
    try:
        content = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{config_path} is not JSON ({error}); expected [idim, odim, {{args}}]") from error
    config = decoder_config_from_original(content, str(config_path))
    state = convert_decoder_state_dict(_read_weights(weights_path), str(weights_path))
    with torch.device("meta"):
        _checked_against(VitaSpeechDecoder(config), state, str(weights_path))
    return config, state


def load_original_speech(tts_dir: str | Path, **settings) -> tuple[VitaSpeechConfig, dict[str, torch.Tensor]]:
    """`VitaSpeechConfig` and `VitaSpeechModel` weights (`decoder.*`, `codec.*`) of an original `vita_tts_ckpt`.
    `settings` override the streaming and sampling defaults (`SPEECH_SETTINGS_DEFAULTS`)."""
    tts_dir = Path(tts_dir)
    decoder_config, decoder_sd = load_original_decoder(tts_dir / "decoder")
    codec_config, codec_sd = load_original_codec(tts_dir / "codec")
    try:
        config = VitaSpeechConfig(decoder_config=decoder_config, codec_config=codec_config, **settings)
    except ValueError as error:
        raise ValueError(f"{tts_dir}: the decoder and the codec do not fit together: {error}") from error
    state = {f"decoder.{k}": v for k, v in decoder_sd.items()} | {f"codec.{k}": v for k, v in codec_sd.items()}
    return config, state


def convert_original_speech(tts_dir: str | Path):
    """An original `vita_tts_ckpt` folder as a `VitaSpeechModel` in eval mode, every weight checked and loaded."""
    from .speech_vita import VitaSpeechModel

    config, state = load_original_speech(tts_dir)
    model = VitaSpeechModel(config)
    _checked_against(model, state, str(tts_dir))
    model.load_state_dict(state)
    return model.eval()


def _append_shard(folder: Path, tensors: dict[str, torch.Tensor]) -> str:
    """Write `tensors` as one more shard of the converted folder and list it in the index (written if the folder had
    a single `model.safetensors`, whose name a loader would otherwise read alone)."""
    index_path = folder / "model.safetensors.index.json"
    if index_path.is_file():
        index = json.loads(index_path.read_text(encoding="utf-8"))
    else:
        with safe_open(folder / "model.safetensors", framework="pt") as single:
            index = {"metadata": {}, "weight_map": dict.fromkeys(single.keys(), "model.safetensors")}
    shards = sorted(set(index["weight_map"].values()))
    total = len(shards) + 1
    renamed = {}
    for number, name in enumerate(shards, start=1):  # model-0000i-of-0000n -> ...-of-(n+1), as save_pretrained names
        renamed[name] = f"model-{number:05d}-of-{total:05d}.safetensors"
        (folder / name).rename(folder / renamed[name])
    speech_shard = f"model-{total:05d}-of-{total:05d}.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, folder / speech_shard, metadata={"format": "pt"})
    weight_map = {k: renamed[v] for k, v in index["weight_map"].items()} | dict.fromkeys(tensors, speech_shard)
    sizes = sum(math.prod(t.shape) * t.element_size() for t in tensors.values())
    metadata = {**index.get("metadata", {})}
    if "total_size" in metadata:
        metadata["total_size"] = int(metadata["total_size"]) + sizes
    index = {"metadata": metadata, "weight_map": dict(sorted(weight_map.items()))}
    index_path.write_text(json.dumps(index, indent=2) + "\n")
    return speech_shard


def add_release_speech(input_dir: Path, output_dir: Path, config: VitaConfig, dtype: torch.dtype) -> list[str]:
    """If the release has `vita_tts_ckpt/`, convert it into `output_dir` (one more shard) and set
    `config.speech_config`; returns notes for the converter's summary (none without the folder)."""
    tts_dir = input_dir / TTS_FOLDER
    if not tts_dir.is_dir():
        return [f"speech: no {TTS_FOLDER}/ in the release; the converted model has no speech decoder"]
    for part in ("decoder/model.json", "decoder/final.pt", "codec/model.json", "codec/final.pt"):
        if (tts_dir / part).exists():
            inside_folder(input_dir, f"{TTS_FOLDER}/{part}")
    speech_config, state = load_original_speech(tts_dir)
    check_speech_width(config.text_config.hidden_size, speech_config)
    config.speech_config = speech_config
    # Integer buffers (BatchNorm's step count) keep their dtype.
    tensors = {f"speech_model.{k}": v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    shard = _append_shard(output_dir, tensors)
    decoder = speech_config.decoder_config
    return [
        f"speech: {tts_dir} -> speech_model ({len(state)} tensors in {shard}): decoder of {decoder.num_hidden_layers}"
        f" + {decoder.num_pre_layers} layers over {decoder.codec_vocab_size} codec tokens, codec at "
        f"{speech_config.sampling_rate} Hz (layers_prefix, which the original never runs, not converted)",
    ]


__all__ = [
    "TTS_FOLDER",
    "add_release_speech",
    "convert_decoder_state_dict",
    "convert_original_speech",
    "decoder_config_from_original",
    "load_original_decoder",
    "load_original_speech",
]
