"""The event handlers of the VITA Space (`VitaSpace`), kept apart from the page layout (`page.py`) so that they can
be called without a browser.

Sessions: the model (`runtime.SpaceRuntime`) is shared read-only; each browser session gets its own `ChatSession` and
`RealtimeHandler` in a `gr.State`, so two visitors never share a history. When a tab closes, `VitaSpace.unload`
closes that session's objects at once (the `gr.State` `delete_callback` only runs an hour later in gradio 6, or when
`time_to_live` expires, and is kept as a backstop).

Two entries per input: the page's events (`chat_page`, `realtime_image_page`) take the uploads unprocessed
(`preprocess=False`: gradio's `FileData`, the visitor's file name with it), so the project's readers (`limits.py`)
decide about every file and say which one and why (gradio's image component would otherwise open the file first and
fail with no message); what cannot be asked becomes a notice beside the input (`notices.py`). The same handlers called
from Python (`chat`, `realtime_image`, what the tests and an API caller use) take paths and raise `gr.Error` with the
same messages.
"""

from __future__ import annotations

import html
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from modeling_vita.duplex_speech_output import TTSEngine

if __package__:
    from .chat import ChatSession, ChatTurn
    from .limits import Limits, check_text, check_video, load_audio, load_image
    from .notices import Notice, Refused, add_notices, notices_html, plain_error
    from .realtime import RealtimeHandler, RealtimeView
    from .runtime import SpaceRuntime
else:  # `python app.py` on a Space: the siblings are top-level modules
    from chat import ChatSession, ChatTurn
    from limits import Limits, check_text, check_video, load_audio, load_image
    from notices import Notice, Refused, add_notices, notices_html, plain_error
    from realtime import RealtimeHandler, RealtimeView
    from runtime import SpaceRuntime

logger = logging.getLogger(__name__)

ChatbotMessage = dict[str, str | dict[str, str]]  # a gradio 6 Chatbot message: text or {"path": media file}
SessionObject = ChatSession | RealtimeHandler
Skip = dict  # what `gr.skip()` returns: that output keeps its value
Clip = tuple[int, np.ndarray]  # (sampling rate, int16 samples) for a `gr.Audio`
# The real-time outputs (each may be skipped): handler, transcript HTML, answer, spoken clip, timeline picture.
RealtimeOutputs = tuple[RealtimeHandler | None, str | Skip, str | Skip, Clip | Skip | None, Image.Image | Skip | None]

TIMELINE_EVERY_SECS = 2.0
NO_QUESTION = "Type a question or give audio (upload or record); an image or video alone is no question"


class TurnFailed(Exception):
    """The model failed on an accepted question; the session holds the turn with its error."""

    def __init__(self, message: str, session: ChatSession) -> None:
        super().__init__(message)
        self.session = session


def badge_html(state: str, label: str) -> str:
    """A badge for a `VitaState` (or "error", "deciding"); the state names its CSS class."""
    # The state goes in a class: the Chatbot's HTML sanitizer keeps classes but drops data-* attributes.
    return f'<span class="vita-badge vita-{state}">{html.escape(label)}</span>'


def chat_messages(turns: Sequence[ChatTurn]) -> list[ChatbotMessage]:
    """The Chatbot value (gradio 6 messages) for a conversation: the user's media and text, then the answer with its
    badge. Rendering from the session's turns keeps what is shown and what the model remembers the same."""
    messages: list[ChatbotMessage] = []
    for turn in turns:
        for path in (turn.image_path, turn.video, turn.audio_path):
            if path:
                messages.append({"role": "user", "content": {"path": path}})
        if turn.text:
            messages.append({"role": "user", "content": turn.text})
        if turn.error:
            content = f"{badge_html('error', 'error')} {html.escape(turn.error)}"
        elif turn.state is None:
            content = badge_html("deciding", "deciding…")
        else:
            content = f"{badge_html(turn.state, turn.badge)} {html.escape(turn.answer)}".rstrip()
        messages.append({"role": "assistant", "content": content})
    return messages


