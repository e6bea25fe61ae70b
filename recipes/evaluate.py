"""Evaluation of a VITA checkpoint on a converted data set: state-token accuracy, QA accuracy and WER.

Design: the evaluation scripts that sit next to the training recipes of open-r1 and alignment-handbook (one CLI over a
checkpoint folder and a data set, a JSON report and a printed table), with VITA's state-token rule (the checkpoint's
state tokens: `<1>` spoken query, `<2>` noisy audio, `<3>` typed query for VITA-1.0) and its negatives. Rows are in the
converted format of `recipes/data.py`; the prompt of a row is rendered exactly as the training collator renders it
(`recipes/collator.py`), up to and including the `bot:` of the last assistant turn.

    python -m recipes.evaluate path/to/vita data/vita_eval --media-root /data/vita --output report.json

Metrics (every accuracy is correct / n, None when n is 0):
- state: expected state = the reference answer's leading token, predicted = `processor.parse_response`; a 3x3
  confusion table (rows expected, columns predicted); answers with no state token count as wrong (`unparsed`).
- exact_match: normalised (lower-case, punctuation and whitespace removed) answer == reference, for rows that are
  neither noisy audio nor transcription; `multiple_choice`: rows whose question lists options ("A. ... B. ...") or
  carry a `choices` field, scored by the first option letter of the answer. Both by group: image, video, other.
- asr: word error rate (jiwer, corpus level, normalised texts) over rows with `task: "asr"` or a question matching
  `asr_pattern`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import string
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from processing_vita import VitaState, parse_state
from recipes.collator import render_segments

STATE_NAMES = [state.value for state in VitaState]
GROUPS = ("image", "video", "other")
DEFAULT_ASR_PATTERN = r"transcribe|repeat"
# An option is a capital letter opening a line or following whitespace, written "A." / "A)" / "(A)", then text.
_OPTION_RE = re.compile(r"(?:^|\s)\(?([A-H])[.):]\s+\S", re.MULTILINE)
_PUNCTUATION = str.maketrans("", "", string.punctuation + "，。！？、；：“”‘’（）")


def normalize(text: str) -> str:
    """Lower-case, punctuation removed, runs of whitespace collapsed to one space, ends stripped."""
    return " ".join(text.lower().translate(_PUNCTUATION).split())


def option_letters(question: str, choices: list[str] | None = None) -> list[str]:
    """The option letters a question offers: from `choices` (A, B, ...) or from "A. ... B. ..." in its text."""
    if choices:
        return [chr(ord("A") + i) for i in range(len(choices))]
    letters = list(dict.fromkeys(_OPTION_RE.findall(question)))
    # One stray "A." is a sentence, not a list of options; ask for A and B at least.
    return letters if {"A", "B"} <= set(letters) else []


def choice_letter(answer: str, letters: list[str], choices: list[str] | None = None) -> str | None:
    """The first option letter standing alone in `answer` ("B", "(B)", "B. cat"), else the option whose text the
    answer equals (with `choices`), else None."""
    if letters:
        match = re.search(r"(?<![A-Za-z])([" + "".join(letters) + r"])(?![A-Za-z])", answer)
        if match:
            return match.group(1)
    for index, choice in enumerate(choices or []):
        if normalize(answer) == normalize(str(choice)):
            return chr(ord("A") + index)
    return None


def _texts(message: dict[str, Any]) -> str:
    return "".join(b["text"] or "" for b in message["content"] if b["type"] == "text")


def split_row(row: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """(prompt row, question, reference answer): the row cut before its last assistant turn, the text of the user
    turn before that answer, and the answer's text (state token included)."""
    messages = row["messages"]
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
    if last is None:
        raise ValueError(f"Row {row.get('id', '?')!r} has no assistant turn; expected a reference answer to score.")
    question = next((_texts(m) for m in reversed(messages[:last]) if m["role"] == "user"), "")
    kept = messages[:last]
    counts = {k: sum(b["type"] == k[:-1] for m in kept for b in m["content"]) for k in ("images", "videos", "audios")}
    prompt_row = dict(row, messages=messages[: last + 1], end_tag=True)
    for key, n in counts.items():
        prompt_row[key] = list(row.get(key) or [])[:n]
    return prompt_row, question, _texts(messages[last])


