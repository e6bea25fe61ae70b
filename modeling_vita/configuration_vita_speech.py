"""Configurations of VITA-1.5's own voice: the speech decoder and the composite speech config (decoder + codec).

Written in the transformers 5.x dataclass style, like `configuration_vita.py`. The speech decoder turns frames cut
from the LLM's input embeddings of an answer into codec tokens; the codec (`configuration_vita_codec.py`) turns the
tokens into 24 kHz audio. The defaults reproduce the released `vita_tts_ckpt`: a 896-wide Llama-style decoder of 4
layers with a 2-layer bidirectional pre-network over 1024 codec tokens, and the demos' streaming and sampling
settings (top-2 sampling, a first chunk of 20 tokens, later chunks of 40, 10 tokens of context on each side).
"""

import logging
import math

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from .configuration_vita_codec import VitaCodecConfig

logger = logging.getLogger(__name__)

# Ids past the codec vocabulary, as offsets of `codec_vocab_size`, in the order the original assigns them.
_SPECIAL_OFFSETS = {"bos": 0, "sos": 1, "eos": 2, "pad": 3}


@strict
class VitaSpeechDecoderConfig(PreTrainedConfig):
    r"""
    Configuration of [`VitaSpeechDecoder`], VITA-1.5's speech decoder (the original's `LLM2TTSCodecAR`).

    The frames pass a non-causal pre-network (`num_pre_layers` Llama layers, positions 0..L-1), get a BOS embedding
    in front, and form a prefix that the main layers read bidirectionally (positions 0..L). Codec tokens are then
    decoded one at a time from SOS, each at the position after the last, until EOS. The field names are Llama's, so
    transformers' `LlamaDecoderLayer` and `LlamaRotaryEmbedding` take this config as they are.

    Args:
        input_dim (`int`, defaults to 896): width of the frames the LLM embeddings are reshaped into. The original has
            no input projection, so it must equal `hidden_size`.
        codec_vocab_size (`int`, defaults to 1024): number of codec tokens (the original's `odim`). Four special ids
            follow them: BOS, SOS, EOS and PAD (`bos_token_id` ... `pad_token_id`).
        hidden_size (`int`, defaults to 896): width of the layers.
        intermediate_size (`int`, defaults to 4864): width of each layer's SwiGLU feed-forward block.
        num_hidden_layers (`int`, defaults to 4): layers of the decoder proper.
        num_pre_layers (`int`, defaults to 2): layers of the bidirectional pre-network over the frames.
        num_attention_heads (`int`, defaults to 14): attention heads per layer.
        num_key_value_heads (`int`, *optional*): key/value heads; defaults to `num_attention_heads` (the original's
            multi-head attention).
        head_dim (`int`, *optional*): width of a head; defaults to `hidden_size // num_attention_heads`.
        max_position_embeddings (`int`, defaults to 2048): longest prefix plus codec tokens the decoder was built
            for; longer runs still work (rotary positions) but go past what it was trained on.
        rope_parameters (`dict`, *optional*): rotary settings; defaults to `{"rope_type": "default", "rope_theta":
            10000.0}` (not the LLM's theta). `rope_theta=...` is accepted too.
        rms_norm_eps (`float`, defaults to 1e-6): epsilon of the RMS norms.
        hidden_act (`str`, defaults to `"silu"`): activation of the feed-forward blocks.
        attention_dropout (`float`, defaults to 0.0): dropout on attention probabilities (training only).
        attention_bias (`bool`, defaults to `False`): biases on q/k/v/o (the original has none).
        mlp_bias (`bool`, defaults to `False`): biases in the feed-forward blocks (the original has none).
        initializer_range (`float`, defaults to 0.02): std of the normal initialiser.
    """

    model_type = "vita_speech_decoder"
    base_config_key = "decoder_config"

    input_dim: int = 896
    codec_vocab_size: int = 1024
    hidden_size: int = 896
    intermediate_size: int = 4864
    num_hidden_layers: int = 4
    num_pre_layers: int = 2
    num_attention_heads: int = 14
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    max_position_embeddings: int = 2048
    rope_parameters: dict | None = None
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    attention_dropout: float | int = 0.0
    attention_bias: bool = False
    mlp_bias: bool = False
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        positive = {name: getattr(self, name) for name in ("input_dim", "codec_vocab_size", "hidden_size",
                    "intermediate_size", "num_hidden_layers", "num_attention_heads")}  # fmt: skip
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"`{name}` must be at least 1, got {value}.")
        if self.num_pre_layers < 0:
            raise ValueError(f"`num_pre_layers` must be 0 or more, got {self.num_pre_layers}.")
        if self.input_dim != self.hidden_size:
            raise ValueError(
                f"`input_dim` ({self.input_dim}) must equal `hidden_size` ({self.hidden_size}): the frames enter the "
                "layers as they are (the decoder has no input projection). Give both the same width."
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"`hidden_size` ({self.hidden_size}) must be divisible by `num_attention_heads` "
                f"({self.num_attention_heads}); pick a head count that divides the width."
            )
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must be a multiple of `num_key_value_heads` "
                f"({self.num_key_value_heads})."
            )
        super().__post_init__(**kwargs)

    @property
    def vocab_size(self) -> int:
        """Rows of the token embedding and outputs of the head: the codec tokens and the four special ids."""
        return self.codec_vocab_size + len(_SPECIAL_OFFSETS)

    @property
    def bos_token_id(self) -> int:
        """Embedded in front of the frames: it opens the prefix."""
        return self.codec_vocab_size + _SPECIAL_OFFSETS["bos"]

    @property
    def sos_token_id(self) -> int:
        """The first input of decoding (start of speech)."""
        return self.codec_vocab_size + _SPECIAL_OFFSETS["sos"]

    @property
    def eos_token_id(self) -> int:
        """Ends the speech; never given to the codec."""
        return self.codec_vocab_size + _SPECIAL_OFFSETS["eos"]

    @property
    def pad_token_id(self) -> int:
        """Padding of training targets (ignored by the loss) and the embedding's padding row."""
        return self.codec_vocab_size + _SPECIAL_OFFSETS["pad"]


