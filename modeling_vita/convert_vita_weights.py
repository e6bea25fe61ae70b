"""Streaming weight conversion of a released VITA-1.0 checkpoint into the native layout, shard by shard.

On-disk format: the transformers 5.x native layout, exactly the keys of `VitaForConditionalGeneration.state_dict()`,
with Mixtral's experts fused (`mlp.experts.gate_up_proj` [E, 2I, H] = cat(w1, w3) per expert, `mlp.experts.down_proj`
[E, H, I] = w2). This is what `save_pretrained(save_original_format=False)` writes; loading it needs no conversion
at load time, so the folder loads the same way in any transformers 5.x with or without this package installed. The
key mapping is `convert_vita_mapping.py`.

Streaming: all input headers are read first to plan the output (names, shapes, shard assignment, unknown and missing
keys) without touching tensor data; then input tensors are read one at a time and written straight into pre-planned
output shards, whose headers are known in advance. Only the fused experts of a layer are buffered, and only until their
last piece arrives.

Reading: safetensors files are read with safetensors' own validating reader (`safe_open`: header length, JSON,
dtypes, and data offsets that cover the data exactly, without overlaps or holes, checked against the file's size); it
maps the file, so each tensor is read through its own short-lived `safe_open`, and its pages leave the resident set
with it. A tensor whose name, shape or dtype differs from the plan (the file changed meanwhile) stops the conversion.
`.bin` shards are read with `torch.load(weights_only=True)` only: a pickle that needs any other code is refused, never
run. Every file must resolve inside the input folder (`convert_vita_release.inside_folder`: no symlink or index entry
leads out of it), every tensor name must be in one shard only and where the index puts it. Each refusal is a
`ValueError` naming the file and the value found and expected.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from tqdm.auto import tqdm

from .configuration_vita import VitaConfig
from .convert_vita_config import expected_shapes
from .convert_vita_mapping import _Assembler, _unknown_keys, _unknown_message
from .convert_vita_release import inside_folder

logger = logging.getLogger(__name__)


_ST_DTYPES = dict(zip("F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL".split(), (torch.float64, torch.float32, torch.float16,
    torch.bfloat16, torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)))  # fmt: skip
_ST_NAMES = {v: k for k, v in _ST_DTYPES.items()}


@dataclass(frozen=True)
class _Entry:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype


@dataclass
class _InputShard:
    path: Path
    entries: list[_Entry] = field(default_factory=list)
    nbytes: int = 0


def _index_files(folder: Path, index: Path) -> tuple[list[str], dict[str, str]]:
    """The shard names of `model.safetensors.index.json` in order, and its weight map."""
    try:
        content = json.loads(inside_folder(folder, index.name).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(
            f"{index} is not readable JSON ({error}); expected the index save_pretrained writes"
        ) from error
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        found = f"keys {sorted(content)}" if isinstance(content, dict) else f"a {type(content).__name__}"
        raise ValueError(f"{index} holds {found}; expected an object with a non-empty 'weight_map'")
    bad = [(k, v) for k, v in weight_map.items() if not isinstance(v, str) or not v][:3]
    if bad:
        raise ValueError(f"{index}: weight_map maps {bad}; expected tensor names mapped to shard file names")
    return list(dict.fromkeys(weight_map.values())), weight_map


def _st_header_hint(path: Path, size: int) -> str:
    """What the header promises against what the file holds, for the message of a file safetensors refused."""
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > min(size - 8, 100_000_000):  # safetensors' own limit on a header is 100 MB
                return f"; its header length field says {length:,} bytes, the whole file holds {size:,}"
            header = json.loads(f.read(length))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        if end != size - 8 - length:
            return f"; its header describes {end:,} bytes of tensor data, the file holds {size - 8 - length:,}"
    except Exception:  # only a hint: the refusal itself is safetensors'
        pass
    return ""


def _safetensors_entries(path: Path) -> list[_Entry]:
    """Names, shapes and dtypes in file order, from a header safetensors validated (no tensor data is read)."""
    size = path.stat().st_size
    try:
        with safe_open(str(path), framework="pt") as f:
            slices = [(name, f.get_slice(name)) for name in f.offset_keys()]
            raw = [(name, tuple(s.get_shape()), s.get_dtype()) for name, s in slices]
    except Exception as error:  # safetensors' SafetensorError (header, dtype, offsets, size) or an OSError
        raise ValueError(
            f"{path} ({size:,} bytes) is not a valid safetensors file: {error}{_st_header_hint(path, size)}; expected "
            "a complete safetensors file (download it again)"
        ) from error
    unknown = [(name, dtype) for name, _, dtype in raw if dtype not in _ST_DTYPES]
    if unknown:
        raise ValueError(
            f"{path}: tensor {unknown[0][0]} has dtype {unknown[0][1]}; expected one of {list(_ST_DTYPES)}"
        )
    return [_Entry(name, shape, _ST_DTYPES[dtype]) for name, shape, dtype in raw]


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    """A `.bin` state dict through `torch.load(weights_only=True)`: a pickle that needs other code is refused."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:  # UnpicklingError (refused code), RuntimeError (not a zip archive), EOFError ...
        reason = re.search(r"WeightsUnpickler error: (.+?)(?:\n\n|$)", str(error), re.S)
        found = reason.group(1).strip() if reason else str(error).splitlines()[0]
        raise ValueError(
            f"{path} cannot be read as weights only ({type(error).__name__}: {found}); expected a state dict of "
            "tensors written by torch.save (a pickle that would run other code is refused, never run)"
        ) from error
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        found = type(state).__name__
        if isinstance(state, dict):
            found = next(f"{k!r}: {type(v).__name__}" for k, v in state.items() if not torch.is_tensor(v))
        raise ValueError(f"{path} holds {found}; expected a state dict of tensor names to tensors")
    return state


