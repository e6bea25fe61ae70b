"""Convert an original VITA-1.0 checkpoint (LLaVA-style `VITAMixtralForCausalLM`) into a `VitaForConditionalGeneration`
folder that loads with `from_pretrained` / `AutoModel.from_pretrained(..., trust_remote_code=True)`.

On-disk format: the transformers 5.x native layout, exactly the keys of `VitaForConditionalGeneration.state_dict()`,
with Mixtral's experts fused (`mlp.experts.gate_up_proj` [E, 2I, H] = cat(w1, w3) per expert, `mlp.experts.down_proj`
[E, H, I] = w2). This is what `save_pretrained(save_original_format=False)` writes; loading it needs no conversion
at load time, so the folder loads the same way in any transformers 5.x with or without this package installed.

Key mapping: `TABLE` is one list of (original regex, new regex) pairs with the same named groups on both sides, used
both ways by `convert_key` and `revert_key`. A name ending in `@...` addresses a piece of a tensor: on the original
side `attn.qkv.weight@q` is the first third of InternViT's fused qkv; on the new side `experts.gate_up_proj@3.gate`
is expert 3's w1 rows. With piece names the table is a bijection; the split/merge code moves the data.

Streaming: all input headers are read first to plan the output (names, shapes, shard assignment, unknown and missing
keys) without touching tensor data; then input tensors are read one at a time (plain file reads, no mmap, so pages do
not linger in the resident set) and written straight into pre-planned output shards, whose headers are known in
advance. Only the fused experts of a layer are buffered, and only until their last piece arrives.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .configuration_vita import VitaConfig
from .convert_vita_mapping import (  # noqa: F401  (re-exported: the public conversion API lives here)
    CMVN_KEYS,
    TABLE,
    _Assembler,
    _unknown_keys,
    _unknown_message,
    convert_key,
    convert_state_dict,
    new_pieces,
    original_pieces,
    revert_key,
    revert_state_dict,
)
from .remote_code import write_remote_code

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------- configuration
def load_global_cmvn(path: str | os.PathLike) -> tuple[list[float], list[float]]:
    """Read the original `global_cmvn` JSON (mean_stat, var_stat, frame_num) and return (means, inverse stds)."""
    stats = json.loads(Path(path).read_text(encoding="utf-8"))
    missing = [k for k in ("mean_stat", "var_stat", "frame_num") if k not in stats]
    if missing:
        raise ValueError(f"{path} lacks {missing}; found {sorted(stats)}, expected mean_stat, var_stat, frame_num.")
    frames = float(stats["frame_num"])
    means = [s / frames for s in stats["mean_stat"]]
    variances = [v / frames - m * m for v, m in zip(stats["var_stat"], means)]
    # Same floor as the original loader: a silent mel bin must not give an infinite inverse std.
    return means, [1.0 / math.sqrt(max(v, 1e-20)) for v in variances]


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


# --------------------------------------------------------------------------------------------------------- file I/O
_ST_DTYPES = dict(zip("F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL".split(), (torch.float64, torch.float32, torch.float16,
    torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)))  # fmt: skip
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


@dataclass
class _Entry:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    begin: int = 0
    end: int = 0


@dataclass
class _InputShard:
    path: Path
    entries: list[_Entry] = field(default_factory=list)
    data_start: int = 0

    @property
    def nbytes(self) -> int:
        return self.path.stat().st_size


def _input_shards(folder: Path) -> list[_InputShard]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        files = list(dict.fromkeys(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors")) or sorted(
            p.name for p in folder.glob("pytorch_model*.bin")
        )
    if not files:
        raise ValueError(
            f"No weights in {folder}: found {sorted(p.name for p in folder.iterdir())}; expected model*.safetensors "
            "(with model.safetensors.index.json) or pytorch_model*.bin. Point --input at the VITA_ckpt folder."
        )
    shards = [_InputShard(folder / name) for name in files]
    for shard in shards:
        if shard.path.suffix == ".safetensors":
            with open(shard.path, "rb") as f:
                (length,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(length))
            shard.data_start = 8 + length
            header.pop("__metadata__", None)
            shard.entries = sorted(
                (_Entry(k, tuple(v["shape"]), _ST_DTYPES[v["dtype"]], *v["data_offsets"]) for k, v in header.items()),
                key=lambda e: e.begin,
            )
        else:
            state = torch.load(shard.path, map_location="cpu", weights_only=True, mmap=True)
            shard.entries = [_Entry(k, tuple(v.shape), v.dtype) for k, v in state.items()]
            del state
    return shards


def _read_tensors(shard: _InputShard) -> Iterator[tuple[str, torch.Tensor]]:
    if shard.path.suffix != ".safetensors":
        state = torch.load(shard.path, map_location="cpu", weights_only=True, mmap=True)
        for entry in shard.entries:
            yield entry.name, state.pop(entry.name)
        return
    with open(shard.path, "rb") as f:
        for entry in shard.entries:
            buffer = torch.empty(entry.end - entry.begin, dtype=torch.uint8)
            f.seek(shard.data_start + entry.begin)
            f.readinto(memoryview(buffer.numpy()))
            yield entry.name, buffer.view(entry.dtype).reshape(entry.shape)


class _ShardWriter:
    """Writes planned safetensors shards: each header is known up front, so tensors go to disk as they arrive."""

    def __init__(self, folder: Path, shards: list[list[tuple[str, tuple[int, ...]]]], dtype: torch.dtype):
        self.folder, self.shards, self.dtype = folder, shards, dtype
        total = len(shards)
        self.names = (
            ["model.safetensors"]
            if total == 1
            else [f"model-{i + 1:05d}-of-{total:05d}.safetensors" for i in range(total)]
        )
        self.queue = [(shard_index, name) for shard_index, shard in enumerate(shards) for name, _ in shard]
        self.position, self.file, self.open_index = 0, None, -1

    def _open(self, index: int) -> None:
        if self.file:
            self.file.close()
        header, offset, itemsize = {"__metadata__": {"format": "pt"}}, 0, self.dtype.itemsize
        for name, shape in self.shards[index]:
            size = math.prod(shape) * itemsize
            header[name] = {
                "dtype": _ST_NAMES[self.dtype],
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)  # 8-byte aligned data, as the reference writer does
        self.file = open(self.folder / self.names[index], "wb")
        self.file.write(struct.pack("<Q", len(encoded)) + encoded)
        self.open_index = index

    def write(self, name: str, tensor: torch.Tensor) -> None:
        shard_index, expected = self.queue[self.position]
        if name != expected:
            raise RuntimeError(f"Output order broke the plan: got {name}, planned {expected}.")
        if shard_index != self.open_index:
            self._open(shard_index)
        data = tensor.to(self.dtype).contiguous().reshape(-1).view(torch.uint8)
        self.file.write(memoryview(data.numpy()))
        self.position += 1

    def close(self) -> dict[str, str]:
        if self.file:
            self.file.close()
        if self.position != len(self.queue):
            raise RuntimeError(f"Wrote {self.position} of {len(self.queue)} planned tensors.")
        return {name: self.names[index] for index, name in self.queue}


# ----------------------------------------------------------------------------------------------------- conversion
@dataclass
class ConversionResult:
    output: Path
    weight_map: dict[str, str]
    cmvn_mean: list[float] | None
    cmvn_istd: list[float] | None
    missing_keys: list[str]


def _plan(shards: list[_InputShard], config: VitaConfig) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
    """Output tensors in the order the stream completes them (the same assembler on meta tensors); raises on
    unknown keys, shape mismatches and incomplete experts; returns the missing keys."""
    entries = [entry for shard in shards for entry in shard.entries]
    unknown = _unknown_keys([e.name for e in entries], [e.shape for e in entries])
    if unknown:
        raise ValueError(_unknown_message(unknown))
    assembler, order = _Assembler(getattr(config.text_config, "num_local_experts", 0)), []
    for entry in entries:
        meta = torch.empty(entry.shape, dtype=entry.dtype, device="meta")
        order += [(name, tuple(tensor.shape)) for name, tensor in assembler.feed(entry.name, meta)]
    expected, produced = expected_shapes(config), dict(order)
    problems = [f"{k}: found {s}, expected {expected[k]}" for k, s in order if k in expected and expected[k] != s]
    problems += [f"{k}: not a parameter of VitaForConditionalGeneration" for k in produced if k not in expected]
    problems += assembler.incomplete()
    if problems:
        raise ValueError(
            f"The checkpoint does not match the config built from config.json ({len(problems)} problems):\n  "
            + "\n  ".join(problems[:20])
            + "\nCheck the LLM/vision/audio fields in config.json and --audio-encoder's train.yaml."
        )
    return order, sorted(set(expected) - set(produced))


def _assign_shards(order, dtype: torch.dtype, max_shard_size: int) -> list[list[tuple[str, tuple[int, ...]]]]:
    shards, current, size = [], [], 0
    for name, shape in order:
        nbytes = math.prod(shape) * dtype.itemsize
        if current and size + nbytes > max_shard_size:
            shards.append(current)
            current, size = [], 0
        current.append((name, shape))
        size += nbytes
    return shards + [current] if current else shards


def convert_checkpoint(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: VitaConfig,
    dtype: torch.dtype = torch.bfloat16,
    max_shard_size: int = 5_000_000_000,
    allow_missing: bool = False,
    progress: bool = True,
) -> ConversionResult:
    """Stream the weights of `input_dir` into safetensors shards in `output_dir` (weights and index only)."""
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    shards = _input_shards(Path(input_dir))
    order, missing = _plan(shards, config)
    if missing and not allow_missing:
        raise ValueError(
            f"The checkpoint lacks {len(missing)} weight(s) of VitaForConditionalGeneration: {missing[:20]}"
            f"{' ...' if len(missing) > 20 else ''}. Pass --allow-missing to write the folder anyway (they would be "
            "freshly initialised on load)."
        )
    writer = _ShardWriter(output, _assign_shards(order, dtype, max_shard_size), dtype)
    assembler = _Assembler(getattr(config.text_config, "num_local_experts", 0), dtype)
    total = sum(shard.nbytes for shard in shards)
    with tqdm(total=total, unit="B", unit_scale=True, desc="converting", disable=not progress) as bar:
        for shard in shards:
            for name, tensor in _read_tensors(shard):
                bar.update(tensor.numel() * tensor.element_size())
                for new_name, new_tensor in assembler.feed(name, tensor):
                    writer.write(new_name, new_tensor)
                del tensor  # the read buffer goes before the next one is allocated
    weight_map = writer.close()
    if len(writer.names) > 1:
        total_size = sum(math.prod(shape) * dtype.itemsize for _, shape in order)
        index = {"metadata": {"total_size": total_size}, "weight_map": dict(sorted(weight_map.items()))}
        (output / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    mean, istd = assembler.cmvn.get("mean"), assembler.cmvn.get("istd")
    return ConversionResult(
        output, weight_map, None if mean is None else mean.tolist(), None if istd is None else istd.tolist(), missing
    )


# ------------------------------------------------------------------------------------------ folder: config, code, card
def write_config_and_code(config: VitaConfig, output_dir: str | os.PathLike, dtype: torch.dtype) -> None:
    """config.json (with the same auto_map `VitaPreTrainedModel.save_pretrained` writes), generation_config.json and
    the remote-code files, i.e. the closure `save_pretrained` writes."""
    from transformers import GenerationConfig

    from . import modeling_vita

    output = Path(output_dir)
    config.auto_map = {**(getattr(config, "auto_map", None) or {}), **modeling_vita.AUTO_MAP}
    config.architectures = ["VitaForConditionalGeneration"]
    config.dtype = dtype
    config.save_pretrained(output)
    ids = {name: getattr(config.text_config, f"{name}_token_id", None) for name in ("bos", "eos")}
    GenerationConfig(
        bos_token_id=1 if ids["bos"] is None else ids["bos"], eos_token_id=2 if ids["eos"] is None else ids["eos"]
    ).save_pretrained(output)
    write_remote_code(output)


def model_card(config: VitaConfig, repo_id: str | None = None) -> str:
    """A README.md for the converted folder, generated from the config."""
    text, vision, audio = config.text_config, config.vision_config, config.audio_config
    name = repo_id or "path/to/converted-vita"
    experts = getattr(text, "num_local_experts", None)
    llm = f"{text.model_type} ({text.num_hidden_layers} layers, hidden {text.hidden_size}"
    llm += f", {experts} experts top-{text.num_experts_per_tok})" if experts else ")"
    state = ", ".join(f"`{t}`" for t in config.state_tokens.values())
    return f"""---
