"""Play Full-Duplex-Bench-style samples through `DuplexSession` in real time and score them with FDB's metrics.

    python -m recipes.duplex_bench.evaluate --data data/duplex_bench --model spaces_demo/vita-tiny --out runs/fdb

Each sample folder under `--data` (FDB's format, see `generate.py`; FDB's own data works too, without pictures) is
played as a microphone would: its `input.wav` is pushed in 20 ms chunks paced by the wall clock
(`session.run(realtime=True)`), so the model races the audio as it would live, and its `image.png`, if any, is shown
first. Event times are on the input audio clock. Per sample, `--out` gets the same folder with:
    - `output.wav`: the spoken answers where a player would have played them (`duplex_timeline.place_clips`: a clip
      starts at its `audio_out` time or after the previous one of its answer, `answer_ducked` pauses the answer,
      `answer_resumed` plays on from there, `interrupted` drops the rest), 16 kHz mono, as long as the input;
    - `events.jsonl`: every event, arrays replaced by their duration;
    - `output.json`: FDB's transcript format (`{"text", "chunks": [{"text", "timestamp"}]}`) made from the spoken
      pieces themselves: each piece's words spread over its audible span (`metrics.spread_words`), no ASR;
    - `result.json`: the sample's metrics.
`--out` also gets `results.jsonl` (all samples), `summary.json` and `table.txt`, the table printed at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from modeling_vita.duplex_timeline import mix_answers, place_clips
from recipes.duplex_bench.metrics import (
    ANY_WORD,
    FDB_RULE,
    IGNORED,
    Chunk,
    format_table,
    loud_intervals,
    overlap_outcome,
    pause_handling,
    smooth_turn_taking,
    spread_words,
    stop_latency,
    summarize,
    user_interruption,
)

logger = logging.getLogger(__name__)

RATE = 16_000
ANNOTATIONS = {"pause.json": "pause_handling", "turn_taking.json": "smooth_turn_taking",
               "interrupt.json": "user_interruption"}  # fmt: skip
OVERLAP_TASKS = ("background_speech", "user_backchannel", "talking_to_other")


def sample_folders(data: str | Path) -> list[Path]:
    """Every folder under `data` holding an `input.wav`, sorted."""
    return sorted(path.parent for path in Path(data).rglob("input.wav"))


def task_of(folder: Path) -> str:
    """The task of a sample folder, from its annotation file (v1.5 `metadata.json`: from the task folder's name)."""
    for name, task in ANNOTATIONS.items():
        if (folder / name).is_file():
            return task
    if (folder / "metadata.json").is_file():
        parent = folder.parent.name
        return "user_interruption" if parent == "user_interruption" else parent
    raise ValueError(f"{folder} holds no pause.json, turn_taking.json, interrupt.json or metadata.json")


def event_record(event: Any) -> dict[str, Any]:
    """An event as one JSON object: its type, time and fields; arrays become `<name>_secs` durations."""
    record: dict[str, Any] = {"type": event.type, "time": round(float(event.time), 4)}
    for field in dataclasses.fields(event):
        value = getattr(event, field.name)
        if field.name == "time":
            continue
        if isinstance(value, np.ndarray):
            rate = getattr(event, "sampling_rate", RATE)
            record[f"{field.name}_secs"] = round(len(value) / rate, 4)
        elif isinstance(value, Enum):
            record[field.name] = value.value
        elif isinstance(value, float):
            record[field.name] = round(value, 4)
        elif value is None or isinstance(value, str | int | bool):
            record[field.name] = value
    return record


def _audible(audio: np.ndarray, rate: int) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(audio) > 0.02 * max(float(np.abs(audio).max()), 1e-6))
    return (loud[0] / rate, (loud[-1] + 1) / rate) if len(loud) else (0.0, 0.0)


def spoken_words(events: list[Any]) -> list[Chunk]:
    """The words a listener heard, on the input clock: each clip's words spread over its audible span, then kept
    where the player played that part of the clip (`place_clips`: pauses shift them, an interruption drops them)."""
    words: list[Chunk] = []
    for start, stop, event, offset in place_clips(events):
        first, last = _audible(event.audio, event.sampling_rate)
        for word in spread_words(event.text, first, last):
            at, end = word["timestamp"]
            if offset <= at < offset + (stop - start):  # this word begins in the played piece
                shift = start - offset
                words.append({"text": word["text"], "timestamp": [round(at + shift, 3), round(end + shift, 3)]})
    return sorted(words, key=lambda word: word["timestamp"][0])


def score(task: str, folder: Path, words: list[Chunk], track: np.ndarray, records: list[dict[str, Any]]) -> dict:
    """The sample's metrics (both turn rules where FDB decides "took the turn")."""
    sample = json.loads((folder / "sample.json").read_text()) if (folder / "sample.json").is_file() else {}
    input_secs = soundfile.info(str(folder / "input.wav")).duration
    result: dict[str, Any] = {}
    if task == "pause_handling":
        start, end = json.loads((folder / "pause.json").read_text())[0]["timestamp"]
        speech_end = float(sample.get("speech_end", input_secs))
        result["tor"] = pause_handling(words, start, speech_end, ANY_WORD)
        result["tor_fdb"] = pause_handling(words, start, speech_end, FDB_RULE)
        result["split"] = int(any(r["type"] == "speech_ended" and r["end"] < end for r in records))
    elif task == "smooth_turn_taking":
        user_end = float(json.loads((folder / "turn_taking.json").read_text())[0]["timestamp"][0])
        result["tor"], result["latency"] = smooth_turn_taking(words, user_end, ANY_WORD)
        result["tor_fdb"], result["latency_fdb"] = smooth_turn_taking(words, user_end, FDB_RULE)
    elif task == "user_interruption":
        if (folder / "interrupt.json").is_file():
            start, end = json.loads((folder / "interrupt.json").read_text())[0]["timestamp"]
        else:
            start, end = json.loads((folder / "metadata.json").read_text())["timestamps"]
        result["tor"], result["latency"] = user_interruption(words, end, ANY_WORD)
        result["tor_fdb"], result["latency_fdb"] = user_interruption(words, end, FDB_RULE)
        result["stop_latency"] = stop_latency(loud_intervals(track, RATE), start)
        result["playing_at_interrupt"] = int(result["stop_latency"] is not None)
    else:
        start, _ = json.loads((folder / "metadata.json").read_text())["timestamps"]
        outcome = overlap_outcome(records, start)
        result["outcome"] = outcome
        result["ignored"] = None if outcome == "no_answer" else int(outcome in IGNORED)
    result["answered"] = int(any(r["type"] == "audio_out" for r in records))
    return result


