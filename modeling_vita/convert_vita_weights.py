"""Streaming weight conversion of a released VITA-1.0 checkpoint into the native layout, shard by shard.

On-disk format: the transformers 5.x native layout, exactly the keys of `VitaForConditionalGeneration.state_dict()`,
with Mixtral's experts fused (`mlp.experts.gate_up_proj` [E, 2I, H] = cat(w1, w3) per expert, `mlp.experts.down_proj`
[E, H, I] = w2). This is what `save_pretrained(save_original_format=False)` writes; loading it needs no conversion
at load time, so the folder loads the same way in any transformers 5.x with or without this package installed. The
key mapping is `convert_vita_mapping.py`.

Streaming: all input headers are read first to plan the output (names, shapes, shard assignment, unknown and missing
keys) without touching tensor data; then input tensors are read one at a time (plain file reads, no mmap, so pages do
not linger in the resident set) and written straight into pre-planned output shards, whose headers are known in
advance. Only the fused experts of a layer are buffered, and only until their last piece arrives.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from .configuration_vita import VitaConfig
from .convert_vita_config import expected_shapes
from .convert_vita_mapping import _Assembler, _unknown_keys, _unknown_message

logger = logging.getLogger(__name__)


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


# The tensors with one row per token: they grow when the placeholders found no free row in the vocabulary.
VOCAB_TENSORS = ("model.language_model.embed_tokens.weight", "lm_head.weight")


def _grown(name: str, tensor: torch.Tensor, rows: int | None) -> torch.Tensor:
    """`tensor` with rows appended up to `rows`, each the mean of the old rows (a neutral start for new tokens)."""
    if rows is None or name not in VOCAB_TENSORS or tensor.shape[0] >= rows:
        return tensor
    mean = tensor.float().mean(dim=0, keepdim=True).to(tensor.dtype)
    return torch.cat([tensor, mean.expand(rows - tensor.shape[0], -1)])


def _plan(
    shards: list[_InputShard], config: VitaConfig, vocab_rows: int | None = None
) -> tuple[list[tuple[str, tuple[int, ...]]], list[str]]:
    """Output tensors in the order the stream completes them (the same assembler on meta tensors); raises on
    unknown keys, shape mismatches and incomplete experts; returns the missing keys."""
    entries = [entry for shard in shards for entry in shard.entries]
    unknown = _unknown_keys([e.name for e in entries], [e.shape for e in entries])
    if unknown:
        raise ValueError(_unknown_message(unknown))
    assembler, order = _Assembler(getattr(config.text_config, "num_local_experts", 0)), []
    for entry in entries:
        meta = torch.empty(entry.shape, dtype=entry.dtype, device="meta")
        order += [
            (name, tuple(_grown(name, tensor, vocab_rows).shape)) for name, tensor in assembler.feed(entry.name, meta)
        ]
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
    vocab_rows: int | None = None,
) -> ConversionResult:
    """Stream the weights of `input_dir` into safetensors shards in `output_dir` (weights and index only).

    `vocab_rows`: grow the embeddings and the LM head to that many rows (mean-initialised), see `_grown`.
    """
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    shards = _input_shards(Path(input_dir))
    order, missing = _plan(shards, config, vocab_rows)
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
                    writer.write(new_name, _grown(new_name, new_tensor, vocab_rows))
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


__all__ = ["ConversionResult", "convert_checkpoint"]
