"""Microphone chunks of any length, rate and dtype cut into the 512-sample 16 kHz windows the VAD scores.

Chunks are validated and converted (`duplex_audio_input.py`), resampled to 16 kHz with a streaming resampler that
survives a rate change mid-stream, and cut into windows; the rest waits for the next chunk.
"""

from __future__ import annotations

import numpy as np

from .duplex_audio_input import SAMPLING_RATE, Resampler, as_float32_mono, checked_rate

WINDOW_SIZE = 512  # Silero v5/v6 at 16 kHz takes exactly 512 new samples (32 ms) a call
WINDOW_SECS = WINDOW_SIZE / SAMPLING_RATE


class Framer:
    """Validate chunks, resample them to 16 kHz and cut them into 512-sample windows (the rest is buffered)."""

    def __init__(self) -> None:
        self._resampler: Resampler | None = None
        self._pending = np.zeros(0, dtype=np.float32)

    def reset(self) -> None:
        self._resampler = None
        self._pending = np.zeros(0, dtype=np.float32)

    def __call__(self, chunk: np.ndarray, sampling_rate: int) -> np.ndarray:
        samples, rate = as_float32_mono(chunk), checked_rate(sampling_rate)
        current = SAMPLING_RATE if self._resampler is None else self._resampler.orig_sr
        if rate != current:
            # The rate changed mid-stream: the old resampler's held-back lookahead is flushed first, so no input is
            # lost and the 16 kHz clock stays equal to the input's duration (within a sample per change).
            resampler = None if rate == SAMPLING_RATE else Resampler(rate, SAMPLING_RATE)  # built before any change
            if self._resampler is not None:
                self._pending = np.concatenate([self._pending, self._resampler.flush()])
            self._resampler = resampler
        if self._resampler is not None:
            samples = self._resampler(samples)
        self._pending = np.concatenate([self._pending, samples])
        count = len(self._pending) // WINDOW_SIZE
        windows = self._pending[: count * WINDOW_SIZE].reshape(count, WINDOW_SIZE)
        self._pending = self._pending[count * WINDOW_SIZE :]
        return windows


__all__ = ["WINDOW_SECS", "WINDOW_SIZE", "Framer"]
