"""The VITA Space: chat with text, images, videos and audio, or talk in real time and interrupt the answer.

Gradio 6 Blocks with two tabs over one model per process (issue #8):
    - Chat: a typed question, an image, a video and/or an audio clip (upload or microphone); the answer streams into a
      `gr.Chatbot` with the state of the turn as a badge ("answered query (audio)", "ignored: background talk",
      "typed query"; `chat.STATE_BADGES`). The conversation is a `chat.ChatSession`.
    - Real-time: the microphone streams through `gr.Audio(streaming=True).stream(...)` into a
      `realtime.RealtimeHandler` (fastrtc-style `receive`/`emit` over a `DuplexSession`): a live transcript of the
      events, the answer as it streams, interruptions, spoken answers and the timeline picture.

Sessions: the model is loaded once (`runtime.load_runtime`: the checkpoint's model and processor behind the installed
`VitaDuplexPipeline`) and shared read-only; each browser session gets its own `ChatSession` and `RealtimeHandler` in
a `gr.State`, so two visitors never share a history. When a tab closes, `demo.unload` closes that session's objects
at once (the `gr.State` `delete_callback` only runs an hour later in gradio 6, or when `time_to_live` expires, and is
kept as a backstop).

Limits (`limits.Limits`, listed in the header by `limits.describe_limits`): bytes per upload
(`launch(max_file_size=...)` and again in Python), seconds of audio and video, megapixels, characters, seconds a
real-time conversation may stream. Media are read only from gradio's upload folder (`allowed_paths` is not widened).

Problems the visitor can fix (no question, a file too long, empty or unreadable) are notices, not errors: the page's
events (`chat_page`, `realtime_image_page`) list them beside the input (`#vita-chat-notice`, `#vita-live-notice`, the
latest first, each kept until a question goes through) and leave the conversation and the other inputs as they were.
A raised `gr.Error` would mark every output with a red "Error" pill and hide the conversation behind them, and
gradio 6.31 merges toasts of one kind into one that closes with the first one's timer. The page's events take the
uploads unprocessed (`preprocess=False`: gradio's `FileData`, the visitor's file name with it), so the project's
readers (`limits.py`) decide about every file and say which one and why; gradio's image component would otherwise open
the file first and fail with no message. The same handlers called from Python (`chat`, `realtime_image`, what the
tests and an API caller use) take paths and raise `gr.Error` with the same messages.

Run: `python -m spaces_demo.app [--model PATH] [--host H] [--port P] [--tts auto|piper|espeak|none]` (model: `--model`,
else `$VITA_MODEL`, else `vita-tiny/` beside this file); on a Space, `app.py` runs as a script. Importing this module
loads no model and starts no server. The same checkpoint from the command line: `python -m spaces_demo.cli` (`cli.py`).
"""

from __future__ import annotations

import argparse
import html
import logging
import re
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import gradio as gr
import numpy as np
from PIL import Image

from modeling_vita.duplex_speech_output import TTS_CHOICES, TTSEngine, make_tts
from processing_vita import VitaState

if __package__:
    from .chat import STATE_BADGES, ChatSession, ChatTurn
    from .limits import Limits, check_text, check_video, describe_limits, load_audio, load_image
    from .realtime import RealtimeHandler, RealtimeView
    from .runtime import VitaRuntime, default_history_turns, load_runtime
else:  # `python app.py` on a Space: the siblings are top-level modules
    from chat import STATE_BADGES, ChatSession, ChatTurn
    from limits import Limits, check_text, check_video, describe_limits, load_audio, load_image
    from realtime import RealtimeHandler, RealtimeView
    from runtime import VitaRuntime, default_history_turns, load_runtime

logger = logging.getLogger(__name__)

ChatbotMessage = dict[str, str | dict[str, str]]  # a gradio 6 Chatbot message: text or {"path": media file}
SessionObject = ChatSession | RealtimeHandler
Skip = dict  # what `gr.skip()` returns: that output keeps its value
Clip = tuple[int, np.ndarray]  # (sampling rate, int16 samples) for a `gr.Audio`
# The real-time outputs (each may be skipped): handler, transcript HTML, answer, spoken clip, timeline picture.
RealtimeOutputs = tuple[RealtimeHandler | None, str | Skip, str | Skip, Clip | Skip | None, Image.Image | Skip | None]

