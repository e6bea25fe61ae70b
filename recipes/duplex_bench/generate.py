"""Make a Full-Duplex-Bench-style sample set in vita-tiny's world, spoken by our own offline voices.

    python -m recipes.duplex_bench.generate --out data/duplex_bench --per-task 8

FDB's folder format (github.com/DanielLin94144/Full-Duplex-Bench, v1.0 and v1.5): one folder per task, one per
sample, each with `input.wav` (the user's side, 16 kHz mono) and the task's annotation; our extras sit beside them
(`image.png`, the picture the questions are about, pushed to the session first; `sample.json`, the texts, voices,
expected answer and exact times; `transcription.json`, the user's words with approximate timings):

- `synthetic_pause_handling/`: a question with a 0.6-1.0 s pause mid-sentence; `pause.json`
  `[{"text": "[PAUSE]", "timestamp": [start, end]}]`;
- `synthetic_turn_taking/`: a question, then silence; `turn_taking.json`
  `[{"text": "[TURN-TAKING]", "timestamp": [end of the turn, end of the input]}]`;
- `synthetic_user_interruption/`: a request for a description, then a new question 1.5-3 s after it ends (while
  the answer plays, for a model with long answers); `interrupt.json` `[{"context", "interrupt", "timestamp":
  [start, end]}]` (the interrupting question);
- `background_speech/`, `user_backchannel/` (v1.5): a question, then, while the answer plays, someone else talking
  (another voice, 10 dB quieter) or the user's own "mm-hmm", "yeah", "okay"... (6 dB quieter); `metadata.json`
  `{"context_text", "current_turn_text", "timestamps": [start, end]}` (the overlapping talk).

Questions come from vita-tiny's phrasings about one picture of its world (`recipes/vita_tiny/world.py`,
`phrasings.py`); voices are Piper at three speeds and espeak-ng accents (`recipes/vita_tiny/voices.py`). A pause is
made by speaking the whole sentence with a comma where it goes and stretching the comma's silence: the words before
it keep the intonation of an unfinished sentence, and the silence marks the word boundary exactly.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from modeling_vita.duplex_audio_input import resample
from recipes.duplex_bench.metrics import spread_words
from recipes.vita_tiny.phrasings import CAPTION_PROMPTS, IMAGE_QUESTIONS, QUESTION_FRAMES, background_sentences
from recipes.vita_tiny.voices import make_voice, voice_key
from recipes.vita_tiny.world import COLOURS, NUMBERS, POSITIONS, SHAPES, draw_shapes_image, image_caption

logger = logging.getLogger(__name__)

RATE = 16_000
TASKS = (
    "synthetic_pause_handling",
    "synthetic_turn_taking",
    "synthetic_user_interruption",
    "background_speech",
    "user_backchannel",
)
VOICES = [("piper", "joe", 0.85), ("piper", "joe", 1.0), ("piper", "joe", 1.15), ("espeak", "en-us", 150),
          ("espeak", "en-gb", 165), ("espeak", "en-us+f3", 170)]  # fmt: skip
BACKCHANNELS = ["Mm-hmm.", "Yeah.", "Okay.", "Uh-huh.", "Right.", "I see."]
# Longer askings of the picture's kinds, so a pause can fall mid-sentence with words on both sides.
PAUSE_TOPICS = {"colour": ["the colour of the shape", "the colour in the picture"],
                "shape": ["the kind of shape", "the shape in the picture"],
                "count": ["the number of shapes", "the count of shapes"],
                "position": ["the position of the shape", "the side of the shape"]}  # fmt: skip
LEAD_SECS, TAIL_SECS = 0.5, 4.0  # silence before the user speaks; after, for the answer to be heard


class Speaker:
    """Speech at 16 kHz from one voice, trimmed to its first and last audible sample (so times are exact)."""

    def __init__(self, voice: tuple[str, str, float], cache: dict[str, Any]) -> None:
        self.voice, self.key = voice, voice_key(voice)
        self._engine = make_voice(voice, cache)

    def say(self, text: str) -> np.ndarray:
        audio, rate = self._engine.synthesize(text)
        audio = resample(np.asarray(audio, dtype=np.float32), rate, RATE)
        loud = np.flatnonzero(np.abs(audio) > 0.01 * max(float(np.abs(audio).max()), 1e-6))
        if not len(loud):
            raise ValueError(f"the voice {self.key} said nothing for {text!r}; expected speech")
        return audio[loud[0] : loud[-1] + 1]


def _picture(rng: np.random.Generator) -> tuple[Any, dict[str, Any]]:
    count = int(rng.integers(1, 5))
    meta = {"colour": str(rng.choice(list(COLOURS))), "shape": str(rng.choice(SHAPES)), "count": count,
            "position": str(rng.choice(POSITIONS)) if count == 1 else None}  # fmt: skip
    return draw_shapes_image(meta["colour"], meta["shape"], count, meta["position"], rng), meta


def _answer(kind: str, meta: dict[str, Any]) -> str:
    return {"colour": meta["colour"], "shape": meta["shape"], "count": NUMBERS[meta["count"]],
            "position": meta["position"] or ""}[kind]  # fmt: skip


def _kind(meta: dict[str, Any], rng: np.random.Generator) -> str:
    kinds = ["colour", "shape", "count"] + (["position"] if meta["position"] else [])
    return str(rng.choice(kinds))


def _comma_gap(audio: np.ndarray, frame: int = 160, rel_db: float = -35.0) -> tuple[int, int] | None:
    """The longest run of quiet 10 ms frames inside `audio` (not at its ends), as sample indices; None if under
    60 ms. Spoken with a comma at the split, the sentence has its only long gap there."""
    count = len(audio) // frame
    rms = np.sqrt(np.mean(audio[: count * frame].reshape(count, frame) ** 2, axis=1))
    quiet = rms < rms.max() * 10 ** (rel_db / 20)
    best, start = (0, 0), None
    for index in range(1, count - 1):
        if quiet[index] and start is None:
            start = index
        if start is not None and (not quiet[index] or index == count - 2):
            stop = index if not quiet[index] else index + 1
            if stop < count - 1 and stop - start > best[1] - best[0]:
                best = (start, stop)
            start = None
    return (best[0] * frame, best[1] * frame) if best[1] - best[0] >= 6 else None


def _pause_question(meta: dict[str, Any], rng: np.random.Generator) -> tuple[str, int, str]:
    kind = _kind(meta, rng)
    frames = [f for f in QUESTION_FRAMES if len(f.split()) >= 3]  # "Can you tell me {x}?", "I want to know {x}." ...
    text = str(rng.choice(frames)).format(x=str(rng.choice(PAUSE_TOPICS[kind])))
    words = text.split()
    # After a word that leaves the sentence open ("the", "of", "me", "know", "is"), never first or last.
    splits = [i + 1 for i, w in enumerate(words[:-2]) if i >= 1 and w.lower() in ("the", "of", "me", "know", "is")]
    return text, int(rng.choice(splits)) if splits else len(words) // 2, kind


def _write(folder: Path, audio: np.ndarray, annotation_name: str, annotation: Any, sample: dict[str, Any],
           image: Any, words: list[dict[str, Any]]) -> None:  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    soundfile.write(folder / "input.wav", np.clip(audio, -1.0, 1.0), RATE, subtype="PCM_16")
    (folder / annotation_name).write_text(json.dumps(annotation, indent=2) + "\n")
    (folder / "sample.json").write_text(json.dumps(sample, indent=2) + "\n")
    text = " ".join(word["text"] for word in words)
    (folder / "transcription.json").write_text(json.dumps({"text": text, "chunks": words}, indent=2) + "\n")
    image.save(folder / "image.png")


def _silence(secs: float) -> np.ndarray:
    return np.zeros(int(round(secs * RATE)), dtype=np.float32)


def make_sample(
    task: str,
    folder: Path,
    speakers: list[Speaker],
    rng: np.random.Generator,
    interrupt_delay: tuple[float, float] = (1.5, 3.0),
) -> None:
    """Write one sample of `task` into `folder`; an interruption starts `interrupt_delay` (uniform, seconds) after
    the first question ends."""
    image, meta = _picture(rng)
    user = speakers[int(rng.integers(len(speakers)))]
    sample: dict[str, Any] = {"task": task, "voice": user.key, "image": {**meta, "caption": image_caption(meta)}}
    lead = _silence(LEAD_SECS)
    if task == "synthetic_pause_handling":
        text, split, kind = _pause_question(meta, rng)
        words = text.split()
        # Spoken with a comma at the split: the words before it keep a continuing intonation, and the comma's
        # silence marks the word boundary exactly; that silence becomes the pause.
        full = user.say(" ".join(words[:split]) + ", " + " ".join(words[split:]))
        gap = _comma_gap(full)
        if gap is None:
            raise ValueError(f"the voice {user.key} made no pause at the comma of {text!r}; expected one")
        pause_secs = round(float(rng.uniform(0.6, 1.0)), 3)
        audio = np.concatenate([lead, full[: gap[0]], _silence(pause_secs), full[gap[1] :], _silence(TAIL_SECS)])
        pause_start = LEAD_SECS + gap[0] / RATE
        speech_end = pause_start + pause_secs + (len(full) - gap[1]) / RATE
        timings = spread_words(" ".join(words[:split]), LEAD_SECS, pause_start)
        timings += spread_words(" ".join(words[split:]), pause_start + pause_secs, speech_end)
        annotation = [{"text": "[PAUSE]", "timestamp": [round(pause_start, 3), round(pause_start + pause_secs, 3)]}]
        sample.update(text=text, answer=_answer(kind, meta), speech_end=round(speech_end, 3))
        return _write(folder, audio, "pause.json", annotation, sample, image, timings)
    kind = _kind(meta, rng)
    question = str(rng.choice(IMAGE_QUESTIONS[kind][:3]))  # each kind's own direct questions
    if task == "synthetic_turn_taking":
        spoken = user.say(question)
        audio = np.concatenate([lead, spoken, _silence(TAIL_SECS)])
        end = LEAD_SECS + len(spoken) / RATE
        annotation = [{"text": "[TURN-TAKING]", "timestamp": [round(end, 3), round(len(audio) / RATE, 3)]}]
        sample.update(text=question, answer=_answer(kind, meta), speech_end=round(end, 3))
        return _write(
            folder, audio, "turn_taking.json", annotation, sample, image, spread_words(question, LEAD_SECS, end)
        )
    if task == "synthetic_user_interruption":
        context = str(rng.choice(CAPTION_PROMPTS["image"]))
        first, second = user.say(context), user.say(question)
        delay = round(float(rng.uniform(*interrupt_delay)), 3)
        audio = np.concatenate([lead, first, _silence(delay), second, _silence(TAIL_SECS)])
        first_end = LEAD_SECS + len(first) / RATE
        start, end = first_end + delay, first_end + delay + len(second) / RATE
        annotation = [{"context": context, "interrupt": question, "timestamp": [round(start, 3), round(end, 3)]}]
        words = spread_words(context, LEAD_SECS, first_end) + spread_words(question, start, end)
        sample.update(text=question, context=context, answer=_answer(kind, meta), context_answer=image_caption(meta),
                      speech_end=round(end, 3))  # fmt: skip
        return _write(folder, audio, "interrupt.json", annotation, sample, image, words)
    # v1.5 overlaps: talk that is not for the assistant starts while the answer plays (it starts about 0.6 s after
    # the question and vita-tiny's answers last about a second).
    spoken = user.say(question)
    end = LEAD_SECS + len(spoken) / RATE
    if task == "background_speech":
        others = [s for s in speakers if s.key != user.key] or speakers
        talker, overlap_text, gain_db = (
            others[int(rng.integers(len(others)))],
            str(rng.choice(background_sentences())),
            -10.0,
        )
    elif task == "user_backchannel":
        talker, overlap_text, gain_db = user, str(rng.choice(BACKCHANNELS)), -6.0
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    overlap = talker.say(overlap_text) * np.float32(10 ** (gain_db / 20))
    gap = round(float(rng.uniform(0.5, 1.2)), 3)
    audio = np.concatenate([lead, spoken, _silence(gap), overlap, _silence(TAIL_SECS)])
    start, stop = end + gap, end + gap + len(overlap) / RATE
    annotation = {"context_text": question, "current_turn_text": overlap_text,
                  "timestamps": [round(start, 3), round(stop, 3)]}  # fmt: skip
    sample.update(text=question, answer=_answer(kind, meta), speech_end=round(end, 3), overlap_voice=talker.key,
                  overlap_gain_db=gain_db)  # fmt: skip
    words = spread_words(question, LEAD_SECS, end) + spread_words(overlap_text, start, stop)
    return _write(folder, audio, "metadata.json", annotation, sample, image, words)


def generate(
    out: str | Path,
    per_task: int = 8,
    seed: int = 0,
    tasks: tuple[str, ...] = TASKS,
    voices: list[tuple[str, str, float]] | None = None,
    interrupt_delay: tuple[float, float] = (1.5, 3.0),
) -> list[Path]:
    """Write `per_task` samples of each task under `out/<task>/<0000...>`; returns the sample folders."""
    unknown = [task for task in tasks if task not in TASKS]
    if unknown or per_task < 1:
        raise ValueError(f"tasks must be among {list(TASKS)} and per_task >= 1, found {unknown or tasks}, {per_task}")
    cache: dict[str, Any] = {}
    speakers = [Speaker(voice, cache) for voice in (voices or VOICES)]
    folders = []
    for task_index, task in enumerate(tasks):
        rng = np.random.default_rng([seed, task_index])  # one stream per task: a task's samples do not shift
        for index in range(per_task):
            folder = Path(out) / task / f"{index:04d}"
            make_sample(task, folder, speakers, rng, interrupt_delay)
            folders.append(folder)
        logger.info("%s: %d samples", task, per_task)
    return folders


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write the task folders into")
    parser.add_argument("--per-task", type=int, default=8, help="samples per task (default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument(
        "--interrupt-delay",
        nargs=2,
        type=float,
        default=(1.5, 3.0),
        metavar=("MIN", "MAX"),
        help="seconds from the end of the first question to the interruption (default 1.5 3.0, as FDB's 2-3 s; "
        "vita-tiny's one-word answers are over by then, 0.6 1.2 interrupts them)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    folders = generate(
        args.out, args.per_task, args.seed, tuple(args.tasks), interrupt_delay=tuple(args.interrupt_delay)
    )
    print(f"{len(folders)} samples in {args.out}")
    return folders


if __name__ == "__main__":
    main()
