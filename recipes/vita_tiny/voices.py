"""The voices of vita-tiny's speech: the training and held-out speakers (Piper and espeak-ng voices at several
speeds), their names in the data (`voice_key`), and making each one's TTS engine.

Design: the vita-tiny issue (spoken questions and background talk from Piper and espeak-ng voices, held-out voices
and speeds). `recipes/vita_tiny/data.py` speaks its texts with these voices (`write_speech` of
`recipes/speech_data.py`) and records `voice_key` in each row.
"""

from __future__ import annotations

import shutil
from typing import Any

import numpy as np

from modeling_vita.duplex_speech_output import make_tts

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


def make_voice(voice: tuple[str, str, float], cache: dict[str, Any]) -> Any:
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


def select_voices(voices: list, engines: tuple[str, ...]) -> list:
    picked = [v for v in voices if v[0] in engines]
    if not picked:
        raise ValueError(
            f"tts_engines={list(engines)} leaves no voice; expected some of {sorted({v[0] for v in voices})}."
        )
    return picked