license: apache-2.0
library_name: transformers
pipeline_tag: any-to-any
tags: [vita, omni, multimodal, audio, vision, custom_code]
---

# VITA (converted to transformers 5.x)

VITA-1.0, the open omni multimodal LLM of Fu et al. (2024), converted from the original `VITAMixtralForCausalLM`
checkpoint to a native transformers model (`VitaForConditionalGeneration`, loaded with `trust_remote_code=True`).

## Architecture
- LLM: {llm}, vocabulary {text.vocab_size}.
- Vision: InternViT as transformers' `InternVLVisionModel` ({vision.num_hidden_layers} layers, hidden
  {vision.hidden_size}, {vision.image_size[0]} px tiles, patch {vision.patch_size[0]}), last layer without CLS,
  features x{config.vision_feature_scale}, 2x2 pixel shuffle, two-layer GELU MLP: {config.image_seq_length} tokens
  per tile or video frame; the image processor tiles large images (1-12 tiles plus a thumbnail by default).
- Audio: the "whale" encoder ({audio.num_hidden_layers} layers, hidden {audio.hidden_size},
  {audio.num_attention_heads} heads) on {audio.num_mel_bins}-bin Kaldi fbank with global CMVN (in the feature
  extractor), 4x CNN subsampling and a stride-2 CNN adapter: 12.5 tokens per second.

