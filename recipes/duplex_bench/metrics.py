"""Full-Duplex-Bench's turn-taking metrics as pure functions over output word timings, output audio and events.

FDB (Lin et al. 2025, arXiv 2503.04721 and 2507.23159) scores a system from its output track alone: an ASR turns
`output.wav` into word timings (`output.json`: `{"text", "chunks": [{"text", "timestamp": [start, end]}]}`) and each
task compares them with its annotation (`pause.json`, `turn_taking.json`, `interrupt.json`, v1.5 `metadata.json`):

- the system *took the turn* when its words last at least 1 s or number more than 3 (fewer is a backchannel);
- pause handling: takeover rate (TOR, lower is better) = took the turn while the user paused mid-sentence;
- smooth turn-taking: TOR (higher is better) and latency = first output word - end of the user's turn (>= 0);
- user interruption: TOR over the words after the interruption ends, and latency = first of those words - its end;
  v1.5 adds the stop latency (interruption start -> the old answer is silent);
- v1.5 background speech and backchannels: what the system did about talk that was not for it.

Here the word timings come from the session's own spoken pieces (`recipes/duplex_bench/evaluate.py`), not an ASR.
Two rules decide "took the turn": FDB's (`FDB_RULE`) and any answer word (`ANY_WORD`), because vita-tiny answers
in one to three words, which FDB's rule would count as backchannels. The table (`format_table`) prints our numbers
beside the published ones.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

Chunk = dict[str, Any]  # {"text": str, "timestamp": [start, end]} as in FDB's output.json


@dataclass(frozen=True)
class TurnRule:
    """Words that count as taking the turn: lasting at least `min_secs` (first start to last end) or at least
    `min_words` of them."""

    min_secs: float
    min_words: int


FDB_RULE = TurnRule(min_secs=1.0, min_words=4)  # FDB: under 1 s and at most 3 words is no turn
ANY_WORD = TurnRule(min_secs=0.0, min_words=1)

# Published Full-Duplex-Bench v1.0 results (the FDB repository's README, v1_v1.5 table).
PUBLISHED: dict[str, dict[str, float]] = {
    "Moshi": {"pause_tor_synthetic": 0.985, "pause_tor_candor": 0.980, "turn_tor": 0.941, "turn_latency": 0.265,
              "interrupt_tor": 1.000, "interrupt_latency": 0.257},
    "Freeze-Omni": {"pause_tor_synthetic": 0.642, "pause_tor_candor": 0.481, "turn_tor": 0.336, "turn_latency": 0.953,
                    "interrupt_tor": 0.867, "interrupt_latency": 1.409},
    "GPT-Realtime": {"pause_tor_synthetic": 0.010, "pause_tor_candor": 0.120, "turn_tor": 1.000,
                     "turn_latency": 1.470, "interrupt_tor": 0.970, "interrupt_latency": 1.500},
}  # fmt: skip


def _span(chunk: Chunk) -> tuple[float, float]:
    start, end = chunk["timestamp"]
    return float(start), float(end if end is not None else start)


def spread_words(text: str, start: float, end: float) -> list[Chunk]:
    """Word timings for `text` spoken from `start` to `end`: each word gets a share of the time proportional to its
    length (plus one character for the gap after it). An approximation where no aligner is at hand."""
    words = text.split()
    if not words or end <= start:
        return []
    weights = np.array([len(word) + 1 for word in words], dtype=np.float64)
    edges = start + (end - start) * np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
    return [
        {"text": word, "timestamp": [round(float(a), 3), round(float(b), 3)]}
        for word, a, b in zip(words, edges[:-1], edges[1:])
    ]


def words_from(chunks: Iterable[Chunk], start: float, end: float = math.inf) -> list[Chunk]:
    """The words that begin in [start, end)."""
    return [chunk for chunk in chunks if start <= _span(chunk)[0] < end]


def took_turn(chunks: Sequence[Chunk], rule: TurnRule = FDB_RULE) -> bool:
    if not chunks:
        return False
    duration = _span(chunks[-1])[1] - _span(chunks[0])[0]
    return duration >= rule.min_secs or len(chunks) >= rule.min_words


def _latency(chunks: Sequence[Chunk], reference: float) -> float:
    return max(_span(chunks[0])[0] - reference, 0.0)  # FDB counts a response that started early as 0


def pause_handling(chunks: Sequence[Chunk], pause_start: float, speech_end: float, rule: TurnRule = FDB_RULE) -> int:
    """1 if the system took the turn between the start of the pause and the end of the user's speech (it answered
    half a sentence), else 0. The input of an FDB pause sample ends with the user's speech, so its output is
    exactly this window; our samples have silence after it for the answer, which is not counted."""
    return int(took_turn(words_from(chunks, pause_start, speech_end), rule))


def smooth_turn_taking(
    chunks: Sequence[Chunk], user_end: float, rule: TurnRule = FDB_RULE
) -> tuple[int, float | None]:
    """(TOR, latency): did the system take the turn, and how long after the end of the user's turn it began."""
    if not took_turn(chunks, rule):
        return 0, None
    return 1, _latency(chunks, user_end)


