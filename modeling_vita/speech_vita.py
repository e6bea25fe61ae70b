"""VITA-1.5's own voice as one model: the speech decoder (frames -> codec tokens) and the codec (tokens -> audio).

`VitaSpeechModel.generate_speech` decodes all codec tokens of a text, then the whole clip at once;
`stream_speech` hands out audio as the tokens come, as the original's `llm2TTS.run` does: once the tokens reach
`left + chunk + chunk_padding`, that window is decoded and the audio of its `chunk` tokens kept, the `left` tokens
(context already spoken, `chunk_padding` of them after the first chunk) and the `chunk_padding` tokens of look-ahead
cut off; the rest is decoded at the end. The first chunk has `first_chunk_size` tokens (so speech starts early), later
ones `chunk_size`. The codec's receptive field is shorter than the padding, so the chunks joined by plain
concatenation are the one-shot clip up to float rounding. The original's optional re-cutting of chunks at quiet
samples (`find_min_sum_index`), which holds audio back, is not ported.
"""

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .codec_vita import VitaCodecModel
from .configuration_vita_speech import VitaSpeechConfig, check_speech_settings
from .speech_decoder_vita import VitaSpeechDecoder, VitaSpeechDecoderOutput

logger = logging.getLogger(__name__)


@dataclass
class VitaSpeechOutput(ModelOutput):
    r"""
    codec_tokens (`torch.LongTensor` of shape `(1, num_tokens)`):
        The decoder's codec tokens (end of speech excluded); for a streamed chunk, the tokens whose audio it carries.
    audio (`torch.FloatTensor` of shape `(1, num_samples)`):
        Mono PCM in [-1, 1], `hop_length` samples per codec token.
    sampling_rate (`int`):
        Samples a second of `audio` (24000 for VITA-1.5).
    """

    codec_tokens: torch.LongTensor | None = None
    audio: torch.FloatTensor | None = None
    sampling_rate: int | None = None


def _as_global_tokens(global_tokens: torch.Tensor | Sequence[int] | None) -> torch.LongTensor | None:
    """Speaker tokens as the codec takes them, (1, global_code_num); a list or a 1-D tensor is one speaker."""
    if global_tokens is None:
        return None
    if not torch.is_tensor(global_tokens):
        if not isinstance(global_tokens, Sequence) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in global_tokens
        ):
            raise ValueError(
                f"`global_tokens` must be a list of ints or an integer tensor (one speaker), got {global_tokens!r}."
            )
        global_tokens = torch.tensor(list(global_tokens), dtype=torch.long)
    return global_tokens[None] if global_tokens.ndim == 1 else global_tokens


