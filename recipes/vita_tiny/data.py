"""Synthetic data for vita-tiny: a closed little world a ~6 M-parameter VITA can learn on CPU in minutes.

Design: the vita-tiny issue (text QA in English and Chinese for stage 1 and the vocabulary extension, generated images
and videos of coloured shapes, spoken questions and background talk, held-out voices, speeds and phrasings), the
voices issue (many voice families with whole families held out, rooms, microphones and codecs, background talk of
several kinds, more ways of asking) and VITA's state-token rule: an answer opens with `<1>` after a user turn holding
audio meant for the assistant, `<2>` (and nothing else) for background talk, `<3>` otherwise. This module builds the
rows and writes the splits; what they are made of lives beside it: the world of shapes, its pictures, videos and
captions in `world.py`, the questions, prompts and ways of asking in `phrasings.py`, background talk in
`background_talk.py`, the speakers in `voices.py`, the spoken clips of each bank in `speech_bank.py`. Rows use the
converted format of `recipes/data.py` (written by its `save_rows`).

    python -m recipes.vita_tiny.data data/vita-tiny            # full build (needs espeak-ng and festival)
    python -m recipes.vita_tiny.data data/vita-tiny --small    # a few seconds, for tests

Stage-1 rows (`llm_train`) are text QA and `say` rows that make the LLM say captions and training transcripts: the
alignment stages keep the LLM frozen, so it must already produce their words, as a pretrained LLM would.

Output: one `datasets` folder per split (`SPLITS`), the media under `media/`, `corpus.txt` for
`processing_vita.tokenization_vita.train_extension_tokenizer`, `speech_index.json` (every clip with its text and
voice, for the encoder's CTC pretraining) and `manifest.json`. Besides the converted columns each row has `task`,
`voice` (`voices.voice_key`, "" without speech), `phrasing` (the question template, "" without one) and `meta` (JSON
ground truth: colour, shape, count, position, direction, spoken text, way of asking, kind of background talk).
`heldout` uses voice families, question templates, ways of asking, background sentences and augmentation draws never
used for training; `heldout_previous` rebuilds the held-out split of the checkpoint before the voices issue. Their
answers and fillers come from the same closed vocabularies, so the task stays learnable.
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
from recipes.vita_tiny.phrasings import (
    ASR_PROMPTS,
    CAPTION_PROMPTS,
    ENGLISH_FAMILIES,
    HELDOUT_PHRASINGS_PER_KIND,
    IMAGE_QUESTIONS,
    SAY_PROMPTS,
    TEXT_FAMILIES,
    VIDEO_QUESTIONS,
    spoken_words,
    templates_for,
)
from recipes.vita_tiny.speech_bank import Clip, SpeechBanks
from recipes.vita_tiny.voices import (
    PREVIOUS_HELDOUT_VOICES,
    SMALL_HELDOUT_VOICES,
    SMALL_TRAIN_VOICES,
    draw_voices,
    select_voices,
    voice_family,
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

# `heldout`: unseen voice families, augmentations, phrasings, ways of asking and background talk; `heldout_previous`:
# the held-out split of the checkpoint before them (its voices, phrasings and statements, white noise), rebuilt.
SPLITS = ("llm_train", "vision_train", "audio_train", "sft_train", "heldout", "heldout_previous")
TTS_ENGINES = ("piper", "espeak", "festival")
# The share of stage-1 (`llm_train`) rows that are `say` rows (SAY_PROMPTS); the rest are text QA.
LLM_SAY_FRACTION = 0.35

# Row counts per split; `spoken_questions` / `background_sentences` (statements) / `background_talk` (the other kinds
# of background talk): distinct texts spoken for training (the held-out bank gets a quarter as many);
# `voices_per_text`: how many voices speak each text (rows reuse the clips); `train_voices` / `heldout_voices`:
# speakers drawn from the training and the held-out families (draws of 64 and 24 give 63 and 24 distinct speakers;
# the small build speaks with `voices.SMALL_TRAIN_VOICES` / `SMALL_HELDOUT_VOICES` instead).
DEFAULT_SIZES = {"llm_train": 6000, "vision_train": 3000, "audio_train": 2000, "sft_train": 10000, "heldout": 800,
                 "heldout_previous": 800, "spoken_questions": 200, "background_sentences": 150,
                 "background_talk": 150, "voices_per_text": 5, "train_voices": 64, "heldout_voices": 24}  # fmt: skip
SMALL_SIZES = {"llm_train": 40, "vision_train": 12, "audio_train": 10, "sft_train": 40, "heldout": 36,
               "heldout_previous": 12, "spoken_questions": 4, "background_sentences": 4, "background_talk": 4,
               "voices_per_text": 1}  # fmt: skip
# Rooms simulated for the augmentations (a second each): the small build keeps to two.
ROOMS, SMALL_ROOMS = 16, 2

# Task mixtures: stage 3 (sft) mixes every modality and every state; the held-out split mirrors it.
# How often a background row plays each kind of talk (`background_talk.py`; statements from `phrasings.py`).
BACKGROUND_ROW_SHARES = {"statement": 0.35, "addressed": 0.3, "media": 0.2, "backchannel": 0.15}
# Background talk has several kinds now (statements, talk to others, TV and radio, backchannels): a larger share.
SFT_MIX = {"image_qa": 0.21, "image_spoken_qa": 0.15, "video_qa": 0.15, "spoken_qa": 0.1, "background": 0.16,
           "text_qa": 0.11, "asr": 0.12}  # fmt: skip


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

    def __init__(self, root: Path, seed: int, sizes: dict[str, int], voices: dict[str, list], rooms: int) -> None:
        self.root, self.media = root, root / "media"
        self.rng, self.np_rng = random.Random(seed), np.random.default_rng(seed)
        self.sizes, self.seed = sizes, seed
        self.speech = SpeechBanks(self.media, seed, sizes, voices, rooms)

    def clip(self, text: str, bank: str) -> Clip:
        return self.speech.clip(text, bank, self.rng)

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
    # `bank` is the speech bank a row draws from ("train", "heldout", "previous"); every bank but "train" asks with
    # the held-out phrasings.
    def text_qa(self, rid: str, bank: str, english_only: bool = False) -> dict[str, Any]:
        families = ENGLISH_FAMILIES if english_only else list(TEXT_FAMILIES)
        templates, items = TEXT_FAMILIES[self.rng.choice(families)]
        template = self.rng.choice(templates_for(templates, bank != "train"))
        fillers, answer = self.rng.choice(items)
        return _row(rid, "text_qa", [template.format(**fillers)], TYPED + answer, phrasing=template)

    def _image_question(self, meta: dict[str, Any]) -> tuple[str, str]:
        kinds = [k for k in IMAGE_QUESTIONS if k != "position" or meta["count"] == 1]
        kind = self.rng.choice(kinds)
        answer = {"colour": meta["colour"], "shape": meta["shape"], "count": NUMBERS[meta["count"]],
                  "position": meta["position"]}[kind]  # fmt: skip
        return kind, answer

    def image_qa(self, rid: str, split: str, index: int, bank: str, spoken: bool = False) -> dict[str, Any]:
        path, meta = self.image(split, index)
        kind, answer = self._image_question(meta)
        if not spoken:
            templates = templates_for(IMAGE_QUESTIONS[kind], bank != "train", HELDOUT_PHRASINGS_PER_KIND)
            question = self.rng.choice(templates)
            return _row(rid, "image_qa", ["<image>", question], TYPED + answer, images=[path],
                        phrasing=question, meta=meta)  # fmt: skip
        question, _, style, template = self.rng.choice(self.speech.image_by_kind[bank][kind])
        clip = self.clip(question, bank)
        return _row(rid, "image_spoken_qa", ["<image>", "<audio>"], SPOKEN + answer, images=[path],
                    audios=[clip.path], voice=clip.voice, phrasing=template,
                    meta={**meta, "text": clip.text, "style": style})  # fmt: skip

    def video_qa(self, rid: str, split: str, index: int, bank: str) -> dict[str, Any]:
        path, meta = self.video(split, index)
        kind = self.rng.choice(list(VIDEO_QUESTIONS))
        templates = templates_for(VIDEO_QUESTIONS[kind], bank != "train", HELDOUT_PHRASINGS_PER_KIND)
        question = self.rng.choice(templates)
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
            text = spoken_words(self.rng.choice(self.speech.spoken_texts["train"]))
        prompt = self.rng.choice(SAY_PROMPTS)
        return _row(rid, "say", [prompt.format(t=text)], TYPED + text, phrasing=prompt)

    def spoken_qa(self, rid: str, bank: str) -> dict[str, Any]:
        question, template, answer, style = self.rng.choice(self.speech.texts[bank]["text"])
        clip = self.clip(question, bank)
        return _row(rid, "spoken_qa", ["<audio>"], SPOKEN + answer, audios=[clip.path], voice=clip.voice,
                    phrasing=template, meta={"text": clip.text, "style": style})  # fmt: skip

    def background(self, rid: str, split: str, index: int, bank: str) -> dict[str, Any]:
        by_kind = self.speech.background_by_kind[bank]
        kinds = list(by_kind)  # the kind first, so the few backchannels are not drowned by the many statements
        kind = self.rng.choices(kinds, weights=[BACKGROUND_ROW_SHARES[k] for k in kinds])[0]
        sentence = self.rng.choice(by_kind[kind])
        clip = self.clip(sentence, bank)
        meta: dict[str, Any] = {"text": clip.text, "kind": kind}
        if self.rng.random() < 0.3:  # talk over a picture must not make the assistant describe the picture
            path, image_meta = self.image(split, index)
            return _row(rid, "background", ["<image>", "<audio>"], NOISY, images=[path], audios=[clip.path],
                        voice=clip.voice, meta={**image_meta, **meta})  # fmt: skip
        return _row(rid, "background", ["<audio>"], NOISY, audios=[clip.path], voice=clip.voice, meta=meta)

    def asr(self, rid: str, bank: str) -> dict[str, Any]:
        # Held-out transcription keeps to the held-out statements: new sentences and voices, but no word unseen in
        # training (held-out question templates and talk bring new words, which no tiny model could spell).
        if bank == "train":
            text = self.rng.choice(self.speech.spoken_texts[bank])
        else:
            text = self.rng.choice(self.speech.background_by_kind[bank]["statement"])
        clip = self.clip(text, bank)
        prompt = self.rng.choice(templates_for(ASR_PROMPTS, bank != "train"))
        return _row(rid, "asr", ["<audio>", prompt], SPOKEN + clip.text, audios=[clip.path], voice=clip.voice,
                    phrasing=prompt, meta={"text": clip.text})  # fmt: skip

    def mixed(self, rid: str, split: str, index: int, bank: str) -> dict[str, Any]:
        task = self.rng.choices(list(SFT_MIX), weights=list(SFT_MIX.values()))[0]
        if task in ("image_qa", "image_spoken_qa"):
            return self.image_qa(rid, split, index, bank, spoken=task == "image_spoken_qa")
        if task == "video_qa":
            return self.video_qa(rid, split, index, bank)
        if task == "spoken_qa":
            return self.spoken_qa(rid, bank)
        if task == "background":
            return self.background(rid, split, index, bank)
        if task == "asr":
            return self.asr(rid, bank)
        return self.text_qa(rid, bank)


def data_version() -> str:
    """A digest of the generator's source (this module, the vita-tiny modules it builds from and
    `recipes/speech_augment.py`): a build made by other code is not reused (`python -m recipes.vita_tiny`)."""
    import hashlib

    here = Path(__file__)
    names = ("world.py", "phrasings.py", "voices.py", "background_talk.py", "speech_bank.py")
    sources = [here, here.parent.parent / "speech_augment.py"] + [here.with_name(name) for name in names]
    return hashlib.sha256(b"".join(path.read_bytes() for path in sources)).hexdigest()[:16]


def build_vita_tiny_data(
    output_dir: str | Path,
    seed: int = 0,
    sizes: dict[str, int] | None = None,
    tts_engines: tuple[str, ...] = TTS_ENGINES,
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
    unknown_engines = sorted(set(tts_engines) - set(TTS_ENGINES))
    if unknown_engines:
        raise ValueError(f"Unknown tts_engines {unknown_engines}; expected some of {list(TTS_ENGINES)}.")
    root = Path(output_dir)
    if small:
        train, heldout = SMALL_TRAIN_VOICES, SMALL_HELDOUT_VOICES
    else:
        train = draw_voices(False, sizes["train_voices"], seed)
        heldout = draw_voices(True, sizes["heldout_voices"], seed)
    previous = SMALL_HELDOUT_VOICES if small else PREVIOUS_HELDOUT_VOICES
    voices = {bank: select_voices(vs, tuple(tts_engines))
              for bank, vs in (("train", train), ("heldout", heldout), ("previous", previous))}  # fmt: skip
    builder = _Builder(root, seed, sizes, voices, SMALL_ROOMS if small else ROOMS)
    engines: dict[str, Any] = {}
    for bank in ("train", "heldout", "previous"):
        builder.speech.build(bank, engines)

    makers = {
        "llm_train": lambda rid, i: (
            builder.say(rid) if builder.rng.random() < LLM_SAY_FRACTION else builder.text_qa(rid, "train")
        ),
        "vision_train": lambda rid, i: builder.caption(rid, "vision_train", i),
        "audio_train": lambda rid, i: builder.asr(rid, "train"),
        "sft_train": lambda rid, i: builder.mixed(rid, "sft_train", i, "train"),
        "heldout": lambda rid, i: builder.mixed(rid, "heldout", i, "heldout"),
        "heldout_previous": lambda rid, i: builder.mixed(rid, "heldout_previous", i, "previous"),
    }
    paths, counts, corpus = {}, {}, []
    for split, make in makers.items():
        rows = [make(f"{split}-{i}", i) for i in tqdm(range(sizes[split]), desc=split, unit="row")]
        save_rows(rows, root / split)
        paths[split] = str(root / split)
        counts[split] = dict(sorted(Counter(r["task"] for r in rows).items()))
        if not split.startswith("heldout"):  # the tokenizer extension must not see held-out phrasings
            for row in rows:
                for message in row["messages"]:
                    for block in message["content"]:
                        text = re.sub(r"^<[123]>", "", block["text"] or "")
                        if block["type"] == "text" and text:
                            corpus.append(text)
    # Every clip with its words and voice: the audio encoder's CTC pretraining reads this (`pretrain_audio.py`).
    speech_index = {
        bank: [{"audio": c.path, "text": c.text, "voice": c.voice, **({"clean": c.clean} if c.clean else {})}
               for clips in builder.speech.clips[bank].values() for c in clips]
        for bank in ("train", "heldout")
    }  # fmt: skip
    (root / "speech_index.json").write_text(json.dumps(speech_index, indent=1, ensure_ascii=False), encoding="utf-8")
    corpus_path = root / "corpus.txt"
    corpus_path.write_text("\n".join(dict.fromkeys(corpus)) + "\n", encoding="utf-8")
    manifest = {
        "seed": seed, "sizes": sizes, "splits": paths, "media_root": str(builder.media), "corpus": str(corpus_path),
        "speech_index": str(root / "speech_index.json"), "tasks": counts,
        "voices": {bank: [voice_key(v) for v in vs] for bank, vs in voices.items()},
        "voice_families": {bank: sorted({voice_family(v) for v in vs}) for bank, vs in voices.items()},
        "speech_texts": {b: sorted({spoken_words(t) for t in clips}) for b, clips in builder.speech.clips.items()},
        "generator": data_version(), "speech_clips": builder.speech.n_clips,
        "speech_seconds": round(builder.speech.seconds, 1),
        "build_seconds": round(time.time() - start, 1),
    }  # fmt: skip
    (root / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("output", help="folder for the splits, media/, corpus.txt and manifest.json")
    parser.add_argument("--small", action="store_true", help="a few rows and clips (seconds), for tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tts", nargs="+", default=list(TTS_ENGINES), choices=list(TTS_ENGINES))
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
