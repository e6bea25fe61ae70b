"""Synthetic data for vita-tiny: a closed little world a ~6 M-parameter VITA can learn on CPU in minutes.

Design: the vita-tiny issue (text QA in English and Chinese for stage 1 and the vocabulary extension, generated images
and videos of coloured shapes, spoken questions and background talk from Piper and espeak-ng voices with noise, and
held-out voices, speeds and phrasings) and the state-token rule of shared/design.md section 1: an answer opens with
`<1>` after a user turn holding audio meant for the assistant, `<2>` (and nothing else) for background talk, `<3>`
otherwise. Rows use the converted format of `recipes/data.py` (written by its `save_rows`); speech is written by
`write_speech` of `recipes/speech_data.py` with `make_tts`'s engines. Vocabularies are tiny on purpose: 5 colours,
4 shapes, counts 1-4, 4 positions, 4 directions, one- or two-word answers, 56 px images (one tile of the tiny vision
tower).

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
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from modeling_vita.duplex_speech_output import make_tts
from processing_vita import VitaState
from recipes.data import save_rows, state_token
from recipes.speech_data import write_speech

# What each kind of row's answer opens with: a spoken query, background talk, a typed query.
SPOKEN, NOISY, TYPED = (
    state_token(state) for state in (VitaState.QUERY_AUDIO, VitaState.NOISY_AUDIO, VitaState.QUERY_TEXT)
)

IMAGE_SIZE = 56
# 8 frames at 2 fps: VITA samples video at 1 fps (at least 4 frames), so a 4 s clip gives it frames 0, 2, 4 and 6,
# four distinct positions along the path. At 4 fps the same 8 frames last 2 s and the sampler repeats frame 0 three
# times next to frame 4: a trained vita-tiny then told the axis of motion but guessed its sign.
VIDEO_FRAMES, VIDEO_FPS = 8, 2
# Speech is stored at the feature extractor's rate, so training does not resample every clip on every read.
SPEECH_SAMPLE_RATE = 16_000
COLOURS = {"red": (220, 40, 40), "green": (30, 160, 60), "blue": (40, 80, 220), "yellow": (235, 200, 20),
           "purple": (140, 50, 180)}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "diamond")
POSITIONS = ("left", "right", "top", "bottom")
DIRECTIONS = ("left", "right", "up", "down")
NUMBERS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
ZH_NUMBERS = "零一二三四五六七八九十"
ZH_COLOURS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色", "purple": "紫色"}
SPLITS = ("llm_train", "vision_train", "audio_train", "sft_train", "heldout")

# Question phrasings: each kind's own direct questions, plus shared frames filled with phrases naming the kind
# ("Tell me {x}." with "the colour of the shape"), so training pairs every frame with every kind and the answer can
# only follow the kind's words. The held-out phrasings are frame x phrase pairs used nowhere in training (both the
# frame and the phrase are, with other partners): new sentences a model trained from scratch can still read.
QUESTION_FRAMES = ["Tell me {x}.", "What is {x}?", "Can you tell me {x}?", "Please name {x}.", "I want to know {x}.",
                   "Do you know {x}?"]  # fmt: skip
HELDOUT_PHRASINGS_PER_KIND = 2


def _phrasings(direct: list[str], topics: tuple[str, str], kind_index: int) -> list[str]:
    """A kind's phrasings, its `HELDOUT_PHRASINGS_PER_KIND` held-out ones last: two frames (a different pair for
    each kind) filled with one of the kind's two phrases each."""
    n = len(QUESTION_FRAMES)
    held = [QUESTION_FRAMES[(2 * kind_index) % n].format(x=topics[0]),
            QUESTION_FRAMES[(2 * kind_index + 1) % n].format(x=topics[1])]  # fmt: skip
    framed = [frame.format(x=topic) for topic in topics for frame in QUESTION_FRAMES]
    return [q for q in dict.fromkeys(direct + framed) if q not in held] + held


