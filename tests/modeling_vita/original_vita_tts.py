"""VITA-1.5's speech decoder (`LLM2TTSCodecAR`) as the original computes it, in plain torch over its own key names.

Written from the released decoder's computation, files and key names, never with this project's model code, so that
comparing with the converted `VitaSpeechDecoder` is an independent check:
- `model.json` is `[idim, odim, {args}]`; `final.pt` a state dict under `model` (or plain) with `embedding.weight`,
  `layers_pre_nn.*`, `layers.*`, `layers_prefix.*` (built with `kv_cache_prefix_finetune`, never run), `norm.weight`,
  `out_fnn.{weight,bias}`; HF Llama layer names inside each layer;
- inference: the pre-network over the frames with positions 0..L-1 and a mask that lets every frame see every frame;
  the BOS embedding in front; the main layers over the prefix with NO mask (eager: every row sees every row),
  positions 0..L; then one query per step at position = cache length, SOS first; the penalty divides a token's logit
  once per occurrence in the window (SOS included); softmax, top-k, renormalise, `torch.multinomial`; stop at EOS
  without yielding it. Special ids other than EOS are yielded as the original would (it never excludes them);
- training: the whole batch at positions 0..S-1, prefix rows see the prefix, token rows the prefix and the tokens up
  to themselves, summed cross-entropy with PAD ignored.
Tiny default sizes: idim = attention dim 32, 4 heads, FFN 64, 2 blocks (1 pre-network layer), 32 codec tokens.
`write_original_tts_folder` writes a whole `vita_tts_ckpt/` as a release has it: this decoder and a tiny TiCodec of
`original_vita_codec.py` (the codec of `modeling_vita.testing_utils.TINY_CODEC_CONFIG`, in the original's names).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch.nn import functional as F

from .original_vita_codec import TINY_CODEC_JSON  # the tiny codec of the tiny releases, in its original form

TINY_TTS_ARGS = {
    "idim": 32,
    "odim": 32,
    "encoder_pre_norm_type": "ln",
    "encoder_drop_rate": 0.1,
    "encoder_criterion": "ce",
    "encoder_upsample_rate": 9,
    "encoder_output_dim": 32,
    "kv_cache_prefix_finetune": 1,
    "transformer_attention_dim": 32,
    "transformer_attention_heads": 4,
    "transformer_linear_units": 64,
    "transformer_num_blocks": 2,
    "transformer_dropout_rate": 0.1,
}
RMS_EPS = 1e-6  # LlamaConfig's default, which the original keeps
ROPE_THETA = 10000.0


def _layer_keys(prefix: str, width: int, ffn: int) -> dict[str, tuple[int, ...]]:
    shapes = {f"self_attn.{p}_proj.weight": (width, width) for p in "qkvo"}
    shapes |= {"mlp.gate_proj.weight": (ffn, width), "mlp.up_proj.weight": (ffn, width)}
    shapes |= {"mlp.down_proj.weight": (width, ffn), "input_layernorm.weight": (width,)}
    shapes |= {"post_attention_layernorm.weight": (width,)}
    return {prefix + name: shape for name, shape in shapes.items()}


def original_decoder_state_dict(seed: int = 0, args: Mapping | None = None) -> dict[str, torch.Tensor]:
    """Random weights under the original key names. The output biases of BOS, SOS and PAD are low, as training
    leaves them (they are never targets), so that greedy decoding of random weights stays on codec tokens and EOS."""
    args = {**TINY_TTS_ARGS, **(args or {})}
    gen = torch.Generator().manual_seed(seed)
    width, ffn, blocks, odim = (args[k] for k in ("transformer_attention_dim", "transformer_linear_units",
                                                  "transformer_num_blocks", "odim"))  # fmt: skip
    shapes = {"embedding.weight": (odim + 4, args["idim"])}
    for i in range(blocks // 2):
        shapes |= _layer_keys(f"layers_pre_nn.{i}.", width, ffn)
    for i in range(blocks):
        shapes |= _layer_keys(f"layers.{i}.", width, ffn)
    if args["kv_cache_prefix_finetune"]:
        for i in range(blocks):
            shapes |= _layer_keys(f"layers_prefix.{i}.", width, ffn)
    shapes |= {"norm.weight": (width,), "out_fnn.weight": (odim + 4, args["encoder_output_dim"])}
    shapes |= {"out_fnn.bias": (odim + 4,)}
    sd = {}
    for name, shape in shapes.items():
        if name.endswith("norm.weight") or name.endswith("layernorm.weight"):
            sd[name] = 1.0 + 0.1 * torch.randn(shape, generator=gen)
        else:
            sd[name] = 0.3 * torch.randn(shape, generator=gen)
    sd["out_fnn.bias"][[odim, odim + 1, odim + 3]] = -8.0
    sd["embedding.weight"][odim + 3] = 0.0  # padding_idx row
    return sd


def write_original_decoder_folder(folder: Path, sd: Mapping[str, torch.Tensor], args: Mapping | None = None,
                                  wrap: bool = True) -> Path:  # fmt: skip
    """`folder/model.json` (`[idim, odim, {args}]`) and `folder/final.pt` (`{'model': sd}`, or plain)."""
    args = {**TINY_TTS_ARGS, **(args or {})}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.json").write_text(json.dumps([args["idim"], args["odim"], args]))
    torch.save({"model": dict(sd)} if wrap else dict(sd), folder / "final.pt")
    return folder


def write_original_tts_folder(release: Path, seed: int = 0) -> dict:
    """`release/vita_tts_ckpt/{decoder,codec}/{model.json,final.pt}`; returns {"folder", "decoder_sd", "codec"}
    where `codec` is the original codec module (`original_vita_codec.OriginalVQVAE`) whose weights were saved."""
    from .original_vita_codec import OriginalVQVAE

    folder = release / "vita_tts_ckpt"
    decoder_sd = original_decoder_state_dict(seed)
    write_original_decoder_folder(folder / "decoder", decoder_sd)
    torch.manual_seed(seed)
    codec = OriginalVQVAE(TINY_CODEC_JSON).eval()
    (folder / "codec").mkdir(parents=True, exist_ok=True)
    (folder / "codec" / "model.json").write_text(json.dumps(TINY_CODEC_JSON))
    torch.save(codec.release_state_dict(), folder / "codec" / "final.pt")
    return {"folder": folder, "decoder_sd": decoder_sd, "codec": codec}


# ------------------------------------------------------------------------------------------------------- the layers
def _rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + RMS_EPS))


def _rotate(x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """HF's default rotary embedding of x (batch, heads, seq, hd) at positions (batch, seq)."""
    hd = x.shape[-1]
    inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd)
    angles = positions[..., None].float() * inv_freq
    cos, sin = torch.cat([angles, angles], -1).cos()[:, None], torch.cat([angles, angles], -1).sin()[:, None]
    half = hd // 2
    return x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin


def _layer(sd, p: str, x: torch.Tensor, positions: torch.Tensor, heads: int, mask=None, cache=None) -> torch.Tensor:
    """One HF Llama decoder layer, eager attention; `mask` is additive (batch, 1, q, k) or None (all visible);
    `cache` a [keys, values] list extended in place."""
    batch, seq, width = x.shape
    hd = width // heads
    h = _rms(x, sd[p + "input_layernorm.weight"])

    def split(name: str) -> torch.Tensor:
        return (h @ sd[f"{p}self_attn.{name}_proj.weight"].T).view(batch, seq, heads, hd).transpose(1, 2)

    q, k, v = _rotate(split("q"), positions), _rotate(split("k"), positions), split("v")
    if cache is not None:
        if cache:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
        cache[:] = [k, v]
    scores = q @ k.transpose(2, 3) * hd**-0.5
    if mask is not None:
        scores = scores + mask
    attention = torch.softmax(scores, -1, dtype=torch.float32) @ v
    x = x + attention.transpose(1, 2).reshape(batch, seq, width) @ sd[p + "self_attn.o_proj.weight"].T
    h = _rms(x, sd[p + "post_attention_layernorm.weight"])
    gate, up = h @ sd[p + "mlp.gate_proj.weight"].T, h @ sd[p + "mlp.up_proj.weight"].T
    return x + (F.silu(gate) * up) @ sd[p + "mlp.down_proj.weight"].T


def _count(sd, prefix: str) -> int:
    return len({k.split(".")[1] for k in sd if k.startswith(prefix)})


def _mask(visible: torch.Tensor) -> torch.Tensor:
    return (~visible[:, None]).float() * torch.finfo(torch.float32).min


def original_pre_nn(sd, x: torch.Tensor, lengths: list[int], heads: int) -> torch.Tensor:
    batch, length, _ = x.shape
    valid = torch.zeros(batch, length, length, dtype=torch.bool)
    for i, n in enumerate(lengths):
        valid[i, :n, :n] = True
    positions = torch.arange(length)[None].expand(batch, -1)
    for i in range(_count(sd, "layers_pre_nn.")):
        x = _layer(sd, f"layers_pre_nn.{i}.", x, positions, heads, _mask(valid))
    return x