## Modalities
Input: text, image, video (frames), audio, alone or combined. Output: text (speech through an external TTS).

## State tokens
Every answer opens with one of {state}: the input was a spoken query (answer it), noisy audio not meant for the
assistant (say nothing), a text query. Placeholder ids: image {config.image_token_id}, video
{config.video_token_id}, audio {config.audio_token_id}.

## Usage
```python
from transformers import AutoModel, AutoProcessor

model = AutoModel.from_pretrained("{name}", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("{name}", trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "image", "image": "photo.jpg"}},
                                         {{"type": "text", "text": "What is in the picture?"}}]}}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                       return_dict=True, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=64)
state, answer = processor.parse_response(processor.decode(out[0, inputs["input_ids"].shape[1]:]))
```

## License
Apache-2.0, as the original release.

## Citation
```bibtex
@article{{fu2024vita,
  title={{VITA: Towards Open-Source Interactive Omni Multimodal LLM}},
  author={{Fu, Chaoyou and others}},
  journal={{arXiv preprint arXiv:2408.05211}},
  year={{2024}}
}}
```
"""


def _load_tokenizer(input_dir: Path) -> tuple[object | None, dict[str, int]]:
    """The input folder's tokenizer with VITA's placeholders added (their ids go into the config), if it has one and
    `processing_vita` imports. Imported lazily: remote-code files must never import `processing_vita`."""
    tokenizer_files = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    if not any((input_dir / name).is_file() for name in tokenizer_files):
        return None, {}
    try:
        from transformers import AutoTokenizer

        from processing_vita.tokenization_vita import add_vita_special_tokens
    except ImportError:
        return None, {}
    tokenizer = AutoTokenizer.from_pretrained(input_dir)
    ids = add_vita_special_tokens(tokenizer)
    return tokenizer, {
        f"{kind}_token_id": ids[f"<{kind}>"] for kind in ("image", "video", "audio") if f"<{kind}>" in ids
    }


def _save_processor(output: Path, tokenizer, mean: list[float] | None, istd: list[float] | None) -> str:
    """Optional: the feature extractor with the CMVN statistics, plus the full processor when a tokenizer exists."""
    try:
        from processing_vita import VitaFeatureExtractor, VitaProcessor
    except ImportError as err:
        return f"processing_vita not importable ({err}); no processor saved"
    extractor = VitaFeatureExtractor(**({} if mean is None else {"cmvn_mean": mean, "cmvn_istd": istd}))
    if tokenizer is None:
        extractor.save_pretrained(output)
        return "feature extractor saved (no tokenizer in the input folder)"
    VitaProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(output)
    return "processor saved"


def _push(output: Path, repo_id: str, dry_run: bool) -> None:
    files = sorted(p for p in output.rglob("*") if p.is_file())
    if dry_run:
        print(f"[dry-run] would push {len(files)} files to https://huggingface.co/{repo_id}:")
        for path in files:
            print(f"  {path.relative_to(output)}  ({path.stat().st_size:,} bytes)")
        return
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, exist_ok=True)
    api.upload_folder(repo_id=repo_id, folder_path=str(output), commit_message="Convert VITA to transformers 5.x")


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--input", required=True, help="original checkpoint folder (config.json + weights)")
    parser.add_argument("--audio-encoder", help="original audio-encoder folder with train.yaml and global_cmvn")
    parser.add_argument("--output", required=True, help="folder to write the converted model to")
    parser.add_argument("--dtype", choices=sorted(_DTYPES), default="bfloat16")
    parser.add_argument("--max-shard-size", default="5GB", help="e.g. 5GB, 500MB")
    parser.add_argument("--image-token-id", type=int, help="id of <image> in the converted tokenizer")
    parser.add_argument("--video-token-id", type=int, help="id of <video> in the converted tokenizer")
    parser.add_argument("--audio-token-id", type=int, help="id of <audio> in the converted tokenizer")
    parser.add_argument("--allow-missing", action="store_true", help="write the folder even if weights are missing")
    parser.add_argument("--push-to-hub", metavar="REPO", help="upload the folder to this Hub repository")
    parser.add_argument("--dry-run", action="store_true", help="with --push-to-hub: print what would be pushed")
    parser.add_argument("--no-progress", action="store_true")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from transformers.utils.hub import convert_file_size_to_int

    args = parse_args(argv)
    input_dir, output = Path(args.input), Path(args.output)
    config_path = input_dir / "config.json"
    if not config_path.is_file():
        raise ValueError(f"No config.json in {input_dir}; expected the original VITA_ckpt folder.")
    original_config = json.loads(config_path.read_text())
    train_yaml, cmvn_file = None, None
    if args.audio_encoder:
        import yaml

        audio_dir = Path(args.audio_encoder)
        if (audio_dir / "train.yaml").is_file():
            train_yaml = yaml.safe_load((audio_dir / "train.yaml").read_text())
        if (audio_dir / "global_cmvn").is_file():
            cmvn_file = audio_dir / "global_cmvn"
    tokenizer, overrides = _load_tokenizer(input_dir)
    overrides |= {
        f"{kind}_token_id": getattr(args, f"{kind}_token_id")
        for kind in ("image", "video", "audio")
        if getattr(args, f"{kind}_token_id") is not None
    }
    config = build_vita_config(original_config, train_yaml, **overrides)
    dtype = _DTYPES[args.dtype]
    result = convert_checkpoint(
        input_dir,
        output,
        config,
        dtype,
        convert_file_size_to_int(args.max_shard_size),
        args.allow_missing,
        progress=not args.no_progress,
    )
    if result.missing_keys:
        print(f"warning: {len(result.missing_keys)} weight(s) missing, initialised on load: {result.missing_keys}")
    # The buffers are exactly what the trained encoder applied; the global_cmvn file is the fallback.
    mean, istd = result.cmvn_mean, result.cmvn_istd
    if cmvn_file is not None:
        file_mean, file_istd = load_global_cmvn(cmvn_file)
        if mean is None:
            mean, istd = file_mean, file_istd
        elif not torch.allclose(
            torch.tensor(file_mean, dtype=torch.float64), torch.tensor(mean, dtype=torch.float64), rtol=1e-4
        ):
            print(f"warning: {cmvn_file} differs from the CMVN buffers in the checkpoint; using the buffers")
    write_config_and_code(config, output, dtype)
    (output / "README.md").write_text(model_card(config, args.push_to_hub))
    if mean is not None:
        (output / "cmvn.json").write_text(json.dumps({"cmvn_mean": mean, "cmvn_istd": istd}) + "\n")
    print(_save_processor(output, tokenizer, mean, istd))
    print(f"converted {len(result.weight_map)} tensors into {output}")
    if args.push_to_hub:
        _push(output, args.push_to_hub, args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
