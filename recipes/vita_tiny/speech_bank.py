"""The spoken clips of vita-tiny's data: which texts each bank speaks, by which voices, through which rooms and
microphones; written once, then drawn by the rows of `data.py`.

Three banks:
- `train`: the training families' voices (`voices.draw_voices`); spoken questions asked plainly and in the training
  ways of asking (`phrasings.styled_question`, terse picture questions), statements and every kind of background talk
  (`background_talk.py`); each clip through `recipes.speech_augment.Augmenter` (rooms, microphones, codecs, noise),
  its clean version kept beside it (`Clip.clean`) for the audio encoder's CTC pretraining;
- `heldout`: the held-out families, held-out phrasings, ways of asking and background sentences, through
  augmentations drawn from their own stream;
- `previous`: the held-out split the checkpoint before the voices issue was measured on (its three voices, its
  held-out phrasings and statements, white noise at 5-30 dB), so a new checkpoint can be compared on it.

A text with "|" is spoken in two parts with a pause between them; its transcript (`phrasings.spoken_words`) drops the
mark. Clips are synthesised by a few threads (the engines wait on subprocesses and ONNX), then resampled, augmented
and written in order, so a build is reproducible.
"""

from __future__ import annotations

import logging
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from tqdm import tqdm

from processing_vita.feature_extraction_vita import resample_waveform
from recipes.speech_data import write_speech
from recipes.vita_tiny.background_talk import kind_sentences
from recipes.vita_tiny.phrasings import (
    ASK_STYLES,
    ENGLISH_FAMILIES,
    HELDOUT_PHRASINGS_PER_KIND,
    IMAGE_QUESTIONS,
    TERSE_IMAGE_QUESTIONS,
    TEXT_FAMILIES,
    background_sentences,
    covering_sentences,
    spoken_words,
    styled_question,
    templates_for,
)
from recipes.vita_tiny.voices import make_voice, voice_key

logger = logging.getLogger(__name__)

BANKS = ("train", "heldout", "previous")
SPEECH_SAMPLE_RATE = 16_000  # the feature extractor's rate: training reads the clips without resampling
STYLED_SHARE = 0.35  # of the spoken questions, asked in a way other than the plain question
STYLED_IMAGE_QUESTIONS_PER_KIND = 8  # training; the held-out bank a quarter
PREVIOUS_SNR_DB = (5.0, 30.0)
PAUSE_SECS = (0.35, 0.8)
# The share of the new background talk of each kind (the rest of `background_talk`, after the backchannels).
TALK_SHARES = {"addressed": 0.6, "media": 0.4}
SYNTHESIS_THREADS = 3


class Clip(NamedTuple):
    path: str  # under the media root
    voice: str  # voice_key
    text: str  # the words spoken
    clean: str = ""  # the same speech before the rooms, microphones and noise (training clips only)


class _Pausing:
    """Speaks "first part | second part" with a pause of `PAUSE_SECS` between the parts."""

    def __init__(self, engine: Any, seed: str) -> None:
        self.engine, self.seed = engine, seed

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        parts = [p.strip() for p in text.split("|") if p.strip()]
        pieces, rate = [], 16_000
        for index, part in enumerate(parts):
            samples, rate = self.engine.synthesize(part)
            if index:
                pause = random.Random(f"{self.seed}-{text}").uniform(*PAUSE_SECS)
                pieces.append(np.zeros(int(pause * rate), dtype=np.float32))
            pieces.append(np.asarray(samples, dtype=np.float32))
        return np.concatenate(pieces), rate


class _Spoken:
    """Already synthesised speech, handed to `write_speech` as if it were an engine."""

    def __init__(self, samples: np.ndarray, rate: int) -> None:
        self.samples, self.rate = samples, rate

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        return self.samples, self.rate