IMAGE_QUESTIONS = {
    kind: _phrasings(direct, topics, i)
    for i, (kind, direct, topics) in enumerate([
        ("colour", ["What colour is the shape?", "Which colour is the shape?", "Which colour do you see?"],
         ("the colour of the shape", "the colour in the picture")),
        ("shape", ["What shape is this?", "Which shape do you see?", "What kind of shape is this?"],
         ("the kind of shape", "the shape in the picture")),
        ("count", ["How many shapes are there?", "How many shapes do you see?", "Count the shapes."],
         ("the number of shapes", "the count of shapes")),
        ("position", ["Where is the shape?", "On which side is the shape?", "Where is the shape placed?"],
         ("the position of the shape", "the side of the shape")),
    ])
}  # fmt: skip
VIDEO_QUESTIONS = {
    kind: _phrasings(direct, topics, i)
    for i, (kind, direct, topics) in enumerate([
        ("direction", ["Which way does the shape move?", "Where is the shape going?", "Which way is it moving?"],
         ("the direction of the shape", "the direction of motion")),
        ("colour", ["What colour is the moving shape?", "Which colour is the moving shape?"],
         ("the colour of the moving shape", "the colour in the video")),
        ("shape", ["What shape is moving?", "Which shape moves in the video?", "Name the moving shape."],
         ("the kind of moving shape", "the shape in the video")),
    ])
}  # fmt: skip
CAPTION_PROMPTS = {"image": ["Describe the image.", "What is in the picture?"],
                   "video": ["Describe the video.", "What happens in the video?"]}  # fmt: skip
# Stage-1 text rows that make the LLM say every sentence the later stages ask of it (captions, transcripts): the
# alignment stages keep the LLM frozen, so it must already be able to produce their words, as a pretrained LLM can.
SAY_PROMPTS = ["Say: {t}", "Repeat after me: {t}", "Please say this: {t}"]
LLM_SAY_FRACTION = 0.35
ASR_PROMPTS = ["Repeat what I said.", "Please repeat what I said.", "Transcribe what you heard.",
               "Can you repeat that?"]  # fmt: skip

_OBJECTS = {"banana": "yellow", "lemon": "yellow", "tomato": "red", "strawberry": "red", "grape": "purple",
            "plum": "purple", "leaf": "green", "frog": "green", "blueberry": "blue", "sapphire": "blue"}  # fmt: skip
_ZH_OBJECTS = {"香蕉": "yellow", "柠檬": "yellow", "西红柿": "red", "草莓": "red", "葡萄": "purple", "茄子": "purple",
               "树叶": "green", "青蛙": "green", "蓝莓": "blue", "大海": "blue"}  # fmt: skip
_OPPOSITES = [("left", "right"), ("up", "down"), ("top", "bottom"), ("big", "small"), ("hot", "cold"),
              ("day", "night"), ("fast", "slow"), ("open", "closed")]  # fmt: skip
_ZH_OPPOSITES = [("左", "右"), ("上", "下"), ("大", "小"), ("冷", "热"), ("白天", "黑夜"), ("快", "慢"), ("开", "关")]
_SIDES = {"triangle": "three", "square": "four", "diamond": "four"}
_ENGLISH_WORDS = {**{ZH_COLOURS[c]: c for c in COLOURS}, **{ZH_NUMBERS[i]: NUMBERS[i] for i in range(1, 11)}}


def _both_ways(pairs: list[tuple[str, str]]) -> list[tuple[dict[str, str], str]]:
    return [({"w": a}, b) for a, b in pairs] + [({"w": b}, a) for a, b in pairs]


