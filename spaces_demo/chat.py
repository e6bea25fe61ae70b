"""The chat tab's conversation: typed, spoken, image and video questions, answers streamed with their state token.

Design: `shared/design.md` sections 1 and 3 (every answer opens with a state token: `<1>` a spoken query, `<2>` noisy
audio not meant for the assistant, `<3>` a typed query; the processor takes images, videos and audio through one
chat template) and issue #8 (the state shown as a badge per turn, multi-turn history, one conversation per browser
session). It follows the rule of `VitaDuplexPipeline`: without audio the state is forced to `<3>`, with audio the model
decides. Unlike the pipeline, which answers one turn, a `ChatSession` keeps the history and streams the answer.

History follows the duplex state machine (`duplex_state.py`): an exchange enters the prompt only once it is answered;
a `<2>` turn (background talk) is shown with its badge but never enters the prompt; answers go back to the model with
their state token, as it was trained. Media of past turns stay in the prompt (the last `max_history_turns` exchanges),
so a follow-up question about the same picture works.

Generation is transformers-native, as in `duplex_session.py`: `model.generate` runs in a worker thread with the state
constraint (`StateTokenLogitsProcessor`), a streamer hands the tokens over, and an `InterruptStoppingCriteria` ends it
at `<2>` (it acts as EOS) or when the reader goes away (the browser left mid-answer). The pure parts (what goes into
the prompt, how an answer reads) are plain functions; the thread is the edge.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import LogitsProcessorList, StoppingCriteriaList

if TYPE_CHECKING:
    from .runtime import VitaRuntime

SAMPLING_RATE = 16_000
STATE_BADGES = {
    "query_audio": "answered query (audio)",
    "noisy_audio": "ignored: background talk",
    "query_text": "typed query",
}


@dataclass
class ChatTurn:
    """One user question and the answer to it.

    Args:
        text: the typed question ("" when there is none).
        image: a PIL image shown with the question; `image_path` is its upload (for display only).
        video: path of an uploaded video (the processor samples its frames).
        audio: `(float32 mono samples, sampling_rate)` of a spoken question or recording; `audio_path` for display.
        state: the state the answer opened with, once known ("query_audio", "noisy_audio" or "query_text").
        answer: the answer text without the state token, as streamed so far.
        done: the answer is complete (or the turn failed, see `error`).
        error: why the turn failed, if it did.
    """

    text: str = ""
    image: Any = None
    image_path: str | None = None
    video: str | None = None
    audio: tuple[np.ndarray, int] | None = None
    audio_path: str | None = None
    state: str | None = None
    answer: str = ""
    done: bool = False
    error: str | None = None

    @property
    def answered(self) -> bool:
        """A complete answer to a query (it goes into the next prompts)."""
        return self.done and self.error is None and self.state in ("query_audio", "query_text")

    @property
    def badge(self) -> str:
        return STATE_BADGES.get(self.state or "", "deciding…")

    def user_content(self) -> list[dict[str, Any]]:
        """The content parts of this question for the processor's chat template (media first, then the text)."""
        content: list[dict[str, Any]] = []
        if self.image is not None:
            content.append({"type": "image", "image": self.image})
        if self.video is not None:
            content.append({"type": "video", "video": self.video})
        if self.audio is not None:
            content.append({"type": "audio", "audio": self.audio})
        if self.text:
            content.append({"type": "text", "text": self.text})
        return content


def prompt_messages(history: list[ChatTurn], turn: ChatTurn, state_tokens: dict[str, str]) -> list[dict[str, Any]]:
    """The conversation for the chat template: the answered exchanges of `history`, then the new question."""
    messages: list[dict[str, Any]] = []
    for past in history:
        if not past.answered:
            continue  # background talk and failed turns are not part of the conversation
        messages.append({"role": "user", "content": past.user_content()})
        messages.append({"role": "assistant", "content": f"{state_tokens[past.state]} {past.answer}".strip()})
    messages.append({"role": "user", "content": turn.user_content()})
    return messages


class _TokenQueue:
    """A transformers streamer that hands generated token ids to the reading thread through a queue.

    It reads the state token as it completes and sets `stop` on `<2>`, so the noisy turn ends at once (the pipeline
    does the same with a stopping criterion).
    """

    _END = object()

    def __init__(self, noisy_spelling: list[int], stop: threading.Event) -> None:
        self.noisy = list(noisy_spelling)
        self.stop = stop
        self.queue: queue.Queue = queue.Queue()
        self.prompt_seen = False
        self.generated: list[int] = []

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True  # generate() first passes the prompt
            return
        tokens = [int(token) for token in value.reshape(-1).tolist()]
        self.generated.extend(tokens)
        if self.generated[: len(self.noisy)] == self.noisy:
            self.stop.set()
        self.queue.put(tokens)

    def end(self) -> None:
        self.queue.put(self._END)

    def fail(self, error: BaseException) -> None:
        self.queue.put(error)

    def __iter__(self) -> Iterator[list[int]]:
        while True:
            item = self.queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item