def user_interruption(
    chunks: Sequence[Chunk], interrupt_end: float, rule: TurnRule = FDB_RULE
) -> tuple[int, float | None]:
    """(TOR, response latency) over the words from the end of the interruption on (FDB transcribes only that part)."""
    after = words_from(chunks, interrupt_end)
    if not took_turn(after, rule):
        return 0, None
    return 1, _latency(after, interrupt_end)


def loud_intervals(
    track: np.ndarray, sampling_rate: int, frame_secs: float = 0.02, rel_db: float = -18.0, merge_gap: float = 0.25
) -> list[tuple[float, float]]:
    """Spans where `track` is loud: frames within `rel_db` of its loudest frame, gaps under `merge_gap` s closed.

    -18 dB keeps the quiet phonemes of normal speech and leaves out an answer ducked by 20 dB."""
    frame = max(int(round(frame_secs * sampling_rate)), 1)
    count = len(track) // frame
    if count == 0:
        return []
    rms = np.sqrt(np.mean(np.square(track[: count * frame].reshape(count, frame), dtype=np.float64), axis=1))
    if rms.max() <= 1e-6:
        return []
    loud = rms >= rms.max() * 10 ** (rel_db / 20)
    intervals: list[tuple[float, float]] = []
    for index in np.flatnonzero(loud):
        start, end = float(index * frame / sampling_rate), float((index + 1) * frame / sampling_rate)
        if intervals and start - intervals[-1][1] <= merge_gap:
            intervals[-1] = (intervals[-1][0], end)
        else:
            intervals.append((start, end))
    return intervals


def stop_latency(intervals: Sequence[tuple[float, float]], interrupt_start: float) -> float | None:
    """Seconds from the start of the interruption until the output that was playing then falls silent; None when
    nothing was playing (the answer had already ended: there was nothing to stop)."""
    for start, end in intervals:
        if start <= interrupt_start < end:
            return end - interrupt_start
    return None


def overlap_outcome(events: Sequence[dict[str, Any]], overlap_start: float) -> str:
    """What the system did about talk that was not for it (v1.5 background speech and backchannels), from the
    session's events (`events.jsonl` records: "type", "time", "turn_id", "state"):

    "no_answer" (the question before it was never answered), "interrupted" (the answer was cut), "new_answer" (a
    second answer started: the talk was taken as a query), "ducked" (lowered and never brought back), "resumed"
    (lowered, then brought back: the talk was recognised as not for it) or "uninterrupted".
    """
    answered = [e for e in events if e["type"] == "state_decided" and e.get("state") != "noisy_audio"]
    if not answered:
        return "no_answer"
    later = [e for e in events if e["time"] >= overlap_start]
    if any(e["type"] == "interrupted" for e in later):
        return "interrupted"
    if any(e["turn_id"] != answered[0]["turn_id"] for e in answered):
        return "new_answer"
    kinds = [e["type"] for e in later]
    if "answer_ducked" in kinds:
        return "resumed" if "answer_resumed" in kinds[kinds.index("answer_ducked") :] else "ducked"
    return "uninterrupted"


IGNORED = ("resumed", "uninterrupted")