class VitaSpeechModel(PreTrainedModel):
    """The speech decoder and the codec of VITA-1.5, with one-shot and streamed speech generation."""

    config: VitaSpeechConfig
    base_model_prefix = "speech_model"
    main_input_name = "frames"
    supports_gradient_checkpointing = True
    # No attention of its own: the decoder runs eager or SDPA whatever is asked, the codec has none.
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True

    def __init__(self, config: VitaSpeechConfig):
        super().__init__(config)
        self.decoder = VitaSpeechDecoder._from_config(config.decoder_config)
        # The codec has no attention: "eager" keeps a model-wide `attn_implementation="sdpa"` from refusing it.
        self.codec = VitaCodecModel._from_config(config.codec_config, attn_implementation="eager")
        self.post_init()

    def forward(
        self,
        frames: torch.FloatTensor,
        frames_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        labels_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> VitaSpeechDecoderOutput:
        r"""
        Training pass of the decoder (the codec takes no part): see [`VitaSpeechDecoder.forward`].
        """
        return self.decoder(frames, frames_mask=frames_mask, labels=labels, labels_mask=labels_mask, **kwargs)

    def speech_settings(self, **overrides) -> dict:
        """The config's generation and streaming settings with the non-None `overrides`, checked."""
        settings = {**self.config.speech_settings, **{k: v for k, v in overrides.items() if v is not None}}
        check_speech_settings(settings, self.decoder.config.vocab_size, "speech generation")
        return settings

    def _codec_tokens(self, frames: torch.FloatTensor, do_sample: bool, settings: dict, generator) -> Iterator[int]:
        return self.decoder.generate_codec_tokens(
            frames,
            do_sample=do_sample,
            top_k=settings["top_k"],
            penalty_window_size=settings["penalty_window_size"],
            penalty=settings["penalty"],
            max_speech_tokens=settings["max_speech_tokens"],
            generator=generator,
        )

    def _output(self, tokens: list[int], audio: torch.Tensor) -> VitaSpeechOutput:
        codec_tokens = torch.tensor([tokens], dtype=torch.long, device=audio.device).reshape(1, len(tokens))
        return VitaSpeechOutput(
            codec_tokens=codec_tokens,
            audio=audio.float().clamp(-1.0, 1.0),
            sampling_rate=self.config.codec_config.sampling_rate,
        )

    def decode_audio(self, tokens: list[int], global_tokens: torch.LongTensor | None) -> torch.FloatTensor:
        """Codec tokens -> audio (1, len(tokens) * hop_length); empty audio for no tokens."""
        if not tokens:
            return torch.zeros((1, 0), device=self.codec.device)
        codec_tokens = torch.tensor([tokens], dtype=torch.long, device=self.codec.device)
        return self.codec.decode(codec_tokens, global_tokens)

    @torch.no_grad()
    def generate_speech(
        self,
        frames: torch.FloatTensor,
        do_sample: bool = True,
        top_k: int | None = None,
        penalty_window_size: int | None = None,
        penalty: float | None = None,
        max_speech_tokens: int | None = None,
        global_tokens: torch.Tensor | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> VitaSpeechOutput:
        r"""
        The whole clip of one text: all codec tokens, then one codec pass.

        frames (`torch.FloatTensor` of shape `(1, length, input_dim)`): the text's LLM input embeddings as rows.
        do_sample (`bool`, defaults to `True`): sample among the `top_k` most probable codec tokens, as the original
            does; `False` is greedy.
        top_k, penalty_window_size, penalty, max_speech_tokens: override the config's values for this call.
        global_tokens (`list[int]` or `torch.LongTensor` of shape `(1, global_code_num)`, *optional*): the speaker;
            defaults to the codec's `global_tokens`.
        generator (`torch.Generator`, *optional*): random source of the sampling.
        """
        settings = self.speech_settings(
            top_k=top_k, penalty_window_size=penalty_window_size, penalty=penalty, max_speech_tokens=max_speech_tokens
        )
        speaker = _as_global_tokens(global_tokens)
        tokens = list(self._codec_tokens(frames, do_sample, settings, generator))
        return self._output(tokens, self.decode_audio(tokens, speaker))

    def stream_speech(
        self,
        frames: torch.FloatTensor,
        do_sample: bool = True,
        top_k: int | None = None,
        penalty_window_size: int | None = None,
        penalty: float | None = None,
        max_speech_tokens: int | None = None,
        first_chunk_size: int | None = None,
        chunk_size: int | None = None,
        chunk_padding: int | None = None,
        global_tokens: torch.Tensor | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[VitaSpeechOutput]:
        r"""
        The clip of one text in chunks, each as soon as its tokens and their look-ahead exist; joined, they are
        `generate_speech`'s clip (same tokens). A text with no speech yields no chunk.

        first_chunk_size, chunk_size, chunk_padding (`int`, *optional*): override the config's chunking for this
            call. The other arguments are `generate_speech`'s.
        """
        settings = self.speech_settings(
            top_k=top_k, penalty_window_size=penalty_window_size, penalty=penalty,
            max_speech_tokens=max_speech_tokens, first_chunk_size=first_chunk_size, chunk_size=chunk_size,
            chunk_padding=chunk_padding,
        )  # fmt: skip
        self.decoder.check_frames(frames)  # refused now, not at the first chunk
        return self._stream(frames, do_sample, settings, _as_global_tokens(global_tokens), generator)

    @torch.no_grad()
    def _stream(
        self, frames: torch.FloatTensor, do_sample: bool, settings: dict, speaker: torch.LongTensor | None, generator
    ) -> Iterator[VitaSpeechOutput]:
        hop_length, padding = self.codec.config.hop_length, settings["chunk_padding"]
        tokens: list[int] = []
        spoken = 0  # tokens whose audio is out
        size = settings["first_chunk_size"]
        for token in self._codec_tokens(frames, do_sample, settings, generator):
            tokens.append(token)
            if len(tokens) == spoken + size + padding:
                # Left context: what was spoken already, up to `padding` tokens (none before the first chunk).
                left = min(padding, spoken)
                audio = self.decode_audio(tokens[spoken - left :], speaker)  # (1, (left + size + padding) * hop)
                piece = audio[:, left * hop_length : (left + size) * hop_length]
                yield self._output(tokens[spoken : spoken + size], piece)
                spoken += size
                size = settings["chunk_size"]
        if len(tokens) > spoken:
            left = min(padding, spoken)
            audio = self.decode_audio(tokens[spoken - left :], speaker)
            yield self._output(tokens[spoken:], audio[:, left * hop_length :])


__all__ = ["VitaSpeechModel", "VitaSpeechOutput"]
