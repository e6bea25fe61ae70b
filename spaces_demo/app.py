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

Limits (`limits.Limits`): bytes per upload (`launch(max_file_size=...)` and again in Python), seconds of audio and
video, megapixels, characters, seconds a real-time conversation may stream; each refusal is a `gr.Error` naming the
value found and the one allowed. Media are read only from gradio's upload folder (`allowed_paths` is not widened).

Run: `python -m spaces_demo.app [--model PATH] [--host H] [--port P] [--tts auto|piper|espeak|none]` (model: `--model`,
else `$VITA_MODEL`, else `vita-tiny/` beside this file); on a Space, `app.py` runs as a script. Importing this module
loads no model and starts no server. The same checkpoint from the command line: `python -m spaces_demo.cli` (`cli.py`).
"""

from __future__ import annotations

import argparse
import html
import logging
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
    from .limits import Limits, check_text, check_video, load_audio, load_image
    from .realtime import RealtimeHandler, RealtimeView
    from .runtime import VitaRuntime, default_history_turns, load_runtime
else:  # `python app.py` on a Space: the siblings are top-level modules
    from chat import STATE_BADGES, ChatSession, ChatTurn
    from limits import Limits, check_text, check_video, load_audio, load_image
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
"""


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

    def _chat_turn(self, text: str | None, image: str | None, video: str | None, audio: str | None) -> ChatTurn:
        try:
            turn = ChatTurn(text=check_text(text, self.limits))
            if image:
                turn.image, turn.image_path = load_image(image, self.limits, self.upload_root), image
            if video:
                turn.video = str(check_video(video, self.limits, self.upload_root))
            if audio:
                turn.audio, turn.audio_path = load_audio(audio, self.limits, self.upload_root), audio
        except ValueError as error:
            raise gr.Error(str(error)) from error
        if turn.audio is None and not turn.text:
            raise gr.Error("Type a question or give audio (upload or record); an image or video alone is no question")
        return turn

    def chat(
        self,
        text: str | None,
        image: str | None,
        video: str | None,
        audio: str | None,
        session: ChatSession | None,
        request: gr.Request,
    ) -> Iterator[tuple[list[ChatbotMessage], ChatSession, str, None, None, None]]:
        """Answer one question; yields (chatbot, session, cleared text, image, video and audio inputs)."""
        turn = self._chat_turn(text, image, video, audio)
        if session is None or session.closed:
            session = ChatSession(
                self.runtime, max_new_tokens=self.max_new_tokens, max_history_turns=self.max_history_turns
            )
            self._register(request, session)
        cleared = ("", None, None, None)
        yield (chat_messages([*session.turns, turn]), session, *cleared)  # the question shows at once, "deciding…"
        answers = session.ask(turn)
        try:
            for _ in answers:
                yield (chat_messages(session.turns), session, *cleared)
        except Exception as error:
            logger.exception("the chat turn failed")
            raise gr.Error(f"The model failed on this question: {error}") from error
        finally:
            answers.close()  # the browser went away mid-answer: stop the generation now, not at garbage collection

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
        self, image: str | None, handler: RealtimeHandler | None, request: gr.Request
    ) -> RealtimeHandler | None:
        """A picture the spoken questions may be about."""
        if not image:
            return handler
        try:
            picture = load_image(image, self.limits, self.upload_root)
        except ValueError as error:
            raise gr.Error(str(error)) from error
        handler = self._handler(handler, request)
        handler.show_image(picture)
        return handler

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
                f"a badge: {state_legend(self.runtime.state_tokens)}. Limits: {limits.max_file_mb:g} MB a file, "
                f"audio {limits.max_audio_secs:g} s, video {limits.max_video_secs:g} s, images "
                f"{limits.max_image_megapixels:g} megapixels."
            )
            with gr.Tab("Chat", id="chat"):
                chat_state = gr.State(None, delete_callback=_close_quietly)
                chatbot = gr.Chatbot(label="Conversation", elem_id="vita-chatbot", height=560, feedback_options=None)
                with gr.Row():
                    text = gr.Textbox(
                        label="Question", placeholder="Type a question…", elem_id="vita-text", scale=4, lines=1
                    )
                    send = gr.Button("Send", variant="primary", elem_id="vita-send", scale=1)
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
                        reset = gr.Button("Reset", elem_id="vita-live-reset")
                    with gr.Column(scale=2):
                        answer = gr.Textbox(label="Answer", interactive=False, elem_id="vita-live-answer")
                        spoken = gr.Audio(
                            label="Spoken answer", autoplay=True, interactive=False, elem_id="vita-live-speech"
                        )
                        transcript = gr.HTML(transcript_html([], []), elem_id="vita-live-transcript")
                timeline = gr.Image(label="Timeline", type="pil", interactive=False, elem_id="vita-live-timeline")

            chat_inputs = [text, image, video, audio, chat_state]
            chat_outputs = [chatbot, chat_state, text, image, video, audio]
            # Two answers at a time across all visitors (both triggers share the limit): generation is CPU/GPU bound.
            gr.on([send.click, text.submit], self.chat, chat_inputs, chat_outputs, concurrency_limit=2)
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
            picture.change(self.realtime_image, [picture, live_state], [live_state])
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