def _mean(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.median(present)) if present else None


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per task: the mean of each metric over its samples (latencies over the samples that have one), each latency's
    median as `<name>_median` (one turn held by the end-of-turn model pulls a mean of a dozen samples far), and n.

    A result is `{"task": ..., <metric>: value, ...}` as `evaluate.py` writes them; outcome counts for v1.5 tasks.
    """
    summary: dict[str, dict[str, Any]] = {}
    for task in dict.fromkeys(r["task"] for r in results):
        rows = [r for r in results if r["task"] == task]
        keys = dict.fromkeys(k for r in rows for k, v in r.items() if v is None or isinstance(v, int | float))
        entry: dict[str, Any] = {"n": len(rows), **{k: _mean(r.get(k) for r in rows) for k in keys}}
        entry.update({f"{k}_median": _median(r.get(k) for r in rows) for k in keys if "latency" in k})
        outcomes = [r["outcome"] for r in rows if "outcome" in r]
        if outcomes:
            entry["outcomes"] = {o: outcomes.count(o) for o in dict.fromkeys(outcomes)}
            judged = [o for o in outcomes if o != "no_answer"]
            entry["ignored"] = sum(o in IGNORED for o in judged) / len(judged) if judged else None
        summary[task] = entry
    return summary


def _fmt(value: Any, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(summary: dict[str, dict[str, Any]], title: str = "ours") -> str:
    """Our numbers beside the published ones (v1.0 tasks), then the v1.5 overlap outcomes."""
    models = list(PUBLISHED)
    get = summary.get
    pause, turn, interrupt = get("pause_handling", {}), get("smooth_turn_taking", {}), get("user_interruption", {})
    rows = [
        ("pause handling", "TOR (lower better)", pause.get("tor"), pause.get("tor_fdb"),
         [f"{PUBLISHED[m]['pause_tor_synthetic']:.3f}/{PUBLISHED[m]['pause_tor_candor']:.3f}" for m in models]),
        ("pause handling", "input split at the pause", pause.get("split"), None, ["-"] * len(models)),
        ("smooth turn-taking", "TOR (higher better)", turn.get("tor"), turn.get("tor_fdb"),
         [f"{PUBLISHED[m]['turn_tor']:.3f}" for m in models]),
        ("smooth turn-taking", "latency s (lower better)", turn.get("latency"), turn.get("latency_fdb"),
         [f"{PUBLISHED[m]['turn_latency']:.3f}" for m in models]),
        ("user interruption", "TOR (higher better)", interrupt.get("tor"), interrupt.get("tor_fdb"),
         [f"{PUBLISHED[m]['interrupt_tor']:.3f}" for m in models]),
        ("user interruption", "response latency s", interrupt.get("latency"), interrupt.get("latency_fdb"),
         [f"{PUBLISHED[m]['interrupt_latency']:.3f}" for m in models]),
        ("user interruption", "stop latency s (v1.5)", interrupt.get("stop_latency"), None, ["-"] * len(models)),
        ("smooth turn-taking", "latency s, median", turn.get("latency_median"), turn.get("latency_fdb_median"),
         ["-"] * len(models)),
        ("user interruption", "response latency s, median", interrupt.get("latency_median"),
         interrupt.get("latency_fdb_median"), ["-"] * len(models)),
        ("user interruption", "stop latency s, median", interrupt.get("stop_latency_median"), None,
         ["-"] * len(models)),
    ]  # fmt: skip
    header = ["task", "metric", title, "FDB rule", *models]
    lines = [[task, metric, _fmt(ours), _fmt(fdb), *published] for task, metric, ours, fdb, published in rows]
    widths = [max(len(str(row[i])) for row in [header, *lines]) for i in range(len(header))]
    out = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [header, *lines]]
    out.insert(1, "  ".join("-" * width for width in widths))
    counts = {task: summary[task]["n"] for task in summary}
    out.append(f"samples: {counts}; published pause TOR: synthetic/Candor; 'ours' counts any answer word as a turn,")
    out.append("'FDB rule' only words lasting >= 1 s or more than 3 (vita-tiny answers in 1-3 words)")
    for task in ("background_speech", "user_backchannel"):
        if task in summary:
            entry = summary[task]
            out.append(
                f"{task}: ignored {_fmt(entry.get('ignored'))} (resumed or not interrupted, no new answer); "
                f"outcomes {entry.get('outcomes', {})}"
            )
    return "\n".join(out)


__all__ = [
    "ANY_WORD",
    "FDB_RULE",
    "IGNORED",
    "PUBLISHED",
    "TurnRule",
    "format_table",
    "loud_intervals",
    "overlap_outcome",
    "pause_handling",
    "smooth_turn_taking",
    "spread_words",
    "stop_latency",
    "summarize",
    "took_turn",
    "user_interruption",
    "words_from",
]