# family -> (templates, [(fillers, answer)]); answers are single words so exact match is a fair score.
TEXT_FAMILIES: dict[str, tuple[list[str], list[tuple[dict[str, str], str]]]] = {
    "add": (["What is {a} plus {b}?", "How much is {a} plus {b}?", "Add {a} and {b}.",
             "What do you get when you add {a} and {b}?"],
            [({"a": NUMBERS[a], "b": NUMBERS[b]}, NUMBERS[a + b]) for a in range(6) for b in range(6) if a + b <= 10]),
    "object_colour": (["What colour is a {obj}?", "What is the colour of a {obj}?", "Tell me the colour of a {obj}.",
                       "Which colour does a {obj} have?"], [({"obj": o}, c) for o, c in _OBJECTS.items()]),
    "opposite": (["What is the opposite of {w}?", "Give me the opposite of {w}.", "Which word is the opposite of {w}?",
                  "What word means the opposite of {w}?"], _both_ways(_OPPOSITES)),
    "sides": (["How many sides does a {s} have?", "How many sides has a {s}?", "Count the sides of a {s}.",
               "What is the number of sides of a {s}?"], [({"s": s}, n) for s, n in _SIDES.items()]),
    "to_chinese": (["How do you say {w} in Chinese?", "What is {w} in Chinese?", "Translate {w} into Chinese.",
                    "What is the Chinese word for {w}?"], [({"w": e}, z) for z, e in _ENGLISH_WORDS.items()]),
    "zh_add": (["{a}加{b}等于几？", "{a}加{b}是多少？", "请计算{a}加{b}。", "{a}和{b}相加得多少？"],
               [({"a": ZH_NUMBERS[a], "b": ZH_NUMBERS[b]}, ZH_NUMBERS[a + b])
                for a in range(6) for b in range(6) if a + b <= 10]),
    "zh_object_colour": (["{obj}是什么颜色的？", "{obj}的颜色是什么？", "请说出{obj}的颜色。",
                          "{obj}通常是什么颜色？"],
                         [({"obj": o}, ZH_COLOURS[c]) for o, c in _ZH_OBJECTS.items()]),
    "zh_opposite": (["{w}的反义词是什么？", "请说出{w}的反义词。", "和{w}意思相反的词是什么？", "{w}的相反词是什么？"],
                    _both_ways(_ZH_OPPOSITES)),
    "zh_to_english": (["{w}用英语怎么说？", "{w}的英文是什么？", "把{w}翻译成英语。", "{w}翻译成英文是什么？"],
                      [({"w": z}, e) for z, e in _ENGLISH_WORDS.items()]),
}  # fmt: skip
ENGLISH_FAMILIES = [f for f in TEXT_FAMILIES if not f.startswith("zh_")]

# Background talk: statements about the speaker's day, never addressed to the assistant. Train and held-out splits
# take disjoint sentences (not templates) so held-out transcription still uses words seen in training.
_BACKGROUND_TEMPLATES = ["I will buy some {food} {time}.", "My {person} is coming home {time}.",
                         "We should water the {plant} {time}.", "The {food} is on the kitchen table.",
                         "I left my {thing} at the office.", "My {person} lost the {thing} {time}."]  # fmt: skip
_BACKGROUND_FILLERS = {"food": ["bread", "milk", "apples", "rice", "cheese"],
                       "time": ["later", "tomorrow", "tonight", "this evening", "on Sunday"],
                       "person": ["brother", "sister", "mother", "father", "friend"],
                       "plant": ["flowers", "garden", "roses", "tree"],
                       "thing": ["keys", "phone", "bag", "umbrella"]}  # fmt: skip

# (engine, voice, speed): espeak-ng speed is words a minute (`-s`), Piper's is a length scale (> 1 is slower).
# Many training speakers (espeak-ng accents x its voice variants `+f2`, `+m3`, ... at several speeds) so the audio
# encoder, trained from scratch, learns words rather than voices; the held-out accents are never heard in training.
TRAIN_VOICES = [("piper", "joe", 1.0), ("piper", "joe", 1.2), ("espeak", "en-us", 140), ("espeak", "en-us+f3", 170),
                ("espeak", "en-us+m3", 200), ("espeak", "en-us+m7", 130), ("espeak", "en-gb", 170),
                ("espeak", "en-gb+f2", 150), ("espeak", "en-gb-x-rp", 150), ("espeak", "en-gb-x-gbclan+m5", 160),
                ("espeak", "en-gb-x-gbcwmd", 180), ("espeak", "en-us-nyc+f4", 165)]  # fmt: skip
HELDOUT_VOICES = [("piper", "joe", 0.85), ("espeak", "en-gb-scotland", 185), ("espeak", "en-029", 160)]
SMALL_TRAIN_VOICES = [("piper", "joe", 1.0), ("espeak", "en-us", 140)]
SMALL_HELDOUT_VOICES = [("piper", "joe", 0.85), ("espeak", "en-gb-scotland", 185)]

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


def voice_key(voice: tuple[str, str, float]) -> str:
    engine, name, speed = voice
    return f"{engine}:{name}@{speed:g}"


class _PiperAtSpeed:
    """One loaded Piper voice read at a given length scale (loading the model costs seconds; share it)."""

    def __init__(self, base: Any, length_scale: float) -> None:
        self.base, self.length_scale = base, length_scale

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        chunks = list(self.base.voice.synthesize(text, syn_config=SynthesisConfig(length_scale=self.length_scale)))
        if not chunks:
            return np.zeros(0, dtype=np.float32), 22_050
        return np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32), int(chunks[0].sample_rate)


