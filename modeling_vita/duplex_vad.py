"""Voice activity detection and speech segmentation for VITA's duplex mode (numpy + onnxruntime, no torch).

The speech scorer is `SileroVAD` (`duplex_silero.py`, re-exported here); the chunks are cut into its windows by
`duplex_framing.py`. This module holds the segmenter:
    - `VADSegmenter`: a four-state machine QUIET -> STARTING -> SPEAKING -> STOPPING (as pipecat's `VADAnalyzer`)
      fed with one speech probability per 32 ms window. It reports only stable edges (`SpeechStarted`,
      `SpeechEnded` with the segment, `SpeechDiscarded` for too short speech), keeps a pre-roll so the onset is not
      clipped, force-cuts speech that never ends and drops segments that are too short. With a turn detector
      (`duplex_turn_detector.py`) a silence ends the segment only when the detector calls the turn complete (or at
      its silence limit), so a pause mid-sentence keeps one segment. The state machine is pure Python and can be
      driven with scripted probabilities (`push_probabilities`) and a scripted detector.

Error contract: a bad chunk (NaN/inf, a dtype other than int16/float, not mono, an unsupported rate) raises
`ValueError` before any state changes (`duplex_audio_input.py`). The session turns it into an `Error` event and
goes on with the next chunk.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

import numpy as np

from .duplex_audio_input import SAMPLING_RATE, Resampler, as_float32_mono
from .duplex_events import Event, SpeechDiscarded, SpeechEnded, SpeechPaused, SpeechResumed, SpeechStarted
from .duplex_framing import WINDOW_SECS, WINDOW_SIZE, Framer
from .duplex_silero import SileroVAD, SpeechScorer, silero_model_path
from .duplex_turn_detector import TurnDetector, TurnParams

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VADParams:
    """Tunables of the speech segmenter. Times in seconds, rounded to 32 ms windows.

    Defaults, weighed against the original VITA demo (threshold 0.7, end after 500 ms below 0.55, 256 ms pre-roll,
    segments under 1.5 s dropped, no maximum), Silero's own defaults (0.5 / 0.35, 100 ms silence, 30 ms pad) and
    pipecat's (0.7, start 0.2 s, stop 0.2 s):

    Args:
        threshold: speech probability that starts speech. 0.6 sits between Silero's calibration point (0.5) and
            VITA's 0.7 (chosen for Silero v4): Silero v6 scores clean speech around 0.8 and silence/noise up to about
            0.5, and noise that gets through is rejected anyway by the model's `<2>` state token.
        negative_threshold: probability under which speech counts as paused (hysteresis). Default
            `threshold - 0.15` as in Silero and VITA (floored at 0.01).
        start_secs: how long the probability must stay over `threshold` before speech is confirmed (0.1 s: three
            windows filter clicks; pipecat uses 0.2 s, VITA none, which costs latency for little gain).
        stop_secs: silence that ends a segment. 0.5 s as in VITA and OpenAI's server VAD (Silero's 0.1 s splits
            sentences at every breath; fastrtc's 2 s is slow to answer).
        pre_roll_secs: audio kept before the confirmed onset so the first phoneme is not clipped (VITA 0.256 s).
        post_roll_secs: audio kept after the last speech window (the rest of the trailing silence is cut off).
        min_segment_secs: speech (onset to last speech window) shorter than this is discarded. VITA dropped
            segments under 1.5 s *including* 0.256 s pre-roll and 0.5 s silence, i.e. about 0.75 s of speech; 0.5 s
            keeps short commands ("stop", "next one") and still drops coughs and clicks.
        max_segment_secs: speech longer than this is cut into a segment and continues in a new one (VITA had no
            limit; 30 s bounds the audio prompt and the latency of a never-ending stream).
        speculate_secs: silence after which `SpeechPaused` offers the segment so far, so the session can start the
            turn before the end of turn is decided (its answer is then ready when the turn ends; `SpeechResumed`
            withdraws it if the user goes on). 0.064 s: two windows, before the turn model's first ask at 0.2 s;
            the offered segment has up to `post_roll_secs` of the silence (the model reads the same speech). None:
            no offer.
    """

    threshold: float = 0.6
    negative_threshold: float | None = None
    start_secs: float = 0.1
    stop_secs: float = 0.5
    pre_roll_secs: float = 0.25
    post_roll_secs: float = 0.1
    min_segment_secs: float = 0.5
    max_segment_secs: float = 30.0
    speculate_secs: float | None = 0.064

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), found {self.threshold}")
        if self.negative_threshold is None:
            object.__setattr__(self, "negative_threshold", max(self.threshold - 0.15, 0.01))
        if not 0.0 < self.negative_threshold <= self.threshold:
            raise ValueError(
                f"negative_threshold must be in (0, threshold={self.threshold}], found {self.negative_threshold}"
            )
        for name in ("start_secs", "stop_secs", "pre_roll_secs", "post_roll_secs", "min_segment_secs"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, found {getattr(self, name)}")
        if self.speculate_secs is not None and self.speculate_secs <= 0:
            raise ValueError(f"speculate_secs must be None or > 0, found {self.speculate_secs}")
        if self.max_segment_secs <= max(self.min_segment_secs, self.start_secs):
            raise ValueError(
                f"max_segment_secs must be > min_segment_secs={self.min_segment_secs} and "
                f"start_secs={self.start_secs}, found {self.max_segment_secs}"
            )


class VADState(str, Enum):
    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


# ---------------------------------------------------------------------------------------------------------------------
# Segmenter
# ---------------------------------------------------------------------------------------------------------------------


def _windows(secs: float) -> int:
    return max(1, round(secs / WINDOW_SECS))


class VADSegmenter:
    """Cut a stream into speech segments with a four-state machine over per-window speech probabilities.

    `push(chunk, sampling_rate)` scores the audio with `scorer` (a `SileroVAD` by default, created on first use);
    `push_probabilities(probabilities, samples)` drives the same state machine with given probabilities (one per
    32 ms window), which is how it is tested. Both return the events of the windows completed, in order; `time` is
    the end of the window that triggered the event on the 16 kHz clock of this stream.

    Transitions: QUIET -> STARTING on a window >= `threshold`; STARTING -> SPEAKING (`SpeechStarted`) after
    `start_secs` of such windows, back to QUIET on any window below it; SPEAKING -> STOPPING on a window below
    `negative_threshold` (windows between the two thresholds keep speaking); STOPPING -> SPEAKING on a window >=
    `threshold`, -> QUIET (`SpeechEnded` or `SpeechDiscarded`) after `stop_secs` of windows below it.

    With a turn detector, silence ends a segment when the detector says the turn is complete instead: it is asked
    with the segment so far (pre-roll, speech and the silence heard) after `turn.short_silence_secs`, then every
    `turn.reask_secs` while it says incomplete; speech that resumes meanwhile continues the same segment; after
    `turn.max_silence_secs` the segment ends anyway. Speech still shorter than `min_segment_secs` keeps the plain
    rule (it would be discarded; holding it open would only glue a cough to the next sentence).

    Args:
        params: the thresholds and durations (`VADParams`).
        scorer: anything with `score(window) -> float` and `reset_states()`.
        turn: when to ask the turn detector (`TurnParams`; default `TurnParams()`).
        turn_detector: anything with `probability_complete(audio16k) -> float`; None: the plain silence rule.
    """

    def __init__(
        self,
        params: VADParams | None = None,
        scorer: SpeechScorer | None = None,
        turn: TurnParams | None = None,
        turn_detector: TurnDetector | None = None,
    ) -> None:
        self.params = params if params is not None else VADParams()
        self.scorer = scorer
        self.turn = turn if turn is not None else TurnParams()
        self.turn_detector = turn_detector
        self._framer = Framer()
        p = self.params
        self._start_windows = _windows(p.start_secs)
        self._stop_windows = _windows(p.stop_secs)
        self._pre_roll = round(p.pre_roll_secs * SAMPLING_RATE)
        self._post_roll = round(p.post_roll_secs * SAMPLING_RATE)
        self._min_speech = round(p.min_segment_secs * SAMPLING_RATE)
        self._max_segment = max(round(p.max_segment_secs * SAMPLING_RATE), WINDOW_SIZE)
        self._tail_size = self._pre_roll + (self._start_windows + 1) * WINDOW_SIZE
        self._ask_windows = _windows(self.turn.short_silence_secs)
        self._reask_windows = _windows(self.turn.reask_secs)
        self._max_silence_windows = max(_windows(self.turn.max_silence_secs), self._ask_windows)
        self._speculate_windows = None if p.speculate_secs is None else _windows(p.speculate_secs)
        self.reset()

    def reset(self) -> None:
        """Start a new stream (the clock restarts at 0)."""
        self.state = VADState.QUIET
        self._position = 0  # samples consumed so far (end of the last window)
        self._tail = np.zeros(0, dtype=np.float32)  # the latest samples, for the pre-roll
        self._segment: list[np.ndarray] = []
        self._segment_start = 0
        self._onset = 0  # first speech window of the current segment
        self._last_speech = 0  # end of the last speech window
        self._count = 0  # consecutive windows in STARTING / STOPPING
        self._turn_failed = False  # the turn detector raised during this segment
        self._offered = False  # a SpeechPaused offered the segment and no speech came since
        self._framer.reset()
        if self.scorer is not None:
            self.scorer.reset_states()

    @property
    def time(self) -> float:
        """Seconds of audio consumed (16 kHz clock)."""
        return self._position / SAMPLING_RATE

    def push(self, chunk: np.ndarray, sampling_rate: int = SAMPLING_RATE) -> list[Event]:
        """Feed audio of any length, rate, int16 or float dtype. Raises ValueError on a bad chunk (state unchanged)."""
        windows = self._framer(chunk, sampling_rate)
        if len(windows) and self.scorer is None:
            self.scorer = SileroVAD()
        events: list[Event] = []
        for window in windows:
            events.extend(self._step(self.scorer.score(window), window))
        return events

    def push_probabilities(self, probabilities: Iterable[float], samples: np.ndarray | None = None) -> list[Event]:
        """Feed one speech probability per 512-sample window; `samples` (16 kHz) fills the segments (zeros if None)."""
        probabilities = [float(p) for p in probabilities]
        if samples is None:
            samples = np.zeros(len(probabilities) * WINDOW_SIZE, dtype=np.float32)
        samples = as_float32_mono(samples)
        if len(samples) != len(probabilities) * WINDOW_SIZE:
            raise ValueError(
                f"samples must hold {WINDOW_SIZE} per probability, i.e. {len(probabilities) * WINDOW_SIZE}, "
                f"found {len(samples)}"
            )
        events: list[Event] = []
        for index, probability in enumerate(probabilities):
            events.extend(self._step(probability, samples[index * WINDOW_SIZE : (index + 1) * WINDOW_SIZE]))
        return events

    def flush(self) -> list[Event]:
        """End of stream: close the open segment, if any, as if silence had lasted `stop_secs`."""
        if self.state in (VADState.SPEAKING, VADState.STOPPING):
            return [self._end_segment(truncated=False)]
        self.state, self._count = VADState.QUIET, 0
        return []

    def _step(self, probability: float, window: np.ndarray) -> list[Event]:
        p = self.params
        window_start = self._position
        self._position += WINDOW_SIZE
        self._tail = np.concatenate([self._tail, window])[-self._tail_size :]
        if self.state in (VADState.SPEAKING, VADState.STOPPING):
            self._segment.append(window)
        events: list[Event] = []
        match self.state:
            case VADState.QUIET:
                if probability >= p.threshold:
                    self.state, self._count, self._onset = VADState.STARTING, 1, window_start
            case VADState.STARTING:
                if probability >= p.threshold:
                    self._count += 1
                else:
                    self.state, self._count = VADState.QUIET, 0
            case VADState.SPEAKING:
                if probability >= p.negative_threshold:
                    self._last_speech = self._position
                else:
                    self.state, self._count = VADState.STOPPING, 1
            case VADState.STOPPING:
                if probability >= p.threshold:
                    self.state, self._last_speech = VADState.SPEAKING, self._position
                    if self._offered:
                        self._offered = False
                        events.append(SpeechResumed(self.time))
                else:
                    self._count += 1
        if self.state == VADState.STARTING and self._count >= self._start_windows:
            # Confirmed onset: the segment starts `pre_roll` before the first speech window.
            start = max(self._onset - self._pre_roll, self._position - len(self._tail), 0)
            self._segment = [self._tail[len(self._tail) - (self._position - start) :].copy()]
            self._segment_start, self._last_speech = start, self._position
            self.state = VADState.SPEAKING
            events.append(SpeechStarted(self.time, start=self._onset / SAMPLING_RATE))
        elif self.state == VADState.STOPPING and self._silence_ends_turn():
            events.append(self._end_segment(truncated=False))
        elif self.state == VADState.STOPPING and self._count == self._speculate_windows and not self._offered:
            offer = self._segment_so_far()
            if offer is not None:
                self._offered = True
                events.append(offer)
        if (
            self.state in (VADState.SPEAKING, VADState.STOPPING)
            and self._position - self._segment_start >= self._max_segment
        ):
            if self.state == VADState.STOPPING:
                events.append(self._end_segment(truncated=False))
            else:
                # Speech that never ends: cut here and go on with a new segment (no pre-roll: no gap, no overlap).
                events.append(self._end_segment(truncated=True))
                self.state, self._segment, self._segment_start = VADState.SPEAKING, [], self._position
                self._onset = self._last_speech = self._position
                events.append(SpeechStarted(self.time, start=self.time))
        return events

    def _silence_ends_turn(self) -> bool:
        """In STOPPING, after `self._count` windows of silence: does the segment end here?"""
        if self.turn_detector is None or self._turn_failed or self._last_speech - self._onset < self._min_speech:
            return self._count >= self._stop_windows
        if self._count >= self._max_silence_windows:
            return True
        since_ask = self._count - self._ask_windows
        if since_ask < 0 or since_ask % self._reask_windows:
            return False
        audio = np.concatenate(self._segment)
        try:
            probability = self.turn_detector.probability_complete(audio)
        except Exception:  # a failing turn model must not hold the user's turn open: the silence rule decides
            logger.exception("the turn detector failed; this segment ends after stop_secs of silence")
            self._turn_failed = True
            return self._count >= self._stop_windows
        logger.debug(
            "turn model at %.3f s after %d silent windows: p(complete)=%.3f", self.time, self._count, probability
        )
        return probability >= self.turn.threshold

    def _segment_so_far(self) -> SpeechPaused | None:
        """The segment as `_end_segment` would close it now, without closing it (None: it would be discarded)."""
        if self._last_speech - self._onset < self._min_speech:
            return None
        end = min(self._last_speech + self._post_roll, self._position)
        audio = np.concatenate(self._segment)[: end - self._segment_start]
        start_s, end_s = self._segment_start / SAMPLING_RATE, end / SAMPLING_RATE
        return SpeechPaused(self.time, segment=audio, start=start_s, end=end_s)

    def _end_segment(self, truncated: bool) -> Event:
        end = self._position if truncated else min(self._last_speech + self._post_roll, self._position)
        audio = np.concatenate(self._segment) if self._segment else np.zeros(0, dtype=np.float32)
        audio = audio[: end - self._segment_start]
        start_s, end_s = self._segment_start / SAMPLING_RATE, end / SAMPLING_RATE
        self.state, self._count, self._segment, self._turn_failed = VADState.QUIET, 0, [], False
        self._offered = False
        if not truncated and self._last_speech - self._onset < self._min_speech:
            return SpeechDiscarded(self.time, start=start_s, end=end_s)
        return SpeechEnded(self.time, segment=audio, start=start_s, end=end_s, truncated=truncated)


__all__ = [
    "SAMPLING_RATE",
    "WINDOW_SIZE",
    "Resampler",
    "SileroVAD",
    "SpeechScorer",
    "VADParams",
    "VADSegmenter",
    "VADState",
    "as_float32_mono",
    "silero_model_path",
]
