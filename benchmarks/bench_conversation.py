"""A long conversation with the embedded vita-tiny on CPU: per-turn prefill, turn time and memory; prints a table.

Run on demand: `python -m benchmarks.bench_conversation [--turns 500] [--threads 2]`. Needs espeak-ng.

What is measured (a `DuplexSession` over `spaces_demo/vita-tiny`, an image pushed once, the same spoken question
every turn, offline clock: each turn is answered before the next question is pushed):
    (a) prefill time of each turn (the first forward of the turn's `generate`, all its prompt tokens) and how many
        tokens it prefilled, with the conversation's KV prefix reused (the default) and without (a full prefill
        each turn), over the first 10 turns: the issue's bar is turn 10 within 1.2x of turn 1 with reuse;
    (b) the process RSS and the turn time (speech end -> response done, wall clock) at turns 50, 100, 200, 500 with
        reuse and the default context budget (the model's 1,024 positions less the answer's room): the bar is flat
        within 1.2x from turn 50 to turn 500.
"""

from __future__ import annotations

import argparse
import functools
import inspect
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
import psutil
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = REPO_ROOT / "spaces_demo" / "vita-tiny"
SR = 16_000


def espeak(text: str) -> np.ndarray:
    import soundfile

    with tempfile.NamedTemporaryFile(suffix=".wav") as handle:
        subprocess.run(["espeak-ng", "-w", handle.name, text], check=True, capture_output=True)
        audio, rate = soundfile.read(handle.name, dtype="float32")
    positions = np.arange(int(len(audio) * SR / rate)) * rate / SR
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


class PrefillRecorder:
    """Wraps `model.forward`: the first call of each turn thread is its prefill (time, query length)."""

    def __init__(self, model: Any) -> None:
        self.prefills: dict[str, tuple[float, int]] = {}
        original = model.forward

        @functools.wraps(original)
        def forward(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            output = original(*args, **kwargs)
            name = threading.current_thread().name
            if name not in self.prefills:
                ids = kwargs.get("input_ids")
                self.prefills[name] = (time.perf_counter() - start, int(ids.shape[1]) if ids is not None else -1)
            return output

        forward.__signature__ = inspect.signature(original)
        model.forward = forward


def converse(turns: int, reuse: bool, checkpoints: tuple[int, ...]) -> dict[str, Any]:
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    from modeling_vita.duplex_session import DuplexSession

    processor = AutoProcessor.from_pretrained(TINY, trust_remote_code=True)
    model = AutoModel.from_pretrained(TINY, trust_remote_code=True).eval()
    recorder = PrefillRecorder(model)
    question = np.concatenate([np.zeros(int(0.3 * SR), np.float32), espeak("What colour is the circle?")])
    question = np.concatenate([question, np.zeros(int(0.8 * SR), np.float32)])
    process = psutil.Process()
    rows: dict[int, dict[str, float]] = {}
    kwargs = {"max_new_tokens": 16, "do_sample": False}
    with DuplexSession(model, processor, generation_kwargs=kwargs, reuse_prefix=reuse) as session:
        session.push_image(Image.new("RGB", (224, 224), (220, 20, 20)))
        for turn in range(1, turns + 1):
            ended = done = None
            for event in session.run(question, sampling_rate=SR, chunk_secs=0.1):
                if event.type == "speech_ended":
                    ended = time.perf_counter()
                elif event.type in ("response_done", "ignored", "error", "interrupted"):
                    done = time.perf_counter()
            prefill = recorder.prefills.get(f"vita-duplex-turn-{turn}", (float("nan"), -1))
            if turn <= 10 or turn in checkpoints:
                rows[turn] = {
                    "prefill_ms": prefill[0] * 1000,
                    "prefill_tokens": prefill[1],
                    "turn_ms": (done - ended) * 1000 if ended and done else float("nan"),
                    "rss_mb": process.memory_info().rss / 2**20,
                }
        cuts = session.prompts.budget.cuts if session.prompts.budget is not None else 0
    return {"rows": rows, "cuts": cuts}


def _median_row(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("bench_conversation needs espeak-ng (apt install espeak-ng)", file=sys.stderr)
        return 1
    torch.set_num_threads(args.threads)
    checkpoints = tuple(n for n in (50, 100, 200, 500) if n <= args.turns)
    started = time.perf_counter()
    # (a) is the median of `--repeats` conversations per turn (one turn's prefill is a few tens of ms).
    fulls = [converse(10, reuse=False, checkpoints=()) for _ in range(args.repeats)]
    reuses = [converse(10, reuse=True, checkpoints=()) for _ in range(args.repeats - 1)]
    reused = converse(args.turns, reuse=True, checkpoints=checkpoints)
    reuses.append(reused)
    full = {"rows": {turn: _median_row([f["rows"][turn] for f in fulls]) for turn in range(1, 11)}}
    short = {turn: _median_row([r["rows"][turn] for r in reuses]) for turn in range(1, 11)}
    reused = {"rows": {**reused["rows"], **short}, "cuts": reused["cuts"]}
    print(f"vita-tiny, {args.threads} threads, {args.turns} turns ({time.perf_counter() - started:.0f} s)\n")
    print("(a) prefill per turn            reuse: ms (tokens)      full prefill: ms (tokens)")
    for turn in range(1, 11):
        r, f = reused["rows"][turn], full["rows"][turn]
        print(
            f"    turn {turn:>3}                  {r['prefill_ms']:8.1f} ({r['prefill_tokens']:>4})"
            f"          {f['prefill_ms']:8.1f} ({f['prefill_tokens']:>4})"
        )
    first = reused["rows"][1]["prefill_ms"]
    print(f"    (medians of {args.repeats} conversations)")
    print(f"    turn 10 / turn 1 with reuse: {reused['rows'][10]['prefill_ms'] / first:.2f}x (bar <= 1.2x)")
    print(f"    turn 10 / turn 1 without:    {full['rows'][10]['prefill_ms'] / full['rows'][1]['prefill_ms']:.2f}x")
    print(f"\n(b) long run with reuse and the context budget ({reused['cuts']} history cuts)")
    print("    turn    turn ms   prefill ms (tokens)   RSS MB")
    for turn in checkpoints:
        row = reused["rows"][turn]
        print(
            f"    {turn:>4}   {row['turn_ms']:8.1f}   {row['prefill_ms']:8.1f} ({row['prefill_tokens']:>4})"
            f"      {row['rss_mb']:7.1f}"
        )
    if len(checkpoints) >= 2:
        a, b = reused["rows"][checkpoints[0]], reused["rows"][checkpoints[-1]]
        print(
            f"    turn {checkpoints[-1]} / turn {checkpoints[0]}: turn time {b['turn_ms'] / a['turn_ms']:.2f}x, "
            f"RSS {b['rss_mb'] / a['rss_mb']:.2f}x (bar <= 1.2x each)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
