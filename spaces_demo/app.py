"""The VITA Space's entry point: chat with text, images, videos and audio, or talk in real time and interrupt the
answer.

Gradio 6 Blocks with two tabs over one model per process (issue #8):
    - Chat: a typed question, an image, a video and/or an audio clip (upload or microphone); the answer streams into a
      `gr.Chatbot` with the state of the turn as a badge ("answered query (audio)", "ignored: background talk",
      "typed query"; `chat.STATE_BADGES`). The conversation is a `chat.ChatSession`.
    - Real-time: the microphone streams through `gr.Audio(streaming=True).stream(...)` into a
      `realtime.RealtimeHandler` (fastrtc-style `receive`/`emit` over a `DuplexSession`): a live transcript of the
      events, the answer as it streams, interruptions, spoken answers and the timeline picture.

The Space's files, one concept each: this file (the command line: arguments, loading, `launch`), `page.py` (the
layout of the tabs and `build_demo`), `handlers.py` (`VitaSpace`: the event handlers and the per-visitor sessions),
`notices.py` (what a visitor cannot ask, listed beside the input instead of raised as an error), `chat.py` (the chat
conversation), `realtime.py` (the real-time handler), `runtime.py` (model loading), `limits.py` (input limits).

Sessions: the model is loaded once (`runtime.load_runtime`: the checkpoint's model and processor behind the installed
`VitaDuplexPipeline`) and shared read-only; each browser session gets its own `ChatSession` and `RealtimeHandler` in
a `gr.State`, so two visitors never share a history.

Limits (`limits.Limits`, listed in the header by `limits.describe_limits`): bytes per upload
(`launch(max_file_size=...)` and again in Python), seconds of audio and video, megapixels, characters, seconds a
real-time conversation may stream. Media are read only from gradio's upload folder (`allowed_paths` is not widened).

Run: `python -m spaces_demo.app [--model PATH] [--host H] [--port P] [--tts auto|model|piper|espeak|none]
[--backend transformers|vllm] [--vllm-engine-args JSON]` (model:
`--model`, else `$VITA_MODEL`, else `vita-tiny/` beside this file); on a Space, `app.py` runs as a script. Importing
this module loads no model and starts no server. The same checkpoint from the command line: `python -m spaces_demo.cli`
(`cli.py`).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

import gradio as gr

from modeling_vita.cli_vita_duplex import json_object
from modeling_vita.duplex_speech_output import TTS_CHOICES

if __package__:
    from .page import CSS, TITLE, build_demo
else:  # `python app.py` on a Space: the siblings are top-level modules
    from page import CSS, TITLE, build_demo

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `python -m spaces_demo.app` (and of `python app.py` on a Space)."""
    parser = argparse.ArgumentParser(prog="python -m spaces_demo.app", description=TITLE)
    parser.add_argument("--model", help="checkpoint folder or hub id (default: $VITA_MODEL, else vita-tiny/ here)")
    parser.add_argument("--host", default=None, help="interface to listen on (default: gradio's, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: gradio's, 7860)")
    parser.add_argument("--tts", choices=TTS_CHOICES, default="auto", help="speech engine of the real-time tab")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest answer in tokens")
    parser.add_argument(
        "--backend",
        choices=("transformers", "vllm"),
        default="transformers",
        help="run the turns on transformers' generate, or on one vLLM engine shared by every visitor (needs vLLM)",
    )
    parser.add_argument(
        "--vllm-engine-args",
        type=json_object,
        default={},
        metavar="JSON",
        help="vLLM engine arguments as a JSON object, e.g. '{\"max_model_len\": 4096}' (with --backend vllm)",
    )
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
    if args.vllm_engine_args and args.backend != "vllm":
        parser.error("--vllm-engine-args needs --backend vllm")
    try:
        demo = build_demo(
            args.model,
            tts=args.tts,
            max_new_tokens=args.max_new_tokens,
            max_history_turns=args.max_history_turns,
            backend=args.backend,
            engine_args=args.vllm_engine_args,
        )
    except (ImportError, OSError, ValueError) as error:  # no such folder, not a VITA checkpoint, no vLLM, no TTS
        parser.error(str(error))
    space = demo.vita_space
    try:
        # One answer at a time on transformers (one generate per process); vLLM batches the visitors' turns.
        concurrency = 1 if args.backend == "transformers" else None
        demo.queue(default_concurrency_limit=concurrency).launch(
            server_name=args.host,
            server_port=args.port,
            max_file_size=space.limits.max_file_size,
            css=CSS,
            theme=gr.themes.Soft(),
        )
    finally:
        space.runtime.close()


if __name__ == "__main__":
    main()
