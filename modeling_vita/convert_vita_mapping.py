"""The key mapping between the original VITA-1.0 checkpoint and `VitaForConditionalGeneration`, used both ways.

`TABLE` is one list of (original regex, new regex) pairs with the same named groups on both sides; `convert_key` and
`revert_key` apply it. A name ending in `@...` addresses a piece of a tensor: on the original side
`attn.qkv.weight@q` is the first third of InternViT's fused qkv; on the new side `experts.gate_up_proj@3.gate` is
expert 3's w1 rows. With piece names the table is a bijection; `_Assembler` (streaming) and `convert_state_dict` /
`revert_state_dict` (in memory) move the data. The original keys and shapes are those of the released checkpoint;
InternViT's keys are renamed to transformers' InternVL vision tower, whose qkv is split.
"""

from __future__ import annotations

import logging
import re

import torch

logger = logging.getLogger(__name__)

# Shorthand for the named groups of TABLE: `{name}` becomes `(?P<name>...)` in the regex and `\g<name>` in the
# replacement, so each row reads like the two key names it relates.
_GROUPS = {
    "layer": r"\d+",
    "expert": r"\d+",
    "param": r"weight|bias",
    "part": r"q|k|v",
    "fc": r"fc1|fc2",
    "conv": r"0|2",
    "block": r"self_attn\.linear_(?:q|k|v|out)\.(?:weight|bias)|self_attn\.linear_pos\.weight"
    r"|self_attn\.pos_bias_(?:u|v)|feed_forward\.w_(?:1|2)\.(?:weight|bias)|norm(?:1|2)\.(?:weight|bias)",
    "decoder": r"self_attn\.(?:q|k|v|o)_proj\.(?:weight|bias)|input_layernorm\.weight"
    r"|post_attention_layernorm\.weight|mlp\.(?:gate|up|down)_proj\.weight",
}
_OV, _NV = "model.vision_tower.vision_tower.", "model.vision_tower."
_OVL, _NVL = _OV + "encoder.layers.{layer}.", _NV + "encoder.layer.{layer}."
_OA, _NA = "model.audio_encoder.", "model.audio_tower."
_OL, _NL = "model.layers.{layer}.", "model.language_model.layers.{layer}."
_ROWS = [
    # InternViT -> transformers InternVLVisionModel (verified to give the original's outputs exactly).
    (_OV + "embeddings.class_embedding", _NV + "embeddings.cls_token"),
    (_OV + "embeddings.position_embedding", _NV + "embeddings.position_embeddings"),
    (_OV + "embeddings.patch_embedding.{param}", _NV + "embeddings.patch_embeddings.projection.{param}"),
    (_OVL + "attn.qkv.{param}@{part}", _NVL + "attention.{part}_proj.{param}"),
    (_OVL + "attn.proj.{param}", _NVL + "attention.projection_layer.{param}"),
    (_OVL + "mlp.{fc}.{param}", _NVL + "mlp.{fc}.{param}"),
    (_OVL + "norm1.{param}", _NVL + "layernorm_before.{param}"),
    (_OVL + "norm2.{param}", _NVL + "layernorm_after.{param}"),
    (_OVL + "ls1", _NVL + "lambda_1"),
    (_OVL + "ls2", _NVL + "lambda_2"),
    # mlp2x_gelu: Sequential index 1 is the GELU, so only 0 and 2 carry weights.
    ("model.mm_projector.0.{param}", "model.multi_modal_projector.linear_1.{param}"),
    ("model.mm_projector.2.{param}", "model.multi_modal_projector.linear_2.{param}"),
    # Whale audio encoder and its adapter (the original spells it `adpter`).
    (_OA + "encoder.enc.0.core.conv.{conv}.{param}", _NA + "subsampling.conv.{conv}.{param}"),
    (_OA + "encoder.enc.0.core.out.0.{param}", _NA + "subsampling.out.{param}"),
    (_OA + "encoder.enc.1.embed.0.{param}", _NA + "embedding.linear.{param}"),
    (_OA + "encoder.enc.1.embed.1.{param}", _NA + "embedding.layer_norm.{param}"),
    (_OA + "encoder.enc.1.encoders.{layer}.{block}", _NA + "layers.{layer}.{block}"),
    (_OA + "encoder.enc.1.after_norm.{param}", _NA + "layer_norm.{param}"),
    (_OA + "adpter.conv1d2.{param}", _NA + "adapter.conv1d.{param}"),
    (_OA + "adpter.bn2.{param}", _NA + "adapter.norm.{param}"),
    (_OA + "adpter.project.{param}", _NA + "adapter.linear.{param}"),
    # LLM: HF names under `model.` move to `model.language_model.`; the dense-MLP and q/k/v-bias names let
    # Llama/Qwen2 backbones through too. Experts are pieces of the fused 5.x tensors.
    ("model.embed_tokens.weight", "model.language_model.embed_tokens.weight"),
    ("model.norm.weight", "model.language_model.norm.weight"),
    ("lm_head.weight", "lm_head.weight"),
    (_OL + "{decoder}", _NL + "{decoder}"),
    (_OL + "block_sparse_moe.gate.weight", _NL + "mlp.gate.weight"),
    (_OL + "block_sparse_moe.experts.{expert}.w1.weight", _NL + "mlp.experts.gate_up_proj@{expert}.gate"),
    (_OL + "block_sparse_moe.experts.{expert}.w3.weight", _NL + "mlp.experts.gate_up_proj@{expert}.up"),
    (_OL + "block_sparse_moe.experts.{expert}.w2.weight", _NL + "mlp.experts.down_proj@{expert}"),
]
_FIELD = re.compile(r"\{(\w+)\}")


