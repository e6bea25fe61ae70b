"""Latency and memory of VITA's duplex session (`modeling_vita/duplex_session.py`) on CPU; prints a table.

Run on demand: `python -m benchmarks.bench_duplex [--threads 1] [--repeats 5]`. Needs espeak-ng for the speech.
What is measured: one model in two roles, an interrupted generation that stops within one decoding step, and the
latencies real-time voice systems are judged by:

    (a) VAD cost per 32 ms chunk on one thread: the Silero ONNX score alone, and the whole push path of a 48 kHz int16
        microphone chunk (resample to 16 kHz, frame, score, segment);
    (b) wall time from reading `speech_ended` to reading `state_decided` (audio played in real time);
    (c) interrupt latency: from the interrupting turn's `<1>` decision (the end of its prefill forward, which yields
        the state token; also from reading `state_decided`) to the end of the old answer's last decoding step,
        against the decode step time; target at most one step + 20 ms;
    (d) time to the first answer token after an interrupt (the interrupting turn goes on from its decision cache);
    (e) peak RSS growth over the pre-model baseline of a duplex session with two turns in flight against one bare
        `generate` of the same length, each in its own subprocess (psutil polling every 2 ms); target under 1.2x.
        Reported twice: with the Silero ONNX session created after the baseline (onnxruntime's CPU arena makes it
        a fixed cost of about 40 MB, whatever the LLM size), and with it created before, which isolates what the
        second turn and its KV cache cost.

How the decisions are forced. The random model's state token is arbitrary, so every session gets
`generation_kwargs={"logits_processor": [ForceState(<1> id, eos id)]}`. The session puts its own
`StateTokenLogitsProcessor` first, which leaves only the state tokens finite at the first generated step;
`ForceState` recognises that step by exactly this (no per-call state, so one instance serves every turn) and keeps
only `<1>` there; at every other step it sets EOS to -inf, so an answer runs to `max_new_tokens` (the same effect as
`min_new_tokens`, without the per-call prompt length). The model's `forward` is wrapped to record
(thread name, start, end, query length) per call; turn threads are named `vita-duplex-turn-<id>`.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor

from modeling_vita.generation_vita import prepare_turn_inputs

REPO_ROOT = Path(__file__).resolve().parents[1]

SR = 16_000
# Big enough that a decode step takes a few ms on CPU (the tiny test model's ~0.5 ms step hides the overheads).
TEXT_CONFIG = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8}
QUERY_ID, EOS_ID = 7, 2  # `<1>` and `</s>` of the tiny processor
UTTERANCES = ["What is the weather like today?", "Tell me a story about a cat.", "Stop, and tell me the time."]


class ForceState(LogitsProcessor):
    """At the state-token step (only state tokens finite) keep `state_id`; at every other step forbid EOS."""

    def __init__(self, state_id: int, eos_id: int, state_ids: tuple[int, ...] = (7, 8, 9)) -> None:
        self.state_id, self.eos_id, self.state_ids = state_id, eos_id, list(state_ids)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        finite = torch.isfinite(scores)
        others = finite.clone()
        others[:, self.state_ids] = False
        scores = scores.clone()
        at_state_step = ~others.any(dim=-1)
        if at_state_step.any():
            forced = torch.full_like(scores[0], -float("inf"))
            forced[self.state_id] = 0.0
            scores[at_state_step] = forced
        scores[~at_state_step, self.eos_id] = -float("inf")
        return scores


class ForwardRecorder:
    """Wraps `model.forward` to log (thread name, start, end, query length) per call."""

    def __init__(self, model: Any) -> None:
        self.calls: list[tuple[str, float, float, int]] = []
        original = model.forward

        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            output = original(*args, **kwargs)
            ids = kwargs.get("input_ids")
            length = int(ids.shape[1]) if ids is not None else -1
            self.calls.append((threading.current_thread().name, start, time.perf_counter(), length))
            return output

        forward.__signature__ = inspect.signature(original)  # generate reads the accepted kwargs from it
        model.forward = forward

    def of_turn(self, turn_id: int) -> list[tuple[str, float, float, int]]:
        return [call for call in self.calls if call[0] == f"vita-duplex-turn-{turn_id}"]


def espeak(text: str) -> np.ndarray:
    """`text` spoken by espeak-ng, float32 mono at 16 kHz."""
    import soundfile

    with tempfile.NamedTemporaryFile(suffix=".wav") as handle:
        subprocess.run(["espeak-ng", "-w", handle.name, text], check=True, capture_output=True)
        audio, rate = soundfile.read(handle.name, dtype="float32")
    positions = np.arange(int(len(audio) * SR / rate)) * rate / SR
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def silence(secs: float) -> np.ndarray:
    return np.zeros(int(secs * SR), dtype=np.float32)


def build_model() -> tuple[Any, Any]:
    from modeling_vita import VitaForConditionalGeneration
    from modeling_vita.testing_utils import tiny_vita_config
    from processing_vita.testing_utils import tiny_vita_processor

    torch.manual_seed(0)
    model = VitaForConditionalGeneration(tiny_vita_config(text_config=dict(TEXT_CONFIG))).eval()
    return model, tiny_vita_processor()


def make_session(model: Any, processor: Any, max_new_tokens: int) -> Any:
    from modeling_vita.duplex_session import DuplexSession

    kwargs = {"max_new_tokens": max_new_tokens, "logits_processor": [ForceState(QUERY_ID, EOS_ID)]}
    return DuplexSession(model, processor, generation_kwargs=kwargs)


def stats(values: list[float], scale: float = 1e3) -> str:
    if not values:
        return "n/a"
    values = [v * scale for v in values]
    return f"median {statistics.median(values):.2f}  max {max(values):.2f}  (n={len(values)})"


# -- (a) VAD --------------------------------------------------------------------------------------------------------


def bench_vad(speech: np.ndarray) -> dict[str, str]:
    from modeling_vita.duplex_vad import WINDOW_SIZE, SileroVAD, VADSegmenter

    audio = np.tile(np.concatenate([speech, silence(0.5)]), 4)
    windows = [audio[i : i + WINDOW_SIZE] for i in range(0, len(audio) - WINDOW_SIZE + 1, WINDOW_SIZE)]
    vad = SileroVAD(num_threads=1)
    for window in windows[:20]:
        vad.score(window)
    vad.reset_states()
    timings = []
    for window in windows:
        start = time.perf_counter()
        vad.score(window)
        timings.append(time.perf_counter() - start)

    # The browser case: 48 kHz int16, 32 ms chunks (1536 samples), through resample + framing + score + segmenter.
    mic = (np.repeat(audio, 3) * 32767).astype(np.int16)
    step = 1536
    segmenter = VADSegmenter(scorer=SileroVAD(num_threads=1))
    push_timings, segments = [], 0
    for i in range(0, len(mic) - step + 1, step):
        start = time.perf_counter()
        events = segmenter.push(mic[i : i + step], 48_000)
        push_timings.append(time.perf_counter() - start)
        segments += sum(event.type == "speech_ended" for event in events)
    return {
        "(a) Silero score, 512 samples @16 kHz": stats(timings) + " ms",
        "(a) push 32 ms @48 kHz int16 -> segment": stats(push_timings) + f" ms; {segments} segments found",
    }


# -- (b) speech end -> decision -------------------------------------------------------------------------------------


def bench_decision(model: Any, processor: Any, speech: list[np.ndarray]) -> dict[str, str]:
    recording = np.concatenate([silence(0.5)] + [np.concatenate([s, silence(1.2)]) for s in speech])
    session = make_session(model, processor, max_new_tokens=4)
    latencies, ended_at, decided = [], None, 0
    # Audio is fed in real time by a thread and events are read here, timestamped on arrival.
    feeder = threading.Thread(target=_feed_realtime, args=(session, recording), daemon=True)
    feeder.start()
    deadline = time.perf_counter() + len(recording) / SR + 10
    while time.perf_counter() < deadline and decided < len(speech):
        for event in session.events(timeout=0.5):
            now = time.perf_counter()
            if event.type == "speech_ended":
                ended_at = now
            elif event.type == "state_decided" and ended_at is not None:
                latencies.append(now - ended_at)
                decided += 1
                ended_at = None
            if decided == len(speech):
                break
    feeder.join()
    session.close()
    return {"(b) speech_ended -> state_decided (wall)": stats(latencies) + " ms"}


def _feed_realtime(session: Any, recording: np.ndarray, chunk: int = 320) -> None:
    started = time.perf_counter()
    for i in range(0, len(recording), chunk):
        session.push_audio(recording[i : i + chunk], SR)
        time.sleep(max(started + (i + chunk) / SR - time.perf_counter(), 0.0))
    session.flush()


# -- (c), (d) interruption --------------------------------------------------------------------------------------------


def bench_interrupt(model: Any, processor: Any, speech: list[np.ndarray], repeats: int) -> dict[str, str]:
    recorder = ForwardRecorder(model)
    from_decision, from_event, to_flag, flag_to_stop, over_one_step = [], [], [], [], []
    steps_alone, steps_overlap, first_token, first_delta = [], [], [], []
    for _ in range(repeats):
        recorder.calls.clear()
        session = make_session(model, processor, max_new_tokens=1000)
        cancelled: dict[int, float] = {}
        cancel = session._cancel_turn

        def timed_cancel(turn_id: int, cancel: Any = cancel, cancelled: dict = cancelled) -> None:
            cancelled.setdefault(turn_id, time.perf_counter())  # when the old turn's stop flag is set
            cancel(turn_id)

        session._cancel_turn = timed_cancel
        reads: dict[tuple[str, int], float] = {}
        first_turn = second_turn = None
        first_query = np.concatenate([speech[0], silence(0.8)])
        for i in range(0, len(first_query), 320):
            session.push_audio(first_query[i : i + 320], SR)
        deadline = time.perf_counter() + 30
        pushed = False
        while time.perf_counter() < deadline:
            for event in session.events(timeout=0.05):
                reads.setdefault((event.type, getattr(event, "turn_id", None)), time.perf_counter())
                if event.type == "state_decided":
                    if first_turn is None:
                        first_turn, decided_at = event.turn_id, time.perf_counter()
                    else:
                        second_turn = event.turn_id
            if first_turn is not None and not pushed and time.perf_counter() - decided_at > 0.8:
                # The first answer has been decoding for 0.8 s: the interrupting query arrives (all at once; the
                # dispatcher segments it in a few ms).
                session.push_audio(np.concatenate([speech[1], silence(0.8)]), SR)
                pushed = True
            if {("text_delta", second_turn), ("interrupted", first_turn)} <= reads.keys():
                break
        time.sleep(0.1)
        session.close()
        if second_turn is None:
            raise RuntimeError(f"no interrupting decision was read; events read: {sorted(reads)}")
        old, new = recorder.of_turn(first_turn), recorder.of_turn(second_turn)
        decision = new[0][2]  # end of the prefill forward: its logits give the `<1>`
        last_start, last_old = old[-1][1], old[-1][2]
        from_decision.append(last_old - decision)
        over_one_step.append(last_old - decision - (last_old - last_start))
        from_event.append(last_old - reads[("state_decided", second_turn)])
        to_flag.append(cancelled[first_turn] - decision)
        flag_to_stop.append(last_old - cancelled[first_turn])
        ends = [call[2] for call in old]
        for previous, current in zip(ends, ends[1:]):
            (steps_alone if current < new[0][1] else steps_overlap).append(current - previous)
        first_token.append(new[1][2] - decision)
        first_delta.append(reads[("text_delta", second_turn)] - reads[("interrupted", first_turn)])
    verdict = "met" if max(over_one_step) <= 0.020 else "MISSED"
    return {
        "(c) decode step, one turn running": stats(steps_alone) + " ms",
        "(c) decode step, two turns running (2 cores)": stats(steps_overlap) + " ms",
        "(c) interrupt: <1> decided -> old answer's last step end": stats(from_decision) + " ms",
        "(c)   of which: <1> decided -> old turn's stop flag set": stats(to_flag) + " ms",
        "(c)   of which: stop flag set -> old answer's last step end": stats(flag_to_stop) + " ms",
        "(c) interrupt minus the last step's own duration": stats(over_one_step)
        + f" ms; target <= 20 ms (one step + 20 ms): {verdict}",
        "(c) state_decided read -> old answer's last step end": stats(from_event) + " ms (< 0: already over)",
        "(d) <1> decided -> first answer token (forward end)": stats(first_token) + " ms",
        "(d) interrupted read -> first text_delta read": stats(first_delta) + " ms",
    }


# -- (e) memory -----------------------------------------------------------------------------------------------------


def memory_worker(mode: str, tokens: int) -> dict[str, float]:
    """Runs in a fresh process: RSS growth over the pre-model baseline while `mode` runs."""
    import psutil

    process = psutil.Process()
    speech = [espeak(UTTERANCES[0]), espeak(UTTERANCES[1])]
    from modeling_vita.duplex_vad import SileroVAD

    if mode == "duplex-vad-preloaded":
        # The ONNX session is cached per model file, so the session's segmenter reuses this one.
        SileroVAD().score(np.zeros(512, dtype=np.float32))
    baseline = process.memory_info().rss
    peak, done = [baseline], threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.002)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    model, processor = build_model()
    if mode == "bare":
        messages = [{"role": "user", "content": [{"type": "audio", "audio": speech[0]}]}]
        inputs = prepare_turn_inputs(processor, messages, model, sampling_rate=SR)
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=tokens, do_sample=False, logits_processor=[ForceState(7, 2)])
    else:
        session = make_session(model, processor, max_new_tokens=tokens)
        session.push_audio(np.concatenate([speech[0], silence(0.8)]), SR)
        first = next(e for e in session.events(timeout=30) if e.type == "state_decided")
        time.sleep(0.5)  # the first answer decodes; then the interrupting query starts a second turn
        session.push_audio(np.concatenate([speech[1], silence(0.8)]), SR)
        for event in session.events(timeout=60):
            if event.type == "response_done" and event.turn_id != first.turn_id:
                break
        session.close()
    done.set()
    poller.join()
    return {"growth_mb": (peak[0] - baseline) / 2**20, "baseline_mb": baseline / 2**20}


def bench_memory(tokens: int, threads: int) -> dict[str, str]:
    results = {}
    for mode in ("bare", "duplex", "duplex-vad-preloaded"):
        command = [
            sys.executable,
            __file__,
            "--memory-worker",
            mode,
            "--tokens",
            str(tokens),
            "--threads",
            str(threads),
        ]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        results[mode] = json.loads(output.strip().splitlines()[-1])
    bare = results["bare"]["growth_mb"]
    ratio = results["duplex"]["growth_mb"] / bare
    preloaded = results["duplex-vad-preloaded"]["growth_mb"]
    ratio_model = preloaded / bare
    verdict = "met" if ratio_model < 1.2 else "MISSED"
    return {
        "(e) peak RSS growth, bare generate": f"{bare:.1f} MB ({tokens} tokens)",
        "(e) peak RSS growth, duplex, two turns, Silero included": f"{results['duplex']['growth_mb']:.1f} MB "
        f"(ratio {ratio:.2f}x)",
        "(e) peak RSS growth, duplex, Silero loaded before baseline": f"{preloaded:.1f} MB "
        f"(ratio {ratio_model:.2f}x; target < 1.2x: {verdict})",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (each turn thread uses them)")
    parser.add_argument("--repeats", type=int, default=5, help="interruptions measured")
    parser.add_argument("--tokens", type=int, default=300, help="answer length for the memory comparison")
    parser.add_argument("--memory-worker", choices=("bare", "duplex", "duplex-vad-preloaded"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if shutil.which("espeak-ng") is None:
        print("bench_duplex needs espeak-ng (apt install espeak-ng) to synthesize speech", file=sys.stderr)
        return 2
    if args.memory_worker:
        print(json.dumps(memory_worker(args.memory_worker, args.tokens)))
        return 0

    speech = [espeak(text) for text in UTTERANCES]
    model, processor = build_model()
    parameters = sum(p.numel() for p in model.parameters())
    rows = {
        "model": f"tiny VITA, Mixtral {TEXT_CONFIG}, {parameters / 1e6:.1f} M parameters, torch threads {args.threads}"
    }
    rows.update(bench_vad(speech[0]))
    rows.update(bench_decision(model, processor, speech))
    rows.update(bench_interrupt(model, processor, speech, args.repeats))
    rows.update(bench_memory(args.tokens, args.threads))
    width = max(len(key) for key in rows)
    print(f"{'measure':<{width}}  value")
    print(f"{'-' * width}  {'-' * 60}")
    for key, value in rows.items():
        print(f"{key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
