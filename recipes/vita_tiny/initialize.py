"""vita-tiny's starting point: an English tokenizer, the Chinese vocabulary extension, a processor and a fresh model.

Stage 1 of the VITA paper: the released model
starts from Mixtral-8x7B, whose vocabulary is English-centric, and extends it with Chinese pieces before training the
LLM on bilingual text. Here the "base" tokenizer is a byte-level BPE trained on the English lines of the generated
corpus, the extension adds the pieces `train_extension_tokenizer` learns from its Chinese lines, and the embeddings
grow with `resize_embeddings_with_mean_init`, exactly the tools a user runs on a real backbone. Nothing is
downloaded: the towers start from random weights (the released model starts from InternViT and a pretrained audio
encoder), which is why vita-tiny's recipes also train the towers.

    python -m recipes.vita_tiny.initialize data/vita-tiny runs/vita-tiny/init
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerFast

from modeling_vita import VitaConfig, VitaForConditionalGeneration
from processing_vita import (
    VitaFeatureExtractor,
    VitaImageProcessor,
    VitaProcessor,
    VitaVideoProcessor,
    add_vita_special_tokens,
    extend_tokenizer_vocabulary,
    resize_embeddings_with_mean_init,
    train_extension_tokenizer,
)
from processing_vita.feature_extraction_vita import load_audio

IMAGE_SIZE = 56
BASE_VOCAB_SIZE = 768
EXTENSION_VOCAB_SIZE = 400
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>"]
# Short system prompts: the released ones are ~130 tokens, longer than everything else in a vita-tiny sample.
SYSTEM_PROMPTS = {
    "lang": "You are VITA-tiny. Answer in one word.",
    "image": "You are VITA-tiny. Answer from the image.",
    "video": "You are VITA-tiny. Answer from the video.",
}
# ~7 M parameters (28 MB in float32): a 4-layer Mixtral with 4 experts, a 3-layer InternViT at 56 px, a 4-layer
# audio encoder. Sized so the whole recipe trains in about half an hour on two CPU cores.
TEXT_CONFIG = {
    "model_type": "mixtral",
    "hidden_size": 192,
    "intermediate_size": 384,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "num_local_experts": 4,
    "num_experts_per_tok": 2,
    "router_aux_loss_coef": 0.02,
    "max_position_embeddings": 1024,
    "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0},
    "tie_word_embeddings": False,
}
VISION_CONFIG = {
    "model_type": "internvl_vision",
    "hidden_size": 128,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "image_size": IMAGE_SIZE,
    "patch_size": 14,
    "attention_bias": True,
    "use_mean_pooling": True,
    "layer_norm_eps": 1e-6,
}
# 40 mel bins rather than VITA's 80 (the usual small-ASR front end): the encoder's Conv2d subsampling, most of its
# cost, halves; the CTC pretraining reached the same held-out CER (0.41) in half the minutes.
NUM_MEL_BINS = 40
AUDIO_CONFIG = {
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "num_mel_bins": NUM_MEL_BINS,
    "dropout": 0.1,
}


def _is_chinese(line: str) -> bool:
    return any("\u4e00" <= c <= "\u9fff" for c in line)


def build_base_tokenizer(english_lines: list[str]) -> PreTrainedTokenizerFast:
    """A byte-level BPE (any text encodes, nothing is <unk>) trained on English text: the "English-centric" base."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BASE_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(english_lines + list(SYSTEM_PROMPTS.values()) * 20, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


def compute_cmvn(audio_paths: list[Path], limit: int = 400, seed: int = 0) -> tuple[list[float], list[float]]:
    """Global CMVN (per-bin mean and inverse std) of the fbank of up to `limit` training clips, as the released
    audio encoder ships its own `global_cmvn` statistics."""
    paths = sorted(audio_paths)
    random.Random(seed).shuffle(paths)
    extractor = VitaFeatureExtractor(feature_size=NUM_MEL_BINS)  # identity CMVN: raw fbank
    total, squares, frames = None, None, 0
    for path in paths[:limit]:
        samples, rate = load_audio(path)
        out = extractor(samples, sampling_rate=rate, return_tensors="pt")
        n = int(out["input_features_mask"][0].sum())
        feats = out["input_features"][0, :n].double()
        total = feats.sum(0) if total is None else total + feats.sum(0)
        squares = (feats**2).sum(0) if squares is None else squares + (feats**2).sum(0)
        frames += n
    if not frames:
        raise ValueError(f"No audio frames in {len(paths)} clips; expected the training speech under media/speech.")
    mean = total / frames
    std = (squares / frames - mean**2).clamp_min(1e-8).sqrt()
    return mean.tolist(), (1.0 / std).tolist()


