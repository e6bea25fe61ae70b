"""The real-time tab's handler: microphone chunks in, a live transcript, the answer, spoken clips and a timeline out.

Design: the smallest real-time handler of fastrtc (`ReplyOnPause`: `receive(frame)` takes input, `emit()` hands out
what is ready) over VITA's `DuplexSession` (`modeling_vita/duplex_session.py`), which already owns the VAD, the two
model roles, interruption and speech synthesis in its threads, on top of the pure state machine of
`modeling_vita/duplex_state.py`. This class adds only what a browser needs and stays a plain object, testable without
one: chunks as gradio sends them (`(rate, int16 array)`, mono or stereo), a transcript of the events, the answer being
streamed, a playback queue for the spoken sentences, and the timeline picture drawn by
`modeling_vita.duplex_timeline.draw_timeline` (the same renderer as the `vita-duplex` command).

Playback: gradio's streaming audio output needs ffmpeg on the server and cannot be cut once sent, so spoken clips go
out one by one through a plain autoplaying `gr.Audio`: the next clip is released when the previous one has played
(wall clock), and an interruption releases a short silence, which replaces (so stops) the clip still playing. A ducked
answer (`answer_ducked`: the user started speaking) is stopped the same way, its unplayed rest kept at the head of the
queue, and nothing more is released until `answer_resumed` (it plays on from there) or `interrupted` (dropped).

Input: gradio 6.31's microphone sends 0.1 s chunks whatever `stream_every` says, and a chunk recorded while the server
has not yet asked for the next one is dropped, not queued. The session's clock counts the audio that arrived, so on a
busy server the timeline is shorter than the wall clock and a segment may lose a syllable; the page keeps each chunk's
reply cheap for that reason (see `app.VitaSpace._realtime_outputs`).

Echo: browsers cancel the echo of their own speaker in `getUserMedia` (echoCancellation is on by default), and the
session's own guard compares the microphone with the synthesized audio at full scale, a level a microphone does not
reach, so it would mute the user whenever the assistant speaks and no interruption could happen. The handler turns
that guard off by default (`echo_margin_db=-inf`); pass a finite margin for a setup without echo cancellation.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from modeling_vita.duplex_audio_input import as_float32_mono, resample
from modeling_vita.duplex_events import (
    AnswerDucked,
    AnswerResumed,
    AudioOut,
    Error,
    Event,
    Ignored,
    Interrupted,
    ResponseDone,
    SpeechDiscarded,
    SpeechEnded,
    SpeechStarted,
    StateDecided,
    TextDelta,
)
from modeling_vita.duplex_speech_output import TTSEngine
from modeling_vita.duplex_timeline import describe, draw_timeline
from processing_vita import VitaState

if TYPE_CHECKING:
    from .limits import Limits
    from .runtime import SpaceRuntime

logger = logging.getLogger(__name__)

ENVELOPE_RATE = 1_000  # samples a second kept of the microphone for the timeline's waveform (block peaks)
CUT_SECS = 0.05  # the silence that replaces a clip still playing when its answer is interrupted
STATE_LINES = {
    VitaState.QUERY_AUDIO: "answered query (audio)",
    VitaState.NOISY_AUDIO: "background talk",
    VitaState.QUERY_TEXT: "typed query",
}


@dataclass
class RealtimeView:
    """What the page shows after a `receive`/`emit`.

    Args:
        transcript: one line per event (speech segments, decisions, interruptions, answers), oldest first.
        answer: the answer being streamed, or the latest one.
        speech: a clip to play now as `(rate, int16 samples)`, or None to keep playing what plays.
        changed: events arrived that change the timeline picture (a segment, a decision, an end or a cut).
        news: any event arrived (the transcript or the answer changed).
    """

    transcript: list[str]
    answer: str
    speech: tuple[int, np.ndarray] | None
    changed: bool
    news: bool = False


def _as_float_mono(samples: np.ndarray) -> np.ndarray:
    """A microphone chunk as float32 mono: each channel of `(samples, channels)` scaled as the session scales a
    chunk (`as_float32_mono`: int16 by 1/32768, floats kept), then averaged."""
    samples = np.asarray(samples)
    if samples.ndim == 2 and samples.shape[1] > 1:
        return np.mean([as_float32_mono(channel) for channel in samples.T], axis=0, dtype=np.float32)
    return as_float32_mono(samples)


class RealtimeHandler:
    """One browser session's live conversation: `receive` microphone chunks, `emit` what to show and play.

    Args:
        runtime: the loaded model (`runtime.SpaceRuntime`); its `new_session` makes the `DuplexSession`.
        tts: a speech engine (`synthesize(text) -> (samples, rate)`) or None for text answers only.
        limits: `max_realtime_secs` bounds the audio one conversation may stream.
        clock: wall clock in seconds for the playback queue (tests pass a fake one).
        session_kwargs: more `DuplexSession` arguments (`vad=VADParams(...)`, `generation_kwargs={...}`,
            `vad_scorer=...`, `echo_margin_db=...`).
    """

    def __init__(
        self,
        runtime: SpaceRuntime,
        tts: TTSEngine | None = None,
        limits: Limits | None = None,
        clock: Callable[[], float] = time.monotonic,
        **session_kwargs: Any,
    ) -> None:
        self.runtime = runtime
        self.max_secs = limits.max_realtime_secs if limits is not None else float("inf")
        self.clock = clock
        session_kwargs.setdefault("echo_margin_db", float("-inf"))  # see the module docstring
        self.session = runtime.new_session(tts=tts, **session_kwargs)
        self.events: list[Event] = []
        self._envelope: list[np.ndarray] = []
        self._received_secs = 0.0
        self._lines: list[list[str]] = []  # [kind, text]; an answer's line is rewritten as its text grows
        self._answer_line: dict[int, int] = {}
        self._answers: dict[int, str] = {}
        self._answers_started: dict[int, float] = {}
        self._latest_turn: int | None = None
        self._interrupted: set[int] = set()
        self._clips: list[tuple[int, np.ndarray, int]] = []  # (turn_id, samples, rate) waiting to be played
        self._playing_until = 0.0
        self._playing: tuple[int, np.ndarray, int, float] | None = None  # (turn_id, samples, rate, started at)
        self._paused = False  # an answer is ducked: nothing is released until it resumes or is interrupted
        self._cut_pending = False
        self._closed = False
        # Kept by the page: when the timeline picture was last sent and whether events made it stale since.
        self.drawn_at = float("-inf")
        self.timeline_stale = False

    # -- input ---------------------------------------------------------------------------------------------------

    def receive(self, chunk: tuple[int, np.ndarray]) -> None:
        """Take one microphone chunk as gradio gives it: `(sampling_rate, samples)`, int16 or float, mono or stereo."""
        if self._closed:
            raise ValueError("the RealtimeHandler is closed; expected an open one (start a new conversation)")
        rate, samples = chunk
        samples = _as_float_mono(samples)
        secs = len(samples) / rate
        if self._received_secs + secs > self.max_secs:
            raise ValueError(
                f"This conversation would stream {self._received_secs + secs:.1f} s of audio; the limit is "
                f"{self.max_secs:g} s. Press Reset to start a new one"
            )
        self._received_secs += secs
        block = max(int(round(rate / ENVELOPE_RATE)), 1)
        usable = len(samples) - len(samples) % block
        if usable:
            self._envelope.append(np.abs(samples[:usable]).reshape(-1, block).max(axis=1))
        self.session.push_audio(samples, int(rate))

    def show_image(self, image: Image.Image) -> None:
        """A picture the next questions may be about (the session keeps the latest frames as visual context)."""
        self.session.push_image(image)

    # -- output --------------------------------------------------------------------------------------------------

    def emit(self) -> RealtimeView:
        """Everything that happened since the last call, as the page should show it."""
        changed = news = False
        for event in self.session.events(timeout=0):
            changed |= self._record(event)
            news = True
        return RealtimeView(self.transcript(), self.answer, self._next_clip(), changed, news)

    def finish(self, timeout: float = 30.0) -> RealtimeView:
        """The microphone stopped: close the open segment, let the pending turns finish, then `emit`.

        No chunk will call `emit` again, so spoken clips still queued behind the one playing are released now, once
        that one has played (waiting at most `timeout`).
        """
        if self._closed:  # Reset or the tab's unload closed the session: nothing is listening any more
            return self.emit()
        self.session.flush()
        self.session.wait_idle(timeout)
        view = self.emit()
        if view.speech is None and self._clips:
            time.sleep(min(max(self._playing_until - self.clock(), 0.0), timeout))
            view.speech = self._next_clip()
        view.changed = view.news = True
        return view

    @property
    def closed(self) -> bool:
        return self._closed

    def transcript(self) -> list[str]:
        return [text for _, text in self._lines]

    def lines(self) -> list[tuple[str, str]]:
        """The transcript as `(kind, text)` pairs; kind is the event type (or "answer") for the page's styling."""
        return [(kind, text) for kind, text in self._lines]

    @property
    def answer(self) -> str:
        return self._answers.get(self._latest_turn, "") if self._latest_turn is not None else ""

    def timeline(self, width: int = 1000) -> Image.Image:
        """The event timeline as a PIL image (`duplex_timeline.draw_timeline` over the microphone's envelope)."""
        envelope = np.concatenate(self._envelope) if self._envelope else np.zeros(1, dtype=np.float32)
        return draw_timeline(self.events, envelope, ENVELOPE_RATE, width=width)

    def close(self) -> None:
        """Stop the session's turns and threads. Idempotent."""
        if not self._closed:
            self._closed = True
            self.session.close()

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    def _line(self, event: Event, label: str, details: str = "") -> None:
        # The event's type name is the line's kind: the page styles lines by it (`vita-interrupted`, ...).
        self._lines.append([event.type, f"{event.time:6.2f} s · {label}" + (f" · {details}" if details else "")])

    def _record(self, event: Event) -> bool:
        """Note one event; True when it changes the timeline picture."""
        self.events.append(event)  # the timeline draws every event, the spoken clips included
        if isinstance(event, AudioOut):
            if len(event.audio) and event.turn_id not in self._interrupted:
                self._clips.append((event.turn_id, event.audio, event.sampling_rate))
            return True
        if isinstance(event, SpeechStarted):
            self._line(event, "speech started")
            return False
        if isinstance(event, SpeechEnded):
            self._line(event, "speech segment", describe(event))
        elif isinstance(event, SpeechDiscarded):
            self._line(event, "too short, dropped", describe(event))
        elif isinstance(event, StateDecided):
            token = self.runtime.state_tokens[event.state]
            self._line(event, f"{token} {STATE_LINES[event.state]}", f"turn {event.turn_id}")
        elif isinstance(event, TextDelta):
            # One line per answer, rewritten as it grows; it keeps the time its first words came.
            first = self._answers_started.setdefault(event.turn_id, event.time)
            self._answers[event.turn_id] = self._answers.get(event.turn_id, "") + event.text
            self._latest_turn = event.turn_id
            text = f"{first:6.2f} s · answer (turn {event.turn_id}): {self._answers[event.turn_id]}"
            if event.turn_id in self._answer_line:
                self._lines[self._answer_line[event.turn_id]][1] = text
            else:
                self._answer_line[event.turn_id] = len(self._lines)
                self._lines.append(["answer", text])
            return False
        elif isinstance(event, ResponseDone):
            self._line(event, "answer done", f"turn {event.turn_id}")
        elif isinstance(event, Interrupted):
            self._line(event, "INTERRUPTED", f"turn {event.turn_id} stopped after {event.text!r}")
            self._interrupted.add(event.turn_id)
            self._paused = False
            self._drop_clips(event.turn_id)
        elif isinstance(event, Ignored):
            self._line(event, "ignored: background talk", f"turn {event.turn_id}, the answer goes on")
        elif isinstance(event, AnswerDucked):
            self._line(event, "answer paused: you speak", f"turn {event.turn_id}")
            self._pause()
        elif isinstance(event, AnswerResumed):
            self._line(event, "answer plays on: not a question", f"turn {event.turn_id}")
            self._paused = False
        elif isinstance(event, Error):
            logger.warning("real-time session error at %.2f s: %s", event.time, event.message)
            self._line(event, "error", event.message)
        return True

    def _drop_clips(self, turn_id: int) -> None:
        if any(clip_turn == turn_id for clip_turn, _, _ in self._clips) or self.clock() < self._playing_until:
            self._cut_pending = True  # something of that answer plays or would play: stop it
        self._clips = [clip for clip in self._clips if clip[0] != turn_id]

    def _pause(self) -> None:
        """Stop what plays now and keep its unplayed rest at the head of the queue (a browser clip cannot pause)."""
        self._paused, now = True, self.clock()
        if self._playing is not None and now < self._playing_until:
            turn_id, samples, rate, started = self._playing
            rest = samples[int((now - started) * rate) :]
            if len(rest):
                self._clips.insert(0, (turn_id, rest, rate))
            self._cut_pending = True

    def _next_clip(self) -> tuple[int, np.ndarray] | None:
        now = self.clock()
        if self._cut_pending:
            self._cut_pending = False
            self._playing, self._playing_until = None, now + CUT_SECS
            rate = self._clips[0][2] if self._clips else 16_000
            return rate, np.zeros(int(rate * CUT_SECS), dtype=np.int16)
        if not self._clips or now < self._playing_until or self._paused:
            return None
        # Everything queued goes out as one clip at the first clip's rate; it plays to its end before the next.
        rate = self._clips[0][2]
        audio = np.concatenate([resample(samples, clip_rate, rate) for _, samples, clip_rate in self._clips])
        self._playing = (self._clips[-1][0], audio, rate, now)
        self._clips = []
        self._playing_until = now + len(audio) / rate
        return rate, (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16)


__all__ = ["RealtimeHandler", "RealtimeView"]
