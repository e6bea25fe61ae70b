"""The voices of vita-tiny's speech: voice families (Piper, espeak-ng accents, festival speakers), the speakers drawn
from them for training and for the held-out split, their names in the data (`voice_key`), and making each one's TTS.

Design: the vita-tiny voices issue. A family is what a listener would call one kind of voice: Piper's bundled voice,
one espeak-ng accent (with any of its variants such as `+f3` or `+klatt2`), one festival speaker. Whole families are
held out (`HELDOUT_FAMILIES`), so the held-out split measures voices whose family training never heard; within the
training families a speaker is a family member at a speed, with Piper's noise scales, espeak-ng's variants, and with
probability `CONVERTED_SHARE` a voice conversion (pitch and formants by resampling, tempo by a phase vocoder;
`recipes.speech_augment.change_voice`). `recipes/vita_tiny/data.py` speaks its texts with these voices and records
`voice_key` and `voice_family` in each row.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from modeling_vita.duplex_speech_output import make_tts


class Voice(NamedTuple):
    """One speaker: an engine's voice at a speed (espeak-ng: words a minute; Piper: length scale, > 1 is slower;
    festival: duration stretch, > 1 is slower), Piper's noise scale, and a conversion (pitch and tempo factors)."""

    engine: str
    name: str
    speed: float
    noise_scale: float | None = None
    pitch: float = 1.0
    tempo: float = 1.0


ESPEAK_TRAIN_ACCENTS = ("en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
ESPEAK_HELDOUT_ACCENTS = ("en-gb-scotland", "en-029")
# espeak-ng's variants that sound like a person (no robots, no whisper); "" is the accent's own voice. Every fourth
# one is kept for the held-out families only.
ESPEAK_VARIANTS = ("", "m1", "f1", "m2", "f2", "m3", "f3", "m4", "f4", "m5", "f5", "m6", "m7", "m8", "klatt",
                   "klatt2", "klatt3", "klatt4", "adam", "Alex", "Alicia", "Andy", "Annie", "aunty", "belinda",
                   "benjamin", "caleb", "david", "ed", "edward", "iven", "john", "linda", "max", "Michael", "paul",
                   "rob", "robert", "steph", "travis", "victor", "zac", "grandma", "grandpa", "norbert",
                   "quincy")  # fmt: skip
ESPEAK_HELDOUT_VARIANTS = ESPEAK_VARIANTS[3::4]
ESPEAK_SPEEDS = (120, 200)  # words a minute, drawn uniformly
FESTIVAL_TRAIN_VOICES = ("kal_diphone", "cmu_us_slt_arctic_hts")
FESTIVAL_HELDOUT_VOICES = ("ked_diphone",)
FESTIVAL_SPEAKERS = {"kal_diphone": "kal", "ked_diphone": "ked", "cmu_us_slt_arctic_hts": "slt"}  # voice -> family
FESTIVAL_STRETCH = (0.85, 1.25)
PIPER_LENGTH_SCALES = (0.75, 0.95, 1.0, 1.1, 1.25)  # 0.85 stays unheard: the previous held-out split's speed
PIPER_NOISE_SCALES = (0.4, 0.667, 0.9)
CONVERTED_SHARE = 0.3
CONVERT_PITCH = (0.82, 1.22)
CONVERT_TEMPO = (0.85, 1.15)
HELDOUT_FAMILIES = tuple(f"espeak-{a}" for a in ESPEAK_HELDOUT_ACCENTS) + ("festival-ked",)

# The previous held-out split's speakers (the checkpoint before the voices issue was measured on these).
PREVIOUS_HELDOUT_VOICES = [Voice("piper", "joe", 0.85), Voice("espeak", "en-gb-scotland", 185),
                           Voice("espeak", "en-029", 160)]  # fmt: skip
SMALL_TRAIN_VOICES = [Voice("piper", "joe", 1.0), Voice("espeak", "en-us", 140)]
SMALL_HELDOUT_VOICES = [Voice("piper", "joe", 0.85), Voice("espeak", "en-gb-scotland", 185)]


def voice_key(voice: tuple) -> str:
    """`engine:name@speed`, then `~n<noise>` and `~p<pitch>t<tempo>` where they are set."""
    voice = Voice(*voice)
    key = f"{voice.engine}:{voice.name}@{voice.speed:g}"
    if voice.noise_scale is not None:
        key += f"~n{voice.noise_scale:g}"
    if (voice.pitch, voice.tempo) != (1.0, 1.0):
        key += f"~p{voice.pitch:g}t{voice.tempo:g}"
    return key


def voice_family(voice: tuple) -> str:
    """The family a voice belongs to: `piper`, `espeak-<accent>` or `festival-<speaker>`."""
    voice = Voice(*voice)
    if voice.engine == "espeak":
        return f"espeak-{voice.name.split('+')[0]}"
    if voice.engine == "festival":
        return f"festival-{FESTIVAL_SPEAKERS.get(voice.name, voice.name)}"
    return voice.engine


def family_of_key(key: str) -> str:
    """`voice_family` of a row's `voice` column (a `voice_key`); "" for rows without speech."""
    if not key:
        return ""
    engine, rest = key.split(":", 1)
    return voice_family(Voice(engine, rest.split("@")[0], 1.0))


def draw_voices(heldout: bool, count: int, seed: int) -> list[Voice]:
    """`count` speakers of the training families, or of the held-out families: families in turn (Piper and the
    festival speakers less often than the many espeak-ng accents), each member at a random speed and variant, a
    share of them converted."""
    rng = random.Random(seed)
    if heldout:
        espeak, festival, variants = ESPEAK_HELDOUT_ACCENTS, FESTIVAL_HELDOUT_VOICES, ESPEAK_VARIANTS
        families = [("espeak", a) for a in espeak] + [("festival", f) for f in festival]
    else:
        espeak, festival = ESPEAK_TRAIN_ACCENTS, FESTIVAL_TRAIN_VOICES
        variants = tuple(v for v in ESPEAK_VARIANTS if v not in ESPEAK_HELDOUT_VARIANTS)
        families = [("piper", "joe")] * 2 + [("espeak", a) for a in espeak] + [("festival", f) for f in festival]
    voices = []
    for index in range(count):
        engine, name = families[index % len(families)]
        if engine == "piper":
            voice = Voice("piper", name, rng.choice(PIPER_LENGTH_SCALES), rng.choice(PIPER_NOISE_SCALES))
        elif engine == "espeak":
            variant = rng.choice(variants)
            voice = Voice("espeak", f"{name}+{variant}" if variant else name, rng.randrange(*ESPEAK_SPEEDS, 5))
        else:
            voice = Voice("festival", name, round(rng.uniform(*FESTIVAL_STRETCH), 2))
        if rng.random() < CONVERTED_SHARE:
            pitch, tempo = round(rng.uniform(*CONVERT_PITCH), 2), round(rng.uniform(*CONVERT_TEMPO), 2)
            voice = voice._replace(pitch=pitch, tempo=tempo)
        voices.append(voice)
    return list(dict.fromkeys(voices))


class _PiperAtSpeed:
    """One loaded Piper voice read at a given length scale and noise scale (loading the model costs seconds; share
    it). The voices sharing it share `lock` too: Piper's phonemizer keeps global state, so one clip at a time."""

    def __init__(self, base: Any, lock: threading.Lock, length_scale: float, noise_scale: float | None = None) -> None:
        self.base, self.lock, self.length_scale, self.noise_scale = base, lock, length_scale, noise_scale

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        from piper import SynthesisConfig

        config = SynthesisConfig(length_scale=self.length_scale, noise_scale=self.noise_scale)
        with self.lock:
            chunks = list(self.base.voice.synthesize(text, syn_config=config))
        if not chunks:
            return np.zeros(0, dtype=np.float32), 22_050
        return np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32), int(chunks[0].sample_rate)


