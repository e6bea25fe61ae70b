"""The page of the VITA Space: the header, the Chat and Real-time tabs, their wiring to a `VitaSpace`'s handlers
(`handlers.py`), the CSS, and `build_demo`, which loads the model and returns the Blocks ready to launch.

Chat: a typed question, an image, a video and/or an audio clip (upload or microphone); the answer streams into a
`gr.Chatbot` with the state of the turn as a badge. Real-time: the microphone streams through
`gr.Audio(streaming=True).stream(...)` into the visitor's `RealtimeHandler`: a live transcript of the events, the
answer as it streams, interruptions, spoken answers and the timeline picture. Each tab lists its notices under its
inputs (`#vita-chat-notice`, `#vita-live-notice`).
"""

from __future__ import annotations

import logging
from typing import Any

import gradio as gr

from modeling_vita.duplex_speech_output import make_tts
from processing_vita import VitaState

if __package__:
    from .chat import STATE_BADGES
    from .handlers import SessionObject, VitaSpace, transcript_html
    from .limits import Limits, describe_limits
    from .runtime import SpaceRuntime, default_history_turns, load_runtime
else:  # `python app.py` on a Space: the siblings are top-level modules
    from chat import STATE_BADGES
    from handlers import SessionObject, VitaSpace, transcript_html
    from limits import Limits, describe_limits
    from runtime import SpaceRuntime, default_history_turns, load_runtime

logger = logging.getLogger(__name__)

TITLE = "VITA: omni multimodal chat and real-time voice"
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


def state_legend(state_tokens: dict[VitaState, str]) -> str:
    """The badges and the state token the checkpoint writes for each, for the page's header."""
    return ", ".join(f"**{STATE_BADGES[state]}** `{state_tokens[state]}`" for state in VitaState)


def _close_quietly(value: SessionObject | None) -> None:
    """`gr.State` delete callback: close a session object gradio drops (it may already be closed by `unload`)."""
    if value is not None:
        value.close()


def build_page(space: VitaSpace) -> gr.Blocks:
    """The Blocks layout wired to `space`'s handlers (theme and CSS go to `launch` in gradio 6)."""
    limits = space.limits
    with gr.Blocks(title="VITA") as demo:
        gr.Markdown(
            f"# {TITLE}\n"
            "Ask by typing, by voice, about an image or a video. Every answer opens with a state token, shown as "
            f"a badge: {state_legend(space.runtime.state_tokens)}. Limits: {describe_limits(limits)}.",
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
                image = gr.Image(label="Image", type="filepath", sources=["upload", "clipboard"], elem_id="vita-image")
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
                    picture = gr.Image(label="Show a picture (optional)", type="filepath", elem_id="vita-live-image")
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
            space.chat_page,
            chat_inputs,
            chat_outputs,
            concurrency_limit=2,
            preprocess=False,
            show_progress_on=[chatbot, text, image, video, audio],
        )
        new_chat.click(space.chat_reset, [chat_state], [chatbot, chat_state])

        live_outputs = [live_state, transcript, answer, spoken, timeline]
        mic.stream(
            space.realtime_chunk,
            [mic, live_state],
            live_outputs,
            stream_every=0.1,  # what gradio 6.31's microphone uses whatever is asked
            time_limit=int(limits.max_realtime_secs),
            concurrency_limit=None,  # a chunk only queues audio and reads events: it never waits on the model
            show_progress="hidden",
        )
        mic.stop_recording(space.realtime_stop, [live_state], live_outputs, concurrency_limit=4)
        picture.change(
            space.realtime_image_page,
            [picture, live_state, live_notices],
            [live_state, picture, live_notices, live_notice],
            preprocess=False,
            show_progress_on=[picture],
        )
        reset.click(space.realtime_reset, [live_state], live_outputs)
        demo.unload(space.unload)
    return demo


def build_demo(
    model_path: str | None = None,
    *,
    runtime: SpaceRuntime | None = None,
    tts: str = "auto",
    limits: Limits | None = None,
    max_new_tokens: int = 64,
    max_history_turns: int | None = None,
    backend: str = "transformers",
    engine_args: dict[str, Any] | None = None,
    **session_kwargs: Any,
) -> gr.Blocks:
    """The Space's Blocks: loads the model (`model_path`, `$VITA_MODEL` or `vita-tiny/`) unless `runtime` is given,
    on `backend` ("transformers", or "vllm": one vLLM engine with `engine_args`, `runtime.load_runtime`).

    `max_history_turns` defaults to `runtime.default_history_turns` (none for the embedded vita-tiny, which learned
    from single questions; 4 otherwise).

    The returned Blocks carries the handlers as `demo.vita_space` (a `VitaSpace`) and the limits for `launch`.
    """
    runtime = runtime if runtime is not None else load_runtime(model_path, backend=backend, engine_args=engine_args)
    if max_history_turns is None:
        max_history_turns = default_history_turns(runtime.model_path)
    space = VitaSpace(
        runtime,
        tts=make_tts(tts, runtime.model, runtime.processor),
        limits=limits,
        max_new_tokens=max_new_tokens,
        max_history_turns=max_history_turns,
        **session_kwargs,
    )
    demo = build_page(space)
    demo.vita_space = space
    return demo
