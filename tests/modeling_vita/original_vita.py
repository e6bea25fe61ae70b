"""A tiny VITA-1.0 checkpoint in the ORIGINAL layout, and the original forward pass re-implemented on its state dict.

Both are written from the released VITA-1.0 code's computation, keys and shapes (and its audio-encoder folder) with
plain torch ops, and never call this project's model code, so that
comparing them with `VitaForConditionalGeneration` on converted weights is an independent check of the conversion.
Dimensions default to the tiny test ones: InternViT 32 wide, 2 layers, 56 px tiles of 14 px patches; whale encoder 32
wide, 2 layers, 4 heads, FFN 64 on 80 mel bins; a Mixtral of width 64, 2 layers, 4 experts, vocabulary 1024. `dims`
overrides them per tower (`{"vision": {"hidden": 48, "heads": 3}, "audio": {...}, "llm": {...}}`); the forward pass
reads every size from the state dict and takes the head counts (not in the shapes) from the same `dims`. The tower
folders (`original_towers.py`) are written beside the checkpoint folder when `tower_paths` is given.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.nn import functional as F

from . import original_towers
from .original_towers import count_layers, write_vision_tower_folder

VISION = {"hidden": 32, "layers": 2, "heads": 4, "ffn": 64, "image": 56, "patch": 14}
AUDIO = {"hidden": 32, "layers": 2, "heads": 4, "ffn": 64, "mels": 80, "kernel": 5}
LLM = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 64, "experts": 4, "top_k": 2, "vocab": 1024}
ROPE_THETA = 500000.0  # not the class default, so a converter that ignores config.json is caught
IMAGE_TOKEN_INDEX, AUDIO_TOKEN_INDEX = -200, -500  # the original's in-sequence placeholders
VISION_FOLDER = "InternViT-300M-448px"
AUDIO_FOLDER = "audio-encoder-2wh_zh_en_audioset_Mixtral-8x7B_New-base-tunning"
AUTHOR_ROOT = "/mnt/authors"  # where absolute tower paths point: the training machine, absent here
Rand = Callable[..., torch.Tensor]


def tiny_dims(dims: Mapping[str, Mapping] | None = None, llm: Mapping | None = None) -> dict[str, dict]:
    """VISION / AUDIO / LLM (or `llm` as the LLM defaults) with the per-tower overrides of `dims`."""
    dims = dict(dims or {})
    defaults = {"vision": VISION, "audio": AUDIO, "llm": LLM if llm is None else llm}
    if set(dims) - set(defaults):
        raise ValueError(f"dims has {sorted(set(dims) - set(defaults))}; expected some of {sorted(defaults)}")
    out = {}
    for tower, base in defaults.items():
        unknown = set(dims.get(tower, {})) - set(base)
        if unknown:
            raise ValueError(f"dims[{tower!r}] has unknown {sorted(unknown)}; known: {sorted(base)}")
        out[tower] = {**base, **dims.get(tower, {})}
        if out[tower]["hidden"] % out[tower]["heads"]:
            raise ValueError(
                f"{tower}: hidden {out[tower]['hidden']} is not a multiple of {out[tower]['heads']} heads"
            )
    return out


def random_source(seed: int) -> Rand:
    """`rand(*shape, std, mean)`: normal tensors from one seeded generator, drawn in call order."""
    gen = torch.Generator().manual_seed(seed)

    def rand(*shape: int, std: float = 0.1, mean: float = 0.0) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std + mean

    return rand


def tower_state_dict(rand: Rand, dims: Mapping[str, Mapping]) -> dict[str, torch.Tensor]:
    """InternViT, projector, whale encoder and adapter under the original key names."""
    vision, audio, h = dims["vision"], dims["audio"], dims["llm"]["hidden"]

    sd: dict[str, torch.Tensor] = {}
    v, vp = vision["hidden"], original_towers.VISION_PREFIX
    patches = (vision["image"] // vision["patch"]) ** 2
    sd[vp + "embeddings.class_embedding"] = rand(1, 1, v, std=0.5)
    sd[vp + "embeddings.patch_embedding.weight"] = rand(v, 3, vision["patch"], vision["patch"], std=0.05)
    sd[vp + "embeddings.patch_embedding.bias"] = rand(v)
    sd[vp + "embeddings.position_embedding"] = rand(1, patches + 1, v, std=0.5)
    for i in range(vision["layers"]):
        p = f"{vp}encoder.layers.{i}."
        sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"] = rand(3 * v, v, std=0.2), rand(3 * v)
        sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = rand(v, v, std=0.2), rand(v)
        sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = rand(vision["ffn"], v, std=0.2), rand(vision["ffn"])
        sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = rand(v, vision["ffn"], std=0.2), rand(v)
        for norm in ("norm1", "norm2"):
            sd[f"{p}{norm}.weight"], sd[f"{p}{norm}.bias"] = rand(v, mean=1.0), rand(v)
        sd[p + "ls1"], sd[p + "ls2"] = rand(v, std=0.3, mean=0.5), rand(v, std=0.3, mean=0.5)
    sd["model.mm_projector.0.weight"], sd["model.mm_projector.0.bias"] = rand(h, 4 * v, std=0.2), rand(h)
    sd["model.mm_projector.2.weight"], sd["model.mm_projector.2.bias"] = rand(h, h, std=0.2), rand(h)

    a, ap = audio["hidden"], original_towers.AUDIO_PREFIX
    sd[ap + "encoder.global_cmvn.mean"] = rand(audio["mels"], std=1.0, mean=14.0)
    sd[ap + "encoder.global_cmvn.istd"] = rand(audio["mels"], std=0.02, mean=0.3)
    bins = ((audio["mels"] - 1) // 2 - 1) // 2
    sd[ap + "encoder.enc.0.core.conv.0.weight"], sd[ap + "encoder.enc.0.core.conv.0.bias"] = rand(a, 1, 3, 3), rand(a)
    sd[ap + "encoder.enc.0.core.conv.2.weight"] = rand(a, a, 3, 3)
    sd[ap + "encoder.enc.0.core.conv.2.bias"] = rand(a)
    sd[ap + "encoder.enc.0.core.out.0.weight"], sd[ap + "encoder.enc.0.core.out.0.bias"] = rand(a, a * bins), rand(a)
    sd[ap + "encoder.enc.1.embed.0.weight"], sd[ap + "encoder.enc.1.embed.0.bias"] = rand(a, a, std=0.2), rand(a)
    sd[ap + "encoder.enc.1.embed.1.weight"], sd[ap + "encoder.enc.1.embed.1.bias"] = rand(a, mean=1.0), rand(a)
    head_dim = a // audio["heads"]
    for i in range(audio["layers"]):
        p = f"{ap}encoder.enc.1.encoders.{i}."
        for name in ("linear_q", "linear_k", "linear_v", "linear_out"):
            sd[f"{p}self_attn.{name}.weight"], sd[f"{p}self_attn.{name}.bias"] = rand(a, a, std=0.2), rand(a)
        sd[p + "self_attn.linear_pos.weight"] = rand(a, a, std=0.2)
        sd[p + "self_attn.pos_bias_u"] = rand(audio["heads"], head_dim, std=0.3)
        sd[p + "self_attn.pos_bias_v"] = rand(audio["heads"], head_dim, std=0.3)
        sd[p + "feed_forward.w_1.weight"], sd[p + "feed_forward.w_1.bias"] = rand(audio["ffn"], a), rand(audio["ffn"])
        sd[p + "feed_forward.w_2.weight"], sd[p + "feed_forward.w_2.bias"] = rand(a, audio["ffn"]), rand(a)
        for norm in ("norm1", "norm2"):
            sd[f"{p}{norm}.weight"], sd[f"{p}{norm}.bias"] = rand(a, mean=1.0), rand(a)
    sd[ap + "encoder.enc.1.after_norm.weight"], sd[ap + "encoder.enc.1.after_norm.bias"] = rand(a, mean=1.0), rand(a)
    sd[ap + "adpter.conv1d2.weight"], sd[ap + "adpter.conv1d2.bias"] = rand(2 * a, a, audio["kernel"]), rand(2 * a)
    sd[ap + "adpter.bn2.weight"], sd[ap + "adpter.bn2.bias"] = rand(2 * a, mean=1.0), rand(2 * a)
    sd[ap + "adpter.project.weight"], sd[ap + "adpter.project.bias"] = rand(h, 2 * a, std=0.2), rand(h)
    return sd


def original_state_dict(seed: int = 0, dims: Mapping[str, Mapping] | None = None) -> dict[str, torch.Tensor]:
    """Random weights under the original key names and shapes, tiny dimensions."""
    d = tiny_dims(dims)
    if 4 * d["audio"]["hidden"] < d["llm"]["hidden"]:  # 1.0's `CNNSubsampling` then builds a second conv
        raise ValueError("VITA-1.0's adapter has one conv only while 4 x audio hidden >= LLM hidden")
    rand, llm = random_source(seed), d["llm"]
    sd = tower_state_dict(rand, d)
    h = llm["hidden"]
    head = h // llm["heads"]
    sd["model.embed_tokens.weight"] = rand(llm["vocab"], h, std=0.5)
    for i in range(llm["layers"]):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"] = rand(llm["heads"] * head, h, std=0.15)
        sd[p + "self_attn.k_proj.weight"] = rand(llm["kv_heads"] * head, h, std=0.15)
        sd[p + "self_attn.v_proj.weight"] = rand(llm["kv_heads"] * head, h, std=0.15)
        sd[p + "self_attn.o_proj.weight"] = rand(h, llm["heads"] * head, std=0.15)
        sd[p + "block_sparse_moe.gate.weight"] = rand(llm["experts"], h, std=0.5)
        for e in range(llm["experts"]):
            q = f"{p}block_sparse_moe.experts.{e}."
            sd[q + "w1.weight"], sd[q + "w3.weight"] = rand(llm["ffn"], h, std=0.15), rand(llm["ffn"], h, std=0.15)
            sd[q + "w2.weight"] = rand(h, llm["ffn"], std=0.15)
        sd[p + "input_layernorm.weight"] = rand(h, mean=1.0)
        sd[p + "post_attention_layernorm.weight"] = rand(h, mean=1.0)
    sd["model.norm.weight"] = rand(h, mean=1.0)
    sd["lm_head.weight"] = rand(llm["vocab"], h, std=0.2)
    return sd


def tower_names(tower_paths: str, vision_folder: str, audio_folder: str) -> tuple[str, str]:
    """`mm_vision_tower` / `mm_audio_encoder` values: the bare folder names ("relative", resolved beside the checkpoint
    folder) or the authors' absolute paths with the same basenames ("absolute")."""
    if tower_paths == "relative":
        return vision_folder, audio_folder
    if tower_paths == "absolute":
        return f"{AUTHOR_ROOT}/{vision_folder}", f"{AUTHOR_ROOT}/{audio_folder}"
    raise ValueError(f"tower_paths is {tower_paths!r}; expected 'relative' or 'absolute'")