def build_inputs(processor: Any, prompt_row: dict[str, Any], media_root: str | os.PathLike | None) -> dict[str, Any]:
    """Model inputs of the prompt: the collator's rendering of the row up to the `bot:` before its last answer."""
    eos = processor.tokenizer.eos_token or "</s>"
    segments = render_segments(prompt_row, eos, getattr(processor, "system_prompts", None))
    prompt = "".join(text for text, _ in segments[:-1])  # the last segment is the reference answer

    def media(key: str) -> list[Any] | None:
        paths = list(prompt_row.get(key) or [])
        if media_root is not None:
            paths = [str(Path(media_root) / p) for p in paths]
        return paths or None

    return dict(
        processor(
            text=prompt, images=media("images"), videos=media("videos"), audio=media("audios"), return_tensors="pt"
        )
    )


def generate_answer(model: Any, processor: Any, inputs: dict[str, Any], max_new_tokens: int) -> list[int]:
    """Greedy generation; returns the new token ids only."""
    dtype = getattr(model, "dtype", None)
    device = getattr(model, "device", None)
    ready = {}
    for key, value in inputs.items():
        if torch.is_tensor(value):
            if dtype is not None and value.is_floating_point():
                value = value.to(dtype)
            if device is not None:
                value = value.to(device)
        ready[key] = value
    pad_id = processor.tokenizer.pad_token_id
    with torch.no_grad():
        output = model.generate(**ready, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id)
    sequences = output.sequences if hasattr(output, "sequences") else output
    return sequences[0, ready["input_ids"].shape[1] :].tolist()


def _accuracy(correct: int, n: int) -> dict[str, Any]:
    return {"accuracy": correct / n if n else None, "correct": correct, "n": n}


def evaluate(
    model: Any,
    processor: Any,
    rows: Any,
    media_root: str | os.PathLike | None = None,
    max_new_tokens: int = 64,
    asr_pattern: str = DEFAULT_ASR_PATTERN,
    limit: int | None = None,
) -> dict[str, Any]:
    """Generate an answer for every row (a list of converted rows or a `datasets.Dataset`) and score it.

    Returns the report: `n_rows`, `state` (accuracy, confusion[expected][predicted], unparsed), `exact_match` and
    `multiple_choice` (per group and `all`), `asr` (wer, n) and `samples` (one record per row).
    """
    if max_new_tokens <= 0:
        raise ValueError(f"max_new_tokens={max_new_tokens}; expected a positive number of tokens.")
    asr_re = re.compile(asr_pattern, re.IGNORECASE)
    confusion = {e: {p: 0 for p in STATE_NAMES} for e in STATE_NAMES}
    state_counts = {"correct": 0, "n": 0, "unparsed": 0}
    qa = {kind: {g: [0, 0] for g in (*GROUPS, "all")} for kind in ("exact_match", "multiple_choice")}
    references, hypotheses, samples = [], [], []
    if hasattr(model, "eval"):
        model.eval()
    n_rows = len(rows) if limit is None else min(limit, len(rows))
    for index in tqdm(range(n_rows), desc="evaluate", unit="row"):
        row = dict(rows[index])
        prompt_row, question, reference = split_row(row)
        new_ids = generate_answer(model, processor, build_inputs(processor, prompt_row, media_root), max_new_tokens)
        predicted, answer = processor.parse_response(new_ids)
        predicted_name = predicted.value if predicted is not None else None
        expected, reference_text = parse_state(reference, processor.state_tokens)
        expected_name = expected.value if expected is not None else None
        reference_text = reference_text.strip()
        group = "video" if prompt_row.get("videos") else "image" if prompt_row.get("images") else "other"
        sample = {"id": row.get("id", str(index)), "group": group, "expected_state": expected_name,
                  "predicted_state": predicted_name, "reference": reference_text, "answer": answer}  # fmt: skip

        if expected_name is not None:
            state_counts["n"] += 1
            if predicted_name is None:
                state_counts["unparsed"] += 1
            else:
                confusion[expected_name][predicted_name] += 1
                state_counts["correct"] += predicted_name == expected_name

        if expected_name == "noisy_audio" or not reference_text:
            sample["task"] = "state"  # nothing to answer: the state token is the whole reference
        elif row.get("task") == "asr" or (question and asr_re.search(question)):
            sample["task"] = "asr"
            references.append(normalize(reference_text))
            hypotheses.append(normalize(answer))
        else:
            choices = row.get("choices")
            letters = option_letters(question, choices)
            if letters:
                sample["task"] = "multiple_choice"
                gold = choice_letter(reference_text, letters, choices)
                guess = choice_letter(answer, letters, choices)
                hit = gold is not None and guess == gold
                sample.update(gold_letter=gold, answer_letter=guess)
            else:
                sample["task"] = "exact_match"
                hit = normalize(answer) == normalize(reference_text)
            for key in (group, "all"):
                qa[sample["task"]][key][0] += int(hit)
                qa[sample["task"]][key][1] += 1
            sample["correct"] = hit
        samples.append(sample)

    return {
        "n_rows": n_rows,
        "state": {
            **_accuracy(state_counts["correct"], state_counts["n"]),
            "unparsed": state_counts["unparsed"],
            "confusion": confusion,
        },
        "exact_match": {g: _accuracy(*qa["exact_match"][g]) for g in (*GROUPS, "all")},
        "multiple_choice": {g: _accuracy(*qa["multiple_choice"][g]) for g in (*GROUPS, "all")},
        "asr": {"wer": word_error_rate(references, hypotheses), "n": len(references)},
        "samples": samples,
    }