# The original's `llm2TTS.run` settings and the demos' values: top-2 sampling without a repetition penalty, the first
# chunk early (20 tokens, 0.5 s), then 40-token chunks, each decoded with 10 tokens of context on both sides.
SPEECH_SETTINGS_DEFAULTS = {
    "first_chunk_size": 20,
    "chunk_size": 40,
    "chunk_padding": 10,
    "top_k": 2,
    "penalty_window_size": -1,
    "penalty": 1.1,
    "max_speech_tokens": 1000,
}


def check_speech_settings(settings: dict, vocab_size: int | None = None, where: str = "") -> None:
    """Raise a `ValueError` naming the setting, the value found and the values expected, for any bad value of
    `SPEECH_SETTINGS_DEFAULTS`' keys in `settings` (the config's fields, or the arguments of one call)."""
    at = f" ({where})" if where else ""
    for name in ("first_chunk_size", "chunk_size", "max_speech_tokens", "top_k"):
        value = settings.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"`{name}`{at} must be an integer >= 1, got {value!r}.")
    padding = settings.get("chunk_padding")
    if padding is not None and (isinstance(padding, bool) or not isinstance(padding, int) or padding < 0):
        raise ValueError(
            f"`chunk_padding`{at} must be an integer >= 0 (codec tokens of context on each side of a chunk; the "
            f"original uses 10), got {padding!r}."
        )
    window = settings.get("penalty_window_size")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
        raise ValueError(f"`penalty_window_size`{at} must be an integer (<= 0 turns the penalty off), got {window!r}.")
    penalty = settings.get("penalty")
    if penalty is not None and (
        isinstance(penalty, bool) or not isinstance(penalty, int | float) or not math.isfinite(penalty) or penalty <= 0
    ):
        raise ValueError(
            f"`penalty`{at} must be a finite number > 0 (logits are divided by it; the original uses 1.1), "
            f"got {penalty!r}."
        )
    top_k = settings.get("top_k")
    if vocab_size is not None and top_k is not None and top_k > vocab_size:
        raise ValueError(
            f"`top_k`{at} is {top_k}, more than the decoder's {vocab_size} outputs; expected 1..{vocab_size} "
            "(the original samples from the top 2)."
        )