def original_config(dims: Mapping[str, Mapping] | None = None, tower_paths: str | None = None) -> dict:
    """config.json as the original training writes it (Mixtral fields + LLaVA-style mm fields), tiny dims. The real
    file has no `vision_config` (the tower's config lives at `mm_vision_tower`): so with `tower_paths` ("relative" or
    "absolute", see `tower_names`); without it the tiny file carries `vision_config` and names nonexistent towers."""
    d = tiny_dims(dims)
    llm, vision = d["llm"], d["vision"]
    config = {
        "architectures": ["VITAMixtralForCausalLM"],
        "model_type": "vita-mixtral",
        "vocab_size": llm["vocab"],
        "hidden_size": llm["hidden"],
        "intermediate_size": llm["ffn"],
        "num_hidden_layers": llm["layers"],
        "num_attention_heads": llm["heads"],
        "num_key_value_heads": llm["kv_heads"],
        "num_local_experts": llm["experts"],
        "num_experts_per_tok": llm["top_k"],
        "hidden_act": "silu",
        "rms_norm_eps": 1e-5,
        "rope_theta": ROPE_THETA,
        "max_position_embeddings": 2048,
        "sliding_window": None,
        "router_aux_loss_coef": 0.02,
        "output_router_logits": False,
        "tie_word_embeddings": False,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "torch_dtype": "float32",
        "use_cache": True,
        "transformers_version": "4.41.1",
        "mm_vision_tower": "/nonexistent/InternViT-300M-448px",
        "mm_audio_encoder": "/nonexistent/audio-encoder",
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": 4 * vision["hidden"],
        "use_mm_proj": True,
        "image_aspect_ratio": "square",
        "tokenizer_padding_side": "right",
        "tokenizer_model_max_length": 2048,
        "freeze_audio_encoder": True,
        "freeze_audio_encoder_adapter": False,
    }
    if tower_paths is not None:
        config["mm_vision_tower"], config["mm_audio_encoder"] = tower_names(tower_paths, VISION_FOLDER, AUDIO_FOLDER)
        return config
    config["vision_config"] = {
        "hidden_size": vision["hidden"],
        "num_hidden_layers": vision["layers"],
        "num_attention_heads": vision["heads"],
        "intermediate_size": vision["ffn"],
        "image_size": vision["image"],
        "patch_size": vision["patch"],
        "layer_norm_eps": 1e-6,
        "hidden_act": "gelu",
        "qkv_bias": True,
        "qk_normalization": False,
    }
    return config


