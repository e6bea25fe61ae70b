"""The duplex turn-taking state machine of VITA: pure Python, events in, events and actions out.

VITA listens all the time. Every speech segment the VAD cuts (and every typed query) starts a *turn*: the model reads
the input with the consolidated history and opens its answer with a state token. Noisy audio not meant for the
assistant is ignored and the current answer goes on; a spoken (or typed) query interrupts the current answer, which
enters the history marked interrupted with the part the user had heard, and the new query is answered.

Nothing here reads a clock, starts a thread or touches a model: time comes in with the events, and the session (the
edge with the threads, the model and the audio device) feeds events and carries out the actions. History keeps text
and media references only; a visual frame goes with the first query that sees it.

State (`DuplexState`, derived from the turns, so it is always consistent):
    LISTENING      no turn runs and the user is silent
    USER_SPEAKING  the VAD is in speech (an answer may still be streaming: VITA's interruption is semantic)
    DECIDING       a turn runs and its state token is not known yet
    RESPONDING     a turn streams its answer

No input is lost: every speech segment and typed query ends in exactly one outcome, reported by an event and
recorded in the history (`Turn.outcome`): answered (`response_done`), ignored (`ignored`), interrupted
(`interrupted`) or error (`error`). Several turns may decide at once; each decides on its own:
    - a turn decided as a query interrupts every older answer that is still live (streaming, or still being spoken)
      and becomes the responding turn; it goes on generating with the KV cache of its decision, so an interrupt
      costs no second prefill, and its prompt holds the history as it was when its input ended. With
      `restart_with_consolidated_history=True`, a turn whose history changed meanwhile is restarted with the
      consolidated history and its state forced (`CancelTurn("restarted")` then `StartTurn(state=...)`);
    - a query that decides after a *newer* query already answers is superseded: `interrupted` with no text;
    - text or completion of a turn that is not the responding one is dropped;
    - an `Error` for a turn ends that turn (a partial answer is kept) and is reported.

Speculation: on `SpeechPaused` (the user went silent; the end of turn is not decided yet) the turn starts at once,
hidden: its events are held (its text is handed to the speech engine ahead, `SpeakAhead`) until the `SpeechEnded`
of the same segment (same start, no speech since) adopts it and releases them in order, so the answer can be ready
when the turn ends; `SpeechResumed` cancels it (`CancelTurn("speculation")`), and it never was an input.

Ducking: a speech onset while an answer is live pauses it at once (`answer_ducked`); when every input that arrived
since then turned out not to be a query (too short, noise, a backchannel) it plays on (`answer_resumed`), and when
one is a query the answer is interrupted. Spoken pieces (`AudioOut`, fed back by the session) are tracked on the
audio clock (`duplex_playback.py`), so an answer whose text is complete still counts as live while it plays.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import replace
from typing import Any

import numpy as np

from .duplex_events import (
    Action,
    AnswerDucked,
    AnswerResumed,
    AudioOut,
    CancelTurn,
    Error,
    Event,
    Ignored,
    ImageInput,
    Interrupted,
    ResponseDone,
    SpeakAhead,
    SpeechDiscarded,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    StartTurn,
    StateDecided,
    TextDelta,
    TextInput,
    Turn,
    VitaState,
)
from .duplex_playback import AnswerPlayback
from .duplex_turn_records import ActiveTurn, Duck, DuplexState

logger = logging.getLogger(__name__)


class DuplexStateMachine:
    """Pure duplex state machine. Feed it events with `handle`; it returns the events to report and the actions to do.

    Args:
        max_frames: how many of the latest images/video frames are kept as visual context for new turns.
        max_history_turns: how many past exchanges (user + assistant) go into a new turn's prompt; None for all.
            `history` itself always keeps everything.
        restart_with_consolidated_history: see the module docstring.
        speaks_answers: answers are spoken (`AudioOut` is fed back); an interrupted answer then keeps in the history
            only the pieces the user had heard, instead of all the text produced.
    """

    def __init__(
        self,
        max_frames: int = 4,
        max_history_turns: int | None = None,
        restart_with_consolidated_history: bool = False,
        speaks_answers: bool = False,
    ) -> None:
        if max_frames < 0:
            raise ValueError(f"max_frames must be >= 0, found {max_frames}")
        if max_history_turns is not None and max_history_turns < 0:
            raise ValueError(f"max_history_turns must be None or >= 0, found {max_history_turns}")
        self.max_frames = max_frames
        self.max_history_turns = max_history_turns
        self.restart_with_consolidated_history = restart_with_consolidated_history
        self.speaks_answers = speaks_answers
        self._deciding: dict[int, ActiveTurn] = {}
        self._responding: ActiveTurn | None = None
        self.reset()

    def reset(self) -> list[Action]:
        """Forget everything (history included); returns the cancellations of the turns that were running."""
        running = list(self._deciding) + ([] if self._responding is None else [self._responding.turn_id])
        running += [] if getattr(self, "_speculative", None) is None else [self._speculative[0].turn_id]
        self._history: list[Turn] = []
        self._history_version = 0
        self._frames: deque[Any] = deque(maxlen=self.max_frames or None)
        self._shown: deque[Any] = deque(maxlen=4 * max(self.max_frames, 1))  # frames already in the history
        self._deciding = {}
        self._responding = None
        self._playback: AnswerPlayback | None = None  # the latest answer's speech (may outlive its text)
        self._duck: Duck | None = None
        self._speculative: tuple[ActiveTurn, tuple[float, float]] | None = None  # the hidden turn, its span
        self._held: list[Event] = []  # the hidden turn's events, in order
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
        """The consolidated history: user/assistant pairs in order, one pair per input, each with its outcome."""
        return list(self._history)

    @property
    def frames(self) -> tuple[Any, ...]:
        """The latest visual frames not yet shown with a query (at most `max_frames`)."""
        if not self.max_frames:
            return ()
        return tuple(frame for frame in self._frames if not any(frame is shown for shown in self._shown))

    @property
    def responding_turn(self) -> int | None:
        return None if self._responding is None else self._responding.turn_id

    @property
    def deciding_turns(self) -> tuple[int, ...]:
        return tuple(self._deciding)

    @property
    def speculative_turn(self) -> int | None:
        """The turn started on a pause and not confirmed yet (its events are held)."""
        return None if self._speculative is None else self._speculative[0].turn_id

    @property
    def ducked_turn(self) -> int | None:
        """The answer paused by a speech onset, waiting to be resumed or interrupted."""
        return None if self._duck is None else self._duck.turn_id

    @property
    def partial_text(self) -> str:
        """What the responding turn has produced so far."""
        return "" if self._responding is None else "".join(self._responding.parts)

    # -- transitions ----------------------------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Event | Action]:
        """Apply one event; returns the events to report (in order) and the actions for the session."""
        if isinstance(event, SpeechStarted):
            self._speaking = True
            return [event, *self._duck_live_answer(event.time)]
        if isinstance(event, SpeechDiscarded):
            self._speaking = False
            return [event, *self._maybe_resume(event.time)]
        if isinstance(event, SpeechPaused):
            return self._speculate(event)
        if isinstance(event, SpeechResumed):
            return self._drop_speculation()
        if isinstance(event, SpeechEnded):
            self._speaking = False
            adopted = self._adopt_speculation(event)
            if adopted is not None:
                return adopted
            out: list[Event | Action] = [event, *self._drop_speculation()]
            start = self._start_turn("audio", event.time, audio=event.segment)
            if self._duck is not None:
                self._duck.holders.add(start[-1].turn_id)
            return out + start
        if self._speculative is not None and getattr(event, "turn_id", None) == self._speculative[0].turn_id:
            return self._hold(event)
        if isinstance(event, TextInput):
            # A typed query is a query by construction: it interrupts the current answer right away.
            out: list[Event | Action] = self._interrupt_older(event.time, newer_than=None)
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
        if isinstance(event, AudioOut):
            return self._on_audio_out(event)
        if isinstance(event, Error):
            return self._on_error(event)
        raise TypeError(f"DuplexStateMachine.handle expects a duplex Event, found {type(event).__name__}")

    # -- speculation ----------------------------------------------------------------------------------------------

    def _speculate(self, event: SpeechPaused) -> list[Event | Action]:
        out = self._drop_speculation()
        history = self._snapshot()
        images = self._images_for(history)
        turn = ActiveTurn(self._new_id(), "audio", event.end, self._history_version, event.segment, images=images)
        self._speculative, self._held = (turn, (event.start, event.end)), []
        return [*out, StartTurn(turn.turn_id, audio=event.segment, history=history, images=images, time=event.time)]

    def _drop_speculation(self) -> list[Event | Action]:
        if self._speculative is None:
            return []
        turn, self._speculative, self._held = self._speculative[0], None, []
        return [CancelTurn(turn.turn_id, reason="speculation")]

    def _hold(self, event: Event) -> list[Event | Action]:
        self._held.append(event)
        return [SpeakAhead(event.turn_id, event=event)] if isinstance(event, (TextDelta, ResponseDone)) else []

    def _adopt_speculation(self, event: SpeechEnded) -> list[Event | Action] | None:
        # The same segment: no speech came since the pause (it would have cancelled the turn); the end may hold a
        # little more of the silence, which the model need not hear.
        if self._speculative is None or self._speculative[1][0] != event.start or self._speculative[1][1] > event.end:
            return None
        turn, held = self._speculative[0], self._held
        self._speculative, self._held = None, []
        turn.started_at = event.time
        self._deciding[turn.turn_id] = turn
        if self._duck is not None:
            self._duck.holders.add(turn.turn_id)
        out: list[Event | Action] = [event]
        for item in held:  # what the hidden turn did, now shown, on the clock of its confirmation
            out += self.handle(replace(item, time=max(item.time, event.time)))
        return out

    def _snapshot(self) -> tuple[Turn, ...]:
        shown = tuple(turn for turn in self._history if turn.in_prompt)
        if self.max_history_turns is None:
            return shown
        return shown[len(shown) - 2 * self.max_history_turns :] if self.max_history_turns else ()

    def _start_turn(self, kind: str, time: float, audio: np.ndarray | None = None, text: str = "") -> list[Action]:
        history = self._snapshot()
        images = self._images_for(history)
        turn = ActiveTurn(self._new_id(), kind, time, self._history_version, audio=audio, text=text, images=images)
        self._deciding[turn.turn_id] = turn
        return [StartTurn(turn.turn_id, kind=kind, audio=audio, text=text, history=history, images=images, time=time)]

    def _images_for(self, history: tuple[Turn, ...]) -> tuple[Any, ...]:
        """The frames the new input goes with: the unseen ones; the latest ones again if the prompt's history shows
        none (it was cut by `max_history_turns`), so a conversation about an image never loses it."""
        unseen = self.frames
        if unseen or not self.max_frames or any(turn.images for turn in history):
            return unseen
        return tuple(self._frames)

    def _new_id(self) -> int:
        turn_id = self._next_turn_id
        self._next_turn_id += 1
        return turn_id

    def _on_decided(self, event: StateDecided) -> list[Event | Action]:
        turn = self._deciding.pop(event.turn_id, None)
        if turn is None:
            return []  # cancelled or unknown: the decision no longer matters
        latency = event.time - turn.started_at
        if event.state is VitaState.NOISY_AUDIO and turn.kind == "audio":
            # Its generation ends at this state token by itself (it acts as EOS), so there is nothing to cancel.
            turn.state = VitaState.NOISY_AUDIO
            self._commit(turn, "", "ignored")
            return [
                StateDecided(event.time, state=VitaState.NOISY_AUDIO, latency=latency, turn_id=turn.turn_id),
                Ignored(event.time, turn_id=turn.turn_id),
                *self._release_duck(turn.turn_id, event.time),
            ]
        # A typed query stays a query even if the model hesitates, and a spoken query is reported as such whichever
        # query token the model chose: the reported state is the one the history records.
        turn.state = VitaState.QUERY_TEXT if turn.kind == "text" else VitaState.QUERY_AUDIO
        out: list[Event | Action] = [StateDecided(event.time, state=turn.state, latency=latency, turn_id=turn.turn_id)]
        if self._responding is not None and self._responding.turn_id > turn.turn_id:
            # A newer query answers already: this one is superseded before its answer began.
            self._commit(turn, "", "interrupted")
            out += [Interrupted(event.time, text="", turn_id=turn.turn_id), CancelTurn(turn.turn_id, "superseded")]
            return out + self._release_duck(turn.turn_id, event.time)
        out += self._interrupt_older(event.time, newer_than=turn.turn_id)
        out += self._release_duck(turn.turn_id, event.time)  # a duck whose answer ended meanwhile is over
        self._playback = AnswerPlayback(turn.turn_id)
        if turn.history_version == self._history_version or not self.restart_with_consolidated_history:
            self._responding = turn  # its worker goes on generating; its text is reported from now on
            return out
        # The history changed after this turn's prompt was built: answer with the consolidated history instead.
        restarted = replace(turn, turn_id=self._new_id(), history_version=self._history_version, parts=[])
        self._responding, self._playback = restarted, AnswerPlayback(restarted.turn_id)
        out.append(CancelTurn(turn.turn_id, reason="restarted"))
        out.append(
            StartTurn(
                restarted.turn_id,
                kind=turn.kind,
                audio=turn.audio,
                text=turn.text,
                history=self._snapshot(),
                images=turn.images,
                state=turn.state,
                time=event.time,
            )
        )
        return out

    def _on_done(self, event: ResponseDone) -> list[Event | Action]:
        if event.turn_id in self._deciding:
            turn = self._deciding.pop(event.turn_id)
            message = f"turn {event.turn_id} ended before a state token was read"
            self._commit(turn, "", "error")
            return [
                Error(event.time, message=message, turn_id=event.turn_id),
                *self._release_duck(turn.turn_id, event.time),
            ]
        if self._responding is None or event.turn_id != self._responding.turn_id:
            return []
        turn, self._responding = self._responding, None
        text = event.text if event.text else "".join(turn.parts)
        self._commit(turn, text, "answered")
        return [ResponseDone(event.time, text=text, turn_id=turn.turn_id)]

    def _on_audio_out(self, event: AudioOut) -> list[Event | Action]:
        playback = self._playback
        if playback is None or playback.turn_id != event.turn_id:
            return []  # speech of an answer that was cut meanwhile
        playback.queue(event.time, len(event.audio) / event.sampling_rate, event.text)
        return [event]

    def _on_error(self, event: Error) -> list[Event | Action]:
        if event.turn_id is not None and event.turn_id in self._deciding:
            turn = self._deciding.pop(event.turn_id)
            self._commit(turn, "", "error")
            return [event, CancelTurn(event.turn_id, reason="error"), *self._release_duck(turn.turn_id, event.time)]
        if self._responding is not None and event.turn_id == self._responding.turn_id:
            turn, self._responding = self._responding, None
            self._commit(turn, "".join(turn.parts), "error")
            if self._playback is not None and self._playback.turn_id == turn.turn_id:
                self._playback.cut(event.time)
            self._duck = None if self._duck is not None and self._duck.turn_id == turn.turn_id else self._duck
            return [event, CancelTurn(turn.turn_id, reason="error")]
        return [event]

    # -- interruption and ducking ---------------------------------------------------------------------------------

    def _live_turn(self, time: float) -> int | None:
        if self._responding is not None:
            return self._responding.turn_id
        if self._playback is not None and self._playback.audible_at(time):
            return self._playback.turn_id
        return None

    def _duck_live_answer(self, time: float) -> list[Event]:
        live = self._live_turn(time)
        if live is None or self._duck is not None:
            return []
        self._duck = Duck(live)
        if self._playback is not None and self._playback.turn_id == live:
            self._playback.pause(time)
        return [AnswerDucked(time, turn_id=live)]

    def _release_duck(self, turn_id: int, time: float) -> list[Event]:
        if self._duck is not None:
            self._duck.holders.discard(turn_id)
        return self._maybe_resume(time)

    def _maybe_resume(self, time: float) -> list[Event]:
        duck = self._duck
        if duck is None or self._speaking or duck.holders:
            return []
        self._duck = None
        if self._playback is not None and self._playback.turn_id == duck.turn_id:
            self._playback.resume(time)
        if self._live_turn(time) != duck.turn_id:
            return []  # it finished meanwhile and nothing is left to play
        return [AnswerResumed(time, turn_id=duck.turn_id)]

    def _interrupt_older(self, time: float, newer_than: int | None) -> list[Event | Action]:
        """Cut the live answer (streaming or still audible) if it is older than turn `newer_than` (None: any)."""
        live = self._live_turn(time)
        if live is None or (newer_than is not None and live > newer_than):
            return []
        self._duck = None
        playback = self._playback if self._playback is not None and self._playback.turn_id == live else None
        if self._responding is not None and self._responding.turn_id == live:
            turn, self._responding = self._responding, None
            produced = "".join(turn.parts)
            heard = playback.heard_text(time) if playback is not None and self.speaks_answers else produced
            self._commit(turn, heard, "interrupted")
            out: list[Event | Action] = [Interrupted(time, text=heard, turn_id=live), CancelTurn(live, "interrupted")]
        else:  # its text was complete, its speech still playing: the history keeps what was heard
            heard = playback.heard_text(time) if playback is not None else ""
            self._recommit_interrupted(live, heard)
            out = [Interrupted(time, text=heard, turn_id=live)]
        if playback is not None:
            playback.cut(time)
        return out

    # -- history --------------------------------------------------------------------------------------------------

    def _commit(self, turn: ActiveTurn, answer: str, outcome: str) -> None:
        interrupted = outcome == "interrupted" or (outcome == "error" and turn.state is not None)
        common = {"turn_id": turn.turn_id, "outcome": outcome}
        user = Turn("user", turn.text, turn.state, audio=turn.audio, images=turn.images, **common)
        assistant = Turn("assistant", answer, turn.state, interrupted=interrupted, **common)
        # Exchanges stay in the order of their inputs, whichever ended first (a noise segment can be ignored while
        # an older question is still being answered).
        index = len(self._history)
        while index and self._history[index - 1].turn_id > turn.turn_id:
            index -= 2
        self._history[index:index] = [user, assistant]
        if assistant.in_prompt:
            self._shown.extend(turn.images)
        self._history_version += 1

    def _recommit_interrupted(self, turn_id: int, heard: str) -> None:
        for index, entry in enumerate(self._history):
            if entry.turn_id == turn_id:
                content = heard if entry.role == "assistant" else entry.content
                self._history[index] = replace(
                    entry, content=content, interrupted=entry.role == "assistant", outcome="interrupted"
                )
        self._history_version += 1


__all__ = ["DuplexState", "DuplexStateMachine"]
