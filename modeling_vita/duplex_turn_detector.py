"""End-of-turn detection for VITA's duplex mode: has the user finished, or only paused mid-sentence?

A silence timeout alone either cuts users who pause to think ("I would like to know the ... colour of the shape")
or answers late. Here a turn model decides at a short silence (`TurnParams`, the timings beside `VADParams`):
    - `TurnDetector`: anything with `probability_complete(audio16k) -> float`, the probability that the speech so far
      (float32 mono at 16 kHz, ending with the silence heard so far) is a finished turn. Tests script one.
    - `SmartTurnDetector`: pipecat's bundled Smart Turn v3.2 model (a Whisper-encoder classifier over the last 8 s,
      ONNX, run with onnxruntime). The `pipecat-ai` package is never imported (its import pulls loguru and more);
      its ONNX file is found the way `duplex_vad.silero_model_path` finds Silero's. The log-mel input comes from
      transformers' `WhisperFeatureExtractor` set up as the model was trained: 8 s windows (80 x 800 features),
      the audio left-padded with zeros to 8 s (the speech ends at the right edge), waveform normalised.
    - `load_turn_detector`: the detector a session uses ("auto": Smart Turn when its file is found, else None, the
      plain silence rule of `VADParams.stop_secs`, said once in the log).

`VADSegmenter` (`duplex_vad.py`) asks the detector; it stays pure and is tested with a scripted detector.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .duplex_audio_input import SAMPLING_RATE
from .duplex_onnx import bundled_model_path, onnx_session

logger = logging.getLogger(__name__)

SMART_TURN_FILE = "smart-turn-v3.2-cpu.onnx"
SMART_TURN_SECS = 8  # the model reads the last 8 s (Whisper features over a 128000-sample window)
_fallback_said = False  # the missing model is reported once per process, not once per session


@dataclass(frozen=True)
class TurnParams:
    """When the segmenter asks the turn model, and what it does with the answer. Times in seconds of silence after
    the last speech window (rounded to 32 ms windows); they replace `VADParams.stop_secs` while a model is in use.

    Measured with Smart Turn v3.2 on Piper speech (the joe voice): 40 questions from vita-tiny's phrasings and 145
    cuts of them at word boundaries (after the first word, before the last; boundaries from Piper's phoneme
    alignments), each followed by digital silence. On such speech the model separates weakly: at 0.2 s of silence
    the complete questions scored 0.82 on average (90 % >= 0.5) and the cuts 0.77 (81 % >= 0.5, so 19 % of
    mid-sentence pauses held; 42 % for 12 longer sentences cut after their second word). Single cases separate
    well ("I would like to know the colour of the shape." 0.92, cut after "the" 0.30).

    Args:
        short_silence_secs: silence after which the model is first asked. 0.2 s as pipecat (its VAD `stop_secs`
            feeds Smart Turn): the model was trained on speech ending in a short silence, and the longer the
            silence the likelier it calls any speech finished (cuts >= 0.5: 72 % at 0.1 s, 81 % at 0.2 s, 95 % at
            0.5 s, while the complete questions stay at 85-100 %).
        threshold: probability from which the turn is complete (pipecat's 0.5). At 0.2 s of silence 0.3 kept 90 %
            of the complete questions and held 15 % of the cuts, 0.5 kept 90 % and held 19 %, 0.7 kept 82 % and
            held 26 %, 0.9 kept 55 % and held 38 %: 0.5 holds the most pauses for no loss of finished turns.
        reask_secs: while the model says "incomplete" and nobody speaks, it is asked again every `reask_secs` with
            the longer silence. More silence drifts its answer to "complete" (of the 28 cuts held at 0.2 s, 43 %
            were called complete at 0.3 s, 75 % at 0.5 s, 89 % at 1.0 s), so a re-ask is a softer timeout rather
            than a second opinion: 1.0 s (asks at 0.2 s and 1.2 s of silence) keeps a held pause of up to a second
            whole, while a finished question the first ask missed (4 of 40; all called complete by 0.5 s, 3 of 4 at
            1.2 s) still ends at 1.2 s instead of the limit.
        max_silence_secs: the limit: a turn the model keeps calling incomplete ends after this much silence anyway
            (2.0 s: Freeze-Omni's VAD silence; pipecat waits 3 s, which feels stuck when the model is wrong).
    """

    short_silence_secs: float = 0.2
    threshold: float = 0.5
    reask_secs: float = 1.0
    max_silence_secs: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), found {self.threshold}")
        if self.short_silence_secs <= 0 or self.reask_secs <= 0:
            found = f"short_silence_secs={self.short_silence_secs}, reask_secs={self.reask_secs}"
            raise ValueError(f"short_silence_secs and reask_secs must be > 0, found {found}")
        if self.max_silence_secs < self.short_silence_secs:
            raise ValueError(
                f"max_silence_secs must be >= short_silence_secs={self.short_silence_secs}, "
                f"found {self.max_silence_secs}"
            )


@runtime_checkable
class TurnDetector(Protocol):
    """Gives the probability that a user's turn is finished, from its audio so far (float32 mono, 16 kHz)."""

    def probability_complete(self, audio16k: np.ndarray) -> float: ...


def smart_turn_model_path(filename: str = SMART_TURN_FILE) -> Path:
    """Path of the Smart Turn ONNX model bundled in the `pipecat-ai` wheel, found without importing pipecat."""
    return bundled_model_path("pipecat", "pipecat-ai", ("audio", "turn", "smart_turn", "data"), filename)


@lru_cache(maxsize=1)
def _feature_extractor() -> Any:
    from transformers import WhisperFeatureExtractor

    # Whisper's 80-bin log-mel (25 ms window, 10 ms hop) over 8 s instead of Whisper's 30 s: 800 frames.
    return WhisperFeatureExtractor(
        feature_size=80, sampling_rate=SAMPLING_RATE, hop_length=160, chunk_length=SMART_TURN_SECS, n_fft=400
    )


class SmartTurnDetector:
    """Smart Turn v3.2 (pipecat's end-of-turn model) on onnxruntime.

    A call costs the same whatever the length of the audio (always 8 s of input): measured with one onnxruntime
    thread, about 75 ms on an idle CPU core and up to 240 ms while other work shares the machine's 2 cores.

    Args:
        model_path: the ONNX file; default: `smart-turn-v3.2-cpu.onnx` from the installed `pipecat-ai` wheel.
        num_threads: onnxruntime intra-op threads (1: the dispatcher thread must not take every core from the model).
    """

    sampling_rate = SAMPLING_RATE

    def __init__(self, model_path: str | Path | None = None, num_threads: int = 1) -> None:
        path = Path(model_path) if model_path is not None else smart_turn_model_path()
        if not path.is_file():
            raise FileNotFoundError(f"Smart Turn model not found at {path}; expected an ONNX file")
        self.model_path = path
        self._session = onnx_session(str(path), num_threads)
        self._features = _feature_extractor()

    def probability_complete(self, audio16k: np.ndarray) -> float:
        if (
            not isinstance(audio16k, np.ndarray)
            or audio16k.ndim != 1
            or not np.issubdtype(audio16k.dtype, np.floating)
        ):
            found = f"{type(audio16k).__name__} {getattr(audio16k, 'dtype', '')} {getattr(audio16k, 'shape', '')}"
            raise ValueError(f"probability_complete expects a 1-D float array of 16 kHz samples, found {found}")
        if not np.isfinite(audio16k).all():
            bad = np.count_nonzero(~np.isfinite(audio16k))
            raise ValueError(f"probability_complete expects finite samples, found {bad} NaN/inf")
        window = SMART_TURN_SECS * SAMPLING_RATE
        audio = audio16k.astype(np.float32)[-window:]
        # The speech must end at the right edge, as in training: short input is padded with zeros at the start.
        audio = np.pad(audio, (window - len(audio), 0))
        features = self._features(
            audio,
            sampling_rate=SAMPLING_RATE,
            padding="max_length",
            max_length=window,
            truncation=True,
            do_normalize=True,
            return_tensors="np",
        ).input_features.astype(np.float32)
        (output,) = self._session.run(None, {"input_features": features})
        return float(np.clip(output.reshape(-1)[0], 0.0, 1.0))  # the graph ends with a sigmoid


def load_turn_detector(choice: TurnDetector | str | None = "auto") -> TurnDetector | None:
    """The turn detector a session uses: `choice` itself if it is one, None for None (the silence rule), or for
    "auto" a `SmartTurnDetector` when its ONNX file is installed, else None (logged once per process)."""
    global _fallback_said
    if choice is None or isinstance(choice, TurnDetector):
        return choice
    if choice != "auto":
        raise ValueError(f"turn_detector must be a TurnDetector, 'auto' or None, found {choice!r}")
    try:
        return SmartTurnDetector()
    except (FileNotFoundError, ImportError) as error:
        if not _fallback_said:
            _fallback_said = True
            logger.warning("no end-of-turn model (%s); turns end after VADParams.stop_secs of silence", error)
        return None


__all__ = [
    "SMART_TURN_FILE",
    "SmartTurnDetector",
    "TurnDetector",
    "TurnParams",
    "load_turn_detector",
    "smart_turn_model_path",
]