def write_safetensors_shards(folder: Path, state: Mapping[str, torch.Tensor], num_shards: int) -> None:
    """`model-0000i-of-0000n.safetensors` + `model.safetensors.index.json`, as `save_pretrained` of 4.4x writes."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state)
    per_shard = math.ceil(len(keys) / num_shards)
    weight_map = {}
    for index in range(num_shards):
        name = f"model-{index + 1:05d}-of-{num_shards:05d}.safetensors"
        chunk = {k: state[k].contiguous() for k in keys[index * per_shard : (index + 1) * per_shard]}
        save_file(chunk, folder / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(chunk, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_original_checkpoint(
    folder: Path,
    state_dict: dict[str, torch.Tensor],
    num_shards: int = 2,
    extra: dict | None = None,
    *,
    dims: Mapping[str, Mapping] | None = None,
    tower_paths: str | None = None,
) -> dict[str, Path]:
    """Sharded safetensors + index + config.json, as `save_pretrained` of 4.41 wrote them. With `tower_paths`
    ("relative" / "absolute") config.json names the tower folders, and both are written beside `folder`:
    `folder.parent / VISION_FOLDER` (InternViT) and `folder.parent / AUDIO_FOLDER` (whale). Returns the paths."""
    write_safetensors_shards(folder, {**state_dict, **(extra or {})}, num_shards)
    (folder / "config.json").write_text(json.dumps(original_config(dims, tower_paths), indent=2))
    paths = {"checkpoint": folder}
    if tower_paths is not None:
        heads = tiny_dims(dims)["vision"]["heads"]
        paths["vision_tower"] = write_vision_tower_folder(folder.parent / VISION_FOLDER, state_dict, heads)
        paths["audio_encoder"] = write_audio_encoder_folder(folder.parent / AUDIO_FOLDER, state_dict)
    return paths


def write_audio_encoder_folder(folder: Path, state_dict: dict[str, torch.Tensor], frame_num: int = 1000) -> Path:
    """The whale folder of `original_towers.write_audio_encoder_folder` (`train.yaml` in the original schema,
    `global_cmvn`, `final.pt` with an older adapter), its LLM path the 1.0 authors' Mixtral."""
    return original_towers.write_audio_encoder_folder(
        folder, state_dict, frame_num, llm_path=f"{AUTHOR_ROOT}/Mixtral-8x7B_New"
    )


