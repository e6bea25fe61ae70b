"""VitaFeatureExtractor: features equal the original recipe (Kaldi fbank + global CMVN), token counts, resampling,
mono mixdown, dtypes, padding, CMVN file loading, and clear errors on bad audio."""

import json

import numpy as np
import pytest
import torch
import torchaudio
from hypothesis import given, settings
from hypothesis import strategies as st

from processing_vita.feature_extraction_vita import (
    VitaFeatureExtractor,
    get_audio_token_count,
    get_num_fbank_frames,
    load_global_cmvn,
)


def original_features(wave_16k: np.ndarray, mean=None, istd=None) -> torch.Tensor:
    """The original whale recipe at 16 kHz: x * 2**15, Kaldi fbank with the training settings, then global CMVN."""
    x = torch.from_numpy(wave_16k.astype(np.float32)).unsqueeze(0) * (1 << 15)
    feats = torchaudio.compliance.kaldi.fbank(
        x, num_mel_bins=80, frame_length=25, frame_shift=10, dither=0.0, energy_floor=0.0, sample_frequency=16000
    )
    if mean is not None:
        feats = (feats - torch.tensor(mean, dtype=torch.float32)) * torch.tensor(istd, dtype=torch.float32)
    return feats


def speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture(scope="module")
def cmvn():
    rng = np.random.default_rng(3)
    return (rng.uniform(11.8, 16.9, 80).tolist(), rng.uniform(0.27, 0.33, 80).tolist())


def test_features_equal_torchaudio_kaldi_fbank_with_cmvn(cmvn):
    wave = speech_like(1.3)
    fe = VitaFeatureExtractor(cmvn_mean=cmvn[0], cmvn_istd=cmvn[1])
    out = fe(wave, sampling_rate=16000, return_tensors="pt")
    expected = original_features(wave, *cmvn)
    assert out["input_features"].shape == (1, get_num_fbank_frames(len(wave)), 80)
    torch.testing.assert_close(out["input_features"][0], expected, atol=1e-5, rtol=1e-5)
    assert out["input_features_mask"].all()


@pytest.mark.parametrize(("frames", "tokens"), [(98, 12), (148, 18), (198, 24), (998, 124), (352, 44)])
def test_audio_token_count_matches_documented_examples(frames, tokens):
    assert get_audio_token_count(frames) == tokens


def test_two_seconds_give_198_frames_and_24_tokens():
    assert get_num_fbank_frames(32000) == 198
    assert get_audio_token_count(198) == 24