def _bos_prefix(sd, frames: torch.Tensor, lengths: list[int], heads: int) -> torch.Tensor:
    odim = sd["embedding.weight"].shape[0] - 4
    bos = sd["embedding.weight"][odim].expand(frames.shape[0], 1, -1)
    return torch.cat([bos, original_pre_nn(sd, frames, lengths, heads)], 1)


# ------------------------------------------------------------------------------------------------------ inference
def original_infer(
    sd: Mapping[str, torch.Tensor],
    frames: torch.Tensor,
    top_k: int,
    penalty_window_size: int = -1,
    penalty: float = 1.1,
    max_tokens: int = 1000,
    heads: int = TINY_TTS_ARGS["transformer_attention_heads"],
    generator: torch.Generator | None = None,
    step_logits: list | None = None,
) -> Iterator[int]:
    """`LLM2TTSCodecAR.infer` on frames (1, L, idim); `step_logits` collects each step's logits after the penalty."""
    odim = sd["embedding.weight"].shape[0] - 4
    blocks = _count(sd, "layers.")
    prefix = _bos_prefix(sd, frames, [frames.shape[1]], heads)
    caches = [[] for _ in range(blocks)]
    h, positions = prefix, torch.arange(prefix.shape[1])[None]
    for i in range(blocks):
        h = _layer(sd, f"layers.{i}.", h, positions, heads, None, caches[i])  # no mask: bidirectional
    generated = [torch.tensor(odim + 1)]
    current = odim + 1
    for _ in range(max_tokens):
        h = sd["embedding.weight"][current][None, None]
        position = torch.tensor([[caches[0][0].shape[2]]])
        for i in range(blocks):
            h = _layer(sd, f"layers.{i}.", h, position, heads, None, caches[i])
        logits = (_rms(h, sd["norm.weight"]) @ sd["out_fnn.weight"].T + sd["out_fnn.bias"])[0, 0]
        if penalty_window_size > 0:
            for token in set(generated[-penalty_window_size:]):  # 0-d tensors: every occurrence is its own item
                logits[token] /= penalty
        if step_logits is not None:
            step_logits.append(logits.clone())
        probs = torch.softmax(logits, -1)
        top_probs, top_ids = torch.topk(probs, top_k)
        probs = torch.zeros_like(probs).scatter_(0, top_ids, top_probs)
        probs = probs / probs.sum()
        token = torch.multinomial(probs, 1, generator=generator)[0]
        generated.append(token)
        current = int(token)
        if current == odim + 2:
            return
        yield current


# ------------------------------------------------------------------------------------------------------- training
def original_training_loss(
    sd: Mapping[str, torch.Tensor],
    x: torch.Tensor,
    x_lens: list[int],
    y: torch.Tensor,
    y_lens: list[int],
    heads: int = TINY_TTS_ARGS["transformer_attention_heads"],
) -> tuple[torch.Tensor, torch.Tensor]:
    """`LLM2TTSCodecAR.forward` without the prefix fine-tuning branch: (summed loss, logits of the token rows)."""
    odim = sd["embedding.weight"].shape[0] - 4
    batch, max_len = y.shape
    prefix = _bos_prefix(sd, x, x_lens, heads)
    width = prefix.shape[1]
    y = y.clone()
    inputs = torch.cat([torch.full((batch, 1), odim + 1), y], 1)
    targets = torch.cat([y, torch.full((batch, 1), odim + 3)], 1)
    for i, n in enumerate(y_lens):
        targets[i, n] = odim + 2
        inputs[i, n + 1 :] = odim + 3
        targets[i, n + 1 :] = odim + 3
    hidden = torch.cat([prefix, sd["embedding.weight"][inputs]], 1)
    total = hidden.shape[1]
    visible = torch.zeros(batch, total, total, dtype=torch.bool)
    for i, (n_x, n_y) in enumerate(zip(x_lens, y_lens)):
        visible[i, : n_x + 1, : n_x + 1] = True
        visible[i, width : width + n_y + 1, : n_x + 1] = True
        visible[i, width : width + n_y + 1, width : width + n_y + 1] = torch.ones(n_y + 1, n_y + 1).tril().bool()
    positions = torch.arange(total)[None].expand(batch, -1)
    for i in range(_count(sd, "layers.")):
        hidden = _layer(sd, f"layers.{i}.", hidden, positions, heads, _mask(visible))
    logits = _rms(hidden[:, width:], sd["norm.weight"]) @ sd["out_fnn.weight"].T + sd["out_fnn.bias"]
    loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=odim + 3, reduction="sum")
    return loss, logits