@strict
class VitaSpeechConfig(PreTrainedConfig):
    r"""
    Configuration of [`VitaSpeechModel`]: the speech decoder (`decoder_config`), the codec (`codec_config`) and how
    speech is generated and streamed. `VitaConfig.speech_config` holds one for checkpoints that speak.

    Args:
        decoder_config (`dict` or `VitaSpeechDecoderConfig`, *optional*): defaults to the released decoder.
        codec_config (`dict` or `VitaCodecConfig`, *optional*): defaults to the released TiCodec.
        first_chunk_size (`int`, defaults to 20): codec tokens of audio in the first streamed chunk (0.5 s at 40
            tokens a second); small, so that speech starts early.
        chunk_size (`int`, defaults to 40): codec tokens of audio in every later chunk.
        chunk_padding (`int`, defaults to 10): codec tokens of context decoded on each side of a chunk and cut off
            again, so that chunks join without seams. A chunk is decoded once this many tokens past its end exist.
        top_k (`int`, defaults to 2): codec tokens are sampled among the `top_k` most probable (1 is greedy).
        penalty_window_size (`int`, defaults to -1): with a value > 0, the logit of a token is divided by `penalty`
            once per occurrence among the last `penalty_window_size` decoder inputs (SOS included), as the original
            does; <= 0 turns the penalty off (the demos' setting).
        penalty (`float`, defaults to 1.1): the repetition penalty's divisor.
        max_speech_tokens (`int`, defaults to 1000): decoding stops after this many codec tokens without EOS (25 s).
    """

    model_type = "vita_speech"
    base_config_key = "speech_config"
    sub_configs_defaults = {"decoder_config": VitaSpeechDecoderConfig, "codec_config": VitaCodecConfig}

    decoder_config: dict | PreTrainedConfig | None = None
    codec_config: dict | PreTrainedConfig | None = None
    first_chunk_size: int = SPEECH_SETTINGS_DEFAULTS["first_chunk_size"]
    chunk_size: int = SPEECH_SETTINGS_DEFAULTS["chunk_size"]
    chunk_padding: int = SPEECH_SETTINGS_DEFAULTS["chunk_padding"]
    top_k: int = SPEECH_SETTINGS_DEFAULTS["top_k"]
    penalty_window_size: int = SPEECH_SETTINGS_DEFAULTS["penalty_window_size"]
    penalty: float | int = SPEECH_SETTINGS_DEFAULTS["penalty"]
    max_speech_tokens: int = SPEECH_SETTINGS_DEFAULTS["max_speech_tokens"]

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_speech_settings(self.speech_settings, self.decoder_config.vocab_size, "VitaSpeechConfig")
        codes, tokens = self.codec_config.codebook_size, self.decoder_config.codec_vocab_size
        if codes != tokens:
            raise ValueError(
                f"The decoder emits {tokens} codec tokens (`decoder_config.codec_vocab_size`) but the codec has "
                f"{codes} codes (`codec_config.codebook_size`); expected the same number in both."
            )

    @property
    def speech_settings(self) -> dict:
        """The generation and streaming settings, by name (`SPEECH_SETTINGS_DEFAULTS`' keys)."""
        return {name: getattr(self, name) for name in SPEECH_SETTINGS_DEFAULTS}

    @property
    def sampling_rate(self) -> int:
        """Rate of the audio the codec makes, in Hz."""
        return self.codec_config.sampling_rate


__all__ = ["SPEECH_SETTINGS_DEFAULTS", "VitaSpeechConfig", "VitaSpeechDecoderConfig", "check_speech_settings"]