@settings(max_examples=15, deadline=None)
@given(num_samples=st.integers(min_value=400, max_value=16000 * 6))
def test_frame_count_and_token_count_follow_the_formulas(num_samples):
    fe = VitaFeatureExtractor()
    out = fe(np.zeros(num_samples, np.float32) + 0.01, sampling_rate=16000, return_tensors="pt")
    frames = int(out["input_features_mask"].sum())
    assert frames == get_num_fbank_frames(num_samples) == 1 + (num_samples - 400) // 160
    d = ((frames - 1) // 2 - 1) // 2
    assert get_audio_token_count(frames) == (d - 1) // 2 + 1


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampling_to_16k_matches_torchaudio_then_fbank(rate):
    wave = speech_like(1.0, rate)
    out = VitaFeatureExtractor()(wave, sampling_rate=rate, return_tensors="pt")
    resampled = torchaudio.functional.resample(torch.from_numpy(wave), rate, 16000).numpy()
    expected = original_features(resampled)
    assert out["input_features"].shape[1] == get_num_fbank_frames(len(resampled))
    torch.testing.assert_close(out["input_features"][0], expected, atol=1e-4, rtol=1e-4)
    # Pitch survives the rate change: the loudest mel bin is the same as for native 16 kHz audio.
    native = original_features(speech_like(1.0, 16000))
    assert abs(int(out["input_features"][0].mean(0).argmax()) - int(native.mean(0).argmax())) <= 1


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_stereo_is_mixed_down_to_mono(layout):
    left, right = speech_like(0.5, seed=1), speech_like(0.5, seed=2)
    stereo = np.stack([left, right]) if layout == "channels_first" else np.stack([left, right], axis=1)
    fe = VitaFeatureExtractor()
    mixed = fe(stereo, sampling_rate=16000, return_tensors="pt")["input_features"]
    mono = fe((left + right) / 2, sampling_rate=16000, return_tensors="pt")["input_features"]
    torch.testing.assert_close(mixed, mono)


def test_int16_input_is_scaled_like_float():
    wave = speech_like(0.5)
    as_int = np.round(wave * 32767).astype(np.int16)
    fe = VitaFeatureExtractor()
    a = fe(as_int, sampling_rate=16000, return_tensors="pt")["input_features"]
    b = fe(as_int.astype(np.float32) / 32768.0, sampling_rate=16000, return_tensors="pt")["input_features"]
    torch.testing.assert_close(a, b)


def test_batch_is_right_padded_with_zero_and_masked():
    short, long = speech_like(0.5), speech_like(1.2)
    out = VitaFeatureExtractor()([short, long], sampling_rate=16000, return_tensors="pt")
    n_short, n_long = get_num_fbank_frames(len(short)), get_num_fbank_frames(len(long))
    assert out["input_features"].shape == (2, n_long, 80)
    assert out["input_features_mask"].sum(-1).tolist() == [n_short, n_long]
    assert out["input_features_mask"][0, :n_short].all() and not out["input_features_mask"][0, n_short:].any()
    assert (out["input_features"][0, n_short:] == 0).all()


def test_left_padding_request_is_ignored_for_audio():
    fe = VitaFeatureExtractor(padding_side="left")
    out = fe([speech_like(0.5), speech_like(1.0)], sampling_rate=16000, return_tensors="pt")
    assert fe.padding_side == "right"
    assert out["input_features_mask"][0, 0] == 1 and out["input_features_mask"][0, -1] == 0


@pytest.mark.parametrize(
    ("audio", "rate", "message"),
    [
        (np.zeros(0, np.float32), 16000, "empty"),
        (np.zeros(399, np.float32), 16000, "at least 400"),
        (np.array([0.0, np.nan] * 400, np.float32), 16000, "NaN or inf"),
        (np.array([0.0, np.inf] * 400, np.float32), 16000, "NaN or inf"),
        (np.zeros(1600, np.int64), 16000, "dtype"),
        (np.zeros(1600, np.complex64), 16000, "dtype"),
        (np.zeros(1600, bool), 16000, "dtype"),
        (np.zeros(1600, np.float32), 4000, "Unsupported sampling_rate"),
        (np.zeros(1600, np.float32), 200000, "Unsupported sampling_rate"),
        (np.zeros(1600, np.float32), 16000.5, "Unsupported sampling_rate"),
        (np.zeros((2, 2, 1600), np.float32), 16000, "shape"),
        ("not audio", 16000, "expected a numpy array"),
    ],
)
def test_bad_audio_raises_clear_value_error(audio, rate, message):
    with pytest.raises(ValueError, match=message):
        VitaFeatureExtractor()(audio, sampling_rate=rate)


def test_audio_over_the_encoder_limit_is_rejected_with_the_limit_named():
    fe = VitaFeatureExtractor()
    assert 199.0 < fe.max_num_samples / 16000 < 201.0
    fe(np.zeros(fe.max_num_samples, np.float32), sampling_rate=16000)  # the longest accepted clip works
    with pytest.raises(ValueError, match="5000 frames"):
        fe(np.zeros(fe.max_num_samples + 1, np.float32), sampling_rate=16000)


def test_global_cmvn_file_gives_mean_and_inverse_std(tmp_path):
    mean = np.linspace(10, 15, 80)
    var = np.linspace(0.5, 2.0, 80)
    frames = 1000
    stats = {
        "mean_stat": (mean * frames).tolist(),
        "var_stat": ((var + mean**2) * frames).tolist(),
        "frame_num": frames,
    }
    stats["var_stat"][0] = stats["mean_stat"][0] ** 2 / frames  # zero variance: clamped, not inf
    path = tmp_path / "global_cmvn"
    path.write_text(json.dumps(stats))
    got_mean, got_istd = load_global_cmvn(path)
    np.testing.assert_allclose(got_mean, mean, rtol=1e-9)
    np.testing.assert_allclose(got_istd[1:], 1 / np.sqrt(var[1:]), rtol=1e-6)
    assert np.isfinite(got_istd[0]) and got_istd[0] <= 1e10 + 1
    fe = VitaFeatureExtractor.from_global_cmvn_file(path)
    fe.save_pretrained(tmp_path / "fe")
    loaded = VitaFeatureExtractor.from_pretrained(tmp_path / "fe")
    assert loaded.cmvn_mean == fe.cmvn_mean and loaded.cmvn_istd == fe.cmvn_istd
    (tmp_path / "broken").write_text("{}")
    with pytest.raises(ValueError, match="lacks keys"):
        load_global_cmvn(tmp_path / "broken")
