"""The turn workers of a duplex session: one thread per `StartTurn`, each running one `run_turn` over the model.

A worker prepares its prompt (`prepare_turn_inputs`), runs `run_turn` (`generation_vita.py`) with its own KV cache
(one copy of the weights: the deciding turn and the answering turn are two roles over it) and reports through the
session's inbox only: the decision and the text as `WorkerEvent`s from its `VitaTurnStreamer`'s callbacks, then
`ResponseDone` (unless it was cancelled), and always `TurnFinished`. `CancelTurn` sets its stop switch, which ends
its `generate` within one decoding step.

How a worker ends: normally; with an `Exception` (reported as the turn's `Error`, which ends the turn in the state
machine); or with a `KeyboardInterrupt`/`SystemExit` (any `BaseException` that is not an `Exception`), which is not
re-raised here, where it would only end this thread: it goes to the dispatcher as `Raised`, which ends the turn with
its `Error` and hands the exception to the caller's thread (`duplex_session`'s module docstring).

`TurnWorkers` is owned by the session's dispatcher thread (`start`, `cancel`, `finished`); `close` joins them all.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .duplex_events import Error, ResponseDone, StartTurn, StateDecided, TextDelta, VitaState
from .duplex_inbox import InboxMessage, Raised, TurnFinished, WorkerEvent
from .generation_vita import StateSpellings, VitaTurnStreamer, run_turn
from .prompt_cache_vita import PromptCache

logger = logging.getLogger(__name__)


@dataclass
class TurnControl:
    """One running turn: its stop switch, whether it was cancelled, its thread."""

    turn_id: int
    stop: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    reason: str = ""  # why it was cancelled (`CancelTurn.reason`)
    thread: threading.Thread | None = None


def turn_streamer(
    action: StartTurn, tokenizer: Any, spellings: StateSpellings, stop: threading.Event, report: Callable[[Any], None]
) -> VitaTurnStreamer:
    """The streamer of one turn: reports its decision (unless the turn restarted with a known state) and its text as
    `StateDecided` / `TextDelta` events through `report`; `stop` ends its generation."""

    def decided(state: VitaState) -> None:
        if action.state is None:  # a restarted turn's state was decided (and reported) before
            report(StateDecided(0.0, state=state, turn_id=action.turn_id))

    return VitaTurnStreamer(
        tokenizer,
        spellings,
        stop=stop,
        forced_state=action.state,
        on_state=decided,
        on_text=lambda delta: report(TextDelta(0.0, text=delta, turn_id=action.turn_id)),
    )


class TurnWorkers:
    """Starts, cancels and joins the turn worker threads of one session.

    Args:
        model: the model (`generate`, `config.state_tokens`).
        processor: the processor (chat template, tokenizer).
        spellings: the token ids of each state token (`state_token_sequences`).
        generation_kwargs: passed to every `generate`.
        post: puts a message on the session's inbox (thread-safe).
        prompts: builds each turn's inputs, reusing the conversation's KV prefix (`prompt_cache_vita.py`).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        spellings: StateSpellings,
        generation_kwargs: dict[str, Any],
        post: Callable[[InboxMessage], None],
        prompts: PromptCache | None = None,
    ) -> None:
        self.model, self.processor, self.spellings = model, processor, spellings
        self.generation_kwargs, self.post = generation_kwargs, post
        self.prompts = prompts if prompts is not None else PromptCache(model, processor, enabled=False)
        self.turns: dict[int, TurnControl] = {}

    @property
    def running(self) -> bool:
        return bool(self.turns)

    def start(self, action: StartTurn) -> None:
        control = TurnControl(action.turn_id)
        control.thread = threading.Thread(
            target=self._run, args=(action, control), name=f"vita-duplex-turn-{action.turn_id}", daemon=True
        )
        self.turns[action.turn_id] = control
        control.thread.start()

    def cancel(self, turn_id: int, reason: str = "interrupted") -> None:
        control = self.turns.get(turn_id)
        if control is not None:
            control.cancelled, control.reason = True, reason
            control.stop.set()

    def finished(self, turn_id: int) -> None:
        self.turns.pop(turn_id, None)

    def stop_all(self) -> None:
        """Stop every turn and join its thread (not the calling one)."""
        own = threading.current_thread()
        for control in list(self.turns.values()):
            control.stop.set()
            if control.thread is not None and control.thread is not own:
                control.thread.join()
        self.turns.clear()

    def _event(self, event: Any) -> None:
        self.post(WorkerEvent(event))

    def _run(self, action: StartTurn, control: TurnControl) -> None:
        turn_id = action.turn_id
        streamer = turn_streamer(action, self.processor.tokenizer, self.spellings, control.stop, self._event)
        try:
            prepared = self.prompts.prepare_turn(action)
            allowed = None if action.state is None else [action.state]
            run_turn(self.model, prepared.inputs, streamer, allowed, self.generation_kwargs)
            # Its prompt is the prefix of the next turns' if it is a query the history keeps: not noise, not a turn
            # started on a pause the user spoke through, not one superseded or replaced.
            kept = not control.cancelled or control.reason in ("interrupted", "error")
            if kept and streamer.state in (VitaState.QUERY_AUDIO, VitaState.QUERY_TEXT):
                self.prompts.keep(prepared)
            if not control.cancelled:
                self._event(ResponseDone(0.0, turn_id=turn_id))
        except Exception as error:
            logger.exception("duplex turn %d failed", turn_id)
            self._event(Error(0.0, message=f"turn {turn_id} failed: {type(error).__name__}: {error}", turn_id=turn_id))
        except BaseException as error:  # KeyboardInterrupt, SystemExit: for the caller's thread (module docstring)
            logger.warning("duplex turn %d stopped by %s", turn_id, type(error).__name__)
            message = f"turn {turn_id} stopped by {type(error).__name__}: {error}"
            self.post(Raised(Error(0.0, message=message, turn_id=turn_id), error))
        finally:
            self.post(TurnFinished(turn_id))


__all__ = ["TurnControl", "TurnWorkers", "turn_streamer"]
