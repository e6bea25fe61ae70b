"""Offline, fast test fixtures for the VITA processor: a tiny tokenizer with fixed special-token ids, a tiny processor.

The ids below are a contract shared with the tiny
model config of `modeling_vita`'s tests: 0 <unk>, 1 <s>, 2 </s>, 3 <pad>, 4 <image>, 5 <video>, 6 <audio>, 7 <1>,
8 <2>, 9 <3>, vocabulary size at most 1024. The tokenizer is a byte-level BPE trained in code on a small built-in
English and Chinese text list, so any text encodes without <unk> and nothing is downloaded.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from transformers import PreTrainedTokenizerFast

from .feature_extraction_vita import VitaFeatureExtractor
from .image_processing_vita import VitaImageProcessor
from .processing_vita import VitaProcessor
from .video_processing_vita import VitaVideoProcessor

logger = logging.getLogger(__name__)

TINY_TOKEN_IDS: dict[str, Any] = {
    "unk": 0,
    "bos": 1,
    "eos": 2,
    "pad": 3,
    "image": 4,
    "video": 5,
    "audio": 6,
    "state": [7, 8, 9],
}
TINY_VOCAB_SIZE = 1024
TINY_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<image>", "<video>", "<audio>", "<1>", "<2>", "<3>"]
TINY_IMAGE_SIZE = 56
TINY_IMAGE_SEQ_LENGTH = (56 // 14) ** 2 // 4

_CORPUS = [
    "You are an AI robot and your name is VITA.",
    "You are a multimodal large language model developed by the open source community.",
    "Your aim is to be helpful, honest and harmless.",
    "You support the ability to communicate fluently and answer user questions in multiple languages.",
    "If the user corrects the wrong answer you generated, you will apologize and discuss the correct answer.",
    "You must answer the question strictly according to the content of the image given by the user.",
    "Please note that you are seeing the video, not the image.",
    "system: user: bot: What is in the picture? Describe the video. What did you hear?",
    "The cat sits on the mat. A dog runs in the park. The weather is nice today.",
    "Hello, how are you? I am fine, thank you. What time is it? It is three o'clock.",
    "There are two people in the image, a man and a woman, standing next to a red car.",
    "你好，我是VITA，一个多模态大语言模型。",
    "请描述这张图片的内容。图片里有一只猫和一只狗。",
    "今天天气很好，我们去公园散步吧。",
    "这个视频讲的是什么？视频里有人在跳舞。",
    "我听到了音乐的声音，还有人在说话。",
    "你能用中文回答我的问题吗？当然可以。",
    "0 1 2 3 4 5 6 7 8 9 10 100 2024 3.14",
]


@lru_cache(maxsize=1)
def _tiny_tokenizer_json() -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=TINY_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 3, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", TINY_TOKEN_IDS["bos"])]
    )
    return tok.to_str()


def tiny_vita_tokenizer() -> PreTrainedTokenizerFast:
    """Byte-level BPE tokenizer with the fixed ids of TINY_TOKEN_IDS; the state tokens are single special tokens."""
    from tokenizers import Tokenizer

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tiny_tokenizer_json()),
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>", "video_token": "<video>", "audio_token": "<audio>"},
    )
    tokenizer.add_special_tokens({"extra_special_tokens": ["<1>", "<2>", "<3>"]})
    for idx, name in enumerate(TINY_SPECIAL_TOKENS):
        found = tokenizer.convert_tokens_to_ids(name)
        if found != idx:
            raise ValueError(f"Tiny tokenizer maps {name!r} to {found}; expected {idx} (the tiny model's contract).")
    if len(tokenizer) > TINY_VOCAB_SIZE:
        raise ValueError(f"Tiny tokenizer has {len(tokenizer)} tokens; expected at most {TINY_VOCAB_SIZE}.")
    return tokenizer


def tiny_vita_processor(**image_kwargs: Any) -> VitaProcessor:
    """A VitaProcessor built offline in well under 2 s: 56-pixel tiles (4 tokens each), 80-bin fbank, identity CMVN."""
    image_kwargs = {"image_size": TINY_IMAGE_SIZE, "max_dynamic_patch": 12, **image_kwargs}
    return VitaProcessor(
        image_processor=VitaImageProcessor(**image_kwargs),
        video_processor=VitaVideoProcessor(image_size=image_kwargs["image_size"]),
        feature_extractor=VitaFeatureExtractor(),
        tokenizer=tiny_vita_tokenizer(),
        image_seq_length=TINY_IMAGE_SEQ_LENGTH,
    )


__all__ = [
    "TINY_TOKEN_IDS",
    "TINY_VOCAB_SIZE",
    "TINY_SPECIAL_TOKENS",
    "TINY_IMAGE_SEQ_LENGTH",
    "tiny_vita_tokenizer",
    "tiny_vita_processor",
]