def _regex(row: str) -> str:
    pieces = _FIELD.split(row)  # literal, name, literal, name, ...
    return "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>{_GROUPS[p]})" for i, p in enumerate(pieces))


def _template(row: str) -> str:
    return _FIELD.sub(lambda match: rf"\g<{match.group(1)}>", row)


# The mapping, as (original regex, new regex) pairs with the same named groups on both sides.
TABLE: list[tuple[str, str]] = [(_regex(original), _regex(new)) for original, new in _ROWS]
_FORWARD = [(re.compile(_regex(original)), _template(new)) for original, new in _ROWS]
_BACKWARD = [(re.compile(_regex(new)), _template(original)) for original, new in _ROWS]

# CMVN moved into the feature extractor: these buffers are not model weights any more.
CMVN_KEYS = {
    "mean": "model.audio_encoder.encoder.global_cmvn.mean",
    "istd": "model.audio_encoder.encoder.global_cmvn.istd",
}
_QKV = re.compile(re.escape(_OV) + r"encoder\.layers\.\d+\.attn\.qkv\.(?:weight|bias)")
_FUSED = re.compile(r".*\.mlp\.experts\.(?:gate_up_proj|down_proj)")


def _rewrite(key: str, rules: list[tuple[re.Pattern, str]]) -> str | None:
    for pattern, template in rules:
        match = pattern.fullmatch(key)
        if match:
            return match.expand(template)
    return None


def convert_key(key: str) -> str | None:
    """Original name (or piece name such as `...attn.qkv.weight@q`) -> new name; None if the table lacks it."""
    return _rewrite(key, _FORWARD)


def revert_key(key: str) -> str | None:
    """New name (or piece name such as `...experts.gate_up_proj@3.gate`) -> original name; None if unknown."""
    return _rewrite(key, _BACKWARD)


def original_pieces(key: str, shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...], slice]]:
    """The pieces an original tensor is cut into before renaming: (piece name, shape, rows along dim 0)."""
    if _QKV.fullmatch(key):
        if shape[0] % 3:
            raise ValueError(
                f"{key} has {shape[0]} rows, expected a multiple of 3 (q, k, v stacked); is it InternViT?"
            )
        rows = shape[0] // 3
        return [(f"{key}@{part}", (rows, *shape[1:]), slice(i * rows, (i + 1) * rows)) for i, part in enumerate("qkv")]
    return [(key, tuple(shape), slice(None))]


