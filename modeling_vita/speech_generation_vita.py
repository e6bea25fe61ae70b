"""Speech out on `VitaForConditionalGeneration`: `generate_speech` and `stream_speech` of an answer's text tokens.

As VITA-1.5 does it, the speech decoder reads the LLM's *input embeddings* of the answer's tokens (not hidden
states), each cut into consecutive rows of the decoder's width: with an LLM width of 3584 and rows of 896, a token is
4 rows (values 0..895, 896..1791, ...). Checkpoints without a speech decoder (`config.speech_config` is None) refuse
with a `ValueError` that names the way out.
"""

import logging
from collections.abc import Iterator, Sequence

import torch

from .speech_vita import VitaSpeechModel, VitaSpeechOutput

logger = logging.getLogger(__name__)


class VitaSpeechGenerationMixin:
    """Adds `generate_speech` / `stream_speech` to a VITA model holding an optional `speech_model`."""

    def _checked_speech_model(self) -> VitaSpeechModel:
        speech_model = getattr(self, "speech_model", None)
        if speech_model is None:
            raise ValueError(
                "This checkpoint has no speech decoder (its config.speech_config is None), so it cannot speak with "
                "VITA-1.5's own voice. Speak its text with a TTS engine (modeling_vita.make_tts, PiperTTS, "
                "EspeakTTS), or use a VITA-1.5 checkpoint converted together with its vita_tts_ckpt folder "
                "(vita-convert-original reads it when it sits inside the release folder)."
            )
        return speech_model

    def speech_frames(self, text_ids: torch.LongTensor) -> torch.FloatTensor:
        """The LLM's input embeddings of `text_ids` (1, T) as the decoder's rows: (1, T * hidden / input_dim,
        input_dim), row-major."""
        if not torch.is_tensor(text_ids) or text_ids.is_floating_point() or text_ids.dtype == torch.bool:
            found = text_ids.dtype if torch.is_tensor(text_ids) else type(text_ids).__name__
            raise ValueError(f"`text_ids` must be an integer tensor of token ids, shape (1, T); got {found}.")
        if text_ids.ndim == 1:
            text_ids = text_ids[None]
        if text_ids.ndim != 2 or text_ids.shape[0] != 1:
            raise ValueError(
                f"`text_ids` has shape {tuple(text_ids.shape)}; expected (1, T): speech is made for one answer at a "
                "time (loop over a batch)."
            )
        vocab_size = self.get_input_embeddings().num_embeddings
        if text_ids.numel() and (int(text_ids.min()) < 0 or int(text_ids.max()) >= vocab_size):
            raise ValueError(
                f"`text_ids` hold ids in [{int(text_ids.min())}, {int(text_ids.max())}]; expected token ids in "
                f"[0, {vocab_size}) of this model's tokenizer."
            )
        input_dim = self.config.speech_config.decoder_config.input_dim
        embedding = self.get_input_embeddings()
        with torch.no_grad():
            embeddings = embedding(text_ids.to(embedding.weight.device))  # (1, T, hidden)
        return embeddings.reshape(1, -1, input_dim)  # (1, T * hidden / input_dim, input_dim)

    def _empty_speech(self, speech_model: VitaSpeechModel) -> VitaSpeechOutput:
        device = speech_model.codec.device
        return VitaSpeechOutput(
            codec_tokens=torch.zeros((1, 0), dtype=torch.long, device=device),
            audio=torch.zeros((1, 0), device=device),
            sampling_rate=speech_model.config.codec_config.sampling_rate,
        )

    def generate_speech(
        self,
        text_ids: torch.LongTensor,
        do_sample: bool = True,
        top_k: int | None = None,
        penalty_window_size: int | None = None,
        penalty: float | None = None,
        max_speech_tokens: int | None = None,
        global_tokens: torch.Tensor | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> VitaSpeechOutput:
        r"""
        VITA-1.5's speech for an answer, as one clip.

        text_ids (`torch.LongTensor` of shape `(1, T)`): the answer's tokens (no state token, no end token).
        do_sample (`bool`, defaults to `True`): sample among the `top_k` most probable codec tokens, as VITA-1.5's
            demos do; `False` is greedy and deterministic.
        top_k, penalty_window_size, penalty, max_speech_tokens (*optional*): override `config.speech_config`.
        global_tokens (`list[int]` or `torch.LongTensor` of shape `(1, 8)`, *optional*): the speaker; defaults to
            the codec's.
        generator (`torch.Generator`, *optional*): random source of the sampling.

        Returns a [`VitaSpeechOutput`]: `codec_tokens` (1, K), `audio` (1, K * hop_length) in [-1, 1],
        `sampling_rate`. An empty text gives an empty clip.
        """
        speech_model = self._checked_speech_model()
        speech_model.speech_settings(
            top_k=top_k, penalty_window_size=penalty_window_size, penalty=penalty, max_speech_tokens=max_speech_tokens
        )
        frames = self.speech_frames(text_ids)
        if frames.shape[1] == 0:
            return self._empty_speech(speech_model)
        return speech_model.generate_speech(
            frames.to(speech_model.decoder.device),
            do_sample=do_sample,
            top_k=top_k,
            penalty_window_size=penalty_window_size,
            penalty=penalty,
            max_speech_tokens=max_speech_tokens,
            global_tokens=global_tokens,
            generator=generator,
        )

    def stream_speech(
        self,
        text_ids: torch.LongTensor,
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
        VITA-1.5's speech for an answer, in chunks as the codec tokens come: the first of `first_chunk_size` tokens
        (defaults: 20, i.e. 0.5 s), then `chunk_size` (40), each decoded with `chunk_padding` (10) tokens of context
        on both sides. Joined, the chunks' `audio` and `codec_tokens` are `generate_speech`'s (same tokens). An
        empty text yields no chunk. Bad arguments are refused at the call, before any chunk.

        The arguments are `generate_speech`'s, plus the chunking overrides.
        """
        speech_model = self._checked_speech_model()
        speech_model.speech_settings(
            top_k=top_k, penalty_window_size=penalty_window_size, penalty=penalty,
            max_speech_tokens=max_speech_tokens, first_chunk_size=first_chunk_size, chunk_size=chunk_size,
            chunk_padding=chunk_padding,
        )  # fmt: skip
        frames = self.speech_frames(text_ids)
        if frames.shape[1] == 0:
            return iter(())
        return speech_model.stream_speech(
            frames.to(speech_model.decoder.device),
            do_sample=do_sample,
            top_k=top_k,
            penalty_window_size=penalty_window_size,
            penalty=penalty,
            max_speech_tokens=max_speech_tokens,
            first_chunk_size=first_chunk_size,
            chunk_size=chunk_size,
            chunk_padding=chunk_padding,
            global_tokens=global_tokens,
            generator=generator,
        )


__all__ = ["VitaSpeechGenerationMixin"]