class SpeechBanks:
    """The texts and clips of each bank; `build(bank)` writes a bank's clips under `media/speech/<bank>/`."""

    def __init__(self, media: Path, seed: int, sizes: dict[str, int], voices: dict[str, list], rooms: int) -> None:
        self.media, self.seed, self.sizes, self.voices, self.rooms = media, seed, sizes, voices, rooms
        self.texts: dict[str, dict[str, list]] = {}
        self.clips: dict[str, dict[str, list[Clip]]] = {}
        # Per bank, what the rows draw from (kept in `texts` order, so the draws do not depend on this cache):
        # image questions and background sentences by kind, and every text spoken, sorted.
        self.image_by_kind: dict[str, dict[str, list[tuple]]] = {}
        self.background_by_kind: dict[str, dict[str, list[str]]] = {}
        self.spoken_texts: dict[str, list[str]] = {}
        self.n_clips, self.seconds = 0, 0.0

    # -- what each bank says -----------------------------------------------------------------------------------------
    def bank_texts(self, bank: str) -> dict[str, list]:
        """Texts by kind: `image` (text, question kind, style, template), `text` (text, template, answer, style),
        `background` (text, kind)."""
        heldout = bank != "train"
        rng = random.Random(self.seed + 1)  # the same draw for every bank, so their statement shares are disjoint
        sentences = background_sentences()
        rng.shuffle(sentences)
        n_bg, n_q, n_talk = (self.sizes[k] for k in ("background_sentences", "spoken_questions", "background_talk"))
        if heldout:
            n_bg, n_q, n_talk = max(2, n_bg // 4), max(2, n_q // 4), max(3, n_talk // 4)
        cut = len(sentences) // 5  # the first fifth is the held-out pool
        statements = sentences[:cut][:n_bg] if heldout else covering_sentences(sentences[cut:], n_bg)
        questions = []
        for _ in range(n_q):
            family = ENGLISH_FAMILIES[rng.randrange(len(ENGLISH_FAMILIES))]
            templates, items = TEXT_FAMILIES[family]
            template = rng.choice(templates_for(templates, heldout))
            fillers, answer = rng.choice(items)
            questions.append((template.format(**fillers), template, answer, "plain"))
        image_q = [(t, kind, "plain", t) for kind, ts in IMAGE_QUESTIONS.items()
                   for t in templates_for(ts, heldout, HELDOUT_PHRASINGS_PER_KIND)]  # fmt: skip
        background = [(s, "statement") for s in statements]
        if bank == "previous":  # the previous held-out split: plain questions and statements only
            return {"image": image_q, "text": questions, "background": background}

        style_rng = random.Random(f"{self.seed}-styles-{bank}")
        questions = [
            (styled_question(t, style_rng.choice(ASK_STYLES), style_rng, heldout), tpl, a, "styled")
            if style_rng.random() < STYLED_SHARE else (t, tpl, a, s)
            for t, tpl, a, s in questions
        ]  # fmt: skip
        per_kind = STYLED_IMAGE_QUESTIONS_PER_KIND // (4 if heldout else 1)
        for kind, templates in IMAGE_QUESTIONS.items():
            plain = templates_for(templates, heldout, HELDOUT_PHRASINGS_PER_KIND)
            for _ in range(per_kind):
                template = style_rng.choice(plain)
                text = styled_question(template, style_rng.choice(ASK_STYLES), style_rng, heldout)
                image_q.append((text, kind, "styled", template))
            image_q += [(t, kind, "terse", t) for t in templates_for(TERSE_IMAGE_QUESTIONS[kind], heldout)]
        image_q = list({t[0]: t for t in image_q}.values())
        backchannels = kind_sentences("backchannel", heldout, n_talk, self.seed)
        background += [(s, "backchannel") for s in backchannels]
        rest = max(0, n_talk - len(backchannels))
        for kind, share in TALK_SHARES.items():
            background += [(s, kind) for s in kind_sentences(kind, heldout, round(rest * share), self.seed)]
        return {"image": image_q, "text": questions, "background": background}

    # -- speaking it -------------------------------------------------------------------------------------------------
    def _augmenter(self, bank: str) -> Any:
        if bank == "previous":
            return None
        from recipes.speech_augment import Augmenter, AugmentParams

        # Milder than `AugmentParams()`: with every corruption that likely, a first run's encoder (trained from
        # scratch, ~2 M parameters) read held-out speech with a CER of 0.70 and the model's WER went to 0.93.
        params = AugmentParams(reverb=0.35, rt60_secs=(0.2, 0.7), band_limit=0.25, codec=0.2, noise=0.5,
                               babble_share=0.3)  # fmt: skip
        return Augmenter(params, seed=self.seed + {"train": 11, "heldout": 12}[bank], rooms=self.rooms)

    def _engine(self, voice: Any, cache: dict[str, Any]) -> Any:
        key = voice_key(voice)
        if key not in cache:
            cache[key] = _Pausing(make_voice(voice, cache), f"{self.seed}-{key}")
        return cache[key]

    def build(self, bank: str, cache: dict[str, Any]) -> None:
        texts = self.bank_texts(bank)
        self.texts[bank] = texts
        self.image_by_kind[bank], self.background_by_kind[bank] = {}, {}
        for entry in texts["image"]:
            self.image_by_kind[bank].setdefault(entry[1], []).append(entry)
        for text, kind in texts["background"]:
            self.background_by_kind[bank].setdefault(kind, []).append(text)
        all_texts = [t[0] for kind in ("image", "text", "background") for t in texts[kind]]
        voices = list(self.voices[bank])
        random.Random(self.seed + 2).shuffle(voices)
        per_text = min(self.sizes["voices_per_text"], len(voices))
        jobs = [(text, voices[(i + j) % len(voices)]) for i, text in enumerate(all_texts) for j in range(per_text)]
        engines = [self._engine(voice, cache) for _, voice in jobs]
        augmenter = self._augmenter(bank)
        noise_rng = np.random.default_rng(self.seed + 4)
        snr_rng = random.Random(self.seed + 6)
        clips: dict[str, list[Clip]] = {}
        batch = 64
        with ThreadPoolExecutor(SYNTHESIS_THREADS) as pool, tqdm(total=len(jobs), desc=f"speech ({bank})") as bar:
            for start in range(0, len(jobs), batch):
                chunk = list(range(start, min(start + batch, len(jobs))))
                spoken = list(pool.map(lambda i: engines[i].synthesize(jobs[i][0]), chunk))
                for index, (samples, rate) in zip(chunk, spoken):
                    text, voice = jobs[index]
                    key = voice_key(voice)
                    relative = f"speech/{bank}/{key.replace(':', '_').replace('@', '_')}/{index:05d}.wav"
                    snr = snr_rng.uniform(*PREVIOUS_SNR_DB) if augmenter is None else None
                    # Once at the stored rate, for both the clip and its clean copy.
                    speech = _Spoken(_resampled(samples, rate), SPEECH_SAMPLE_RATE)
                    self.seconds += write_speech(speech, text, self.media / relative, snr, noise_rng,
                                                 augmenter=augmenter)  # fmt: skip
                    clean = ""
                    if bank == "train":  # the encoder's CTC pretraining hears both (`pretrain_audio.py`)
                        clean = relative.replace("speech/train/", "speech/train_clean/", 1)
                        write_speech(speech, text, self.media / clean)
                    self.n_clips += 1
                    clips.setdefault(text, []).append(Clip(relative, key, spoken_words(text), clean))
                    bar.update()
        self.clips[bank] = clips
        self.spoken_texts[bank] = sorted(clips)

    def clip(self, text: str, bank: str, rng: random.Random) -> Clip:
        return rng.choice(self.clips[bank][text])


def _resampled(samples: np.ndarray, rate: int) -> np.ndarray:
    import torch

    samples = np.asarray(samples, dtype=np.float32)
    if rate == SPEECH_SAMPLE_RATE:
        return samples
    return resample_waveform(torch.from_numpy(samples), rate, SPEECH_SAMPLE_RATE).numpy()
