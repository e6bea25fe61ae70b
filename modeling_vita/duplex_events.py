"""Events and actions of VITA's real-time duplex interaction (pure Python, no torch).

Events are what a `DuplexSession` reports to its user; they are frozen dataclasses with a `type` string and a `time`
in seconds on the input audio clock (samples received at 16 kHz divided by 16000): `speech_started`,
`speech_ended`, `speech_discarded` (closes a `speech_started` whose segment was too short), `state_decided`,
`text_delta`, `response_done`, `interrupted`, `ignored`, `answer_ducked`, `answer_resumed`, `audio_out` and `error`.
`Turn` is one entry of the consolidated history; every input (speech segment or typed query) ends in exactly one
`Outcome` there.

Actions are what the pure state machine (`duplex_state.py`) asks the session, the edge with threads and the model,
to do: start a turn or cancel one. The state machine never touches a thread, a clock or a model; it only maps
events to events and actions (docs/architecture.md).

States are `VitaState` names; the strings a checkpoint writes for them are in its config (`state_tokens`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

try:  # Hub remote code: a checkpoint folder holds processing_vita's files beside these
    from .tokenization_vita import VitaState
except ImportError:  # this project's source tree: processing_vita is a sibling package
    from processing_vita.tokenization_vita import VitaState

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# Events (reported to the user; some are also fed back into the state machine by the session)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Base class of all duplex events. `time` is in seconds on the input audio clock."""

    type: ClassVar[str] = "event"
    time: float


@dataclass(frozen=True)
class SpeechStarted(Event):
    """The VAD saw a stable speech onset. `time` is when it was detected, `start` where the speech began."""

    type: ClassVar[str] = "speech_started"
    start: float = 0.0


@dataclass(frozen=True, eq=False)
class SpeechEnded(Event):
    """A speech segment is complete: float32 samples at 16 kHz spanning `start`..`end` (pre-roll included).

    `truncated` is True when the segment was force-cut at `VADParams.max_segment_secs`; the speech then goes on in a
    new segment that starts at `end`.
    """

    type: ClassVar[str] = "speech_ended"
    segment: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32), repr=False)
    start: float = 0.0
    end: float = 0.0
    truncated: bool = False

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True, eq=False)
class SpeechPaused(Event):
    """The user went silent; the segment may end here (`segment` so far: its `SpeechEnded` has the same speech and
    start, and at most `VADParams.post_roll_secs` more of the silence).

    The session starts the turn on it at once (speculatively: prefill, decision, answer, speech) and shows nothing
    of it until the `SpeechEnded` of the same segment confirms it; a `SpeechResumed` cancels it.
    """

    type: ClassVar[str] = "speech_paused"
    segment: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32), repr=False)
    start: float = 0.0
    end: float = 0.0


@dataclass(frozen=True)
class SpeechResumed(Event):
    """Speech came back after a `SpeechPaused`: the segment goes on (a pause mid-sentence)."""

    type: ClassVar[str] = "speech_resumed"


@dataclass(frozen=True)
class SpeechDiscarded(Event):
    """Speech shorter than `VADParams.min_segment_secs` ended; it closes the matching `SpeechStarted`."""

    type: ClassVar[str] = "speech_discarded"
    start: float = 0.0
    end: float = 0.0


@dataclass(frozen=True)
class StateDecided(Event):
    """The model's first tokens classified the input of turn `turn_id` as `state`.

    `latency` is the time from the end of the input (segment end or text arrival) to the decision.
    """

    type: ClassVar[str] = "state_decided"
    state: VitaState = VitaState.QUERY_AUDIO
    latency: float = 0.0
    turn_id: int = -1

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "state", VitaState(self.state))
        except ValueError:
            names = [state.value for state in VitaState]
            raise ValueError(f"StateDecided.state must be one of {names}, found {self.state!r}") from None


@dataclass(frozen=True)
class TextDelta(Event):
    """A piece of the answer of turn `turn_id` (state token already removed)."""

    type: ClassVar[str] = "text_delta"
    text: str = ""
    turn_id: int = -1