TITLE = "VITA: omni multimodal chat and real-time voice"
TIMELINE_EVERY_SECS = 2.0
NOTICES_KEPT = 5  # problems listed beside an input, the latest first
NO_QUESTION = "Type a question or give audio (upload or record); an image or video alone is no question"
# Badge colours follow the timeline picture of `duplex_timeline` (query blue, typed purple, noise grey).
CSS = """
.vita-badge { display: inline-block; padding: 1px 9px; margin-right: 6px; border-radius: 999px;
              font-size: 0.8em; font-weight: 600; color: #fff; background: #3c3c3c; }
.vita-badge.vita-query_audio { background: #1e5ac8; }
.vita-badge.vita-query_text { background: #823cb4; }
.vita-badge.vita-noisy_audio { background: #8a8a8a; }
.vita-badge.vita-error { background: #a00000; }
.vita-transcript { font-family: ui-monospace, monospace; font-size: 0.9em; line-height: 1.5; }
.vita-line.vita-interrupted { color: #dc1e1e; font-weight: 700; }
.vita-line.vita-ignored { color: #777; }
.vita-notices { list-style: none; margin: 0; padding: 0; }
.vita-notice { margin: 4px 0; padding: 6px 10px; border-left: 4px solid #c27c0e; border-radius: 4px;
               background: #fff4e0; color: #4a3000; }
.vita-notice-count { margin-left: 6px; font-size: 0.85em; color: #7a5a20; }
"""
Notice = tuple[str, int]  # a problem shown beside an input and how many times in a row it came


class Refused(Exception):
    """What a visitor gave cannot be asked (no error of the program): `problems` says each thing wrong, `bad` the
    inputs to empty."""

    def __init__(self, problems: list[str], bad: frozenset[str] = frozenset()) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems
        self.bad = bad


class TurnFailed(Exception):
    """The model failed on an accepted question; the session holds the turn with its error."""

    def __init__(self, message: str, session: ChatSession) -> None:
        super().__init__(message)
        self.session = session


def badge_html(state: str, label: str) -> str:
    """A badge for a `VitaState` (or "error", "deciding"); the state names its CSS class."""
    # The state goes in a class: the Chatbot's HTML sanitizer keeps classes but drops data-* attributes.
    return f'<span class="vita-badge vita-{state}">{html.escape(label)}</span>'


def state_legend(state_tokens: dict[VitaState, str]) -> str:
    """The badges and the state token the checkpoint writes for each, for the page's header."""
    return ", ".join(f"**{STATE_BADGES[state]}** `{state_tokens[state]}`" for state in VitaState)


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


def _html_text(text: str) -> str:
    """Text for a `gr.HTML` value: escaped, and `$ { }` as entities so gradio's template never reads them."""
    return html.escape(text).replace("$", "&#36;").replace("{", "&#123;").replace("}", "&#125;")


def add_notices(notices: Sequence[Notice] | None, problems: Sequence[str]) -> list[Notice]:
    """The notice list after `problems` (the latest first, at most NOTICES_KEPT); a problem repeating the latest one
    counts up instead of taking another line."""
    kept = list(notices or [])
    for problem in problems:
        if kept and kept[0][0] == problem:
            kept[0] = (problem, kept[0][1] + 1)
        else:
            kept.insert(0, (problem, 1))
    return kept[:NOTICES_KEPT]


def notices_html(notices: Sequence[Notice] | None) -> str:
    """The notice list as the page shows it beside the input ("" when there is nothing to say)."""
    if not notices:
        return ""
    items = "".join(
        f'<li class="vita-notice">{_html_text(problem)}'
        + (f'<span class="vita-notice-count">({count} times)</span>' if count > 1 else "")
        + "</li>"
        for problem, count in notices
    )
    return f'<ul class="vita-notices" role="alert">{items}</ul>'


