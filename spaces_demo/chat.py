"""The chat tab's conversation: typed, spoken, image and video questions, answers streamed with their state.

Every VITA answer opens with a state token (`VitaState`: a spoken query, noisy audio not meant for the assistant, a
typed query; the strings are the checkpoint's `state_tokens`). The chat follows the rule of `VitaDuplexPipeline`:
without audio the state is forced to `query_text`, with audio the model decides. Unlike the pipeline, which answers
one turn, a `ChatSession` keeps the history (one conversation per browser session) and streams the answer.

History follows the duplex state machine (`modeling_vita/duplex_state.py`): an exchange enters the prompt only once
it is answered; a `noisy_audio` turn (background talk) is shown with its badge but never enters the prompt; answers
go back to the model as assistant messages with their `"state"`, and the chat template writes the state token before
them, as the model was trained. Media of past turns stay in the prompt (the last `max_history_turns` exchanges), so a
follow-up question about the same picture works.

A turn runs as the pipeline's and the session's do (`modeling_vita/generation_vita.py`): the runtime's
`prepare_turn` builds the inputs, its `run_turn` is the one `generate` call (or, with `--backend vllm`, one request to
the shared vLLM engine), on a worker thread, and a `VitaTurnStreamer` reports the decision and the text deltas
through its callbacks into a queue the answer's iterator reads. The streamer stops a noisy turn at its state token;
closing the iterator (the browser went away) sets the streamer's stop event, which ends the generation within one
decoding step.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from modeling_vita.generation_vita import VitaTurnStreamer
from processing_vita import VitaState

if TYPE_CHECKING:
    from .runtime import SpaceRuntime

logger = logging.getLogger(__name__)

STATE_BADGES = {
    VitaState.QUERY_AUDIO: "answered query (audio)",
    VitaState.NOISY_AUDIO: "ignored: background talk",
    VitaState.QUERY_TEXT: "typed query",
}
ANSWERED_STATES = (VitaState.QUERY_AUDIO, VitaState.QUERY_TEXT)

ContentPart = dict[str, str | Image.Image | tuple[np.ndarray, int]]
Message = dict[str, str | VitaState | list[ContentPart]]


@dataclass
class ChatTurn:
    """One user question and the answer to it.

    Args:
        text: the typed question ("" when there is none).
        image: a PIL image shown with the question; `image_path` is its upload (for display only).
        video: path of an uploaded video (the processor samples its frames).
        audio: `(float32 mono samples, sampling_rate)` of a spoken question or recording; `audio_path` for display.
        state: the state the answer opened with, once known.
        answer: the answer text without the state token, as streamed so far.
        done: the answer is complete (or the turn failed, see `error`).
        error: why the turn failed, if it did.
    """

    text: str = ""
    image: Image.Image | None = None
    image_path: str | None = None
    video: str | None = None
    audio: tuple[np.ndarray, int] | None = None
    audio_path: str | None = None
    state: VitaState | None = None
    answer: str = ""
    done: bool = False
    error: str | None = None

    @property
    def answered(self) -> bool:
        """A complete answer to a query (it goes into the next prompts)."""
        return self.done and self.error is None and self.state in ANSWERED_STATES

    @property
    def badge(self) -> str:
        return STATE_BADGES[self.state] if self.state is not None else "deciding…"

    def user_content(self) -> list[ContentPart]:
        """The content parts of this question for the processor's chat template (media first, then the text)."""
        content: list[ContentPart] = []
        if self.image is not None:
            content.append({"type": "image", "image": self.image})
        if self.video is not None:
            content.append({"type": "video", "video": self.video})
        if self.audio is not None:
            content.append({"type": "audio", "audio": self.audio})
        if self.text:
            content.append({"type": "text", "text": self.text})
        return content


def prompt_messages(history: list[ChatTurn], turn: ChatTurn) -> list[Message]:
    """The conversation for the chat template: the answered exchanges of `history`, then the new question.

    Answers carry their `"state"`; the chat template writes the checkpoint's state token before each one.
    """
    messages: list[Message] = []
    for past in history:
        if not past.answered:
            continue  # background talk and failed turns are not part of the conversation
        messages.append({"role": "user", "content": past.user_content()})
        messages.append({"role": "assistant", "content": past.answer, "state": past.state})
    messages.append({"role": "user", "content": turn.user_content()})
    return messages


@dataclass(frozen=True)
class _Decided:
    state: VitaState


@dataclass(frozen=True)
class _Said:
    delta: str


@dataclass(frozen=True)
class _Ended:
    error: Exception | None = None


_Update = _Decided | _Said | _Ended