class FestivalTTS:
    """Text-to-speech through festival's `text2wave` (Debian: `festival` and its `festvox-*` voices)."""

    def __init__(self, voice: str, stretch: float = 1.0) -> None:
        path = shutil.which("text2wave")
        if path is None:
            raise RuntimeError(
                f"vita-tiny's data uses the festival voice {voice!r}, but text2wave is not on PATH; install festival "
                "and its voices (apt install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)."
            )
        setup = f"(begin (voice_{voice}) (Parameter.set 'Duration_Stretch {stretch}))"
        self.voice, self.command = voice, [path, "-eval", setup]

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        import soundfile

        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "speech.wav"
            done = subprocess.run([*self.command, "-o", str(out)], input=text.encode(), capture_output=True)
            if done.returncode != 0 or not out.is_file():
                raise RuntimeError(
                    f"festival could not speak with voice {self.voice!r} (exit {done.returncode}): "
                    f"{done.stderr.decode(errors='replace').strip()[-300:]}; is its festvox package installed?"
                )
            samples, rate = soundfile.read(str(out), dtype="float32")
        return samples, int(rate)


class _ConvertedVoice:
    """Another voice's speech with its pitch and formants moved and its tempo changed."""

    def __init__(self, base: Any, pitch: float, tempo: float) -> None:
        self.base, self.pitch, self.tempo = base, pitch, tempo

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        from recipes.speech_augment import change_voice

        samples, rate = self.base.synthesize(text)
        return change_voice(samples, rate, self.pitch, self.tempo), rate


def make_voice(voice: tuple, cache: dict[str, Any]) -> Any:
    """The TTS engine of `voice` (a `Voice` or an `(engine, name, speed)` tuple); `cache` shares loaded models."""
    voice = Voice(*voice)
    if voice.engine == "piper":
        if "piper" not in cache:
            cache["piper"], cache["piper_lock"] = make_tts("piper"), threading.Lock()
        engine: Any = _PiperAtSpeed(cache["piper"], cache["piper_lock"], float(voice.speed), voice.noise_scale)
    elif voice.engine == "festival":
        engine = FestivalTTS(voice.name, float(voice.speed))
    elif voice.engine == "espeak":
        if shutil.which("espeak-ng") is None:
            raise RuntimeError(
                f"vita-tiny's data uses the espeak-ng voice {voice.name!r}, but the espeak-ng executable is not on "
                "PATH; install it (apt install espeak-ng)."
            )
        from modeling_vita import EspeakTTS

        engine = EspeakTTS(voice=voice.name, speed=int(voice.speed))
    else:
        raise ValueError(f"Unknown TTS engine {voice.engine!r} in {voice}; expected 'piper', 'espeak' or 'festival'.")
    if (voice.pitch, voice.tempo) != (1.0, 1.0):
        engine = _ConvertedVoice(engine, voice.pitch, voice.tempo)
    return engine


def select_voices(voices: list, engines: tuple[str, ...]) -> list:
    picked = [v for v in voices if v[0] in engines]
    if not picked:
        raise ValueError(
            f"tts_engines={list(engines)} leaves no voice; expected some of {sorted({v[0] for v in voices})}."
        )
    return picked
