"""Tests of vita-tiny's speakers and what they say: voice families and the held-out ones, festival, voice conversion
(`recipes.speech_augment.change_voice`), the kinds of background talk and the ways of asking."""

import random
import shutil

import numpy as np
import pytest

from recipes.speech_augment import change_voice
from recipes.vita_tiny.background_talk import BACKCHANNELS, BACKGROUND_KINDS, kind_sentences
from recipes.vita_tiny.phrasings import (
    ASK_PREFIXES,
    HELDOUT_ASK_STYLES,
    background_sentences,
    spoken_words,
    styled_question,
)
from recipes.vita_tiny.speech_bank import _Pausing
from recipes.vita_tiny.voices import (
    ESPEAK_HELDOUT_VARIANTS,
    HELDOUT_FAMILIES,
    PREVIOUS_HELDOUT_VOICES,
    FestivalTTS,
    Voice,
    draw_voices,
    family_of_key,
    voice_family,
    voice_key,
)


def _pitch(audio: np.ndarray, rate: int) -> float:
    """The strongest frequency of a clip, by its spectrum's peak."""
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


def test_heldout_families_are_never_drawn_for_training():
    train = draw_voices(False, 64, seed=0)
    heldout = draw_voices(True, 24, seed=0)
    train_families = {voice_family(v) for v in train}
    assert len(train_families) >= 8 and not train_families & set(HELDOUT_FAMILIES)
    assert {voice_family(v) for v in heldout} == set(HELDOUT_FAMILIES)
    # espeak-ng variants kept for the held-out families are never heard in training either.
    train_variants = {v.name.split("+")[1] for v in train if v.engine == "espeak" and "+" in v.name}
    assert train_variants and not train_variants & set(ESPEAK_HELDOUT_VARIANTS)
    # Some speakers are converted, most are not; a draw is reproducible and its keys are distinct.
    converted = [v for v in train if (v.pitch, v.tempo) != (1.0, 1.0)]
    assert 0 < len(converted) < len(train)
    assert draw_voices(False, 64, seed=0) == train
    assert len({voice_key(v) for v in train}) == len(train)
    # The previous held-out voices' speeds stay unheard.
    assert not {voice_key(v) for v in PREVIOUS_HELDOUT_VOICES} & {voice_key(v) for v in train}


def test_voice_keys_name_their_family():
    voice = Voice("espeak", "en-gb-scotland+klatt2", 150, None, 1.1, 0.9)
    assert voice_key(voice) == "espeak:en-gb-scotland+klatt2@150~p1.1t0.9"
    assert family_of_key(voice_key(voice)) == "espeak-en-gb-scotland" == voice_family(voice)
    assert voice_key(("piper", "joe", 0.85)) == "piper:joe@0.85"  # the old three-field voices keep their keys
    assert family_of_key("festival:cmu_us_slt_arctic_hts@1.1") == "festival-slt"
    assert family_of_key("festival:ked_diphone@0.9~p1.2t1") == "festival-ked"
    assert family_of_key("") == ""


def test_change_voice_moves_pitch_and_sets_tempo():
    rate = 16_000
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    higher = change_voice(tone, rate, pitch=1.2, tempo=1.0)
    assert abs(len(higher) / len(tone) - 1.0) < 0.05  # the same pace
    assert abs(_pitch(higher, rate) - 240) < 6
    slower = change_voice(tone, rate, pitch=1.0, tempo=0.8)
    assert abs(len(slower) / len(tone) - 1.25) < 0.05 and abs(_pitch(slower, rate) - 200) < 6
    lower_faster = change_voice(tone, rate, pitch=0.85, tempo=1.15)
    assert abs(len(lower_faster) / len(tone) - 1 / 1.15) < 0.05 and abs(_pitch(lower_faster, rate) - 170) < 6
    assert np.abs(higher).max() <= 1.0
    with pytest.raises(ValueError, match="pitch and tempo factors"):
        change_voice(tone, rate, pitch=3.0)


@pytest.mark.skipif(shutil.which("text2wave") is None, reason="festival is not installed (apt install festival)")
def test_festival_speaks_and_stretches():
    normal, rate = FestivalTTS("kal_diphone").synthesize("Where are my keys?")
    slow, _ = FestivalTTS("kal_diphone", stretch=1.3).synthesize("Where are my keys?")
    assert rate == 16_000 and len(normal) / rate > 0.5 and float(np.sqrt(np.mean(normal**2))) > 0.01
    assert len(slow) > 1.15 * len(normal)
    with pytest.raises(RuntimeError, match="festvox"):
        FestivalTTS("no_such_voice").synthesize("hello")


def test_background_kinds_split_their_sentences_between_training_and_heldout():
    seen = set(background_sentences())  # the statements, a kind of their own
    for kind in BACKGROUND_KINDS:
        train = kind_sentences(kind, heldout=False, count=500, seed=0)
        heldout = kind_sentences(kind, heldout=True, count=500, seed=0)
        assert train and heldout and not set(train) & set(heldout), kind
        assert kind_sentences(kind, heldout=False, count=500, seed=0) == train
        assert not seen & set(train + heldout), kind  # no sentence belongs to two kinds
        seen |= set(train + heldout)
    assert set(BACKCHANNELS) == set(kind_sentences("backchannel", False, 99, 0)) | set(
        kind_sentences("backchannel", True, 99, 0)
    )
    with pytest.raises(ValueError, match="Unknown background kind"):
        kind_sentences("gossip", False, 3, 0)


def test_ways_of_asking_keep_the_question_and_hold_out_their_own_styles():
    rng = random.Random(0)
    question = "What colour is the shape?"
    train_prefixes = {styled_question(question, "prefix", rng, heldout=False).split(",")[0] for _ in range(200)}
    heldout_prefixes = {styled_question(question, "prefix", rng, heldout=True).split(",")[0] for _ in range(200)}
    assert heldout_prefixes == {p.split(",")[0] for p in ASK_PREFIXES[-HELDOUT_ASK_STYLES:]}
    assert not train_prefixes & heldout_prefixes
    paused = styled_question(question, "pause", rng, heldout=False)
    assert paused.count("|") == 1 and spoken_words(paused) == question
    assert styled_question(question, "suffix", rng, heldout=False).startswith(question)


def test_a_pause_mark_is_spoken_as_silence():
    class Tone:
        def synthesize(self, text):
            return np.full(8000, 0.3, dtype=np.float32), 16_000

    audio, rate = _Pausing(Tone(), "seed").synthesize("What colour is | the shape?")
    gap = np.flatnonzero(audio == 0.0)
    assert len(audio) > 16_000 and 0.35 * rate <= len(gap) <= 0.8 * rate
    assert gap[0] == 8000 and np.all(np.diff(gap) == 1)  # one silence, between the two parts
