"""Tiny VITA configurations for tests, examples, benchmarks and demos (transformers' ModelTester pattern).

`tiny_vita_config()` gives a model of a few hundred thousand parameters, two layers a tower, whose token ids agree
with `processing_vita.testing_utils.tiny_vita_processor()`: 0 `<unk>`, 1 `<s>`, 2 `</s>`, 3 `<pad>`, 4 `<image>`,
5 `<video>`, 6 `<audio>`, 7-9 the state tokens `<1>`, `<2>`, `<3>` as single special tokens. Vision tiles are 56 px
(patch 14, so 4 tokens a tile after the pixel shuffle); the audio encoder takes the real 80-bin fbank.
`tiny_speech_config()` gives VITA-1.5's speech decoder and codec at tiny size (a 32-wide decoder, so each token of the
64-wide tiny LLM is 2 rows; 32 codec tokens of 16 samples each), for `tiny_vita_config(speech_config=...)`.
"""

import copy
import logging

from .configuration_vita import VitaConfig

logger = logging.getLogger(__name__)

TINY_VOCAB_SIZE = 1024
TINY_TOKEN_IDS = {"unk": 0, "bos": 1, "eos": 2, "pad": 3, "image": 4, "video": 5, "audio": 6, "state": [7, 8, 9]}

_TINY_TEXT_CONFIGS = {
    "mixtral": {
        "model_type": "mixtral",
        "num_local_experts": 4,
        "num_experts_per_tok": 2,
        "router_aux_loss_coef": 0.02,
    },
    "qwen2": {"model_type": "qwen2", "tie_word_embeddings": False},
    "llama": {"model_type": "llama", "tie_word_embeddings": False},
}
_TINY_TEXT_COMMON = {
    "vocab_size": TINY_VOCAB_SIZE,
    "hidden_size": 64,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "bos_token_id": TINY_TOKEN_IDS["bos"],
    "eos_token_id": TINY_TOKEN_IDS["eos"],
    "pad_token_id": TINY_TOKEN_IDS["pad"],
}
TINY_VISION_CONFIG = {
    "model_type": "internvl_vision",
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "image_size": 56,
    "patch_size": 14,
    "attention_bias": True,
    "use_mean_pooling": True,
    "layer_norm_eps": 1e-6,
}
TINY_AUDIO_CONFIG = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "num_mel_bins": 80,
}

TINY_SPEECH_DECODER_CONFIG = {
    "input_dim": 32,
    "codec_vocab_size": 32,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_pre_layers": 1,
    "num_attention_heads": 4,
}
TINY_CODEC_CONFIG = {
    "codebook_size": 32,
    "codebook_dim": 16,
    "upsample_rates": [4, 4],
    "upsample_kernel_sizes": [8, 8],
    "upsample_initial_channel": 16,
    "resblock_kernel_sizes": [3, 5],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 2, 1]],
    "global_code_num": 4,
    "global_codebook_size": 32,
    "global_code_dim": 2,
    "global_tokens": [3, 1, 4, 1],
    "speaker_channels": 8,
    "encoder_initial_channel": 8,
    "global_feature_conv": [16, 8, 8, 3, 1],
}


def tiny_speech_config(**overrides) -> dict:
    """A tiny `VitaSpeechConfig` as a dict; `decoder_config` / `codec_config` dicts are merged into the defaults."""
    config = {
        "decoder_config": copy.deepcopy(TINY_SPEECH_DECODER_CONFIG),
        "codec_config": copy.deepcopy(TINY_CODEC_CONFIG),
    }
    for key in ("decoder_config", "codec_config"):
        config[key].update(overrides.pop(key, None) or {})
    return {**config, **overrides}


def tiny_text_config(model_type: str = "mixtral", **overrides) -> dict:
    """A two-layer, 64-wide LLM config dict for `model_type` in {"mixtral", "qwen2", "llama"}."""
    if model_type not in _TINY_TEXT_CONFIGS:
        raise ValueError(f"No tiny text config for {model_type!r}; choose one of {sorted(_TINY_TEXT_CONFIGS)}.")
    return {**_TINY_TEXT_COMMON, **_TINY_TEXT_CONFIGS[model_type], **overrides}


def tiny_vita_config(text_model_type: str = "mixtral", **overrides) -> VitaConfig:
    """A tiny `VitaConfig`. Sub-config overrides given as dicts are merged into the tiny defaults, e.g.
    `tiny_vita_config(audio_config={"num_hidden_layers": 1}, vision_feature_scale=1.0)`."""
    sub_configs = {
        "text_config": tiny_text_config(text_model_type),
        "vision_config": copy.deepcopy(TINY_VISION_CONFIG),
        "audio_config": copy.deepcopy(TINY_AUDIO_CONFIG),
    }
    for key in sub_configs:
        if isinstance(overrides.get(key), dict):
            sub_configs[key].update(overrides.pop(key))
    arguments = {
        **sub_configs,
        "image_token_id": TINY_TOKEN_IDS["image"],
        "video_token_id": TINY_TOKEN_IDS["video"],
        "audio_token_id": TINY_TOKEN_IDS["audio"],
        "bos_token_id": TINY_TOKEN_IDS["bos"],
        "eos_token_id": TINY_TOKEN_IDS["eos"],
        "pad_token_id": TINY_TOKEN_IDS["pad"],
    }
    arguments.update(overrides)
    return VitaConfig(**arguments)


__all__ = [
    "TINY_CODEC_CONFIG",
    "TINY_SPEECH_DECODER_CONFIG",
    "TINY_TOKEN_IDS",
    "TINY_VOCAB_SIZE",
    "tiny_speech_config",
    "tiny_text_config",
    "tiny_vita_config",
]