def build_processor(tokenizer: Any, cmvn: tuple[list[float], list[float]]) -> VitaProcessor:
    return VitaProcessor(
        image_processor=VitaImageProcessor(image_size=IMAGE_SIZE, max_dynamic_patch=1, use_thumbnail=False),
        video_processor=VitaVideoProcessor(image_size=IMAGE_SIZE),
        feature_extractor=VitaFeatureExtractor(feature_size=NUM_MEL_BINS, cmvn_mean=cmvn[0], cmvn_istd=cmvn[1]),
        tokenizer=tokenizer,
        image_seq_length=(IMAGE_SIZE // 14) ** 2 // 4,
        system_prompts=SYSTEM_PROMPTS,
    )


def build_config(tokenizer: Any) -> VitaConfig:
    ids = {name: tokenizer.convert_tokens_to_ids(tok) for name, tok in
           (("image", "<image>"), ("video", "<video>"), ("audio", "<audio>"))}  # fmt: skip
    text_config = {
        **TEXT_CONFIG,
        "vocab_size": len(tokenizer),
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return VitaConfig(
        text_config=text_config,
        vision_config=dict(VISION_CONFIG),
        audio_config=dict(AUDIO_CONFIG),
        image_token_id=ids["image"],
        video_token_id=ids["video"],
        audio_token_id=ids["audio"],
        vision_feature_scale=1.0,
    )


def initialize(data_dir: str | Path, output_dir: str | Path, seed: int = 0) -> dict[str, Any]:
    """Write the untrained vita-tiny (model + processor) to `output_dir`; returns what was built, in numbers."""
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    corpus_path = data_dir / "corpus.txt"
    if not corpus_path.is_file():
        raise ValueError(f"{corpus_path} does not exist; expected the data of `python -m recipes.vita_tiny.data`.")
    torch.manual_seed(seed)
    lines = [line for line in corpus_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    english = [line for line in lines if not _is_chinese(line)]
    chinese = [line for line in lines if _is_chinese(line)]

    tokenizer = build_base_tokenizer(english)
    add_vita_special_tokens(tokenizer, state_tokens_as_special=True)
    base_size = len(tokenizer)
    sample = "\n".join(chinese[:50])
    tokens_before = len(tokenizer(sample, add_special_tokens=False)["input_ids"])
    model = VitaForConditionalGeneration(build_config(tokenizer))

    # Stage 1 of VITA: extend the English-centric vocabulary with Chinese pieces, new rows at the mean of the old.
    pieces = train_extension_tokenizer(chinese * 4, vocab_size=EXTENSION_VOCAB_SIZE)
    added = extend_tokenizer_vocabulary(tokenizer, pieces)
    resize_embeddings_with_mean_init(model, len(tokenizer))
    tokens_after = len(tokenizer(sample, add_special_tokens=False)["input_ids"])

    cmvn = compute_cmvn(list((data_dir / "media" / "speech" / "train").rglob("*.wav")), seed=seed)
    processor = build_processor(tokenizer, cmvn)
    model.config.use_cache = True
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    summary = {
        "parameters": model.num_parameters(),
        "base_vocabulary": base_size,
        "chinese_pieces_added": len(added),
        "vocabulary": len(tokenizer),
        "chinese_sample_tokens_before": tokens_before,
        "chinese_sample_tokens_after": tokens_after,
    }
    (output_dir / "initialize.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", help="folder written by `python -m recipes.vita_tiny.data`")
    parser.add_argument("output", help="folder for the untrained model and its processor")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(json.dumps(initialize(args.data, args.output, args.seed), indent=2))


if __name__ == "__main__":
    main()