class ChatSession:
    """One browser session's conversation with the shared model.

    Args:
        runtime: the loaded model and the code it came with (`runtime.VitaRuntime`).
        max_new_tokens: longest answer in tokens.
        max_history_turns: answered exchanges kept in the prompt (older ones stay visible but are not sent).
        generation_kwargs: more arguments for `generate` (greedy decoding by default).
    """

    def __init__(
        self,
        runtime: VitaRuntime,
        max_new_tokens: int = 64,
        max_history_turns: int = 4,
        generation_kwargs: dict[str, Any] | None = None,
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
        """Answer `turn`, yielding it each time its state or answer grows; it is appended to `turns` at once.

        Closing the iterator early (the browser went away) stops the generation within one decoding step.
        """
        if self._closed:
            raise ValueError("the ChatSession is closed; expected an open session (start a new conversation)")
        if turn.audio is None and not turn.text:
            raise ValueError(
                "A question needs typed text or audio; found neither (an image or video alone is no question)"
            )
        self._halt()  # one answer at a time per conversation
        spellings = self.runtime.state_spellings
        state_tokens = self.runtime.events.STATE_TOKENS
        inputs = self._inputs(prompt_messages(self.history, turn, state_tokens))
        self.turns.append(turn)
        # The pipeline's rule: a question without audio is a typed query; with audio the model decides.
        allowed = [spellings["query_text"]] if turn.audio is None else list(spellings.values())
        stop = threading.Event()
        streamer = _TokenQueue(spellings["noisy_audio"], stop)
        worker = threading.Thread(
            target=self._generate, args=(inputs, allowed, stop, streamer), name="vita-chat-turn", daemon=True
        )
        self._running = (stop, worker)
        worker.start()
        parse_state = self.runtime.generation.parse_state
        generated: list[int] = []
        try:
            for tokens in streamer:
                generated.extend(tokens)
                state, rest = parse_state(generated, spellings)
                if state is None:
                    continue  # the state token is not complete yet
                turn.state = state
                if state == "noisy_audio":
                    break  # `<2>`: nothing to say
                text = self.runtime.processor.decode(rest, skip_special_tokens=True)
                text = text.lstrip().rstrip("\ufffd")  # an unfinished multi-byte character waits for its next token
                if text != turn.answer:
                    turn.answer = text
                    yield turn
            if turn.state is None:
                raise ValueError("the answer opens with no state token; expected <1>, <2> or <3>")
            turn.answer = turn.answer.strip()
        except Exception as error:
            turn.error = f"{type(error).__name__}: {error}"
            raise
        finally:
            turn.done = True
            self._halt((stop, worker))  # only its own generation: a newer question may be running already
        yield turn

    def _inputs(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        inputs = self.runtime.processor.apply_chat_template(
            messages,
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            sampling_rate=SAMPLING_RATE,
        )
        model = self.runtime.model
        # Media features go in the model's dtype (bf16 on a GPU), ids stay integers.
        return {
            key: value.to(model.device, dtype=model.dtype if value.is_floating_point() else None)
            if torch.is_tensor(value)
            else value
            for key, value in inputs.items()
        }

    def _generate(
        self, inputs: dict[str, Any], allowed: list[list[int]], stop: threading.Event, streamer: _TokenQueue
    ) -> None:
        generation = self.runtime.generation
        kwargs = dict(self.generation_kwargs)
        processors = list(kwargs.pop("logits_processor", None) or [])
        try:
            with torch.inference_mode():
                self.runtime.model.generate(
                    **inputs,
                    logits_processor=LogitsProcessorList([generation.StateTokenLogitsProcessor(allowed), *processors]),
                    stopping_criteria=StoppingCriteriaList([generation.InterruptStoppingCriteria(stop)]),
                    streamer=streamer,
                    **kwargs,
                )
        except Exception as error:  # handed to the reader, which raises it where the user sees it
            streamer.fail(error)
            return
        streamer.end()

    def _halt(self, running: tuple[threading.Event, threading.Thread] | None = None) -> None:
        """Stop a generation (default: the current one) and wait for its thread."""
        running = running or self._running
        if running is None:
            return
        stop, worker = running
        stop.set()
        worker.join()
        if self._running == running:
            self._running = None


__all__ = ["STATE_BADGES", "ChatSession", "ChatTurn", "prompt_messages"]
