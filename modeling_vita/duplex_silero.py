"""Silero VAD v6 for the duplex session: the ONNX model bundled in the `silero-vad` wheel, run with onnxruntime.

`SileroVAD` is a `SpeechScorer`: one state per stream, exactly 512-sample windows at 16 kHz with the 64-sample context
the model expects. The package itself is never imported (`import silero_vad` calls `torch.set_num_threads(1)` for the
whole process; `duplex_onnx.py`). The segmenter that turns its scores into speech segments is `duplex_vad.py`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from .duplex_audio_input import SAMPLING_RATE
from .duplex_framing import WINDOW_SIZE, Framer
from .duplex_onnx import bundled_model_path, onnx_session

logger = logging.getLogger(__name__)

CONTEXT_SIZE = 64  # samples of the previous window the ONNX model expects in front of each window


@runtime_checkable
class SpeechScorer(Protocol):
    """Gives the speech probability of consecutive 512-sample float32 windows at 16 kHz of one stream."""

    def score(self, window: np.ndarray) -> float: ...

    def reset_states(self) -> None: ...


def silero_model_path(filename: str = "silero_vad.onnx") -> Path:
    """Path of an ONNX model bundled in the `silero-vad` wheel, found without importing the package."""
    return bundled_model_path("silero_vad", "silero-vad", ("data",), filename)


class SileroVAD:
    """Silero VAD v6 (ONNX, onnxruntime) for one audio stream.

    `score(window)` takes exactly 512 float32 samples at 16 kHz; `__call__(chunk, sampling_rate)` takes chunks of any
    length, rate (resampled) and dtype (int16 or float) and returns the probabilities of the windows completed.

    Args:
        model_path: the ONNX file; default: `silero_vad.onnx` from the installed `silero-vad` wheel.
        num_threads: onnxruntime intra-op threads (1 is fastest for a 32 ms window).
    """

    window_size = WINDOW_SIZE
    sampling_rate = SAMPLING_RATE

    def __init__(self, model_path: str | Path | None = None, num_threads: int = 1) -> None:
        path = Path(model_path) if model_path is not None else silero_model_path()
        self._session = onnx_session(str(path), num_threads)
        self._sr = np.array(SAMPLING_RATE, dtype=np.int64)
        self._framer = Framer()
        self.reset_states()

    def reset_states(self) -> None:
        """Start a new stream: zero the recurrent state and the context, drop buffered samples."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SIZE, dtype=np.float32)
        self._framer.reset()

    def score(self, window: np.ndarray) -> float:
        if not isinstance(window, np.ndarray) or window.dtype != np.float32 or window.shape != (WINDOW_SIZE,):
            found = f"{type(window).__name__} {getattr(window, 'dtype', '')} {getattr(window, 'shape', '')}"
            raise ValueError(f"SileroVAD.score expects a float32 array of shape ({WINDOW_SIZE},), found {found}")
        if not np.isfinite(window).all():
            raise ValueError(
                f"SileroVAD.score expects finite samples, found {np.count_nonzero(~np.isfinite(window))} NaN/inf"
            )
        model_input = np.concatenate([self._context, window])[None, :]  # (1, 64 + 512)
        output, self._state = self._session.run(None, {"input": model_input, "state": self._state, "sr": self._sr})
        self._context = window[-CONTEXT_SIZE:]
        return float(output[0, 0])

    def __call__(self, chunk: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> np.ndarray:
        windows = self._framer(chunk, sampling_rate)
        return np.array([self.score(window) for window in windows], dtype=np.float32)


__all__ = ["CONTEXT_SIZE", "SileroVAD", "SpeechScorer", "silero_model_path"]