def plain_error(error: BaseException) -> str:
    """An exception's text for the visitor: no errno, and each absolute path cut to its file name (an upload's
    folder on the server is nobody's business)."""
    text = re.sub(r"\[Errno -?\d+\]\s*", "", str(error))
    return re.sub(r"(?<![\w.])(?:/[^/\s'\"]+)+/([^/\s'\"]+)", r"\1", text)


def upload_of(value: str | dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(server path, the visitor's file name) of an upload as a handler receives it: a path (gradio preprocessed it,
    or a Python caller) or gradio's `FileData` as a dict (an event with `preprocess=False`)."""
    if value is None or value == "":
        return None, None
    if isinstance(value, dict):
        return value.get("path"), value.get("orig_name")
    return str(value), None


def transcript_html(lines: Sequence[str], kinds: Sequence[str]) -> str:
    rows = "".join(
        f'<div class="vita-line vita-{kind}" data-kind="{kind}">{html.escape(line)}</div>'
        for line, kind in zip(lines, kinds)
    )
    return f'<div class="vita-transcript">{rows or "Press record and speak; events appear here."}</div>'


def _close_quietly(value: SessionObject | None) -> None:
    """`gr.State` delete callback: close a session object gradio drops (it may already be closed by `unload`)."""
    if value is not None:
        value.close()


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
        runtime: VitaRuntime,
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

    # -- layout --------------------------------------------------------------------------------------------------

    def blocks(self) -> gr.Blocks:
        """The Blocks layout wired to these handlers (theme and CSS go to `launch` in gradio 6)."""
        limits = self.limits
        with gr.Blocks(title="VITA") as demo:
            gr.Markdown(
                f"# {TITLE}\n"
                "Ask by typing, by voice, about an image or a video. Every answer opens with a state token, shown as "
                f"a badge: {state_legend(self.runtime.state_tokens)}. Limits: {describe_limits(limits)}.",
                elem_id="vita-header",
            )
            with gr.Tab("Chat", id="chat"):
                chat_state = gr.State(None, delete_callback=_close_quietly)
                chat_notices = gr.State([])
                chatbot = gr.Chatbot(label="Conversation", elem_id="vita-chatbot", height=560, feedback_options=None)
                with gr.Row():
                    text = gr.Textbox(
                        label="Question", placeholder="Type a question…", elem_id="vita-text", scale=4, lines=1
                    )
                    send = gr.Button("Send", variant="primary", elem_id="vita-send", scale=1)
                chat_notice = gr.HTML("", elem_id="vita-chat-notice", js_on_load=None)
                with gr.Row():
                    image = gr.Image(
                        label="Image", type="filepath", sources=["upload", "clipboard"], elem_id="vita-image"
                    )
                    video = gr.Video(label="Video", sources=["upload"], elem_id="vita-video")
                    audio = gr.Audio(
                        label="Audio question (upload or record)",
                        sources=["upload", "microphone"],
                        type="filepath",
                        elem_id="vita-audio",
                    )
                new_chat = gr.Button("New conversation", elem_id="vita-new-chat")
            with gr.Tab("Real-time", id="realtime"):
                live_state = gr.State(None, delete_callback=_close_quietly)
                live_notices = gr.State([])
                gr.Markdown(
                    "Press record and talk. Background talk is ignored; a new question interrupts the answer. "
                    "Use headphones or keep the browser's echo cancellation on."
                )
                with gr.Row():
                    with gr.Column(scale=1):
                        mic = gr.Audio(
                            label="Microphone",
                            sources=["microphone"],
                            streaming=True,
                            type="numpy",
                            elem_id="vita-mic",
                        )
                        picture = gr.Image(
                            label="Show a picture (optional)", type="filepath", elem_id="vita-live-image"
                        )
                        live_notice = gr.HTML("", elem_id="vita-live-notice", js_on_load=None)
                        reset = gr.Button("Reset", elem_id="vita-live-reset")
                    with gr.Column(scale=2):
                        answer = gr.Textbox(label="Answer", interactive=False, elem_id="vita-live-answer")
                        spoken = gr.Audio(
                            label="Spoken answer", autoplay=True, interactive=False, elem_id="vita-live-speech"
                        )
                        transcript = gr.HTML(transcript_html([], []), elem_id="vita-live-transcript")
                timeline = gr.Image(label="Timeline", type="pil", interactive=False, elem_id="vita-live-timeline")

            chat_inputs = [text, image, video, audio, chat_state, chat_notices]
            chat_outputs = [chatbot, chat_state, text, image, video, audio, chat_notices, chat_notice]
            # Two answers at a time across all visitors (both triggers share the limit): generation is CPU/GPU bound.
            # Unprocessed inputs: the project's readers, not gradio's components, decide about each upload.
            gr.on(
                [send.click, text.submit],
                self.chat_page,
                chat_inputs,
                chat_outputs,
                concurrency_limit=2,
                preprocess=False,
                show_progress_on=[chatbot, text, image, video, audio],
            )
            new_chat.click(self.chat_reset, [chat_state], [chatbot, chat_state])

            live_outputs = [live_state, transcript, answer, spoken, timeline]
            mic.stream(
                self.realtime_chunk,
                [mic, live_state],
                live_outputs,
                stream_every=0.1,  # what gradio 6.31's microphone uses whatever is asked
                time_limit=int(limits.max_realtime_secs),
                concurrency_limit=None,  # a chunk only queues audio and reads events: it never waits on the model
                show_progress="hidden",
            )
            mic.stop_recording(self.realtime_stop, [live_state], live_outputs, concurrency_limit=4)
            picture.change(
                self.realtime_image_page,
                [picture, live_state, live_notices],
                [live_state, picture, live_notices, live_notice],
                preprocess=False,
                show_progress_on=[picture],
            )
            reset.click(self.realtime_reset, [live_state], live_outputs)
            demo.unload(self.unload)
        return demo


def build_demo(
    model_path: str | None = None,
    *,
    runtime: VitaRuntime | None = None,
    tts: str = "auto",
    limits: Limits | None = None,
    max_new_tokens: int = 64,
    max_history_turns: int | None = None,
    **session_kwargs: Any,
) -> gr.Blocks:
    """The Space's Blocks: loads the model (`model_path`, `$VITA_MODEL` or `vita-tiny/`) unless `runtime` is given.

    `max_history_turns` defaults to `runtime.default_history_turns` (none for the embedded vita-tiny, which learned
    from single questions; 4 otherwise).

    The returned Blocks carries the handlers as `demo.vita_space` (a `VitaSpace`) and the limits for `launch`.
    """
    runtime = runtime if runtime is not None else load_runtime(model_path)
    if max_history_turns is None:
        max_history_turns = default_history_turns(runtime.model_path)
    space = VitaSpace(
        runtime,
        tts=make_tts(tts),
        limits=limits,
        max_new_tokens=max_new_tokens,
        max_history_turns=max_history_turns,
        **session_kwargs,
    )
    demo = space.blocks()
    demo.vita_space = space
    return demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m spaces_demo.app", description=TITLE)
    parser.add_argument("--model", help="checkpoint folder or hub id (default: $VITA_MODEL, else vita-tiny/ here)")
    parser.add_argument("--host", default=None, help="interface to listen on (default: gradio's, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860)")
    parser.add_argument("--tts", choices=TTS_CHOICES, default="auto", help="speech engine of the real-time tab")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest answer in tokens")
    parser.add_argument(
        "--max-history-turns",
        type=int,
        default=None,
        help="past exchanges in each prompt (default: 0 for the embedded vita-tiny, trained on single questions; 4)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    """Load the model and serve the Space until interrupted."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_new_tokens < 1:
        parser.error(f"--max-new-tokens must be at least 1, found {args.max_new_tokens}")
    if args.max_history_turns is not None and args.max_history_turns < 0:
        parser.error(f"--max-history-turns must be 0 or more, found {args.max_history_turns}")
    try:
        demo = build_demo(
            args.model, tts=args.tts, max_new_tokens=args.max_new_tokens, max_history_turns=args.max_history_turns
        )
    except (OSError, ValueError) as error:  # no such folder or hub id, not a VITA checkpoint, TTS engine missing
        parser.error(str(error))
    limits = demo.vita_space.limits
    demo.queue(default_concurrency_limit=1).launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=limits.max_file_size,
        css=CSS,
        theme=gr.themes.Soft(),
    )


if __name__ == "__main__":
    main()
