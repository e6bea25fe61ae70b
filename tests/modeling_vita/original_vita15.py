"""A tiny VITA-1.5 checkpoint in the ORIGINAL released layout, its prompt format, and the original forward pass.

Written, like `original_vita.py` (VITA-1.0), from the released VITA-1.5 code's computation, key names, files and prompt
format with plain torch ops, never with this project's model code, so that comparing with the converted model is an
independent check. 1.5 keeps 1.0's InternViT, projector and whale encoder (reused from `original_vita.py`) and swaps
the LLM for a Qwen2 (q/k/v biases, GQA, RMSNorm eps 1e-6, SwiGLU) under ChatML with the state characters ☞ ☟ ☜.
Default tiny dims: the towers of `original_vita.py`, a Qwen2 of width 64, 2 layers, 4 heads over 2 KV heads, FFN 128,
1024 embedding rows, rope theta 500000 (not the class default). `write_original_checkpoint15` writes the checkpoint
folder (config.json, sharded safetensors, a tiny byte-level BPE tokenizer with the ChatML specials) and, beside it,
the InternViT and whale folders its config.json names.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from tokenizers import AddedToken, Regex, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from torch.nn import functional as F
from transformers import PreTrainedTokenizerFast

from . import original_towers
from .original_vita import (
    AUDIO_TOKEN_INDEX,
    AUTHOR_ROOT,
    IMAGE_TOKEN_INDEX,
    VISION_FOLDER,
    count_layers,
    internvit_tiles,
    random_source,
    rms_norm,
    rotary,
    rotate_half,
    tiny_dims,
    tower_names,
    tower_state_dict,
    whale_audio,
    write_safetensors_shards,
)

LLM15 = {"hidden": 64, "layers": 2, "heads": 4, "kv_heads": 2, "ffn": 128, "vocab": 1024, "rope_theta": 500000.0}
RMS_EPS = 1e-6
CHECKPOINT_FOLDER = "VITA1.5_ckpt"
AUDIO_FOLDER = "audio-encoder-Qwen2-7B-1107-weight-base-11wh-tunning"
ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
STATE_CHARACTERS = ("☞", "☟", "☜")  # audio query, not addressed to the assistant, typed query

# `conv_qwen2p5_instruct.system` of the original (vita/conversation.py), keyed by `get_prompt`'s modality.
_BASE = (
    "You are an AI robot and your name is VITA. \n- You are a multimodal large language model developed by the open "
    "source community. Your aim is to be helpful, honest and harmless. \n- You support the ability to communicate "
    "fluently and answer user questions in multiple languages of the user's choice. \n- If the user corrects the "
    "wrong answer you generated, you will apologize and discuss the correct answer with the user."
)
_ONLY = (
    " \n- You must answer the question strictly according to the content of the {0} given by the user, and it is "
    "strictly forbidden to answer the question without the content of the {0}. Please note that you are seeing the "
    "{0}, not the {1}."
)
ORIGINAL_SYSTEM_PROMPTS = {
    "image": _BASE + _ONLY.format("image", "video"),
    "video": _BASE + _ONLY.format("video", "image"),
    "lang": _BASE,
}

# ------------------------------------------------------------------------------------------------------- tokenizer
# Qwen2's pre-tokenizer split (the released tokenizer.json's), then byte-level.
_SPLIT = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)
_CORPUS = [
    _BASE,
    ORIGINAL_SYSTEM_PROMPTS["image"],
    ORIGINAL_SYSTEM_PROMPTS["video"],
    "system\nuser\nassistant\n",
    "What is in the image? Describe the picture in one sentence.",
    "The red ball is on the table next to a blue cup.",
    "What did you hear? Please answer the question about the audio.",
    "Hello, how are you today? I am fine, thank you.",
    "The weather is sunny and warm, so we went to the park.",
    "There are 3 cats, 12 birds and 2025 stars.",
    "你好，请问你是谁？我是VITA，一个多模态大语言模型。",
    "请描述这张图片的内容。图片里有一只猫坐在桌子上。",
    "今天天气很好，我们去公园散步吧。",
    "请根据视频的内容回答问题。你听到了什么声音？",
    "☞好的，我来回答这个问题。",
    "☞Sure, here is the answer.",
    "☜The answer is blue.",
    "☜这是一个红色的球。",
    "☟",
    "☟ ☞ ☜",
]


@functools.cache
def _tokenizer_json() -> str:
    """Train the tiny byte-level BPE once (deterministic: one pass over a fixed list) and keep its JSON."""
    tokenizer = Tokenizer(BPE(unk_token=None, continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = BpeTrainer(
        vocab_size=640, min_frequency=2, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(_CORPUS * 3, trainer)
    # Added after the BPE vocabulary, as Qwen2's 151643.. ids; special, never split, never normalized.
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in (ENDOFTEXT, IM_START, IM_END)]
    )
    return tokenizer.to_str()


def build_tokenizer15() -> PreTrainedTokenizerFast:
    """A fresh tiny Qwen2-style tokenizer: ChatML specials, `<|endoftext|>` pad, `<|im_end|>` eos, no bos."""
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json()),
        bos_token=None,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        unk_token=None,
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
    )


def save_tokenizer15(folder: Path, tokenizer: PreTrainedTokenizerFast) -> None:
    """The released tokenizer files: `tokenizer.json`, `vocab.json`, `merges.txt`, `tokenizer_config.json`
    (`Qwen2Tokenizer`, `add_bos_token` false, `bos_token` null, the added tokens listed)."""
    folder.mkdir(parents=True, exist_ok=True)
    backend = tokenizer.backend_tokenizer
    backend.save(str(folder / "tokenizer.json"))
    backend.model.save(str(folder))  # vocab.json, merges.txt
    added = {
        str(i): {"content": t.content, "lstrip": False, "normalized": False, "rstrip": False, "special": True}
        for i, t in sorted(backend.get_added_tokens_decoder().items())
    }
    config = {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "errors": "replace",
        "model_max_length": 131072,
        "pad_token": ENDOFTEXT,
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))


# ------------------------------------------------------------------------------------------ checkpoint and config
def original_state_dict15(seed: int = 0, dims: Mapping[str, Mapping] | None = None) -> dict[str, torch.Tensor]:
    """Random weights under the released 1.5 key names (as published): the towers and projector of
    1.0's layout, and a Qwen2 LLM with q/k/v biases. `dims` overrides per tower, the LLM's defaults are `LLM15`."""
    d = tiny_dims(dims, llm=LLM15)
    rand, llm = random_source(seed), d["llm"]
    sd = tower_state_dict(rand, d)
    h, heads, kv_heads = llm["hidden"], llm["heads"], llm["kv_heads"]
    hd = h // heads
    sd["model.embed_tokens.weight"] = rand(llm["vocab"], h, std=0.5)
    for i in range(llm["layers"]):
        p = f"model.layers.{i}."
        sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.q_proj.bias"] = rand(heads * hd, h, std=0.15), rand(h)
        for name in ("k_proj", "v_proj"):
            sd[f"{p}self_attn.{name}.weight"] = rand(kv_heads * hd, h, std=0.15)
            sd[f"{p}self_attn.{name}.bias"] = rand(kv_heads * hd)
        sd[p + "self_attn.o_proj.weight"] = rand(h, heads * hd, std=0.15)
        sd[p + "mlp.gate_proj.weight"] = rand(llm["ffn"], h, std=0.15)
        sd[p + "mlp.up_proj.weight"] = rand(llm["ffn"], h, std=0.15)
        sd[p + "mlp.down_proj.weight"] = rand(h, llm["ffn"], std=0.15)
        sd[p + "input_layernorm.weight"] = rand(h, mean=1.0)
        sd[p + "post_attention_layernorm.weight"] = rand(h, mean=1.0)
    sd["model.norm.weight"] = rand(h, mean=1.0)
    sd["lm_head.weight"] = rand(llm["vocab"], h, std=0.2)
    return sd


def original_config15(
    dims: Mapping[str, Mapping] | None = None,
    tokenizer: PreTrainedTokenizerFast | None = None,
    tower_paths: str = "relative",
) -> dict:
    """config.json as the 1.5 training saved it (as published): Qwen2 fields, the mm fields, the towers
    named by `tower_paths` ("relative" / "absolute"), no `vision_config`; bos / eos are the tokenizer's
    `<|endoftext|>` / `<|im_end|>` ids (151643 / 151645 in the release)."""
    d = tiny_dims(dims, llm=LLM15)
    llm, tokenizer = d["llm"], tokenizer or build_tokenizer15()
    vision_tower, audio_encoder = tower_names(tower_paths, VISION_FOLDER, AUDIO_FOLDER)
    return {
        "architectures": ["VITAQwen2ForCausalLM"],
        "model_type": "vita-Qwen2",
        "vocab_size": llm["vocab"],
        "hidden_size": llm["hidden"],
        "intermediate_size": llm["ffn"],
        "num_hidden_layers": llm["layers"],
        "num_attention_heads": llm["heads"],
        "num_key_value_heads": llm["kv_heads"],
        "hidden_act": "silu",
        "rms_norm_eps": RMS_EPS,
        "rope_theta": llm["rope_theta"],
        "max_position_embeddings": 2048,
        "max_window_layers": llm["layers"],
        "sliding_window": None,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "tie_word_embeddings": False,
        "bos_token_id": tokenizer.convert_tokens_to_ids(ENDOFTEXT),
        "eos_token_id": tokenizer.convert_tokens_to_ids(IM_END),
        "torch_dtype": "float32",
        "transformers_version": "4.44.2",
        "use_cache": False,
        "mm_vision_tower": vision_tower,
        "mm_audio_encoder": audio_encoder,
        "mm_projector_type": "mlp2x_gelu",
        "mm_hidden_size": 4 * d["vision"]["hidden"],
        "use_mm_proj": True,
        "mm_projector_lr": None,
        "tune_mm_mlp_adapter": False,
        "freeze_mm_mlp_adapter": False,
        "tune_audio_mlp_adapter": False,
        "freeze_audio_encoder": True,
        "freeze_audio_encoder_adapter": False,
        "audio_prompt_finetune": False,
        "audio_prompt_num": None,
        "audio_state_predictor_tuning": False,
        "unfreeze_vision_tower": False,
        "use_s2": False,
        "image_aspect_ratio": "square",
        "tokenizer_padding_side": "right",
        "tokenizer_model_max_length": 6200,
    }


def write_original_checkpoint15(
    root: Path,
    *,
    seed: int = 0,
    dims: Mapping[str, Mapping] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
    full_vocab: bool = False,
    tower_paths: str = "relative",
    num_shards: int = 2,
) -> dict:
    """Under `root`: `VITA1.5_ckpt/` (config.json, `model-0000i-of-0000n.safetensors` + index, tokenizer files),
    `InternViT-300M-448px/` and `audio-encoder-Qwen2-7B-1107-weight-base-11wh-tunning/` (`original_towers`).

    `full_vocab` gives the embedding exactly `len(tokenizer)` rows; otherwise `dims`' vocab (1024) leaves free rows,
    as 152064 rows for 151665 tokens in the release. Returns {"checkpoint", "vision_tower", "audio_encoder": Path,
    "state_dict", "tokenizer", "dims"} where `dims` is what `original_forward15` takes.
    """
    tokenizer = build_tokenizer15()
    dims = {tower: dict(values) for tower, values in (dims or {}).items()}
    if state_dict is None:
        if full_vocab:
            dims.setdefault("llm", {})["vocab"] = len(tokenizer)
        state_dict = original_state_dict15(seed, dims)
    rows = state_dict["model.embed_tokens.weight"].shape[0]
    if full_vocab and rows != len(tokenizer):
        raise ValueError(f"full_vocab: the state dict has {rows} rows for {len(tokenizer)} tokens")
    dims.setdefault("llm", {})["vocab"] = rows
    folder = root / CHECKPOINT_FOLDER
    write_safetensors_shards(folder, state_dict, num_shards)
    config = original_config15(dims, tokenizer, tower_paths)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    save_tokenizer15(folder, tokenizer)
    heads = tiny_dims(dims, llm=LLM15)["vision"]["heads"]
    return {
        "checkpoint": folder,
        "vision_tower": original_towers.write_vision_tower_folder(root / VISION_FOLDER, state_dict, heads),
        "audio_encoder": original_towers.write_audio_encoder_folder(
            root / AUDIO_FOLDER, state_dict, llm_path=f"{AUTHOR_ROOT}/Qwen2-7B"
        ),
        "state_dict": state_dict,
        "tokenizer": tokenizer,
        "dims": dims,
    }


# ------------------------------------------------------------------------------------------------------- the prompt
def original_prompt15(
    question: str,
    n_tiles: int = 0,
    with_audio: bool = False,
    *,
    modality: str | None = None,
    tokenizer: PreTrainedTokenizerFast | None = None,
) -> list[int]:
    """Prompt ids as `video_audio_demo.py` builds them: `<image>` x tiles + "\\n" + question (+ `<audio>`), rendered
    by `qwen2p5_instruct` (system prompt by modality: "image" with tiles, "lang" without), then tokenised piece by
    piece with -200 / -500 between the pieces and no BOS (`tokenizer_image_audio_token`)."""
    text = "<image>" * n_tiles + ("\n" if n_tiles else "") + question + ("<audio>" if with_audio else "")
    modality = modality or ("image" if n_tiles else "lang")
    if ("<image>" in text) != (modality in ("image", "video")):  # the asserts of `Conversation.get_prompt`
        raise ValueError(f"modality {modality!r} does not fit a prompt with {n_tiles} tiles")
    user = f"{IM_START}user\n{text}{IM_END}\n" if text else f"{IM_START}user\n"
    prompt = f"{IM_START}system\n{ORIGINAL_SYSTEM_PROMPTS[modality]}{IM_END}\n{user}{IM_START}assistant\n"
    tokenizer = tokenizer or build_tokenizer15()
    ids: list[int] = []
    for chunk in re.split(r"(<audio>|<image>)", prompt):
        if chunk == "<image>":
            ids.append(IMAGE_TOKEN_INDEX)
        elif chunk == "<audio>":
            ids.append(AUDIO_TOKEN_INDEX)
        else:
            ids.extend(tokenizer(chunk).input_ids)
    return ids


# ------------------------------------------------------------------------------------------------ the forward pass
def audio_token_count15(frames: int) -> int:
    """`lengths_for_llm` of `audioEncoderProcessor.process`: len(ones(T)[2::2][2::2][0::2])."""
    return len(torch.ones(frames)[2::2][2::2][0::2])


def qwen2_logits(
    sd: Mapping[str, torch.Tensor],
    embeddings: torch.Tensor,
    heads: int = LLM15["heads"],
    rope_theta: float = LLM15["rope_theta"],
) -> torch.Tensor:
    """HF Qwen2 decoder on (seq, hidden) embeddings, positions 0..seq-1, causal, q/k/v biases, GQA, SwiGLU."""
    length, h = embeddings.shape
    hd = h // heads
    kv_heads = sd["model.layers.0.self_attn.k_proj.weight"].shape[0] // hd
    cos, sin = rotary(length, hd, rope_theta)
    causal = torch.full((length, length), float("-inf")).triu(1)
    x = embeddings
    for i in range(count_layers(sd, "model.layers.")):
        p = f"model.layers.{i}.self_attn."

        def proj(name: str, inp: torch.Tensor, n: int, p: str = p) -> torch.Tensor:
            return F.linear(inp, sd[f"{p}{name}.weight"], sd[f"{p}{name}.bias"]).view(length, n, hd).transpose(0, 1)

        y = rms_norm(x, sd[f"model.layers.{i}.input_layernorm.weight"], RMS_EPS)
        q, k, v = proj("q_proj", y, heads), proj("k_proj", y, kv_heads), proj("v_proj", y, kv_heads)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
        attn = ((q @ k.transpose(-1, -2)) * hd**-0.5 + causal).softmax(-1) @ v
        x = x + F.linear(attn.transpose(0, 1).reshape(length, h), sd[p + "o_proj.weight"])
        m = f"model.layers.{i}.mlp."
        y = rms_norm(x, sd[f"model.layers.{i}.post_attention_layernorm.weight"], RMS_EPS)
        gated = F.silu(F.linear(y, sd[m + "gate_proj.weight"])) * F.linear(y, sd[m + "up_proj.weight"])
        x = x + F.linear(gated, sd[m + "down_proj.weight"])
    return F.linear(rms_norm(x, sd["model.norm.weight"], RMS_EPS), sd["lm_head.weight"])


def original_forward15(
    sd: Mapping[str, torch.Tensor],
    input_ids: list[int],
    pixel_values: torch.Tensor | None = None,
    fbank_list: list[torch.Tensor] | None = None,
    dims: Mapping[str, Mapping] | None = None,
) -> torch.Tensor:
    """Logits (seq, rows) of the original 1.5 model: each -200 id takes the next tile's vision tokens, each -500 id the
    next clip's adapter output cut to `lengths_for_llm` (clips are RAW fbank (T, 80): see `fbank_for`).
    `dims` (as given to `original_state_dict15`) supplies head counts and rope theta; sizes come from the tensors."""
    d = tiny_dims(dims, llm=LLM15)
    tiles = list(internvit_tiles(sd, pixel_values, d["vision"]["heads"])) if pixel_values is not None else []
    clips = [whale_audio(sd, fbank)[: audio_token_count15(fbank.shape[0])] for fbank in fbank_list or []]
    if input_ids.count(IMAGE_TOKEN_INDEX) != len(tiles) or input_ids.count(AUDIO_TOKEN_INDEX) != len(clips):
        raise ValueError(f"{len(tiles)} tiles and {len(clips)} clips for the -200 / -500 ids of {input_ids}")
    next_tile, next_clip = iter(tiles), iter(clips)
    pieces = []
    for token in input_ids:
        if token == IMAGE_TOKEN_INDEX:
            pieces.append(next(next_tile))
        elif token == AUDIO_TOKEN_INDEX:
            pieces.append(next(next_clip))
        else:
            pieces.append(sd["model.embed_tokens.weight"][token][None])
    return qwen2_logits(sd, torch.cat(pieces, dim=0), d["llm"]["heads"], d["llm"]["rope_theta"])
