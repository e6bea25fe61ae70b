"""Duplex turns on the transformers backend against the vLLM backend: N concurrent turns, decode tokens/s and TTFT.

Run inside `.venv-vllm` (`make test-vllm` makes it): `.venv-vllm/bin/python -m benchmarks.bench_vllm
[--project-python python3] [--sizes 1 4 16] [--tokens 64]`; it prints a table. Each backend runs in its own
subprocess, one after the other: vLLM in `.venv-vllm` (vLLM 0.32 CPU build, torch 2.13, transformers 5.19), the
transformers backend with the project's interpreter (`--project-python`; `modeling_vita`'s model needs transformers
>= 5.24, which vLLM's environment cannot have), which also builds the model folder once.

What is compared: N concurrent *turns* through each backend's turn runner (`duplex_turns.TurnWorkers`, one thread
and one `generate` per turn over one model; `duplex_vllm_backend.VllmTurnWorkers`, one request per turn to one
shared `AsyncLLM`), one runner per simulated session, all N turns started at the same instant. These are the objects
a `DuplexSession` hands its `StartTurn`s to; whole sessions would add per session a dispatcher thread and a VAD that
are the same code for both backends. Each turn: a 2 s audio query (a different clip per session), no history, the
query state forced (the random model's own choice could be noise, which ends the turn), `min_new_tokens =
max_new_tokens = --tokens`, greedy, float32.

The model: VITA with a random Qwen2 LLM of 4 layers, hidden 512, 8 heads of 64 (2 KV heads), intermediate 1408, the
tiny test towers and tokenizer (777 tokens), written as a converted folder by `save_pretrained`. vLLM runs eager
(`enforce_eager`, as its tests: no compile step on this CPU).

Metrics, per backend and N (times from the streamer's callbacks: `VitaTurnStreamer.put` is wrapped, and both
backends feed the same class): TTFT is the time from the turns' common start to a turn's first generated token
(mean and max over the N turns); decode tokens/s is the tokens after each turn's first, summed over the turns,
divided by the time from the earliest first token to the latest last token; total tokens/s divides all tokens by the
time from the start to the last turn's end.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_FOLDER = REPO_ROOT / "build" / "bench_vllm_model"
TEXT = {
    "hidden_size": 512,
    "intermediate_size": 1408,
    "num_hidden_layers": 4,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}
AUDIO_SECONDS = 2.0
SR = 16_000


def build(folder: Path) -> None:
    """The benchmark's model folder (project environment: modeling_vita's model classes)."""
    import torch

    from modeling_vita import VitaForConditionalGeneration
    from modeling_vita.testing_utils import tiny_vita_config
    from processing_vita.testing_utils import tiny_vita_processor

    torch.manual_seed(0)
    model = VitaForConditionalGeneration(tiny_vita_config("qwen2", text_config=dict(TEXT))).eval()
    model.save_pretrained(folder)
    tiny_vita_processor().save_pretrained(folder)
    parameters = sum(p.numel() for p in model.parameters())
    print(f"wrote {folder} ({parameters / 1e6:.1f} M parameters)")


def _clip(index: int) -> np.ndarray:
    rng = np.random.default_rng(index)
    t = np.arange(int(AUDIO_SECONDS * SR)) / SR
    wave = 0.3 * np.sin(2 * np.pi * (180.0 + 20.0 * index) * t) + 0.02 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


class StreamerClock:
    """Wraps `VitaTurnStreamer.put` to time every streamer's generated tokens (first, last, count)."""

    def __init__(self) -> None:
        from modeling_vita.generation_vita import VitaTurnStreamer

        self.records: dict[int, list[float]] = {}  # id(streamer) -> [first, last, count]
        self._lock = threading.Lock()
        original = VitaTurnStreamer.put
        clock = self

        def put(streamer: Any, value: Any) -> None:
            prompt = not streamer._prompt_seen
            original(streamer, value)
            count = 0 if prompt else int(value.numel())
            if count:
                now = time.perf_counter()
                with clock._lock:
                    record = clock.records.setdefault(id(streamer), [now, now, 0])
                    record[1], record[2] = now, record[2] + count

        VitaTurnStreamer.put = put

    def take(self) -> list[list[float]]:
        with self._lock:
            records, self.records = list(self.records.values()), {}
        return records