@dataclass(frozen=True)
class ResponseDone(Event):
    """Turn `turn_id` finished its answer; `text` is the whole answer."""

    type: ClassVar[str] = "response_done"
    text: str = ""
    turn_id: int = -1


@dataclass(frozen=True)
class Interrupted(Event):
    """The answer of turn `turn_id` was cut by a newer query; `text` is the part already produced."""

    type: ClassVar[str] = "interrupted"
    text: str = ""
    turn_id: int = -1


@dataclass(frozen=True)
class Ignored(Event):
    """The input of turn `turn_id` was noisy audio not meant for the assistant; the current answer goes on."""

    type: ClassVar[str] = "ignored"
    turn_id: int = -1


@dataclass(frozen=True)
class AnswerDucked(Event):
    """The user started speaking while the answer of turn `turn_id` was live: the player pauses it now.

    It ends with `answer_resumed` (the speech was noise, a backchannel or too short: play on from where it paused)
    or `interrupted` (it was a query: drop the rest).
    """

    type: ClassVar[str] = "answer_ducked"
    turn_id: int = -1


@dataclass(frozen=True)
class AnswerResumed(Event):
    """The speech that ducked the answer of turn `turn_id` was not for the assistant: play it on."""

    type: ClassVar[str] = "answer_resumed"
    turn_id: int = -1


@dataclass(frozen=True)
class Error(Event):
    """Something failed (a bad audio chunk, a model error in one turn). The session goes on."""

    type: ClassVar[str] = "error"
    message: str = ""
    turn_id: int | None = None


@dataclass(frozen=True, eq=False)
class AudioOut(Event):
    """Speech of one piece of the answer of turn `turn_id` (float32 mono at `sampling_rate`), `text` its words.

    Play it in order; report playback with `DuplexSession.playback_started/stopped` if the device timing differs
    from the session's own estimate (the echo guard uses it).
    """

    type: ClassVar[str] = "audio_out"
    audio: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float32), repr=False)
    sampling_rate: int = 16_000
    text: str = ""
    turn_id: int = -1


# Inputs that only the session feeds into the state machine (not reported to the user).


@dataclass(frozen=True)
class TextInput(Event):
    """The user typed a query."""

    type: ClassVar[str] = "text_input"
    text: str = ""


@dataclass(frozen=True, eq=False)
class ImageInput(Event):
    """A still image or a video frame (kept as visual context for the next turns, never stored in history)."""

    type: ClassVar[str] = "image_input"
    image: Any = None


# ---------------------------------------------------------------------------------------------------------------------
# History
# ---------------------------------------------------------------------------------------------------------------------


OUTCOMES = ("answered", "interrupted", "ignored", "error")


@dataclass(frozen=True)
class Turn:
    """One entry of the consolidated history.

    Every input ends in one user entry and one assistant entry sharing its `turn_id` and its `outcome`:
    "answered"; "interrupted" (cut by a newer query, or a query superseded before its answer began; `content` is
    what was produced, or spoken when the speech was cut); "ignored" (noisy audio; the assistant entry is empty);
    "error" (the turn failed; `content` holds any partial answer). Only answered and interrupted exchanges (and
    failed ones that had started answering) are shown to the model in later prompts (`in_prompt`).

    Args:
        role: "user" or "assistant".
        content: the text (a typed query, or the answer text without state token); "" for a spoken query.
        state: the state the model decided for the exchange (`query_audio`, `query_text`, `noisy_audio`; None
            when the turn failed before deciding).
        interrupted: True for an answer cut by a newer query or by an error; `content` is then the partial text.
        audio: for a spoken query, a reference to its 16 kHz float32 samples (not copied, not compared).
        turn_id: the id of the turn that produced this entry.
        outcome: how the exchange ended (above).
        images: the visual frames first shown to the model with this query (references, not copied).
    """

    role: str
    content: str
    state: VitaState | None = None
    interrupted: bool = False
    audio: np.ndarray | None = field(default=None, compare=False, repr=False)
    turn_id: int = -1
    outcome: str = "answered"
    images: tuple[Any, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"Turn.outcome must be one of {OUTCOMES}, found {self.outcome!r}")

    @property
    def in_prompt(self) -> bool:
        """Whether later prompts show this entry (noise and turns that failed before deciding are left out)."""
        return self.outcome in ("answered", "interrupted") or (self.outcome == "error" and self.state is not None)