# ------------------------------------------------------------------------------------------ the original forward pass
def internvit_tiles(
    sd: Mapping[str, torch.Tensor], pixel_values: torch.Tensor, heads: int = VISION["heads"]
) -> torch.Tensor:
    """InternViT last layer, CLS dropped, x0.5, 2x2 pixel shuffle, mlp2x_gelu: (tiles, tokens, LLM width). Sizes
    come from the tensors; the head count is passed."""
    p = original_towers.VISION_PREFIX
    patch = sd[p + "embeddings.patch_embedding.weight"]
    x = F.conv2d(pixel_values, patch, sd[p + "embeddings.patch_embedding.bias"], stride=patch.shape[-1])
    n, c, gh, gw = x.shape
    x = torch.cat([sd[p + "embeddings.class_embedding"].expand(n, 1, c), x.flatten(2).transpose(1, 2)], dim=1)
    x = x + sd[p + "embeddings.position_embedding"]  # same grid as trained: no interpolation
    hd = c // heads
    for i in range(count_layers(sd, p + "encoder.layers.")):
        q = f"{p}encoder.layers.{i}."
        y = F.layer_norm(x, (c,), sd[q + "norm1.weight"], sd[q + "norm1.bias"], eps=1e-6)
        qkv = F.linear(y, sd[q + "attn.qkv.weight"], sd[q + "attn.qkv.bias"]).reshape(n, -1, 3, heads, hd)
        qh, kh, vh = qkv.permute(2, 0, 3, 1, 4)
        attn = ((qh @ kh.transpose(-1, -2)) * hd**-0.5).softmax(-1) @ vh
        y = F.linear(attn.transpose(1, 2).reshape(n, -1, c), sd[q + "attn.proj.weight"], sd[q + "attn.proj.bias"])
        x = x + sd[q + "ls1"] * y
        y = F.layer_norm(x, (c,), sd[q + "norm2.weight"], sd[q + "norm2.bias"], eps=1e-6)
        y = F.linear(
            F.gelu(F.linear(y, sd[q + "mlp.fc1.weight"], sd[q + "mlp.fc1.bias"])),
            sd[q + "mlp.fc2.weight"],
            sd[q + "mlp.fc2.bias"],
        )
        x = x + sd[q + "ls2"] * y
    grid = x[:, 1:].reshape(n, gh, gw, c) * 0.5
    # Verified order (reference 1.3): token (a, b) holds patches (2a+dy, 2b+dx) at channels (2*dy + dx) * c.
    shuffled = torch.empty(n, gh // 2, gw // 2, 4 * c)
    for dy in range(2):
        for dx in range(2):
            block = 2 * dy + dx
            shuffled[..., block * c : (block + 1) * c] = grid[:, dy::2, dx::2, :]
    y = F.linear(shuffled.reshape(n, -1, 4 * c), sd["model.mm_projector.0.weight"], sd["model.mm_projector.0.bias"])
    return F.linear(F.gelu(y), sd["model.mm_projector.2.weight"], sd["model.mm_projector.2.bias"])


def whale_audio(sd: Mapping[str, torch.Tensor], fbank: torch.Tensor) -> torch.Tensor:
    """Whale encoder + CNN adapter on one clip of RAW fbank frames (T, 80); CMVN is applied here, as the original
    encoder does. Returns (tokens, LLM width). Every size, the head count included, comes from the tensors."""
    p = original_towers.AUDIO_PREFIX
    x = (fbank - sd[p + "encoder.global_cmvn.mean"]) * sd[p + "encoder.global_cmvn.istd"]
    x = x[None, None]  # (batch, channel, time, mel)
    x = F.relu(
        F.conv2d(x, sd[p + "encoder.enc.0.core.conv.0.weight"], sd[p + "encoder.enc.0.core.conv.0.bias"], stride=2)
    )
    x = F.relu(
        F.conv2d(x, sd[p + "encoder.enc.0.core.conv.2.weight"], sd[p + "encoder.enc.0.core.conv.2.bias"], stride=2)
    )
    b, c, t, f = x.shape
    x = F.linear(
        x.transpose(1, 2).reshape(b, t, c * f),
        sd[p + "encoder.enc.0.core.out.0.weight"],
        sd[p + "encoder.enc.0.core.out.0.bias"],
    )
    e = p + "encoder.enc.1."
    x = F.linear(x, sd[e + "embed.0.weight"], sd[e + "embed.0.bias"])
    x = F.relu(F.layer_norm(x, (c,), sd[e + "embed.1.weight"], sd[e + "embed.1.bias"], eps=1e-5))
    x = x * math.sqrt(c)
    position = torch.arange(t, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, c, 2, dtype=torch.float32) * -(math.log(10000.0) / c))
    pe = torch.zeros(t, c)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(position * div), torch.cos(position * div)
    heads = sd[e + "encoders.0.self_attn.pos_bias_u"].shape[0]
    hd = c // heads
    for i in range(count_layers(sd, e + "encoders.")):
        q = f"{e}encoders.{i}."
        y = F.layer_norm(x, (c,), sd[q + "norm1.weight"], sd[q + "norm1.bias"], eps=1e-5)

        def proj(name, inp, q=q):
            return F.linear(inp, sd[f"{q}self_attn.{name}.weight"], sd[f"{q}self_attn.{name}.bias"])

        qh = proj("linear_q", y).view(b, t, heads, hd)
        kh = proj("linear_k", y).view(b, t, heads, hd).transpose(1, 2)
        vh = proj("linear_v", y).view(b, t, heads, hd).transpose(1, 2)
        ph = F.linear(pe, sd[q + "self_attn.linear_pos.weight"]).view(1, t, heads, hd).transpose(1, 2)
        content = (qh + sd[q + "self_attn.pos_bias_u"]).transpose(1, 2) @ kh.transpose(-1, -2)
        positional = (qh + sd[q + "self_attn.pos_bias_v"]).transpose(1, 2) @ ph.transpose(-1, -2)  # no rel_shift
        attn = ((content + positional) / math.sqrt(hd)).softmax(-1) @ vh
        x = x + proj("linear_out", attn.transpose(1, 2).reshape(b, t, c))
        y = F.layer_norm(x, (c,), sd[q + "norm2.weight"], sd[q + "norm2.bias"], eps=1e-5)
        y = F.relu(F.linear(y, sd[q + "feed_forward.w_1.weight"], sd[q + "feed_forward.w_1.bias"]))
        x = x + F.linear(y, sd[q + "feed_forward.w_2.weight"], sd[q + "feed_forward.w_2.bias"])
    x = F.layer_norm(x, (c,), sd[e + "after_norm.weight"], sd[e + "after_norm.bias"], eps=1e-5)
    kernel = sd[p + "adpter.conv1d2.weight"].shape[-1]
    y = F.pad(x.transpose(1, 2), (0, kernel - 1))  # one unpadded clip: the frame mask is all ones
    y = F.conv1d(y, sd[p + "adpter.conv1d2.weight"], sd[p + "adpter.conv1d2.bias"], stride=2).transpose(1, 2)
    y = F.gelu(F.layer_norm(y, (2 * c,), sd[p + "adpter.bn2.weight"], sd[p + "adpter.bn2.bias"], eps=1e-3))
    return F.linear(y, sd[p + "adpter.project.weight"], sd[p + "adpter.project.bias"])[0]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rotary(length: int, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin (length, head_dim) of HF's default rotary embedding at positions 0..length-1."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inv_freq[None]
    return torch.cat([angles, angles], -1).cos(), torch.cat([angles, angles], -1).sin()


def mixtral_logits(
    sd: Mapping[str, torch.Tensor], embeddings: torch.Tensor, heads: int = LLM["heads"], top_k: int = LLM["top_k"]
) -> torch.Tensor:
    """HF Mixtral decoder on (seq, hidden) embeddings, positions 0..seq-1, causal, GQA, top-k of softmax routing."""
    h, length = embeddings.shape[1], embeddings.shape[0]
    hd = h // heads
    kv_heads = sd["model.layers.0.self_attn.k_proj.weight"].shape[0] // hd
    cos, sin = rotary(length, hd, ROPE_THETA)
    causal = torch.full((length, length), float("-inf")).triu(1)
    x = embeddings
    for i in range(count_layers(sd, "model.layers.")):
        p = f"model.layers.{i}."
        y = rms_norm(x, sd[p + "input_layernorm.weight"])
        q = F.linear(y, sd[p + "self_attn.q_proj.weight"]).view(length, heads, hd).transpose(0, 1)
        k = F.linear(y, sd[p + "self_attn.k_proj.weight"]).view(length, kv_heads, hd).transpose(0, 1)
        v = F.linear(y, sd[p + "self_attn.v_proj.weight"]).view(length, kv_heads, hd).transpose(0, 1)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
        attn = ((q @ k.transpose(-1, -2)) * hd**-0.5 + causal).softmax(-1) @ v
        x = x + F.linear(attn.transpose(0, 1).reshape(length, h), sd[p + "self_attn.o_proj.weight"])
        y = rms_norm(x, sd[p + "post_attention_layernorm.weight"])
        probs = F.linear(y, sd[p + "block_sparse_moe.gate.weight"]).softmax(-1)
        weights, chosen = probs.topk(top_k, dim=-1)
        weights = weights / weights.sum(-1, keepdim=True)
        moe = torch.zeros_like(y)
        for token in range(length):
            for slot in range(top_k):
                e = f"{p}block_sparse_moe.experts.{int(chosen[token, slot])}."
                hidden = F.silu(F.linear(y[token], sd[e + "w1.weight"])) * F.linear(y[token], sd[e + "w3.weight"])
                moe[token] += weights[token, slot] * F.linear(hidden, sd[e + "w2.weight"])
        x = x + moe
    return F.linear(rms_norm(x, sd["model.norm.weight"]), sd["lm_head.weight"])


def original_forward(
    sd: Mapping[str, torch.Tensor],
    input_ids: list[int],
    pixel_values: torch.Tensor | None,
    fbank: torch.Tensor | None,
    dims: Mapping[str, Mapping] | None = None,
) -> torch.Tensor:
    """Logits (seq, vocab) of the original model: one -200 id per tile and one -500 id per clip are replaced by the
    tile's vision tokens and all of the clip's adapter outputs (`prepare_inputs_labels_for_multimodal`). `dims` (as
    given to `original_state_dict`) supplies the head counts and top-k; sizes come from the tensors."""
    d = tiny_dims(dims)
    tiles = iter(internvit_tiles(sd, pixel_values, d["vision"]["heads"])) if pixel_values is not None else iter(())
    clips = iter([whale_audio(sd, fbank)]) if fbank is not None else iter(())
    pieces = []
    for token in input_ids:
        if token == IMAGE_TOKEN_INDEX:
            pieces.append(next(tiles))
        elif token == AUDIO_TOKEN_INDEX:
            pieces.append(next(clips))
        else:
            pieces.append(sd["model.embed_tokens.weight"][token][None])
    return mixtral_logits(sd, torch.cat(pieces, dim=0), d["llm"]["heads"], d["llm"]["top_k"])