class ChatSession:
    """One browser session's conversation with the shared model.

    Args:
        runtime: the loaded model (`runtime.VitaRuntime` or `runtime.VllmRuntime`).
        max_new_tokens: longest answer in tokens.
        max_history_turns: answered exchanges kept in the prompt (older ones stay visible but are not sent).
        generation_kwargs: more arguments for `generate` (greedy decoding by default; a `logits_processor` list
            runs after the state constraint).
    """

    def __init__(
        self,
        runtime: SpaceRuntime,
        max_new_tokens: int = 64,
        max_history_turns: int = 4,
        generation_kwargs: dict[str, object] | None = None,
    ) -> None:
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, found {max_new_tokens}")
        if max_history_turns < 0:
            raise ValueError(f"max_history_turns must be 0 or more, found {max_history_turns}")
        self.runtime = runtime
        self.max_history_turns = max_history_turns
        self.generation_kwargs = {"max_new_tokens": max_new_tokens, "do_sample": False, **(generation_kwargs or {})}
        self.turns: list[ChatTurn] = []
        self._running: tuple[threading.Event, threading.Thread] | None = None  # the answer being generated
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def history(self) -> list[ChatTurn]:
        """The exchanges the model sees in the next prompt (answered ones, latest `max_history_turns`)."""
        answered = [turn for turn in self.turns if turn.answered]
        return answered[-self.max_history_turns :] if self.max_history_turns else []

    def reset(self) -> None:
        """Start a new conversation (stops an answer still running)."""
        self._halt()
        self.turns = []

    def close(self) -> None:
        """Stop the running answer, if any. The session can no longer ask. Idempotent."""
        self._closed = True
        self._halt()

    def ask(self, turn: ChatTurn) -> Iterator[ChatTurn]:
        """Answer `turn`, yielding it each time its answer grows and once when it is done; it is appended to `turns`
        at once.

        Closing the iterator early (the browser went away) stops the generation within one decoding step.
        """
        if self._closed:
            raise ValueError("the ChatSession is closed; expected an open session (start a new conversation)")
        if turn.audio is None and not turn.text:
            raise ValueError(
                "A question needs typed text or audio; found neither (an image or video alone is no question)"
            )
        self._halt()  # one answer at a time per conversation
        runtime = self.runtime
        inputs = runtime.prepare_turn(prompt_messages(self.history, turn))
        self.turns.append(turn)
        updates: queue.Queue[_Update] = queue.Queue()
        streamer = VitaTurnStreamer(
            runtime.processor.tokenizer,
            runtime.state_spellings,
            on_state=lambda state: updates.put(_Decided(state)),
            on_text=lambda delta: updates.put(_Said(delta)),
        )
        # The pipeline's rule: a question without audio is a typed query; with audio the model decides.
        allowed = [VitaState.QUERY_TEXT] if turn.audio is None else None
        worker = threading.Thread(
            target=self._generate, args=(inputs, streamer, allowed, updates), name="vita-chat-turn", daemon=True
        )
        running = (streamer.stop, worker)
        self._running = running
        worker.start()
        said = ""
        try:
            while True:
                update = updates.get()
                if isinstance(update, _Ended):
                    if update.error is not None:
                        raise update.error
                    break
                if isinstance(update, _Decided):
                    turn.state = update.state
                    if update.state is VitaState.NOISY_AUDIO:
                        break  # nothing to say; the streamer has stopped the generation
                    continue
                said += update.delta
                if said.lstrip() != turn.answer:
                    turn.answer = said.lstrip()
                    yield turn
            if turn.state is None:
                tokens = ", ".join(runtime.state_tokens.values())
                raise ValueError(f"the answer opens with no state token; expected one of {tokens}")
            turn.answer = turn.answer.strip()
        except Exception as error:
            turn.error = f"{type(error).__name__}: {error}"
            raise
        finally:
            turn.done = True
            self._halt(running)  # only its own generation: a newer question may be running already
        yield turn

    def _generate(
        self,
        inputs: dict[str, object],
        streamer: VitaTurnStreamer,
        allowed: list[VitaState] | None,
        updates: queue.Queue[_Update],
    ) -> None:
        try:
            self.runtime.run_turn(inputs, streamer, allowed, self.generation_kwargs)
        except Exception as error:  # handed to the reader, which raises it where the user sees it
            updates.put(_Ended(error))
            return
        updates.put(_Ended())

    def _halt(self, running: tuple[threading.Event, threading.Thread] | None = None) -> None:
        """Stop a generation (default: the current one) and wait for its thread."""
        running = running or self._running
        if running is None:
            return
        stop, worker = running
        if worker.is_alive():
            logger.debug("stopping the answer running on %s", worker.name)
        stop.set()
        worker.join()
        if self._running == running:
            self._running = None


__all__ = ["ANSWERED_STATES", "STATE_BADGES", "ChatSession", "ChatTurn", "prompt_messages"]