def _make_voice(voice: tuple[str, str, float], cache: dict[str, Any]) -> Any:
    engine, name, speed = voice
    if engine == "piper":
        if "piper" not in cache:
            cache["piper"] = make_tts("piper")
        return _PiperAtSpeed(cache["piper"], float(speed))
    if shutil.which("espeak-ng") is None:
        raise RuntimeError(
            f"vita-tiny's data uses the espeak-ng voice {name!r}, but the espeak-ng executable is not on PATH; "
            "install it (apt install espeak-ng)."
        )
    from modeling_vita import EspeakTTS

    return EspeakTTS(voice=name, speed=int(speed))


# ------------------------------------------------------------------------------------------------------ pictures


def _draw_shape(draw: Any, shape: str, cx: float, cy: float, size: float, fill: tuple[int, int, int]) -> None:
    h = size / 2
    if shape == "circle":
        draw.ellipse([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "square":
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)], fill=fill)
    else:
        raise ValueError(f"Unknown shape {shape!r}; expected one of {list(SHAPES)}.")


_POSITION_CENTRES = {"left": (14, 28), "right": (42, 28), "top": (28, 14), "bottom": (28, 42)}
_CELL_CENTRES = [(14, 14), (42, 14), (14, 42), (42, 42)]


def draw_shapes_image(colour: str, shape: str, count: int, position: str | None, rng: np.random.Generator) -> Any:
    """A 56 px PIL image of `count` same-coloured shapes on a light grey ground; one shape sits at `position`, several
    take distinct quadrants (so counting and position never conflict)."""
    from PIL import Image, ImageDraw

    if count not in (1, 2, 3, 4):
        raise ValueError(f"count={count}; expected 1, 2, 3 or 4.")
    grey = int(rng.integers(225, 256))
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (grey, grey, grey))
    draw = ImageDraw.Draw(image)
    # Shapes span one to two 14 px patches each way: a smaller shape inside one patch leaves the tiny vision tower
    # its colour but hardly its outline (a trained vita-tiny named shapes at chance level when they were 10-18 px).
    if count == 1:
        cx, cy = _POSITION_CENTRES[position]
        centres, size = [(cx, cy)], int(rng.integers(18, 25))
    else:
        cells = rng.permutation(4)[:count]
        centres, size = [_CELL_CENTRES[c] for c in cells], int(rng.integers(16, 22))
    for cx, cy in centres:
        jx, jy = rng.integers(-2, 3, 2)
        _draw_shape(draw, shape, cx + jx, cy + jy, size, COLOURS[colour])
    return image


def write_shapes_video(path: Path, colour: str, shape: str, direction: str, rng: np.random.Generator) -> None:
    """An 8-frame, 4 s, 56 px mpeg4 clip of one shape crossing the frame in `direction`."""
    import av
    from PIL import Image, ImageDraw

    size = int(rng.integers(18, 25))  # as a single shape in a picture
    lane = 28 + int(rng.integers(-8, 9))
    start, stop = 12 + int(rng.integers(0, 4)), 44 - int(rng.integers(0, 4))
    steps = np.linspace(start, stop, VIDEO_FRAMES)
    if direction in ("left", "up"):
        steps = steps[::-1]
    grey = int(rng.integers(225, 256))
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=VIDEO_FPS)
        stream.width, stream.height, stream.pix_fmt = IMAGE_SIZE, IMAGE_SIZE, "yuv420p"
        for step in steps:
            image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (grey, grey, grey))
            cx, cy = (step, lane) if direction in ("left", "right") else (lane, step)
            _draw_shape(ImageDraw.Draw(image), shape, cx, cy, size, COLOURS[colour])
            container.mux(stream.encode(av.VideoFrame.from_image(image)))
        container.mux(stream.encode())


def image_caption(meta: dict[str, Any]) -> str:
    """ "two red circles", "one blue square on the left"."""
    plural = "s" if meta["count"] > 1 else ""
    text = f"{NUMBERS[meta['count']]} {meta['colour']} {meta['shape']}{plural}"
    return text + " " + _position_phrase(meta["position"]) if meta["position"] else text


def video_caption(meta: dict[str, Any]) -> str:
    return f"a {meta['colour']} {meta['shape']} moving {meta['direction']}"


