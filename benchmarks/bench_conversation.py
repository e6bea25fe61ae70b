"""A long conversation with the embedded vita-tiny on CPU: per-turn prefill, turn time and memory; prints a table.

Run on demand: `python -m benchmarks.bench_conversation [--turns 500] [--threads 2]`. Needs espeak-ng.

What is measured (a `DuplexSession` over `spaces_demo/vita-tiny`, an image pushed once, the same spoken question
every turn, answered as a query every time, offline clock: each turn is answered before the next question is
pushed):
    (a) prefill time of each turn (the first forward of the turn's `generate`, all its prompt tokens) and how many
        tokens it prefilled, with the conversation's KV prefix reused (the default) and without (a full prefill
        each turn), over the first 10 turns: the issue's bar is turn 10 within 1.2x of turn 1 with reuse;
    (b) the process RSS and the turn's model time (its prefill to its last decoding step) at turns 50, 100, 200,
        500 with reuse and the default context budget (the model's 1,024 positions less the answer's room): the bar
        is flat within 1.2x from turn 50 to turn 500.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from transformers import LogitsProcessor

from benchmarks.bench_duplex import ForwardRecorder, espeak

REPO_ROOT = Path(__file__).resolve().parents[1]
WINDOW = 20  # (b) reports each checkpoint over the 20 turns up to it: a turn that cuts the history prefills it whole
TINY = REPO_ROOT / "spaces_demo" / "vita-tiny"
SR = 16_000


class ForceQuery(LogitsProcessor):
    """Where only the state tokens are left (the session's constraint comes first), keep the spoken-query one: every
    turn is answered and enters the history, so the context budget is what bounds the prompt. vita-tiny learned from
    single questions and, asked the same question over a long history, calls it noise after a dozen turns."""

    def __init__(self, token_id: int, state_ids: list[int]) -> None:
        self.token_id, self.state_ids = token_id, state_ids

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        finite = torch.isfinite(scores)
        if finite[:, self.state_ids].any() and finite.sum() <= len(self.state_ids):
            forced = torch.full_like(scores, -float("inf"))
            forced[:, self.token_id] = 0.0
            return forced
        return scores


def converse(turns: int, reuse: bool, checkpoints: tuple[int, ...]) -> dict[str, Any]:
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    from modeling_vita.duplex_session import DuplexSession
    from modeling_vita.duplex_vad import VADParams
    from modeling_vita.generation_vita import checkpoint_state_tokens, state_token_sequences
    from processing_vita import VitaState

    processor = AutoProcessor.from_pretrained(TINY, trust_remote_code=True)
    model = AutoModel.from_pretrained(TINY, trust_remote_code=True).eval()
    recorder = ForwardRecorder(model)
    question = np.concatenate([np.zeros(int(0.3 * SR), np.float32), espeak("What colour is the circle?")])
    question = np.concatenate([question, np.zeros(int(0.8 * SR), np.float32)])
    process = psutil.Process()
    rows: dict[int, dict[str, float]] = {}
    spellings = state_token_sequences(processor.tokenizer, checkpoint_state_tokens(model, processor))
    state_ids = [ids[0] for ids in spellings.values()]
    force = ForceQuery(spellings[VitaState.QUERY_AUDIO][0], state_ids)
    kwargs = {"max_new_tokens": 16, "do_sample": False, "logits_processor": [force]}
    # Offline and deterministic: the silence rule ends each question, and no turn is started at a pause, so turn
    # n is the n-th question.
    vad = VADParams(speculate_secs=None)
    settings = {"generation_kwargs": kwargs, "reuse_prefix": reuse, "vad": vad, "turn_detector": None}
    with DuplexSession(model, processor, **settings) as session:
        session.push_image(Image.new("RGB", (224, 224), (220, 20, 20)))
        for turn in range(1, turns + 1):
            outcomes = [e.type for e in session.run(question, sampling_rate=SR, chunk_secs=0.1)]
            assert "response_done" in outcomes, outcomes
            calls = recorder.of_turn(turn)  # (thread, start, end, query length) of each forward; the first prefills
            if turn <= 10 or any(c - WINDOW < turn <= c for c in checkpoints):
                rows[turn] = {
                    "prefill_ms": (calls[0][2] - calls[0][1]) * 1000,
                    "prefill_tokens": calls[0][3],
                    "turn_ms": (calls[-1][2] - calls[0][1]) * 1000,  # the turn's model time: prefill to last step
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
    print(f"\n(b) long run with reuse and the context budget ({reused['cuts']} cut steps)")
    print("    turns        turn ms median (max)   prefill ms median (max)   prefill tokens median   RSS MB at end")
    summary = {}
    for checkpoint in checkpoints:
        window = [reused["rows"][t] for t in range(checkpoint - WINDOW + 1, checkpoint + 1)]
        turn_ms = [row["turn_ms"] for row in window]
        prefill_ms = [row["prefill_ms"] for row in window]
        tokens = statistics.median(row["prefill_tokens"] for row in window)
        summary[checkpoint] = (statistics.median(turn_ms), reused["rows"][checkpoint]["rss_mb"])
        first = checkpoint - WINDOW + 1
        print(
            f"    {first:>3}-{checkpoint:<3}    {statistics.median(turn_ms):8.1f} ({max(turn_ms):6.1f})"
            f"        {statistics.median(prefill_ms):8.1f} ({max(prefill_ms):6.1f})        {tokens:8.0f}"
            f"            {summary[checkpoint][1]:7.1f}"
        )
    if len(checkpoints) >= 2:
        (a_ms, a_rss), (b_ms, b_rss) = summary[checkpoints[0]], summary[checkpoints[-1]]
        print(
            f"    turns to {checkpoints[-1]} / turns to {checkpoints[0]}: median turn time {b_ms / a_ms:.2f}x, "
            f"RSS {b_rss / a_rss:.2f}x (bar <= 1.2x each)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
