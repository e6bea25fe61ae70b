"""Speech data tools for the VITA recipes: add spoken rows to a data set of the converted format (`recipes/data.py`).

The noisy-audio negatives follow the released `neg_patch.py`; answers open with their state token. Two tools, both run
by `python -m recipes.data`:

- `build_negatives` (`negatives`): speech of sentences taken from the assistant answers, answered by `<2>` alone
  (audio not meant for the assistant);
- `speak_questions` (`speak-questions`): a share of the typed questions replaced by spoken ones, their answers opened
  with `<1>` instead of `<3>`.

Speech comes from a pluggable TTS (`modeling_vita`'s PiperTTS or EspeakTTS, or any object with
`synthesize(text) -> (samples, sample_rate)`); `write_speech` writes one clip (optionally noisy, optionally resampled)
and also serves the vita-tiny data build. The wavs go under the media root.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tqdm import tqdm

from processing_vita import DEFAULT_STATE_TOKENS, VitaState
from processing_vita.feature_extraction_vita import resample_waveform

_SENTENCE_END_RE = re.compile(r"(?<=[.!?。！？])\s+")


def write_speech(
    tts: Any,
    text: str,
    path: Path,
    snr_db: float | None = None,
    rng: Any = None,
    sample_rate: int | None = None,
    augmenter: Any = None,
) -> float:
    """Speak `text` into a wav at `path` (optionally resampled to `sample_rate` first, then through `augmenter`, a
    `recipes.speech_augment.Augmenter` (rooms, microphones, codecs, noise), or with white noise at `snr_db`);
    returns its duration in s."""
    import numpy as np
    import soundfile

    samples, rate = tts.synthesize(text)
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size == 0:
        raise ValueError(f"The TTS returned no samples for {text!r}; expected speech.")
    if sample_rate is not None and sample_rate != rate:
        import torch

        samples, rate = resample_waveform(torch.from_numpy(samples), rate, sample_rate).numpy(), sample_rate
    if augmenter is not None:
        samples = augmenter(samples, rate)
    elif snr_db is not None:
        rng = rng if rng is not None else np.random.default_rng(0)
        noise_power = float(np.mean(samples**2)) / 10 ** (snr_db / 10)
        samples = samples + rng.normal(0.0, noise_power**0.5, samples.shape).astype(np.float32)
        # Loud noise can push the sum past full scale; scale down rather than clip in the 16-bit file.
        peak = float(np.max(np.abs(samples)))
        if peak > 1.0:
            samples = samples / peak
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), samples, rate, subtype="PCM_16")
    return samples.size / rate


def answer_sentences(rows: Iterable[dict[str, Any]], min_words: int = 3) -> list[str]:
    """Distinct sentences (at least `min_words` words) of the assistant answers, state tokens removed, in order."""
    seen: dict[str, None] = {}
    for row in rows:
        for message in row["messages"]:
            if message["role"] != "assistant":
                continue
            text = "".join(b["text"] or "" for b in message["content"] if b["type"] == "text")
            text = re.sub(r"^\s*<[123]>", "", text).strip()
            for sentence in _SENTENCE_END_RE.split(text):
                sentence = sentence.strip()
                if len(sentence.split()) >= min_words:
                    seen.setdefault(sentence, None)
    return list(seen)


def build_negatives(
    rows: list[dict[str, Any]],
    media_root: str | os.PathLike,
    tts: Any,
    count: int | None = None,
    snr_db: float | None = None,
    seed: int = 0,
    subdir: str = "negatives",
    augmenter: Any = None,
) -> list[dict[str, Any]]:
    """Noisy-audio rows: speech of sentences taken from the assistant answers of `rows`, answered by `<2>` alone.

    Rule of the original (`neg_patch.py`, reference 6.3): the gpt turn at `inserted_id` answers audio not meant for
    the assistant with `<2>`. Each new row is one audio-only user turn and that answer, with `end_tag` True so the
    model learns to close with `</s>` right after `<2>` (it stays silent).
    """
    import numpy as np

    if count is not None and count < 0:
        raise ValueError(f"count={count}; expected a non-negative number of negatives or None (one per sentence).")
    sentences = answer_sentences(rows)
    if not sentences:
        raise ValueError("Found no sentence of 3 or more words in the assistant answers; expected some to speak.")
    rng = random.Random(seed)
    picked = rng.sample(sentences, len(sentences)) if count is None else [rng.choice(sentences) for _ in range(count)]
    noise_rng = np.random.default_rng(seed)
    negatives = []
    for index, sentence in enumerate(tqdm(picked, desc="negatives", unit="clip")):
        relative = f"{subdir}/neg_{seed}_{index:06d}.wav"
        write_speech(tts, sentence, Path(media_root) / relative, snr_db, noise_rng, augmenter=augmenter)
        negatives.append(
            {
                "id": f"neg-{seed}-{index}",
                "messages": [
                    {"role": "user", "content": [{"type": "audio", "text": None}]},
                    {
                        "role": "assistant",
                        "content": [{"type": "text", "text": DEFAULT_STATE_TOKENS[VitaState.NOISY_AUDIO]}],
                    },
                ],
                "images": [],
                "videos": [],
                "audios": [relative],
                "end_tag": True,
            }
        )
    return negatives


def speak_questions(
    rows: list[dict[str, Any]],
    media_root: str | os.PathLike,
    tts: Any,
    fraction: float = 0.5,
    seed: int = 0,
    subdir: str = "spoken",
    augmenter: Any = None,
) -> tuple[list[dict[str, Any]], int]:
    """Replace about `fraction` of the typed questions by spoken ones; returns (new rows, number replaced).

    A candidate is a user turn with a text block and no audio whose next assistant answer opens with `<3>`. The
    chosen turns get their text block replaced by an audio block (its file is inserted into `audios` at the position
    of that block, so the n-th audio block still is `audios[n]`) and the answer opens with `<1>` instead, the
    state-token rule of the original for a human turn holding `<audio>`.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction={fraction}; expected a value in [0, 1].")
    candidates = []
    for row_index, row in enumerate(rows):
        messages = row["messages"]
        for turn, message in enumerate(messages[:-1]):
            blocks = message["content"]
            answer = messages[turn + 1]
            if (
                message["role"] == "user"
                and any(b["type"] == "text" and (b["text"] or "").strip() for b in blocks)
                and not any(b["type"] == "audio" for b in blocks)
                and answer["role"] == "assistant"
                and answer["content"]
                and (answer["content"][0]["text"] or "").startswith(DEFAULT_STATE_TOKENS[VitaState.QUERY_TEXT])
            ):
                candidates.append((row_index, turn))
    n_chosen = int(fraction * len(candidates) + 0.5)
    chosen = sorted(random.Random(seed).sample(candidates, n_chosen))
    new_rows = [json.loads(json.dumps(row)) for row in rows]  # deep copy; rows may come from a read-only Dataset
    for row_index, turn in tqdm(chosen, desc="speak-questions", unit="question"):
        row = new_rows[row_index]
        message = row["messages"][turn]
        text = " ".join(b["text"].strip() for b in message["content"] if b["type"] == "text" and b["text"])
        relative = f"{subdir}/{row['id']}_{turn}.wav"
        write_speech(tts, text, Path(media_root) / relative, augmenter=augmenter)
        audios_before = sum(b["type"] == "audio" for m in row["messages"][:turn] for b in m["content"])
        content = []
        for block in message["content"]:
            if block["type"] != "text":
                content.append(block)
            elif not any(b["type"] == "audio" for b in content):
                content.append({"type": "audio", "text": None})
        message["content"] = content
        row["audios"] = list(row.get("audios") or [])
        row["audios"].insert(audios_before, relative)
        answer = row["messages"][turn + 1]["content"][0]
        answer["text"] = (
            DEFAULT_STATE_TOKENS[VitaState.QUERY_AUDIO]
            + answer["text"][len(DEFAULT_STATE_TOKENS[VitaState.QUERY_TEXT]) :]
        )
    return new_rows, len(chosen)