# ---------------------------------------------------------------------------------------------------------------------
# Actions (emitted by the state machine, carried out by the session)
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """Base class of what the state machine asks the session to do."""

    type: ClassVar[str] = "action"
    turn_id: int


@dataclass(frozen=True, eq=False)
class StartTurn(Action):
    """Run the model on a new input, with the prompt built from `history`, the input and `images`.

    `kind` is "audio" (`audio` holds the segment) or "text" (`text` holds the query). When `state` is None the
    session reports `StateDecided` from the first generated tokens and, for a query, keeps generating and reports
    `TextDelta`/`ResponseDone`. When `state` is set the decision was already made (the turn restarts with a
    consolidated history): the session forces that state token and reports no decision. `history` holds only text
    and media references; `images` are the latest visual frames not yet shown with an earlier query: a frame goes
    with the first query that sees it and then stays in that query's history entry, where it is part of the
    conversation's reusable prefix.
    """

    type: ClassVar[str] = "start_turn"
    kind: str = "audio"
    audio: np.ndarray | None = field(default=None, repr=False)
    text: str = ""
    history: tuple[Turn, ...] = ()
    images: tuple[Any, ...] = field(default=(), repr=False)
    state: VitaState | None = None
    time: float = 0.0

    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of this turn's prompt: the history (answers with their state, so the chat template
        writes each answer's state token as the model was trained), then the new input after the visual frames."""
        messages: list[dict[str, Any]] = []
        for turn in self.history:
            if not turn.in_prompt:
                continue
            if turn.role == "user":
                content = [{"type": "image", "image": image} for image in turn.images]
                if turn.audio is not None:
                    content.append({"type": "audio", "audio": turn.audio})
                if turn.content:
                    content.append({"type": "text", "text": turn.content})
                messages.append({"role": "user", "content": content})
            else:
                messages.append({"role": "assistant", "content": turn.content, "state": turn.state})
        content = [{"type": "image", "image": image} for image in self.images]
        if self.kind == "audio":
            content.append({"type": "audio", "audio": self.audio})
        else:
            content.append({"type": "text", "text": self.text})
        messages.append({"role": "user", "content": content})
        return messages


@dataclass(frozen=True, eq=False)
class SpeakAhead(Action):
    """Synthesize the speech of a speculative turn's text (`TextDelta`/`ResponseDone`) before it is confirmed; the
    audio is held with the turn's other events until then."""

    type: ClassVar[str] = "speak_ahead"
    event: Any = None


@dataclass(frozen=True)
class CancelTurn(Action):
    """Stop turn `turn_id` (set its interrupt event).

    `reason`: "interrupted", "superseded" (a newer query answers first), "restarted" (a new `StartTurn` replaces
    it), "speculation" (the speech went on after the pause it was started on), "error" or "reset".
    """

    type: ClassVar[str] = "cancel_turn"
    reason: str = "interrupted"


__all__ = [
    "VitaState",
    "OUTCOMES",
    "Action",
    "AnswerDucked",
    "AnswerResumed",
    "AudioOut",
    "CancelTurn",
    "Error",
    "Event",
    "Ignored",
    "ImageInput",
    "Interrupted",
    "ResponseDone",
    "SpeechDiscarded",
    "SpeakAhead",
    "SpeechEnded",
    "SpeechPaused",
    "SpeechResumed",
    "SpeechStarted",
    "StartTurn",
    "StateDecided",
    "TextDelta",
    "TextInput",
    "Turn",
]
