"""Synthetic data for vita-tiny: a closed little world a ~6 M-parameter VITA can learn on CPU in minutes.

Design: the vita-tiny issue (text QA in English and Chinese for stage 1 and the vocabulary extension, generated images
and videos of coloured shapes, spoken questions and background talk from Piper and espeak-ng voices with noise, and
held-out voices, speeds and phrasings) and VITA's state-token rule: an answer opens with
`<1>` after a user turn holding audio meant for the assistant, `<2>` (and nothing else) for background talk, `<3>`
otherwise. This module builds the rows and writes the splits; what they are made of lives beside it: the world of
shapes, its pictures, videos and captions in `world.py`, the questions, prompts and background sentences in
`phrasings.py`, the speakers in `voices.py`. Rows use the converted format of `recipes/data.py` (written by its
`save_rows`); speech is written by `write_speech` of `recipes/speech_data.py`.

    python -m recipes.vita_tiny.data data/vita-tiny            # full build
    python -m recipes.vita_tiny.data data/vita-tiny --small    # a few seconds, for tests

Stage-1 rows (`llm_train`) are text QA and `say` rows that make the LLM say captions and training transcripts: the
alignment stages keep the LLM frozen, so it must already produce their words, as a pretrained LLM would.

Output: one `datasets` folder per split (`llm_train`, `vision_train`, `audio_train`, `sft_train`, `heldout`), the media
under `media/`, `corpus.txt` for `processing_vita.tokenization_vita.train_extension_tokenizer`, `speech_index.json`
(every clip with its text and voice, for the encoder's CTC pretraining) and `manifest.json`.
Besides the converted columns each row has `task`, `voice` (`engine:voice@speed`, "" without speech), `phrasing`
(the question template, "" without one) and `meta` (JSON ground truth: colour, shape, count, position, direction,
spoken text). The held-out split uses voices, speeds, question templates and background sentences never used for
training; its answers and fillers come from the same closed vocabularies, so the task stays learnable.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from processing_vita import DEFAULT_STATE_TOKENS, VitaState
from recipes.data import save_rows
from recipes.speech_data import write_speech
from recipes.vita_tiny.phrasings import (
    ASR_PROMPTS,
    CAPTION_PROMPTS,
    ENGLISH_FAMILIES,
    HELDOUT_PHRASINGS_PER_KIND,
    IMAGE_QUESTIONS,
    SAY_PROMPTS,
    TEXT_FAMILIES,
    VIDEO_QUESTIONS,
    background_sentences,
    covering_sentences,
    templates_for,
)
from recipes.vita_tiny.voices import (
    HELDOUT_VOICES,
    SMALL_HELDOUT_VOICES,
    SMALL_TRAIN_VOICES,
    TRAIN_VOICES,
    make_voice,
    select_voices,
    voice_key,
)
from recipes.vita_tiny.world import (
    COLOURS,
    DIRECTIONS,
    NUMBERS,
    POSITIONS,
    SHAPES,
    draw_shapes_image,
    image_caption,
    video_caption,
    write_shapes_video,
)

# What each kind of row's answer opens with: a spoken query, background talk, a typed query.
SPOKEN, NOISY, TYPED = (
    DEFAULT_STATE_TOKENS[state] for state in (VitaState.QUERY_AUDIO, VitaState.NOISY_AUDIO, VitaState.QUERY_TEXT)
)

# Speech is stored at the feature extractor's rate, so training does not resample every clip on every read.
SPEECH_SAMPLE_RATE = 16_000
SPLITS = ("llm_train", "vision_train", "audio_train", "sft_train", "heldout")
# The share of stage-1 (`llm_train`) rows that are `say` rows (SAY_PROMPTS); the rest are text QA.
LLM_SAY_FRACTION = 0.35

# Row counts per split; `spoken_questions`/`background_sentences`: distinct texts spoken for training (the held-out
# bank gets a quarter as many); `voices_per_text`: how many voices speak each text (rows reuse the clips).
DEFAULT_SIZES = {"llm_train": 6000, "vision_train": 3000, "audio_train": 2000, "sft_train": 10000, "heldout": 800,
                 "spoken_questions": 200, "background_sentences": 150, "voices_per_text": 6}  # fmt: skip
SMALL_SIZES = {"llm_train": 40, "vision_train": 12, "audio_train": 10, "sft_train": 40, "heldout": 36,
               "spoken_questions": 4, "background_sentences": 4, "voices_per_text": 1}  # fmt: skip
SNR_DB_RANGE = (5.0, 30.0)

# Task mixtures: stage 3 (sft) mixes every modality and every state; the held-out split mirrors it.
SFT_MIX = {"image_qa": 0.22, "image_spoken_qa": 0.15, "video_qa": 0.15, "spoken_qa": 0.1, "background": 0.13,
           "text_qa": 0.13, "asr": 0.12}  # fmt: skip


def _row(
    rid: str,
    task: str,
    user: list[str],
    answer: str,
    *,
    images: Sequence[str] = (),
    videos: Sequence[str] = (),
    audios: Sequence[str] = (),
    voice: str = "",
    phrasing: str = "",
    meta: dict | None = None,
) -> dict[str, Any]:
    """A one-turn converted row; `user` items are "<image>"/"<video>"/"<audio>" placeholders or question text."""
    media = {"<image>": "image", "<video>": "video", "<audio>": "audio"}
    content = [{"type": media[u], "text": None} if u in media else {"type": "text", "text": u} for u in user]
    return {"id": rid, "messages": [{"role": "user", "content": content},
                                    {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
            "images": list(images), "videos": list(videos), "audios": list(audios), "end_tag": True,
            "task": task, "voice": voice, "phrasing": phrasing,
            "meta": json.dumps(meta or {}, ensure_ascii=False)}  # fmt: skip


class _Builder:
    """Holds the random streams, the media root and the speech banks while the splits are written."""

    def __init__(self, root: Path, seed: int, sizes: dict[str, int], train_voices: list, heldout_voices: list) -> None:
        self.root, self.media = root, root / "media"
        self.rng, self.np_rng = random.Random(seed), np.random.default_rng(seed)
        self.sizes, self.seed = sizes, seed
        self.voices = {False: train_voices, True: heldout_voices}
        self.banks: dict[bool, dict[str, list[tuple[str, str, str]]]] = {}
        self.bank_texts: dict[bool, dict[str, list]] = {}
        self.n_clips, self.seconds = 0, 0.0

    # -- speech --------------------------------------------------------------------------------------------------
    def speech_texts(self, heldout: bool) -> dict[str, list[str]]:
        """Texts to speak, by kind: image questions, text questions, background talk (disjoint train / held-out)."""
        rng = random.Random(self.seed + 1)  # the same draw for both banks, so their background halves are disjoint
        sentences = background_sentences()
        rng.shuffle(sentences)
        n_bg, n_q = self.sizes["background_sentences"], self.sizes["spoken_questions"]
        if heldout:
            n_bg, n_q = max(2, n_bg // 4), max(2, n_q // 4)
        cut = len(sentences) // 5  # the first fifth is the held-out pool
        background = sentences[:cut][:n_bg] if heldout else covering_sentences(sentences[cut:], n_bg)
        questions = []
        for _ in range(n_q):
            family = ENGLISH_FAMILIES[rng.randrange(len(ENGLISH_FAMILIES))]
            templates, items = TEXT_FAMILIES[family]
            template = rng.choice(templates_for(templates, heldout))
            fillers, answer = rng.choice(items)
            questions.append((template.format(**fillers), template, answer))
        image_q = [(t, kind) for kind, ts in IMAGE_QUESTIONS.items()
                   for t in templates_for(ts, heldout, HELDOUT_PHRASINGS_PER_KIND)]  # fmt: skip
        return {"image": image_q, "text": questions, "background": background}

    def build_bank(self, heldout: bool, engine_cache: dict[str, Any]) -> None:
        texts = self.speech_texts(heldout)
        self.bank_texts[heldout] = texts
        all_texts = [t for t, _ in texts["image"]] + [q for q, _, _ in texts["text"]] + texts["background"]
        voices = list(self.voices[heldout])
        random.Random(self.seed + 2).shuffle(voices)
        per_text = min(self.sizes["voices_per_text"], len(voices))
        jobs = [(text, voices[(i + j) % len(voices)]) for i, text in enumerate(all_texts) for j in range(per_text)]
        noise_rng = np.random.default_rng(self.seed + 3 + heldout)
        snr_rng = random.Random(self.seed + 5 + heldout)
        bank: dict[str, list[tuple[str, str, str]]] = {}
        split = "heldout" if heldout else "train"
        for index, (text, voice) in enumerate(tqdm(jobs, desc=f"speech ({split})", unit="clip")):
            key = voice_key(voice)
            relative = f"speech/{split}/{key.replace(':', '_').replace('@', '_')}/{index:05d}.wav"
            if key not in engine_cache:
                engine_cache[key] = make_voice(voice, engine_cache)
            tts = engine_cache[key]
            self.seconds += write_speech(
                tts, text, self.media / relative, snr_rng.uniform(*SNR_DB_RANGE), noise_rng, SPEECH_SAMPLE_RATE
            )
            self.n_clips += 1
            bank.setdefault(text, []).append((relative, key, text))
        self.banks[heldout] = bank

    def clip(self, text: str, heldout: bool) -> tuple[str, str, str]:
        return self.rng.choice(self.banks[heldout][text])

    # -- media ---------------------------------------------------------------------------------------------------
    def image(self, split: str, index: int) -> tuple[str, dict[str, Any]]:
        colour, shape = self.rng.choice(list(COLOURS)), self.rng.choice(SHAPES)
        count = self.rng.choice((1, 1, 2, 3, 4))  # one shape twice as often: only it has a position question
        position = self.rng.choice(POSITIONS) if count == 1 else None
        relative = f"images/{split}/{index:06d}.png"
        (self.media / relative).parent.mkdir(parents=True, exist_ok=True)
        draw_shapes_image(colour, shape, count, position, self.np_rng).save(self.media / relative)
        return relative, {"colour": colour, "shape": shape, "count": count, "position": position}

    def video(self, split: str, index: int) -> tuple[str, dict[str, Any]]:
        colour, shape, direction = self.rng.choice(list(COLOURS)), self.rng.choice(SHAPES), self.rng.choice(DIRECTIONS)
        relative = f"videos/{split}/{index:06d}.mp4"
        write_shapes_video(self.media / relative, colour, shape, direction, self.np_rng)
        return relative, {"colour": colour, "shape": shape, "direction": direction}

    # -- rows by task --------------------------------------------------------------------------------------------
    def text_qa(self, rid: str, heldout: bool, english_only: bool = False) -> dict[str, Any]:
        families = ENGLISH_FAMILIES if english_only else list(TEXT_FAMILIES)
        templates, items = TEXT_FAMILIES[self.rng.choice(families)]
        template = self.rng.choice(templates_for(templates, heldout))
        fillers, answer = self.rng.choice(items)
        return _row(rid, "text_qa", [template.format(**fillers)], TYPED + answer, phrasing=template)

    def _image_question(self, meta: dict[str, Any], heldout: bool) -> tuple[str, str]:
        kinds = [k for k in IMAGE_QUESTIONS if k != "position" or meta["count"] == 1]
        kind = self.rng.choice(kinds)
        answer = {"colour": meta["colour"], "shape": meta["shape"], "count": NUMBERS[meta["count"]],
                  "position": meta["position"]}[kind]  # fmt: skip
        return self.rng.choice(templates_for(IMAGE_QUESTIONS[kind], heldout, HELDOUT_PHRASINGS_PER_KIND)), answer

    def image_qa(self, rid: str, split: str, index: int, heldout: bool, spoken: bool = False) -> dict[str, Any]:
        path, meta = self.image(split, index)
        question, answer = self._image_question(meta, heldout)
        if not spoken:
            return _row(rid, "image_qa", ["<image>", question], TYPED + answer, images=[path],
                        phrasing=question, meta=meta)  # fmt: skip
        audio, voice, _ = self.clip(question, heldout)
        return _row(rid, "image_spoken_qa", ["<image>", "<audio>"], SPOKEN + answer, images=[path],
                    audios=[audio], voice=voice, phrasing=question, meta={**meta, "text": question})  # fmt: skip

    def video_qa(self, rid: str, split: str, index: int, heldout: bool) -> dict[str, Any]:
        path, meta = self.video(split, index)
        kind = self.rng.choice(list(VIDEO_QUESTIONS))
        question = self.rng.choice(templates_for(VIDEO_QUESTIONS[kind], heldout, HELDOUT_PHRASINGS_PER_KIND))
        return _row(rid, "video_qa", ["<video>", question], TYPED + meta[kind], videos=[path],
                    phrasing=question, meta=meta)  # fmt: skip

    def caption(self, rid: str, split: str, index: int) -> dict[str, Any]:
        if self.rng.random() < 0.25:
            path, meta = self.video(split, index)
            prompt = self.rng.choice(CAPTION_PROMPTS["video"])
            return _row(rid, "caption", ["<video>", prompt], TYPED + video_caption(meta), videos=[path],
                        meta=meta)  # fmt: skip
        path, meta = self.image(split, index)
        prompt = self.rng.choice(CAPTION_PROMPTS["image"])
        return _row(rid, "caption", ["<image>", prompt], TYPED + image_caption(meta), images=[path],
                    meta=meta)  # fmt: skip

    def say(self, rid: str) -> dict[str, Any]:
        """A text row asking the LLM to say a caption or a training transcript (no media, no held-out text)."""
        kind = self.rng.random()
        if kind < 0.3:
            count = self.rng.choice((1, 2, 3, 4))
            meta = {"colour": self.rng.choice(list(COLOURS)), "shape": self.rng.choice(SHAPES), "count": count,
                    "position": self.rng.choice(POSITIONS) if count == 1 else None}  # fmt: skip
            text = image_caption(meta)
        elif kind < 0.45:
            meta = {"colour": self.rng.choice(list(COLOURS)), "shape": self.rng.choice(SHAPES),
                    "direction": self.rng.choice(DIRECTIONS)}  # fmt: skip
            text = video_caption(meta)
        else:
            text = self.rng.choice(sorted(self.banks[False]))
        prompt = self.rng.choice(SAY_PROMPTS)
        return _row(rid, "say", [prompt.format(t=text)], TYPED + text, phrasing=prompt)

    def spoken_qa(self, rid: str, heldout: bool) -> dict[str, Any]:
        question, template, answer = self.rng.choice(self.bank_texts[heldout]["text"])
        audio, voice, _ = self.clip(question, heldout)
        return _row(rid, "spoken_qa", ["<audio>"], SPOKEN + answer, audios=[audio], voice=voice,
                    phrasing=template, meta={"text": question})  # fmt: skip

    def background(self, rid: str, split: str, index: int, heldout: bool) -> dict[str, Any]:
        sentence = self.rng.choice(self.bank_texts[heldout]["background"])
        audio, voice, _ = self.clip(sentence, heldout)
        meta: dict[str, Any] = {"text": sentence}
        if self.rng.random() < 0.3:  # talk over a picture must not make the assistant describe the picture
            path, image_meta = self.image(split, index)
            return _row(rid, "background", ["<image>", "<audio>"], NOISY, images=[path], audios=[audio],
                        voice=voice, meta={**image_meta, **meta})  # fmt: skip
        return _row(rid, "background", ["<audio>"], NOISY, audios=[audio], voice=voice, meta=meta)

    def asr(self, rid: str, heldout: bool) -> dict[str, Any]:
        # Held-out transcription keeps to background talk: new sentences and voices, but no word unseen in training
        # (held-out question templates bring new words, which no tiny model could spell).
        texts = self.bank_texts[True]["background"] if heldout else sorted(self.banks[False])
        text = self.rng.choice(texts)
        audio, voice, _ = self.clip(text, heldout)
        prompt = self.rng.choice(templates_for(ASR_PROMPTS, heldout))
        return _row(rid, "asr", ["<audio>", prompt], SPOKEN + text, audios=[audio], voice=voice,
                    phrasing=prompt, meta={"text": text})  # fmt: skip

    def mixed(self, rid: str, split: str, index: int, heldout: bool) -> dict[str, Any]:
        task = self.rng.choices(list(SFT_MIX), weights=list(SFT_MIX.values()))[0]
        if task in ("image_qa", "image_spoken_qa"):
            return self.image_qa(rid, split, index, heldout, spoken=task == "image_spoken_qa")
        if task == "video_qa":
            return self.video_qa(rid, split, index, heldout)
        if task == "spoken_qa":
            return self.spoken_qa(rid, heldout)
        if task == "background":
            return self.background(rid, split, index, heldout)
        if task == "asr":
            return self.asr(rid, heldout)
        return self.text_qa(rid, heldout)


def data_version() -> str:
    """A digest of the generator's source (this module, `world.py`, `phrasings.py`, `voices.py`): a build made by
    other code is not reused (`python -m recipes.vita_tiny`)."""
    import hashlib

    here = Path(__file__)
    sources = [here] + [here.with_name(name) for name in ("world.py", "phrasings.py", "voices.py")]
    return hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:16]


def build_vita_tiny_data(
    output_dir: str | Path,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    tts_engines: tuple[str, ...] = ("piper", "espeak"),
    small: bool = False,
) -> dict[str, Any]:
    """Write the vita-tiny splits, media, corpus and manifest under `output_dir`; returns the manifest.

    `sizes` overrides entries of `DEFAULT_SIZES` (or `SMALL_SIZES` with `small`, which also uses fewer voices).
    Rows, pictures and espeak-ng clips are deterministic given `seed`; Piper samples its own noise, so its clips may
    differ by a little between runs.
    """
    start = time.time()
    base = SMALL_SIZES if small else DEFAULT_SIZES
    unknown = sorted(set(sizes or {}) - set(base))
    if unknown:
        raise ValueError(f"Unknown sizes {unknown}; expected keys among {sorted(base)}.")
    sizes = {**base, **(sizes or {})}
    at_least_one = ("spoken_questions", "background_sentences", "voices_per_text")  # rows draw from these banks
    bad = {k: v for k, v in sizes.items() if not isinstance(v, int) or v < (k in at_least_one)}
    if bad:
        raise ValueError(f"Bad sizes {bad}; expected non-negative integers, at least 1 for {list(at_least_one)}.")
    unknown_engines = sorted(set(tts_engines) - {"piper", "espeak"})
    if unknown_engines:
        raise ValueError(f"Unknown tts_engines {unknown_engines}; expected 'piper' and/or 'espeak'.")
    root = Path(output_dir)
    train_voices = select_voices(SMALL_TRAIN_VOICES if small else TRAIN_VOICES, tuple(tts_engines))
    heldout_voices = select_voices(SMALL_HELDOUT_VOICES if small else HELDOUT_VOICES, tuple(tts_engines))
    builder = _Builder(root, seed, sizes, train_voices, heldout_voices)
    engines: dict[str, Any] = {}
    builder.build_bank(False, engines)
    builder.build_bank(True, engines)

    makers = {
        "llm_train": lambda rid, i: (
            builder.say(rid) if builder.rng.random() < LLM_SAY_FRACTION else builder.text_qa(rid, False)
        ),
        "vision_train": lambda rid, i: builder.caption(rid, "vision_train", i),
        "audio_train": lambda rid, i: builder.asr(rid, False),
        "sft_train": lambda rid, i: builder.mixed(rid, "sft_train", i, False),
        "heldout": lambda rid, i: builder.mixed(rid, "heldout", i, True),
    }
    paths, counts, corpus = {}, {}, []
    for split, make in makers.items():
        rows = [make(f"{split}-{i}", i) for i in tqdm(range(sizes[split]), desc=split, unit="row")]
        save_rows(rows, root / split)
        paths[split] = str(root / split)
        counts[split] = dict(sorted(Counter(r["task"] for r in rows).items()))
        if split != "heldout":  # the tokenizer extension must not see held-out phrasings
            for row in rows:
                for message in row["messages"]:
                    for block in message["content"]:
                        text = re.sub(r"^<[123]>", "", block["text"] or "")
                        if block["type"] == "text" and text:
                            corpus.append(text)
    # Every clip with its words and voice: the audio encoder's CTC pretraining reads this (`pretrain_audio.py`).
    speech_index = {
        split: [{"audio": audio, "text": text, "voice": voice} for clips in builder.banks[held].values()
                for audio, voice, text in clips]
        for split, held in (("train", False), ("heldout", True))
    }  # fmt: skip
    (root / "speech_index.json").write_text(json.dumps(speech_index, indent=1, ensure_ascii=False), encoding="utf-8")
    corpus_path = root / "corpus.txt"
    corpus_path.write_text("\n".join(dict.fromkeys(corpus)) + "\n", encoding="utf-8")
    manifest = {
        "seed": seed, "sizes": sizes, "splits": paths, "media_root": str(builder.media), "corpus": str(corpus_path),
        "speech_index": str(root / "speech_index.json"), "tasks": counts,
        "voices": {"train": [voice_key(v) for v in train_voices], "heldout": [voice_key(v) for v in heldout_voices]},
        "speech_texts": {"train": sorted(builder.banks[False]), "heldout": sorted(builder.banks[True])},
        "generator": data_version(), "speech_clips": builder.n_clips, "speech_seconds": round(builder.seconds, 1),
        "build_seconds": round(time.time() - start, 1),
    }  # fmt: skip
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="folder for the splits, media/, corpus.txt and manifest.json")
    parser.add_argument("--small", action="store_true", help="a few rows and clips (seconds), for tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tts", nargs="+", default=["piper", "espeak"], choices=["piper", "espeak"])
    parser.add_argument("--size", action="append", default=[], metavar="KEY=N",
                        help=f"override a size, e.g. sft_train=2000; keys: {', '.join(DEFAULT_SIZES)}")  # fmt: skip
    args = parser.parse_args(argv)
    sizes = {}
    for item in args.size:
        key, _, value = item.partition("=")
        if not value.isdigit():
            raise ValueError(f"--size {item!r}; expected KEY=N with a non-negative integer N.")
        sizes[key] = int(value)
    manifest = build_vita_tiny_data(args.output, args.seed, sizes, tuple(args.tts), small=args.small)
    print(json.dumps({k: manifest[k] for k in ("tasks", "speech_clips", "speech_seconds", "build_seconds")}, indent=1))


if __name__ == "__main__":
    main()
