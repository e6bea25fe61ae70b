"""The messages a `DuplexSession`'s dispatcher thread takes from its inbox, one small frozen dataclass each.

Every input of a session goes through one queue and is handled by one thread in arrival order: what the caller
pushes (audio chunks, typed text, images, playback reports, flush), what the turn workers and the speech thread
report (model events, finished turns, synthesized speech), and the session's own control (sync, stop).

`Raised` and `PendingInterrupt` carry a `KeyboardInterrupt` or `SystemExit` (any `BaseException` that is not an
`Exception`) out of the thread it hit to the caller's: the dispatcher ends the turn with the `Error` it carries, then
keeps the exception for the caller's next call on the session (see `duplex_session`).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .duplex_events import AudioOut, Error, Event

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """A microphone chunk as the caller gave it (validated by the dispatcher, so a bad one becomes an error event)."""

    samples: np.ndarray | None = field(repr=False)
    sampling_rate: Any
    problem: str | None = None  # why the caller's object could not be copied as an array (`copy_chunk`)


@dataclass(frozen=True)
class TypedText:
    text: str


@dataclass(frozen=True, eq=False)
class ImageFrame:
    image: Any = field(repr=False)


@dataclass(frozen=True)
class PlaybackReport:
    """The caller's speaker plays the assistant's audio at this RMS, or stopped playing it (None)."""

    rms: float | None


@dataclass(frozen=True)
class Flush:
    """End of the input stream: close an open speech segment."""


@dataclass(frozen=True)
class WorkerEvent:
    """An event made by a turn worker or the speech thread; the dispatcher stamps it with the audio clock."""

    event: Event


@dataclass(frozen=True)
class TurnFinished:
    turn_id: int


@dataclass(frozen=True, eq=False)
class SpeechReady:
    """Speech synthesized for a piece of an answer, to be reported unless its turn was cut meanwhile."""

    audio_out: AudioOut


@dataclass(frozen=True, eq=False)
class Sync:
    """Set `done` once every message queued before this one is handled."""

    done: threading.Event


@dataclass(frozen=True)
class Stop:
    """Ends the dispatcher (put by `close`)."""


@dataclass(frozen=True, eq=False)
class Raised:
    """A worker or the speech thread was hit by `exception` (not an `Exception`): report `error`, then hand it on."""

    error: Error
    exception: BaseException


class PendingInterrupt:
    """The first `KeyboardInterrupt`/`SystemExit` a session's threads caught, until the caller's thread raises it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._exception: BaseException | None = None

    def keep(self, exception: BaseException) -> None:
        with self._lock:
            if self._exception is None:
                self._exception = exception

    def raise_if_any(self) -> None:
        """Raise the kept exception (once) in the calling thread."""
        with self._lock:
            exception, self._exception = self._exception, None
        if exception is not None:
            raise exception


InboxMessage = (
    AudioChunk
    | TypedText
    | ImageFrame
    | PlaybackReport
    | Flush
    | WorkerEvent
    | TurnFinished
    | SpeechReady
    | Sync
    | Stop
    | Raised
)

__all__ = [
    "AudioChunk",
    "Flush",
    "ImageFrame",
    "InboxMessage",
    "PendingInterrupt",
    "PlaybackReport",
    "Raised",
    "SpeechReady",
    "Stop",
    "Sync",
    "TurnFinished",
    "TypedText",
    "WorkerEvent",
]