def run_sample(
    folder: Path, out: Path, model: Any, processor: Any, tts: Any, realtime: bool, session_kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Play one sample through a fresh session; write its outputs into `out`; return its result row."""
    from PIL import Image

    from modeling_vita.duplex_session import DuplexSession

    audio, rate = soundfile.read(str(folder / "input.wav"), dtype="float32", always_2d=False)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    input_secs = len(audio) / rate
    # The recording holds no echo of the answers (nothing is played into the microphone), so the echo guard, which
    # would silence the input while an answer is estimated to play, is off: -inf dB lets everything in.
    session = DuplexSession(model, processor, tts=tts, echo_margin_db=float("-inf"), **session_kwargs)
    started = time.monotonic()
    try:
        if (folder / "image.png").is_file():
            session.push_image(Image.open(folder / "image.png").convert("RGB"))
        events = list(session.run(audio, rate, realtime=realtime))
    finally:
        session.close()
    wall = time.monotonic() - started
    records = [event_record(event) for event in events]
    track, _ = mix_answers(events, input_secs, RATE)
    track = track[: int(round(input_secs * RATE))]  # FDB: the output channel is as long as the input
    words = [w for w in spoken_words(events) if w["timestamp"][0] < input_secs]
    out.mkdir(parents=True, exist_ok=True)
    soundfile.write(out / "output.wav", track, RATE, subtype="PCM_16")
    (out / "events.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))
    text = " ".join(word["text"] for word in words)
    (out / "output.json").write_text(json.dumps({"text": text, "chunks": words}, indent=2) + "\n")
    task = task_of(folder)
    result = {
        "task": task,
        "sample": f"{folder.parent.name}/{folder.name}",
        **score(task, folder, words, track, records),
    }
    result["wall_secs"] = round(wall, 3)
    result["errors"] = sum(record["type"] == "error" for record in records)
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate(
    data: str | Path,
    model_path: str,
    out: str | Path,
    tts_engine: str = "piper",
    realtime: bool = True,
    limit: int | None = None,
    max_history_turns: int | None = 0,
) -> dict[str, Any]:
    """Run every sample (the first `limit` of each task folder); write the outputs; return the summary."""
    import modeling_vita  # noqa: F401  registers VITA's classes, so the installed code serves the checkpoint
    from modeling_vita.duplex_speech_output import make_tts
    from recipes.evaluate import load_model_and_processor

    folders = sample_folders(data)
    if limit is not None:
        folders = [f for f in folders if int(f.name) < limit] if all(f.name.isdigit() for f in folders) else folders
    if not folders:
        raise ValueError(f"no sample folders (with an input.wav) under {data}")
    model, processor = load_model_and_processor(model_path, device="cpu")
    tts = make_tts(tts_engine)
    out = Path(out)
    results = []
    started = time.monotonic()
    for folder in folders:
        relative = folder.relative_to(data)
        result = run_sample(
            folder, out / relative, model, processor, tts, realtime, {"max_history_turns": max_history_turns}
        )
        results.append(result)
        shown = {k: v for k, v in result.items() if k not in ("task", "sample")}
        logger.info("%s %s", relative, shown)
    summary = summarize(results)
    total = time.monotonic() - started
    table = format_table(summary)
    (out / "results.jsonl").write_text("".join(json.dumps(result) + "\n" for result in results))
    (out / "summary.json").write_text(json.dumps({"wall_secs": round(total, 1), "tasks": summary}, indent=2) + "\n")
    (out / "table.txt").write_text(table + f"\nwall time {total:.1f} s for {len(results)} samples\n")
    print(table)
    print(f"wall time {total:.1f} s for {len(results)} samples")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="folder of task folders (generate.py's --out, or FDB's data)")
    parser.add_argument("--model", default="spaces_demo/vita-tiny", help="a VITA checkpoint folder")
    parser.add_argument("--out", required=True, help="where the outputs and the table go")
    parser.add_argument("--tts", default="piper", choices=["piper", "espeak", "auto"], help="the answers' voice")
    parser.add_argument("--limit", type=int, default=None, help="only the first N samples of each task")
    parser.add_argument(
        "--max-history-turns",
        type=int,
        default=0,
        help="past exchanges in each prompt (0, the default: vita-tiny learned single questions, and every sample's "
        "questions stand alone)",
    )
    parser.add_argument("--no-realtime", action="store_true", help="take the model as infinitely fast (debugging)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    return evaluate(
        args.data, args.model, args.out, args.tts, not args.no_realtime, args.limit, args.max_history_turns
    )


if __name__ == "__main__":
    main()