def _input_shards(folder: Path) -> list[_InputShard]:
    index = folder / "model.safetensors.index.json"
    weight_map: dict[str, str] = {}
    if index.is_file() or index.is_symlink():
        files, weight_map = _index_files(folder, index)
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors")) or sorted(
            p.name for p in folder.glob("pytorch_model*.bin")
        )
    if not files:
        raise ValueError(
            f"No weights in {folder}: found {sorted(p.name for p in folder.iterdir())}; expected model*.safetensors "
            "(with model.safetensors.index.json) or pytorch_model*.bin. Point --input at the VITA_ckpt folder."
        )
    shards, holder = [], {}
    for name in files:
        path = inside_folder(folder, name, index if weight_map else None)
        if not path.is_file():
            raise ValueError(f"{index} names {name!r}, but {path} is not a file; expected the shard beside the index")
        if path.suffix == ".safetensors":
            entries = _safetensors_entries(path)
        elif path.suffix == ".bin":
            entries = [_Entry(k, tuple(v.shape), v.dtype) for k, v in _load_bin(path).items()]
        else:
            raise ValueError(f"{index} names {name!r}; expected .safetensors or .bin shard files")
        for entry in entries:
            if entry.name in holder:
                raise ValueError(f"{entry.name} is in both {holder[entry.name]} and {path}; expected it in one shard")
            holder[entry.name] = path
        shards.append(_InputShard(path, entries, path.stat().st_size))
    misplaced = [(k, v, holder.get(k)) for k, v in weight_map.items() if holder.get(k) != folder / v]
    if misplaced:
        name, file, found = misplaced[0]
        raise ValueError(
            f"{index} puts {name} in {file}, but {'no shard holds it' if found is None else f'{found} holds it'}; "
            f"expected the index to match the shards ({len(misplaced)} mismatch(es))"
        )
    return shards


def _checked(shard: _InputShard, entry: _Entry, tensor: torch.Tensor) -> torch.Tensor:
    if (tuple(tensor.shape), tensor.dtype) != (entry.shape, entry.dtype):
        raise ValueError(
            f"{shard.path}: {entry.name} is now {tensor.dtype} {tuple(tensor.shape)}, planned from its header as "
            f"{entry.dtype} {entry.shape}; expected the file unchanged while converting"
        )
    return tensor


def _read_tensors(shard: _InputShard) -> Iterator[tuple[str, torch.Tensor]]:
    """One tensor at a time. A safetensors tensor is a view of the mapped file; its own `safe_open` goes with it, so
    the pages read leave the resident set once the tensor is written (one `safe_open` for the shard would keep them
    all until its end)."""
    if shard.path.suffix != ".safetensors":
        state = _load_bin(shard.path)
        for entry in shard.entries:
            yield entry.name, _checked(shard, entry, state.pop(entry.name))
        return
    for entry in shard.entries:
        try:
            with safe_open(str(shard.path), framework="pt") as f:
                tensor = f.get_tensor(entry.name)
        except Exception as error:
            raise ValueError(
                f"{shard.path}: cannot read {entry.name} ({error}); expected the file unchanged"
            ) from error
        yield entry.name, _checked(shard, entry, tensor)


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
        refused = set(unknown)
        files = sorted({str(shard.path) for shard in shards for e in shard.entries if e.name in refused})
        raise ValueError(f"{_unknown_message(unknown)}\nThey are in {', '.join(files)}.")
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
            f"The checkpoint {shards[0].path.parent} does not match the config built from its config.json and tower "
            f"files ({len(problems)} problems):\n  "
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
            f"The checkpoint {input_dir} lacks {len(missing)} weight(s) of VitaForConditionalGeneration: "
            f"{missing[:20]}{' ...' if len(missing) > 20 else ''}. Pass --allow-missing to write the folder anyway "
            "(they would be freshly initialised on load)."
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
