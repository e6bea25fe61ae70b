"""The training-speech augmentations (`recipes/speech_augment.py`): each does what it says, measured on the signal."""

import numpy as np
import pytest
import soundfile

from recipes.speech_augment import (
    Augmenter,
    AugmentParams,
    add_at_snr,
    augment,
    babble_noise,
    band_limit,
    codec_round_trip,
    coloured_noise,
    convolve_room,
    simulate_room,
)
from recipes.speech_data import build_negatives

SR = 16_000


def voiced(secs=1.5, seed=0):
    """A speech-like test signal: a 150 Hz buzz with harmonics, switched on and off at syllable rate."""
    t = np.arange(int(secs * SR)) / SR
    buzz = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 20))
    envelope = (np.sin(2 * np.pi * 4 * t) > 0).astype(np.float64)
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return (0.1 * buzz * envelope + noise).astype(np.float32)


def band_energy(audio, low, high):
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    frequencies = np.fft.rfftfreq(len(audio), 1 / SR)
    return spectrum[(frequencies >= low) & (frequencies < high)].sum() / spectrum.sum()


def test_a_room_adds_a_reverberant_tail_and_keeps_length_and_level():
    dry = voiced()
    rir = simulate_room(SR, 0.8, np.random.default_rng(0))
    wet = convolve_room(dry, rir)
    assert len(wet) == len(dry) and wet.dtype == np.float32
    assert np.sqrt(np.mean(wet**2)) == pytest.approx(np.sqrt(np.mean(dry**2)), rel=1e-3)
    # The gaps between syllables are no longer silent: the room's tail fills them.
    gaps = np.sin(2 * np.pi * 4 * np.arange(len(dry)) / SR) <= 0
    assert np.mean(np.abs(wet[gaps])) > 3 * np.mean(np.abs(dry[gaps]))
    drier = convolve_room(dry, simulate_room(SR, 0.2, np.random.default_rng(0)))
    assert np.mean(np.abs(drier[gaps])) < np.mean(np.abs(wet[gaps]))  # a shorter rt60 leaves less tail


def test_a_telephone_line_removes_low_and_high_frequencies():
    clip = voiced() + coloured_noise(int(1.5 * SR), "white", np.random.default_rng(1)) * 0.05
    phone = band_limit(clip, SR, "telephone")
    assert band_energy(phone, 4500, 8000) < 0.01 * band_energy(clip, 4500, 8000)
    assert band_energy(phone, 0, 150) < 0.05 * band_energy(clip, 0, 150)
    with pytest.raises(ValueError, match="kind must be one of"):
        band_limit(clip, SR, "radio")


@pytest.mark.parametrize("codec", ["opus", "mp3"])
def test_a_codec_round_trip_changes_the_samples_but_keeps_them_aligned(codec):
    clip = voiced()
    out = codec_round_trip(clip, SR, codec, 16)
    assert len(out) == len(clip)
    assert not np.allclose(out, clip, atol=1e-3)  # lossy
    assert np.corrcoef(out, clip)[0, 1] > 0.8  # and aligned (the encoder's delay removed)


def test_noise_is_added_at_the_asked_snr():
    clip = voiced()
    rng = np.random.default_rng(2)
    for colour in ("white", "pink", "brown"):
        noise = coloured_noise(len(clip), colour, rng)
        mixed = add_at_snr(clip, noise, 5.0)
        measured = 10 * np.log10(
            np.mean(clip.astype(np.float64) ** 2) / np.mean((mixed - clip).astype(np.float64) ** 2)
        )
        assert measured == pytest.approx(5.0, abs=0.05)
    assert band_energy(coloured_noise(SR, "brown", rng), 0, 500) > band_energy(
        coloured_noise(SR, "white", rng), 0, 500
    )
    babble = babble_noise([voiced(seed=s) for s in range(3)], len(clip), rng)
    assert len(babble) == len(clip) and np.sqrt(np.mean(babble**2)) == pytest.approx(1.0, rel=1e-3)


def test_augment_is_reproducible_bounded_and_reports_what_it_did():
    clip = voiced()
    params = AugmentParams(reverb=1.0, band_limit=1.0, codec=1.0, clipping=1.0, noise=1.0)
    rooms = [simulate_room(SR, 0.5, np.random.default_rng(0))]
    a, applied = augment(clip, SR, np.random.default_rng(3), params, babble=[voiced(seed=9)], rooms=rooms)
    b, again = augment(clip, SR, np.random.default_rng(3), params, babble=[voiced(seed=9)], rooms=rooms)
    assert np.array_equal(a, b) and applied == again
    assert len(applied) == 5 and applied[0] == "room 0" and "clipped" in applied[1]
    assert len(a) == len(clip) and np.max(np.abs(a)) <= 1.0
    plain = AugmentParams(reverb=0.0, gain_db=(0.0, 0.0), band_limit=0.0, codec=0.0, clipping=0.0, noise=0.0)
    untouched, none = augment(clip, SR, np.random.default_rng(3), plain)
    assert none == [] and np.allclose(untouched, clip)
    with pytest.raises(ValueError, match="non-empty finite mono clip, found NaN"):
        augment(np.full(100, np.nan, np.float32), SR, np.random.default_rng(0))
    with pytest.raises(ValueError, match="reverb is a probability in \\[0, 1\\], found 1.5"):
        AugmentParams(reverb=1.5)


class FixedTTS:
    def synthesize(self, text):
        return voiced(1.0, seed=len(text)), SR


def test_the_data_tools_write_augmented_speech(tmp_path):
    rows = [
        {
            "id": "a",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [{"type": "text", "text": "<3>The red circle is on the left side."}]},
            ],
            "images": [],
            "videos": [],
            "audios": [],
            "end_tag": True,
        }
    ]
    augmenter = Augmenter(AugmentParams(reverb=1.0, noise=1.0), seed=0, rooms=2)
    negatives = build_negatives(rows, tmp_path, FixedTTS(), count=3, augmenter=augmenter)
    assert len(negatives) == 3 and len(augmenter.applied) == 3
    assert all(any(step.startswith("room") for step in applied) for applied in augmenter.applied)
    audio, rate = soundfile.read(tmp_path / negatives[0]["audios"][0], dtype="float32")
    assert rate == SR and not np.allclose(
        audio, voiced(1.0, seed=len("The red circle is on the left side.")), atol=1e-3
    )
