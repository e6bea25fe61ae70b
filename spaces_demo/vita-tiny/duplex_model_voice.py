"""VITA-1.5's own voice as the duplex session's speech engine: the checkpoint's speech decoder and codec.

`ModelVoice` has the `TTSEngine` interface (`synthesize(text) -> (samples, rate)`) and `stream(text)`, which yields
the codec's chunks as they are decoded (the first after `first_chunk_size` codec tokens, 0.5 s of audio at the
released settings), so `AnswerSpeaker` hands each chunk to the player at once and stops a cut answer within one chunk.
The text is prepared as VITA-1.5's server prepares it (state characters and end tokens removed, lower case) and
re-tokenized with the checkpoint's own tokenizer; the decoder reads the LLM's input embeddings of those tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)


def has_model_voice(model: Any) -> bool:
    """Whether a loaded checkpoint carries a speech decoder and codec (`config.speech_config`)."""
    return getattr(model, "speech_model", None) is not None and callable(getattr(model, "stream_speech", None))


class ModelVoice:
    """Speech from the model itself (VITA-1.5 checkpoints converted with their `vita_tts_ckpt`).

    Args:
        model: a `VitaForConditionalGeneration` with a speech model.
        tokenizer: the checkpoint's tokenizer.
        do_sample: sample the codec tokens as VITA-1.5's demos do (top-k 2); False is greedy.
        speech_kwargs: passed to `stream_speech` (chunk sizes, speaker `global_tokens`, ...).
    """

    def __init__(self, model: Any, tokenizer: Any, do_sample: bool = True, **speech_kwargs: Any) -> None:
        if not has_model_voice(model):
            raise ValueError(
                "this checkpoint has no speech decoder (config.speech_config is None), so it cannot speak with its "
                "own voice; use a TTS engine (tts='piper' or 'espeak') or a VITA-1.5 folder converted with its "
                "vita_tts_ckpt/"
            )
        self.model, self.tokenizer = model, tokenizer
        self.do_sample, self.speech_kwargs = do_sample, speech_kwargs
        self.sampling_rate = int(model.speech_model.config.codec_config.sampling_rate)

    def text_ids(self, text: str) -> torch.LongTensor:
        """The answer text as VITA-1.5's server feeds it to the decoder: no control tokens, lower case."""
        for token in (*self._state_strings(), "<unk>", "<|im_end|>", getattr(self.tokenizer, "eos_token", None)):
            if token:
                text = text.replace(token, "")
        ids = self.tokenizer.encode(text.strip().lower(), add_special_tokens=False)
        return torch.tensor([ids], dtype=torch.long)

    def stream(self, text: str) -> Iterator[tuple[np.ndarray, int]]:
        """The speech of `text` chunk by chunk (float32 mono, `sampling_rate`)."""
        ids = self.text_ids(text)
        with torch.inference_mode():
            for chunk in self.model.stream_speech(ids, do_sample=self.do_sample, **self.speech_kwargs):
                yield chunk.audio[0].float().cpu().numpy(), int(chunk.sampling_rate)

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        pieces = [audio for audio, _ in self.stream(text)]
        return (np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)), self.sampling_rate

    def _state_strings(self) -> tuple[str, ...]:
        tokens = getattr(self.model.config, "state_tokens", None) or {}
        return tuple(str(value) for value in tokens.values())


__all__ = ["ModelVoice", "has_model_voice"]