def new_pieces(key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """The pieces a new tensor splits into for reverting: fused experts give one piece per expert (and half)."""
    if not _FUSED.fullmatch(key):
        return [(key, tensor)]
    if key.endswith("gate_up_proj"):
        half = tensor.shape[1] // 2
        return [
            (f"{key}@{e}.{name}", tensor[e, rows])
            for e in range(tensor.shape[0])
            for name, rows in (("gate", slice(0, half)), ("up", slice(half, None)))
        ]
    return [(f"{key}@{e}", tensor[e]) for e in range(tensor.shape[0])]


class _Assembler:
    """Turns original tensors into new ones: cuts InternViT's qkv, renames, and fills each fused expert tensor,
    handing it out once its last piece arrived. Fed meta tensors it plans the output without touching data."""

    def __init__(self, num_experts: int, dtype: torch.dtype | None = None):
        self.num_experts, self.dtype = num_experts, dtype
        self.fused: dict[str, list] = {}  # fused name -> [buffer, pieces received]
        self.cmvn: dict[str, torch.Tensor] = {}

    def feed(self, name: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        if name in CMVN_KEYS.values():
            self.cmvn[name.rsplit(".", 1)[1]] = tensor.clone()
            return []
        done = []
        for piece_name, _, rows in original_pieces(name, tuple(tensor.shape)):
            target, piece = convert_key(piece_name), tensor[rows]
            if target is None:
                raise ValueError(_unknown_message([name]))
            if "@" not in target:
                done.append((target, piece))
                continue
            base, _, selector = target.partition("@")
            expert, _, half = selector.partition(".")
            if base not in self.fused:
                rows_in = piece.shape[0]
                shape = (self.num_experts, 2 * rows_in, *piece.shape[1:]) if half else (self.num_experts, *piece.shape)
                buffer = torch.empty(shape, dtype=self.dtype or piece.dtype, device=piece.device)
                self.fused[base] = [buffer, 0]
            entry = self.fused[base]
            rows_in = piece.shape[0]
            slot = {"gate": slice(0, rows_in), "up": slice(rows_in, None), "": slice(None)}[half]
            entry[0][int(expert), slot] = piece
            entry[1] += 1
            if entry[1] == (2 if half else 1) * self.num_experts:
                done.append((base, self.fused.pop(base)[0]))
        return done

    def incomplete(self) -> list[str]:
        return [
            f"{k}: only {n} of {v.shape[0] * (2 if 'gate_up' in k else 1)} expert pieces"
            for k, (v, n) in sorted(self.fused.items())
        ]


def _unknown_keys(names: list[str], shapes: list[tuple[int, ...]]) -> list[str]:
    return [
        name
        for name, shape in zip(names, shapes)
        if name not in CMVN_KEYS.values() and convert_key(original_pieces(name, shape)[0][0]) is None
    ]


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], num_experts: int
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """In-memory conversion (small checkpoints, tests): returns (new state dict, CMVN buffers {mean, istd})."""
    unknown = _unknown_keys(list(state_dict), [tuple(t.shape) for t in state_dict.values()])
    if unknown:
        raise ValueError(_unknown_message(unknown))
    assembler, converted = _Assembler(num_experts), {}
    for key, tensor in state_dict.items():
        converted.update((name, value.clone()) for name, value in assembler.feed(key, tensor))
    if assembler.incomplete():
        raise ValueError(f"Experts missing: {assembler.incomplete()}; expected {num_experts} experts per layer.")
    return converted, assembler.cmvn


def revert_state_dict(
    state_dict: dict[str, torch.Tensor], cmvn: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """New state dict -> original layout (per-expert w1/w3/w2, fused InternViT qkv, optional CMVN buffers)."""
    original: dict[str, torch.Tensor] = {}
    qkv_parts: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state_dict.items():
        for piece_name, piece in new_pieces(key, tensor):
            source = revert_key(piece_name)
            if source is None:
                raise ValueError(f"{piece_name} has no original name; expected a key of VitaForConditionalGeneration.")
            if "@" in source:
                base, _, part = source.partition("@")
                qkv_parts.setdefault(base, {})[part] = piece
            else:
                original[source] = piece.clone()
    for base, parts in qkv_parts.items():
        original[base] = torch.cat([parts[p] for p in "qkv"], dim=0)
    for name, key in CMVN_KEYS.items():
        if cmvn and name in cmvn:
            original[key] = cmvn[name]
    return original


def _unknown_message(unknown: list[str]) -> str:
    listed = "\n  ".join(sorted(unknown)[:50]) + ("\n  ..." if len(unknown) > 50 else "")
    return (
        f"Refusing {len(unknown)} key(s) the conversion table does not know:\n  {listed}\nExpected the keys of "
        "an original VITA-1.0 checkpoint. If these are legitimate, add a row to TABLE in "
        "convert_vita_original_to_hf.py."
    )