def word_error_rate(references: list[str], hypotheses: list[str]) -> float | None:
    """Corpus WER (total edits / total reference words) with jiwer; None without references."""
    if not references:
        return None
    import jiwer

    # jiwer rejects an empty reference; an empty one scores its hypothesis words as insertions, so keep them apart.
    pairs = [(r, h) for r, h in zip(references, hypotheses) if r]
    insertions = sum(len(h.split()) for r, h in zip(references, hypotheses) if not r)
    words = sum(len(r.split()) for r, _ in pairs)
    if not words:
        return None
    output = jiwer.process_words([r for r, _ in pairs], [h if h else "" for _, h in pairs])
    return (output.substitutions + output.deletions + output.insertions + insertions) / words


def format_report(report: dict[str, Any]) -> str:
    """The report as printable tables: the state confusion, then the per-group accuracies and the WER."""

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.4f}"

    state = report["state"]
    width = max(len(n) for n in STATE_NAMES)
    lines = [f"rows: {report['n_rows']}", "", "state confusion (rows: expected, columns: predicted)"]
    lines.append(" " * width + "  " + "  ".join(f"{n:>{width}}" for n in STATE_NAMES))
    for expected in STATE_NAMES:
        cells = "  ".join(f"{state['confusion'][expected][p]:>{width}}" for p in STATE_NAMES)
        lines.append(f"{expected:<{width}}  {cells}")
    lines.append(f"state accuracy {fmt(state['accuracy'])} (n={state['n']}, no state token: {state['unparsed']})")
    lines += ["", f"{'metric':<16}  {'group':<6}  {'accuracy':>8}  {'n':>6}"]
    for kind in ("exact_match", "multiple_choice"):
        for group in (*GROUPS, "all"):
            entry = report[kind][group]
            lines.append(f"{kind:<16}  {group:<6}  {fmt(entry['accuracy']):>8}  {entry['n']:>6}")
    lines.append(f"{'wer':<16}  {'asr':<6}  {fmt(report['asr']['wer']):>8}  {report['asr']['n']:>6}")
    return "\n".join(lines)


def load_model_and_processor(path: str, dtype: str = "auto", device: str | None = None) -> tuple[Any, Any]:
    """A VITA checkpoint folder (or hub id) with its remote code: (AutoModelForCausalLM, AutoProcessor)."""
    from transformers import AutoModelForCausalLM, AutoProcessor

    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, dtype=dtype)
    if device is not None:
        model = model.to(device)
    return model, AutoProcessor.from_pretrained(path, trust_remote_code=True)


def load_rows(path: str) -> Any:
    """A converted data set: a datasets folder (`save_to_disk`) or a JSON/JSONL file."""
    if not os.path.exists(path):
        raise ValueError(f"Data set {path!r} does not exist; expected a datasets folder or a JSON/JSONL file.")
    from recipes.data import _load_rows

    return _load_rows(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", help="VITA checkpoint folder (model + processor, trust_remote_code)")
    parser.add_argument("data", help="converted data set folder or JSON/JSONL file")
    parser.add_argument("--media-root", default=None, help="folder the media paths of the rows are relative to")
    parser.add_argument("--output", default=None, help="write the JSON report here")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--asr-pattern", default=DEFAULT_ASR_PATTERN, help="regex marking transcription questions")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N rows only")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--device", default=None, help="e.g. cuda; default: where from_pretrained puts it")
    args = parser.parse_args(argv)

    rows = load_rows(args.data)
    model, processor = load_model_and_processor(args.model, args.dtype, args.device)
    report = evaluate(model, processor, rows, args.media_root, args.max_new_tokens, args.asr_pattern, args.limit)
    print(format_report(report))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        print(f"\nwrote {args.output}")
    return report


if __name__ == "__main__":
    main()
