"""The duplex turn-taking state machine of VITA: pure Python, events in, events and actions out.

VITA listens all the time. Every speech segment the VAD cuts (and every typed query) starts a *turn*: the model reads
the input with the consolidated history and opens its answer with a state token. Noisy audio not meant for the
assistant is ignored and the current answer goes on; a spoken (or typed) query interrupts the current answer, which
enters the history marked interrupted with the part already produced, and the new query is answered.

Nothing here reads a clock, starts a thread or touches a model: time comes in with the events, and the session (the
edge with the threads, the model and the audio device) feeds events and carries out the actions. History is
committed before the next prompt is built, keeps text and audio references only, and visual context is the latest
frames, never old visual tokens.

State (`DuplexState`, derived from the turns, so it is always consistent):
    LISTENING      no turn runs and the user is silent
    USER_SPEAKING  the VAD is in speech (an answer may still be streaming: VITA's interruption is semantic)
    DECIDING       a turn runs and its state token is not known yet
    RESPONDING     a turn streams its answer

Rules for events that come late or out of order:
    - a newer input supersedes every turn still deciding (`CancelTurn(reason="superseded")`); their late decisions,
      text and completion are dropped;
    - a turn decided as a query becomes the responding turn and goes on generating with the KV cache of its
      decision, so an interrupt costs no second prefill; its prompt holds the history as it was when the segment
      ended. With `restart_with_consolidated_history=True`, a turn whose history changed meanwhile (an answer was
      committed or interrupted) is instead restarted with the consolidated history and its state forced
      (`CancelTurn("restarted")` then `StartTurn(state=...)`), at the cost of a second prefill;
    - text or completion of a turn that is not the responding one is dropped;
    - an `Error` for a turn ends that turn (a partial answer is committed as interrupted) and is reported; the
      machine stays consistent and the session goes on.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from .duplex_events import (
    Action,
    CancelTurn,
    Error,
    Event,
    Ignored,
    ImageInput,
    Interrupted,
    ResponseDone,
    SpeechDiscarded,
    SpeechEnded,
    SpeechStarted,
    StartTurn,
    StateDecided,
    TextDelta,
    TextInput,
    Turn,
    VitaState,
)

logger = logging.getLogger(__name__)


class DuplexState(str, Enum):
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    DECIDING = "deciding"
    RESPONDING = "responding"


@dataclass
class _ActiveTurn:
    turn_id: int
    kind: str  # "audio" or "text"
    started_at: float
    history_version: int
    audio: np.ndarray | None = None
    text: str = ""
    state: VitaState | None = None
    parts: list[str] = field(default_factory=list)


class DuplexStateMachine:
    """Pure duplex state machine. Feed it events with `handle`; it returns the events to report and the actions to do.

    Args:
        max_frames: how many of the latest images/video frames are kept as visual context for new turns.
        max_history_turns: how many past exchanges (user + assistant) go into a new turn's prompt; None for all.
            `history` itself always keeps everything.
    """

    def __init__(
        self,
        max_frames: int = 4,
        max_history_turns: int | None = None,
        restart_with_consolidated_history: bool = False,
    ) -> None:
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, found {max_frames}")
        if max_history_turns is not None and max_history_turns < 0:
            raise ValueError(f"max_history_turns must be None or >= 0, found {max_history_turns}")
        self.max_frames = max_frames
        self.max_history_turns = max_history_turns
        self.restart_with_consolidated_history = restart_with_consolidated_history
        self._deciding: dict[int, _ActiveTurn] = {}
        self._responding: _ActiveTurn | None = None
        self.reset()

    def reset(self) -> list[Action]:
        """Forget everything (history included); returns the cancellations of the turns that were running."""
        running = list(self._deciding) + ([] if self._responding is None else [self._responding.turn_id])
        self._history: list[Turn] = []
        self._history_version = 0
        self._frames: deque[Any] = deque(maxlen=self.max_frames or None)
        self._deciding = {}
        self._responding = None
        self._speaking = False
        self._next_turn_id = 1
        return [CancelTurn(turn_id, reason="reset") for turn_id in running]

    # -- read-only views ------------------------------------------------------------------------------------------

    @property
    def state(self) -> DuplexState:
        if self._speaking:
            return DuplexState.USER_SPEAKING
        if self._deciding:
            return DuplexState.DECIDING
        if self._responding is not None:
            return DuplexState.RESPONDING
        return DuplexState.LISTENING

    @property
    def history(self) -> list[Turn]:
        """The consolidated history: user/assistant pairs in order; interrupted answers hold their partial text."""
        return list(self._history)

    @property
    def frames(self) -> tuple[Any, ...]:
        """The latest visual frames (at most `max_frames`)."""
        return tuple(self._frames) if self.max_frames else ()

    @property
    def responding_turn(self) -> int | None:
        return None if self._responding is None else self._responding.turn_id

    @property
    def deciding_turns(self) -> tuple[int, ...]:
        return tuple(self._deciding)

    @property
    def partial_text(self) -> str:
        """What the responding turn has produced so far."""
        return "" if self._responding is None else "".join(self._responding.parts)

    # -- transitions ----------------------------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Event | Action]:
        """Apply one event; returns the events to report (in order) and the actions for the session."""
        if isinstance(event, SpeechStarted):
            self._speaking = True
            return [event]
        if isinstance(event, SpeechDiscarded):
            self._speaking = False
            return [event]
        if isinstance(event, SpeechEnded):
            self._speaking = False
            return [event, *self._start_turn("audio", event.time, audio=event.segment)]
        if isinstance(event, TextInput):
            # A typed query is a query by construction: it interrupts the current answer right away.
            out: list[Event | Action] = self._interrupt_responding(event.time)
            return out + self._start_turn("text", event.time, text=event.text)
        if isinstance(event, ImageInput):
            if self.max_frames:
                self._frames.append(event.image)
            return []
        if isinstance(event, StateDecided):
            return self._on_decided(event)
        if isinstance(event, TextDelta):
            if self._responding is None or event.turn_id != self._responding.turn_id:
                return []  # late text of a cancelled or superseded turn
            self._responding.parts.append(event.text)
            return [event]
        if isinstance(event, ResponseDone):
            return self._on_done(event)
        if isinstance(event, Error):
            return self._on_error(event)
        raise TypeError(f"DuplexStateMachine.handle expects a duplex Event, found {type(event).__name__}")

    def _snapshot(self) -> tuple[Turn, ...]:
        if self.max_history_turns is None:
            return tuple(self._history)
        return (
            tuple(self._history[len(self._history) - 2 * self.max_history_turns :]) if self.max_history_turns else ()
        )

    def _start_turn(self, kind: str, time: float, audio: np.ndarray | None = None, text: str = "") -> list[Action]:
        out: list[Action] = [CancelTurn(turn_id, reason="superseded") for turn_id in self._deciding]
        self._deciding.clear()
        turn = _ActiveTurn(self._new_id(), kind, time, self._history_version, audio=audio, text=text)
        self._deciding[turn.turn_id] = turn
        out.append(
            StartTurn(
                turn.turn_id,
                kind=kind,
                audio=audio,
                text=text,
                history=self._snapshot(),
                images=self.frames,
                time=time,
            )
        )
        return out

    def _new_id(self) -> int:
        turn_id = self._next_turn_id
        self._next_turn_id += 1
        return turn_id

    def _on_decided(self, event: StateDecided) -> list[Event | Action]:
        turn = self._deciding.get(event.turn_id)
        if turn is None:
            return []  # superseded, cancelled or unknown: the decision no longer matters
        latency = event.time - turn.started_at
        if event.state is VitaState.NOISY_AUDIO and turn.kind == "audio":
            del self._deciding[turn.turn_id]
            # Its generation ends at this state token by itself (it acts as EOS), so there is nothing to cancel.
            return [
                StateDecided(event.time, state=VitaState.NOISY_AUDIO, latency=latency, turn_id=turn.turn_id),
                Ignored(event.time, turn_id=turn.turn_id),
            ]
        # A typed query stays a query even if the model hesitates, and a spoken query is reported as such whichever
        # query token the model chose: the reported state is the one the history records.
        turn.state = VitaState.QUERY_TEXT if turn.kind == "text" else VitaState.QUERY_AUDIO
        decided = StateDecided(event.time, state=turn.state, latency=latency, turn_id=turn.turn_id)
        del self._deciding[turn.turn_id]
        out: list[Event | Action] = [decided, *self._interrupt_responding(event.time)]
        if turn.history_version == self._history_version or not self.restart_with_consolidated_history:
            self._responding = turn  # its worker goes on generating; its text is reported from now on
            return out
        # The history changed after this turn's prompt was built: answer with the consolidated history instead.
        restarted = _ActiveTurn(
            self._new_id(), turn.kind, turn.started_at, self._history_version, turn.audio, turn.text, turn.state
        )
        self._responding = restarted
        out.append(CancelTurn(turn.turn_id, reason="restarted"))
        out.append(
            StartTurn(
                restarted.turn_id,
                kind=turn.kind,
                audio=turn.audio,
                text=turn.text,
                history=self._snapshot(),
                images=self.frames,
                state=turn.state,
                time=event.time,
            )
        )
        return out

    def _on_done(self, event: ResponseDone) -> list[Event | Action]:
        if event.turn_id in self._deciding:
            del self._deciding[event.turn_id]
            message = f"turn {event.turn_id} ended before a state token was read"
            return [Error(event.time, message=message, turn_id=event.turn_id)]
        if self._responding is None or event.turn_id != self._responding.turn_id:
            return []
        turn, self._responding = self._responding, None
        text = event.text if event.text else "".join(turn.parts)
        self._commit(turn, text, interrupted=False)
        return [ResponseDone(event.time, text=text, turn_id=turn.turn_id)]

    def _on_error(self, event: Error) -> list[Event | Action]:
        if event.turn_id is not None and event.turn_id in self._deciding:
            del self._deciding[event.turn_id]
            return [event, CancelTurn(event.turn_id, reason="error")]
        if self._responding is not None and event.turn_id == self._responding.turn_id:
            turn, self._responding = self._responding, None
            self._commit(turn, "".join(turn.parts), interrupted=True)
            return [event, CancelTurn(turn.turn_id, reason="error")]
        return [event]

    def _interrupt_responding(self, time: float) -> list[Event | Action]:
        if self._responding is None:
            return []
        turn, self._responding = self._responding, None
        partial = "".join(turn.parts)
        self._commit(turn, partial, interrupted=True)
        return [Interrupted(time, text=partial, turn_id=turn.turn_id), CancelTurn(turn.turn_id, reason="interrupted")]

    def _commit(self, turn: _ActiveTurn, answer: str, interrupted: bool) -> None:
        self._history.append(Turn("user", turn.text, turn.state, audio=turn.audio, turn_id=turn.turn_id))
        self._history.append(Turn("assistant", answer, turn.state, interrupted=interrupted, turn_id=turn.turn_id))
        self._history_version += 1


__all__ = ["DuplexState", "DuplexStateMachine"]