def _runners(backend: str, folder: Path, max_sessions: int) -> tuple[Any, Any, Any, Any]:
    """(processor, spellings, make_runner(post, kwargs), close) of one backend; the model or engine loads once."""
    from modeling_vita.generation_vita import state_token_sequences

    if backend == "transformers":
        import torch

        from modeling_vita import VitaForConditionalGeneration
        from modeling_vita.duplex_turns import TurnWorkers
        from processing_vita import VitaProcessor

        model = VitaForConditionalGeneration.from_pretrained(folder, dtype=torch.float32).eval()
        processor = VitaProcessor.from_pretrained(folder)
        spellings = state_token_sequences(processor.tokenizer, processor.state_tokens)

        def threads(post: Any, kwargs: dict[str, Any]) -> TurnWorkers:
            return TurnWorkers(model, processor, spellings, kwargs, post)

        return processor, spellings, threads, lambda: None
    from modeling_vita.duplex_vllm_backend import VllmEngine, VllmTurnWorkers

    engine = VllmEngine(
        str(folder),
        dtype="float32",
        enforce_eager=True,
        max_model_len=1024,
        max_num_seqs=max(max_sessions, 1),
        gpu_memory_utilization=0.05,
        limit_mm_per_prompt={"image": 1, "audio": 1, "video": 0},
    )
    processor = engine.load_processor()
    spellings = state_token_sequences(processor.tokenizer, processor.state_tokens)

    def requests(post: Any, kwargs: dict[str, Any]) -> VllmTurnWorkers:
        return VllmTurnWorkers(engine, processor, spellings, kwargs, post)

    return processor, spellings, requests, engine.close


def _concurrent_turns(make_runner: Any, sessions: int, tokens: int, clock: StreamerClock) -> dict[str, Any]:
    from modeling_vita.duplex_events import StartTurn, VitaState
    from modeling_vita.duplex_inbox import TurnFinished, WorkerEvent

    kwargs = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False}
    done = threading.Semaphore(0)
    errors: list[str] = []

    def post(message: Any) -> None:
        if isinstance(message, TurnFinished):
            done.release()
        elif isinstance(message, WorkerEvent) and message.event.type == "error":
            errors.append(message.event.message)

    runners = [make_runner(post, kwargs) for _ in range(sessions)]
    actions = [
        StartTurn(turn_id=1, kind="audio", audio=_clip(index), state=VitaState.QUERY_AUDIO)
        for index in range(sessions)
    ]
    clock.take()
    start = time.perf_counter()
    for runner, action in zip(runners, actions):
        runner.start(action)
    for _ in range(sessions):
        if not done.acquire(timeout=600):
            raise TimeoutError(f"{sessions} turns not finished after 600 s")
    end = time.perf_counter()
    for runner in runners:
        runner.finished(1)
    if errors:
        raise RuntimeError(f"turns failed: {errors[:3]}")
    records = clock.take()
    if len(records) != sessions:
        raise RuntimeError(f"expected {sessions} streamed turns, found {len(records)}")
    ttft = [first - start for first, _, _ in records]
    counts = [int(count) for _, _, count in records]
    decode_window = max(last for _, last, _ in records) - min(first for first, _, _ in records)
    return {
        "sessions": sessions,
        "tokens": sum(counts),
        "min_tokens": min(counts),
        "ttft_mean": statistics.mean(ttft),
        "ttft_max": max(ttft),
        "decode_tps": sum(c - 1 for c in counts) / decode_window if decode_window > 0 else float("nan"),
        "total_tps": sum(counts) / (end - start),
        "wall": end - start,
    }