def _position_phrase(position: str) -> str:
    return f"on the {position}" if position in ("left", "right") else f"at the {position}"


# ---------------------------------------------------------------------------------------------------- rows


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


def _templates(templates: list[str], heldout: bool, n_heldout: int = 1) -> list[str]:
    """The held-out (last `n_heldout`) or the training phrasings of a list."""
    return templates[-n_heldout:] if heldout else templates[:-n_heldout]


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
        sentences = sorted({t.format(**dict(zip(_BACKGROUND_FILLERS, c))) for t in _BACKGROUND_TEMPLATES
                            for c in _combinations(t)})  # fmt: skip
        rng.shuffle(sentences)
        n_bg, n_q = self.sizes["background_sentences"], self.sizes["spoken_questions"]
        if heldout:
            n_bg, n_q = max(2, n_bg // 4), max(2, n_q // 4)
        cut = len(sentences) // 5  # the first fifth is the held-out pool
        background = sentences[:cut][:n_bg] if heldout else _covering(sentences[cut:], n_bg)
        questions = []
        for _ in range(n_q):
            family = ENGLISH_FAMILIES[rng.randrange(len(ENGLISH_FAMILIES))]
            templates, items = TEXT_FAMILIES[family]
            template = rng.choice(_templates(templates, heldout))
            fillers, answer = rng.choice(items)
            questions.append((template.format(**fillers), template, answer))
        image_q = [(t, kind) for kind, ts in IMAGE_QUESTIONS.items()
                   for t in _templates(ts, heldout, HELDOUT_PHRASINGS_PER_KIND)]  # fmt: skip
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
                engine_cache[key] = _make_voice(voice, engine_cache)
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
        template = self.rng.choice(_templates(templates, heldout))
        fillers, answer = self.rng.choice(items)
        return _row(rid, "text_qa", [template.format(**fillers)], TYPED + answer, phrasing=template)

    def _image_question(self, meta: dict[str, Any], heldout: bool) -> tuple[str, str]:
        kinds = [k for k in IMAGE_QUESTIONS if k != "position" or meta["count"] == 1]
        kind = self.rng.choice(kinds)
        answer = {"colour": meta["colour"], "shape": meta["shape"], "count": NUMBERS[meta["count"]],
                  "position": meta["position"]}[kind]  # fmt: skip
        return self.rng.choice(_templates(IMAGE_QUESTIONS[kind], heldout, HELDOUT_PHRASINGS_PER_KIND)), answer

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
        question = self.rng.choice(_templates(VIDEO_QUESTIONS[kind], heldout, HELDOUT_PHRASINGS_PER_KIND))
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
        prompt = self.rng.choice(_templates(ASR_PROMPTS, heldout))
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


def _combinations(template: str) -> list[tuple[str, ...]]:
    """Every filling of `template`, as tuples over all filler slots in `_BACKGROUND_FILLERS` order."""
    import itertools

    slots = list(_BACKGROUND_FILLERS)
    choices = [_BACKGROUND_FILLERS[s] if "{" + s + "}" in template else [""] for s in slots]
    return list(itertools.product(*choices))


def _covering(sentences: list[str], n: int) -> list[str]:
    """`n` of `sentences`, those bringing unseen words first, so the training talk spans the whole filler vocabulary
    that the held-out sentences draw from."""
    seen: set[str] = set()
    first, rest = [], []
    for sentence in sentences:
        words = set(sentence.lower().rstrip(".").split())
        (first if words - seen else rest).append(sentence)
        seen |= words
    return (first + rest)[:n]


def _select_voices(voices: list, engines: tuple[str, ...]) -> list:
    picked = [v for v in voices if v[0] in engines]
    if not picked:
        raise ValueError(
            f"tts_engines={list(engines)} leaves no voice; expected some of {sorted({v[0] for v in voices})}."
        )
    return picked


def data_version() -> str:
    """A digest of this module's source: a build made by other code is not reused (`python -m recipes.vita_tiny`)."""
    import hashlib

    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


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
    train_voices = _select_voices(SMALL_TRAIN_VOICES if small else TRAIN_VOICES, tuple(tts_engines))
    heldout_voices = _select_voices(SMALL_HELDOUT_VOICES if small else HELDOUT_VOICES, tuple(tts_engines))
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
