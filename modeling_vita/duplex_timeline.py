"""The story of a duplex session told from its events: printed lines, the spoken answers as one track, a picture.

Used by the `vita-duplex` command and the Space. `describe` and `TimelinePrinter` turn events into one line each on
the input audio clock (text deltas merged per turn); `place_clips` and `mix_answers` put every spoken clip where a
player would have played it (an interrupted answer stops at the interruption); `draw_timeline` draws the input
waveform, speech segments, decisions, answers and spoken clips with PIL only.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from .duplex_audio_input import resample
from .duplex_events import (
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
    VitaState,
)

logger = logging.getLogger(__name__)

TIMELINE_HEIGHT = 420
# Colours of the timeline (RGB); interruptions are red as asked, the rest is chosen to stay apart when printed.
COLOURS = {
    "axis": (60, 60, 60),
    "grid": (225, 225, 225),
    "wave": (90, 120, 170),
    "speech": (70, 160, 90),
    VitaState.QUERY_AUDIO: (30, 90, 200),
    VitaState.QUERY_TEXT: (130, 60, 180),
    VitaState.NOISY_AUDIO: (150, 150, 150),
    "answer": (240, 170, 40),
    "audio_out": (200, 120, 20),
    "interrupted": (220, 30, 30),
    "ducked": (120, 120, 120),
    "error": (160, 0, 0),
}
STATE_LABELS = {VitaState.QUERY_AUDIO: "query", VitaState.NOISY_AUDIO: "noise", VitaState.QUERY_TEXT: "text"}


# -- timeline text ------------------------------------------------------------------------------------------------


def describe(event: Event) -> str:
    """The details of one event for the printed timeline (text deltas are merged by `TimelinePrinter`)."""
    if isinstance(event, SpeechStarted):
        return f"speech from {event.start:.3f} s"
    if isinstance(event, SpeechEnded):
        cut = " (cut at max length)" if event.truncated else ""
        return f"segment {event.start:.3f}-{event.end:.3f} s ({event.duration:.2f} s){cut}"
    if isinstance(event, SpeechDiscarded):
        return f"too short {event.start:.3f}-{event.end:.3f} s"
    if isinstance(event, StateDecided):
        return f"turn {event.turn_id}: {event.state} ({STATE_LABELS[event.state]}) latency {event.latency:.3f} s"
    if isinstance(event, ResponseDone):
        return f"turn {event.turn_id}: done"
    if isinstance(event, Interrupted):
        return f"turn {event.turn_id}: interrupted, partial {event.text!r}"
    if isinstance(event, Ignored):
        return f"turn {event.turn_id}: ignored (noisy audio)"
    if isinstance(event, AnswerDucked):
        return f"turn {event.turn_id}: answer paused (the user speaks)"
    if isinstance(event, AnswerResumed):
        return f"turn {event.turn_id}: answer plays on (not a query)"
    if isinstance(event, Error):
        return f"turn {event.turn_id}: {event.message}" if event.turn_id is not None else event.message
    if isinstance(event, AudioOut):
        return f"turn {event.turn_id}: {len(event.audio) / event.sampling_rate:.2f} s of speech {event.text!r}"
    return repr(event)


@dataclass
class TimelinePrinter:
    """Prints events as they come; the text deltas of a turn become one `text` line, printed when the turn ends."""

    stream: TextIO = sys.stdout
    _text: dict[int, list[TextDelta]] = field(default_factory=dict)

    def __call__(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            self._text.setdefault(event.turn_id, []).append(event)
            return
        if isinstance(event, ResponseDone | Interrupted) or (isinstance(event, Error) and event.turn_id is not None):
            self._flush_text(event.turn_id)
        self._line(event.time, event.type, describe(event))

    def close(self) -> None:
        for turn_id in list(self._text):
            self._flush_text(turn_id)

    def _flush_text(self, turn_id: int) -> None:
        deltas = self._text.pop(turn_id, [])
        if deltas:
            text = "".join(delta.text for delta in deltas)
            self._line(deltas[0].time, "text", f"turn {turn_id}: {text!r}")

    def _line(self, time: float, kind: str, details: str) -> None:
        print(f"{time:8.3f} s  {kind:<16} {details}", file=self.stream, flush=True)


# -- spoken answers -----------------------------------------------------------------------------------------------


def place_clips(events: Sequence[Event]) -> list[tuple[float, float, AudioOut, float]]:
    """`(start, stop, AudioOut, offset)` on the input clock for every piece of spoken clip a player plays.

    The player obeys the events: a clip starts at its event time, or when the previous clip of the same answer ends
    (clips of one answer follow each other, answers of different turns overlap and are mixed); `answer_ducked`
    pauses the answer and `answer_resumed` plays on from where it paused (a clip cut by a pause comes out as two
    pieces, `offset` seconds into the clip for the second); `interrupted` drops the rest.
    """
    placed: list[tuple[float, float, AudioOut, float]] = []
    queued: dict[int, list[list[Any]]] = {}  # per turn: [start, stop, event, offset] not yet cut by a pause
    paused: dict[int, float] = {}
    for event in events:
        turn_id = getattr(event, "turn_id", None)
        if isinstance(event, AudioOut) and len(event.audio):
            clips = queued.setdefault(turn_id, [])
            start = max(event.time, clips[-1][1] if clips else 0.0, paused.get(turn_id, 0.0))
            clips.append([start, start + len(event.audio) / event.sampling_rate, event, 0.0])
        elif isinstance(event, AnswerDucked | Interrupted) and turn_id not in paused:
            # Whatever had not played by now stays queued (a pause) or is dropped (an interruption).
            keep = []
            for clip in queued.get(turn_id, []):
                if clip[0] < event.time:
                    placed.append((clip[0], min(clip[1], event.time), clip[2], clip[3]))
                if clip[1] > event.time and isinstance(event, AnswerDucked):
                    played = max(event.time - clip[0], 0.0)
                    keep.append([max(clip[0], event.time), clip[1], clip[2], clip[3] + played])
            queued[turn_id] = keep
            if isinstance(event, AnswerDucked):
                paused[turn_id] = event.time
        elif isinstance(event, AnswerResumed) and turn_id in paused:
            shift = event.time - paused.pop(turn_id)
            queued[turn_id] = [[a + shift, b + shift, e, o] for a, b, e, o in queued.get(turn_id, [])]
        elif isinstance(event, Interrupted) and turn_id in paused:
            paused.pop(turn_id)
            queued[turn_id] = []
    for turn_id, clips in queued.items():
        if turn_id not in paused:
            placed.extend((a, b, e, o) for a, b, e, o in clips)
    return sorted((item for item in placed if item[1] > item[0]), key=lambda item: item[0])


def mix_answers(
    events: Sequence[Event], input_secs: float, sampling_rate: int | None = None
) -> tuple[np.ndarray, int]:
    """One track at least as long as the input, every spoken clip added at its place (see `place_clips`)."""
    placed = place_clips(events)
    rate = sampling_rate or (placed[0][2].sampling_rate if placed else 22_050)
    length = max([input_secs, *(stop for _, stop, _, _ in placed)])
    track = np.zeros(int(np.ceil(length * rate)), dtype=np.float32)
    for start, stop, event, offset in placed:
        skip = int(round(offset * rate))
        clip = resample(event.audio, event.sampling_rate, rate)[skip : skip + int(round((stop - start) * rate))]
        offset = int(round(start * rate))
        clip = clip[: len(track) - offset]
        track[offset : offset + len(clip)] += clip
    return np.clip(track, -1.0, 1.0), rate


# -- timeline picture ---------------------------------------------------------------------------------------------


def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def draw_timeline(events: Sequence[Event], audio: np.ndarray, sampling_rate: int, width: int = 1200) -> Any:
    """The timeline as a PIL image `width` px wide: waveform envelope, speech, decisions, answers, spoken clips."""
    from PIL import Image, ImageDraw

    if width < 300:
        raise ValueError(f"timeline width must be at least 300 px to stay readable, found {width}")
    image = Image.new("RGB", (width, TIMELINE_HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font, small = _font(14), _font(12)
    left, right = 110, width - 20
    input_secs = len(audio) / sampling_rate
    placed = place_clips(events)
    total = max([input_secs, *(event.time for event in events), *(stop for _, stop, _, _ in placed), 1e-3])

    def x(secs: float) -> float:
        return left + (right - left) * secs / total

    rows = {"input": (20, 110), "speech": (130, 160), "state": (180, 230), "answer": (250, 280), "spoken": (300, 330)}
    names = {"input": "input", "speech": "speech", "state": "decision", "answer": "answer", "spoken": "spoken"}
    axis_y = 360
    step = _nice_step(total, (right - left) / 90)
    tick = 0.0
    while tick <= total + 1e-9:
        draw.line([(x(tick), rows["input"][0]), (x(tick), axis_y)], fill=COLOURS["grid"])
        draw.line([(x(tick), axis_y), (x(tick), axis_y + 6)], fill=COLOURS["axis"])
        draw.text((x(tick), axis_y + 8), f"{tick:g}", fill=COLOURS["axis"], font=small, anchor="mt")
        tick += step
    draw.line([(left, axis_y), (right, axis_y)], fill=COLOURS["axis"], width=1)
    draw.text(((left + right) / 2, axis_y + 30), "time on the input audio clock (s)", fill=COLOURS["axis"], font=font)
    for key, (top, bottom) in rows.items():
        draw.text((10, (top + bottom) / 2), names[key], fill=COLOURS["axis"], font=font, anchor="lm")

    # Waveform envelope: the peak of every pixel column, mirrored around the middle of the row.
    top, bottom = rows["input"]
    middle, half = (top + bottom) / 2, (bottom - top) / 2
    columns = int(x(input_secs) - left)
    if columns > 0 and len(audio):
        edges = np.linspace(0, len(audio), columns + 1).astype(int)
        peak = max(float(np.abs(audio).max()), 1e-6)
        for column in range(columns):
            chunk = audio[edges[column] : max(edges[column + 1], edges[column] + 1)]
            height = half * float(np.abs(chunk).max()) / peak
            draw.line([(left + column, middle - height), (left + column, middle + height)], fill=COLOURS["wave"])

    def bar(row: str, start: float, stop: float, colour: tuple[int, int, int], label: str = "") -> None:
        top, bottom = rows[row]
        x0, x1 = x(start), max(x(stop), x(start) + 2)  # an instant answer stays visible
        draw.rectangle([x0, top, x1, bottom], fill=colour)
        if label and x1 - x0 > 8 * len(label):
            draw.text(((x0 + x1) / 2, (top + bottom) / 2), label, fill="white", font=small, anchor="mm")

    for event in events:
        if isinstance(event, SpeechEnded):
            bar("speech", event.start, event.end, COLOURS["speech"], f"{event.duration:.1f} s")
    answers: dict[int, float] = {}
    labels_at: list[float] = []
    for event in events:
        if isinstance(event, StateDecided):
            px = x(event.time)
            top, bottom = rows["state"]
            colour = COLOURS[event.state]
            draw.polygon([(px, top + 4), (px - 6, top + 16), (px + 6, top + 16)], fill=colour)
            draw.line([(px, top + 16), (px, bottom - 18)], fill=colour, width=2)
            # Labels of decisions close together are stacked so they do not overwrite each other.
            level = sum(1 for other in labels_at if abs(other - px) < 50) % 2
            labels_at.append(px)
            draw.text(
                (px, bottom - 14 + 12 * level - 6), STATE_LABELS[event.state], fill=colour, font=small, anchor="mt"
            )
            if event.state is not VitaState.NOISY_AUDIO:
                answers[event.turn_id] = event.time
        elif isinstance(event, ResponseDone | Interrupted) and event.turn_id in answers:
            colour = COLOURS["interrupted"] if isinstance(event, Interrupted) else COLOURS["answer"]
            bar("answer", answers.pop(event.turn_id), event.time, colour, f"turn {event.turn_id}")
        if isinstance(event, Interrupted):
            px = x(event.time)
            draw.line([(px, rows["input"][0]), (px, axis_y)], fill=COLOURS["interrupted"], width=2)
            draw.text((px + 4, rows["input"][0]), "interrupted", fill=COLOURS["interrupted"], font=small)
        elif isinstance(event, AnswerDucked | AnswerResumed):
            px, (top, bottom) = x(event.time), rows["spoken"]
            label = "paused" if isinstance(event, AnswerDucked) else "plays on"
            draw.line([(px, top - 4), (px, bottom + 4)], fill=COLOURS["ducked"], width=2)
            draw.text((px + 3, bottom + 2), label, fill=COLOURS["ducked"], font=small)
        elif isinstance(event, Error):
            px = x(event.time)
            draw.line([(px, rows["state"][0]), (px, rows["state"][1])], fill=COLOURS["error"], width=1)
            draw.text((px + 3, rows["state"][0]), "error", fill=COLOURS["error"], font=small)
    for turn_id, start in answers.items():  # still running when the recording ended
        bar("answer", start, total, COLOURS["answer"], f"turn {turn_id}")
    for start, stop, event, _ in placed:
        bar("spoken", start, stop, COLOURS["audio_out"], f"turn {event.turn_id}")
        draw.line([(x(start), rows["spoken"][0]), (x(start), rows["spoken"][1])], fill="white")  # clip boundary
    return image


def _nice_step(total: float, max_ticks: float) -> float:
    """A 1-2-5 tick spacing giving at most `max_ticks` ticks over `total` seconds."""
    raw = total / max(max_ticks, 1.0)
    magnitude = 10 ** np.floor(np.log10(max(raw, 1e-6)))
    for factor in (1, 2, 5, 10):
        if factor * magnitude >= raw:
            return float(factor * magnitude)
    return float(10 * magnitude)


__all__ = ["COLOURS", "STATE_LABELS", "TimelinePrinter", "describe", "draw_timeline", "mix_answers", "place_clips"]