def measure(backend: str, folder: Path, sizes: list[int], tokens: int) -> dict[str, Any]:
    """One backend's rows (in its own process)."""
    import torch

    started = time.perf_counter()
    processor, spellings, make_runner, close = _runners(backend, folder, max(sizes))
    load_secs = time.perf_counter() - started
    clock = StreamerClock()
    try:
        _concurrent_turns(make_runner, 1, 8, clock)  # warm-up: first-call costs out of the numbers
        rows = [_concurrent_turns(make_runner, n, tokens, clock) for n in sizes]
    finally:
        close()
    versions = {"torch": torch.__version__}
    try:
        import vllm

        versions["vllm"] = vllm.__version__
    except ImportError:
        pass
    import transformers

    versions["transformers"] = transformers.__version__
    return {"backend": backend, "rows": rows, "load_secs": load_secs, "versions": versions}


def _run_backend(python: str, backend: str, folder: Path, sizes: list[int], tokens: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "rows.json"
        command = [python, "-m", "benchmarks.bench_vllm", "--backend", backend, "--folder", str(folder)]
        command += ["--sizes", *map(str, sizes), "--tokens", str(tokens), "--json", str(out)]
        subprocess.run(command, cwd=REPO_ROOT, check=True)
        return json.loads(out.read_text())


def _table(results: list[dict[str, Any]], tokens: int) -> str:
    lines = [
        f"{'backend':<13} {'N':>3} {'tokens':>6} {'decode tok/s':>12} {'total tok/s':>11} "
        f"{'TTFT mean s':>11} {'TTFT max s':>10} {'wall s':>7}",
    ]
    for result in results:
        for row in result["rows"]:
            lines.append(
                f"{result['backend']:<13} {row['sessions']:>3} {row['tokens']:>6} {row['decode_tps']:>12.1f} "
                f"{row['total_tps']:>11.1f} {row['ttft_mean']:>11.3f} {row['ttft_max']:>10.3f} {row['wall']:>7.2f}"
            )
    by = {r["backend"]: {row["sessions"]: row for row in r["rows"]} for r in results}
    if "transformers" in by and "vllm" in by:
        for n in sorted(set(by["transformers"]) & set(by["vllm"])):
            hf, vl = by["transformers"][n], by["vllm"][n]
            lines.append(
                f"N={n}: vLLM/transformers decode tok/s {vl['decode_tps'] / hf['decode_tps']:.2f}x, total tok/s "
                f"{vl['total_tps'] / hf['total_tps']:.2f}x, TTFT mean {vl['ttft_mean'] / hf['ttft_mean']:.2f}x"
            )
    for result in results:
        versions = ", ".join(f"{k} {v}" for k, v in result["versions"].items())
        lines.append(f"{result['backend']}: {versions}; model/engine load {result['load_secs']:.1f} s")
    lines.append(
        f"{tokens} new tokens a turn; load average {os.getloadavg()[0]:.2f} at the end ({os.cpu_count()} CPUs)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--project-python", default=os.environ.get("VITA_PROJECT_PYTHON", "python3"))
    parser.add_argument("--folder", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--backends", nargs="+", default=["transformers", "vllm"])
    parser.add_argument("--build", action="store_true", help="only write the model folder (project environment)")
    parser.add_argument("--backend", help="run one backend here and write its rows to --json (internal)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    if args.build:
        build(args.folder)
        return
    if args.backend:
        result = measure(args.backend, args.folder, args.sizes, args.tokens)
        args.json.write_text(json.dumps(result))
        return
    if not (args.folder / "config.json").is_file():
        subprocess.run(
            [args.project_python, "-m", "benchmarks.bench_vllm", "--build", "--folder", str(args.folder)],
            cwd=REPO_ROOT,
            check=True,
        )
    pythons = {"transformers": args.project_python, "vllm": sys.executable}
    results = [_run_backend(pythons[b], b, args.folder, args.sizes, args.tokens) for b in args.backends]
    print(_table(results, args.tokens))


if __name__ == "__main__":
    main()