def upload_of(value: str | dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(server path, the visitor's file name) of an upload as a handler receives it: a path (gradio preprocessed it,
    or a Python caller) or gradio's `FileData` as a dict (an event with `preprocess=False`)."""
    if value is None or value == "":
        return None, None
    if isinstance(value, dict):
        return value.get("path"), value.get("orig_name")
    return str(value), None


def transcript_html(lines: Sequence[str], kinds: Sequence[str]) -> str:
    """The real-time transcript as HTML: one line per event, its kind as a CSS class."""
    rows = "".join(
        f'<div class="vita-line vita-{kind}" data-kind="{kind}">{html.escape(line)}</div>'
        for line, kind in zip(lines, kinds)
    )
    return f'<div class="vita-transcript">{rows or "Press record and speak; events appear here."}</div>'


class VitaSpace:
    """The event handlers of the Space, kept apart from the layout so they can be called without a browser.

    Args:
        runtime: the loaded model (shared by every browser session).
        tts: the speech engine of the real-time tab, or None.
        limits: input limits.
        max_new_tokens: longest answer in tokens.
        max_history_turns: past exchanges in each prompt, in both tabs (0: every question stands alone).
        upload_root: the folder uploads must come from (default gradio's upload folder; tests pass their own).
        session_kwargs: more `DuplexSession` arguments for the real-time tab (e.g. `vad=VADParams(...)`).
    """

    def __init__(
        self,
        runtime: SpaceRuntime,
        tts: TTSEngine | None = None,
        limits: Limits | None = None,
        max_new_tokens: int = 64,
        max_history_turns: int = 4,
        upload_root: str | None = None,
        **session_kwargs: Any,
    ) -> None:
        self.runtime = runtime
        self.tts = tts
        self.limits = limits or Limits()
        self.max_new_tokens = max_new_tokens
        self.max_history_turns = max_history_turns
        self.upload_root = upload_root
        self.session_kwargs = {"max_history_turns": max_history_turns, **session_kwargs}
        self._open: dict[str, list[SessionObject]] = {}  # browser session hash -> objects to close when it leaves
        self._lock = threading.Lock()

    # -- sessions ------------------------------------------------------------------------------------------------

    def _register(self, request: gr.Request | None, value: SessionObject) -> None:
        key = getattr(request, "session_hash", None)
        if key is not None:
            with self._lock:
                self._open.setdefault(key, []).append(value)

    def _forget(self, value: SessionObject) -> None:
        with self._lock:
            for values in self._open.values():
                if value in values:
                    values.remove(value)

    def open_sessions(self) -> int:
        """Session objects not yet closed by `unload` (for tests and monitoring)."""
        with self._lock:
            return sum(len(values) for values in self._open.values())

    def unload(self, request: gr.Request) -> None:
        """The browser tab closed: close its chat and real-time sessions now."""
        with self._lock:
            values = self._open.pop(getattr(request, "session_hash", None), [])
        for value in values:
            value.close()

    # -- chat ----------------------------------------------------------------------------------------------------

    def _chat_turn(
        self,
        text: str | None,
        image: str | dict[str, Any] | None,
        video: str | dict[str, Any] | None,
        audio: str | dict[str, Any] | None,
    ) -> ChatTurn:
        """The question, every input checked; raises `Refused` naming each problem (all of them, not the first)."""
        problems: list[str] = []
        bad: set[str] = set()
        turn = ChatTurn()
        try:
            turn.text = check_text(text, self.limits)
        except ValueError as error:
            problems.append(str(error))
            bad.add("text")
        uploads = {"image": upload_of(image), "video": upload_of(video), "audio": upload_of(audio)}
        for kind, (path, name) in uploads.items():
            if path is None and name is None:
                continue
            try:
                if path is None:
                    raise ValueError(f"The {kind} upload {name!r} has no file; upload it again")
                if kind == "image":
                    turn.image, turn.image_path = load_image(path, self.limits, self.upload_root, name), path
                elif kind == "video":
                    turn.video = str(check_video(path, self.limits, self.upload_root, name))
                else:
                    turn.audio, turn.audio_path = load_audio(path, self.limits, self.upload_root, name), path
            except ValueError as error:
                problems.append(str(error))
                bad.add(kind)
        if not turn.text and "text" not in bad and uploads["audio"] == (None, None):
            problems.append(NO_QUESTION)
        if problems:
            raise Refused(problems, frozenset(bad))
        return turn

    def _answer(
        self, turn: ChatTurn, session: ChatSession | None, request: gr.Request | None
    ) -> Iterator[tuple[list[ChatbotMessage], ChatSession]]:
        """The conversation while `turn` is answered; raises `TurnFailed` when the model fails on it."""
        if session is None or session.closed:
            session = ChatSession(
                self.runtime, max_new_tokens=self.max_new_tokens, max_history_turns=self.max_history_turns
            )
            self._register(request, session)
        yield chat_messages([*session.turns, turn]), session  # the question shows at once, "deciding…"
        answers = session.ask(turn)
        try:
            for _ in answers:
                yield chat_messages(session.turns), session
        except Exception as error:
            logger.exception("the chat turn failed")
            raise TurnFailed(f"The model failed on this question: {plain_error(error)}", session) from error
        finally:
            answers.close()  # the browser went away mid-answer: stop the generation now, not at garbage collection

    def chat(
        self,
        text: str | None,
        image: str | None,
        video: str | None,
        audio: str | None,
        session: ChatSession | None,
        request: gr.Request,
    ) -> Iterator[tuple[list[ChatbotMessage], ChatSession, str, None, None, None]]:
        """Answer one question; yields (chatbot, session, cleared text, image, video and audio inputs). For Python
        and API callers: what cannot be asked, or a failing model, raises a `gr.Error` (the page uses `chat_page`)."""
        try:
            turn = self._chat_turn(text, image, video, audio)
        except Refused as refused:
            raise gr.Error(str(refused)) from refused
        cleared = ("", None, None, None)
        try:
            for messages, current in self._answer(turn, session, request):
                yield (messages, current, *cleared)
        except TurnFailed as failed:
            raise gr.Error(str(failed)) from failed

    def chat_page(
        self,
        text: str | None,
        image: dict[str, Any] | str | None,
        video: dict[str, Any] | str | None,
        audio: dict[str, Any] | str | None,
        session: ChatSession | None,
        notices: list[Notice] | None,
        request: gr.Request,
    ) -> Iterator[tuple[Any, ...]]:
        """The Send button: `chat`, with the uploads as gradio's `FileData` (the event does not preprocess) and the
        notice list as a state; yields (chatbot, session, text, image, video, audio, notices, notice HTML).

        What cannot be asked adds its problems to the notices and changes nothing else but emptying the inputs that
        were refused (the conversation stays, no input is marked as an error); a question that goes through clears
        the notices; a failing model shows the turn with its error badge and says so in the notices."""
        try:
            turn = self._chat_turn(text, image, video, audio)
        except Refused as refused:
            notices = add_notices(notices, refused.problems)
            inputs = [None if kind in refused.bad else gr.skip() for kind in ("image", "video", "audio")]
            yield (gr.skip(), gr.skip(), gr.skip(), *inputs, notices, notices_html(notices))
            return
        cleared = ("", None, None, None)
        try:
            for messages, current in self._answer(turn, session, request):
                yield (messages, current, *cleared, [], "")
        except TurnFailed as failed:
            notices = add_notices([], [str(failed)])
            yield (chat_messages(failed.session.turns), failed.session, *cleared, notices, notices_html(notices))

    def chat_reset(self, session: ChatSession | None) -> tuple[list[ChatbotMessage], ChatSession | None]:
        if session is not None:
            session.reset()
        return [], session

    # -- real time -----------------------------------------------------------------------------------------------

    def _handler(self, handler: RealtimeHandler | None, request: gr.Request | None) -> RealtimeHandler:
        if handler is None or handler.closed:
            handler = RealtimeHandler(self.runtime, tts=self.tts, limits=self.limits, **self.session_kwargs)
            self._register(request, handler)
        return handler

    def _realtime_outputs(self, handler: RealtimeHandler, view: RealtimeView, final: bool = False) -> RealtimeOutputs:
        # Gradio 6 sends the microphone in 0.1 s chunks and skips the ones that arrive while a chunk is being handled,
        # so a chunk's reply must be cheap: unchanged outputs are skipped and the picture is redrawn at most every
        # TIMELINE_EVERY_SECS (and always when the recording stops).
        if view.news or final:
            lines = handler.lines()
            transcript = transcript_html([text for _, text in lines], [kind for kind, _ in lines])
            answer = view.answer
        else:
            transcript = answer = gr.skip()
        speech = view.speech if view.speech is not None else gr.skip()
        handler.timeline_stale |= view.changed
        now = time.monotonic()
        if final or (handler.timeline_stale and now - handler.drawn_at >= TIMELINE_EVERY_SECS):
            timeline, handler.drawn_at, handler.timeline_stale = handler.timeline(), now, False
        else:
            timeline = gr.skip()
        return handler, transcript, answer, speech, timeline

    def realtime_chunk(
        self, chunk: Clip | None, handler: RealtimeHandler | None, request: gr.Request
    ) -> RealtimeOutputs:
        """One microphone chunk in; the transcript, answer, next spoken clip and (if changed) the timeline out."""
        handler = self._handler(handler, request)
        if chunk is not None:
            try:
                handler.receive(chunk)
            except ValueError as error:
                raise gr.Error(str(error)) from error
        return self._realtime_outputs(handler, handler.emit())

    def realtime_stop(self, handler: RealtimeHandler | None) -> RealtimeOutputs:
        """The recording stopped: finish the pending turns and draw the final timeline."""
        if handler is None:
            return None, transcript_html([], []), "", gr.skip(), None
        return self._realtime_outputs(handler, handler.finish(), final=True)

    def realtime_image(
        self, image: str | dict[str, Any] | None, handler: RealtimeHandler | None, request: gr.Request
    ) -> RealtimeHandler | None:
        """A picture the spoken questions may be about (a path, or gradio's `FileData` as a dict); a picture that
        cannot be used raises a `gr.Error` (the page uses `realtime_image_page`)."""
        path, name = upload_of(image)
        if path is None and name is None:
            return handler
        try:
            if path is None:
                raise ValueError(f"The image upload {name!r} has no file; upload it again")
            picture = load_image(path, self.limits, self.upload_root, name)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        handler = self._handler(handler, request)
        handler.show_image(picture)
        return handler

    def realtime_image_page(
        self,
        image: dict[str, Any] | str | None,
        handler: RealtimeHandler | None,
        notices: list[Notice] | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        """The picture of the real-time tab as the page sends it (unprocessed); returns (handler, picture input,
        notices, notice HTML): a picture that cannot be used is emptied and its problem listed beside it."""
        try:
            handler = self.realtime_image(image, handler, request)
        except gr.Error as error:
            notices = add_notices(notices, [error.message])
            return gr.skip(), None, notices, notices_html(notices)
        if upload_of(image) == (None, None):
            return handler, gr.skip(), gr.skip(), gr.skip()  # emptied (by the visitor or by a refusal above)
        return handler, gr.skip(), [], ""

    def realtime_reset(self, handler: RealtimeHandler | None) -> RealtimeOutputs:
        if handler is not None:
            handler.close()
            self._forget(handler)
        return None, transcript_html([], []), "", None, None
