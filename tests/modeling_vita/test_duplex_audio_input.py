"""Tests of the duplex session's audio input: the streaming resampler, whole-clip resampling and the echo guard."""

import re

import numpy as np
import pytest

from modeling_vita.duplex_audio_input import EchoGuard, Resampler, resample, rms


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_resampler_is_time_aligned_and_streams(rate):
    t = np.arange(rate * 2) / rate
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    one_shot = Resampler(rate)(tone)
    resampler = Resampler(rate)
    streamed = np.concatenate([resampler(part) for part in np.array_split(tone, 53)])
    np.testing.assert_allclose(streamed, one_shot, atol=1e-6)
    streamed = np.concatenate([streamed, resampler.flush()])
    assert len(streamed) == 32000
    expected = np.sin(2 * np.pi * 440 * np.arange(32000) / 16000)
    assert np.abs(streamed[300:-300] - expected[300:-300]).max() < 2e-3  # no delay, no gain error


def test_resampler_removes_frequencies_above_the_new_nyquist():
    t = np.arange(48000) / 48000
    high = np.sin(2 * np.pi * 12000 * t).astype(np.float32)  # would alias to 4 kHz
    out = Resampler(48000)(high)
    assert np.sqrt(np.mean(out[500:-500] ** 2)) < 0.01


def test_whole_clip_resample_keeps_duration_and_content():
    tone = np.sin(2 * np.pi * 300 * np.arange(22050) / 22050).astype(np.float32)
    out = resample(tone, 22050, 16000)
    assert out.dtype == np.float32 and len(out) == 16000
    assert abs(rms(out) - rms(tone)) < 0.01
    assert resample(tone, 16000, 16000) is not None and len(resample(tone, 16000, 16000)) == len(tone)


def test_echo_guard_lets_only_louder_speech_through_while_a_clip_plays():
    guard = EchoGuard(margin_db=10.0)
    clip = np.full(16000, 0.1, dtype=np.float32)  # one second of the assistant's speech, RMS 0.1
    quiet, loud = np.full(320, 0.2, dtype=np.float32), np.full(320, 0.5, dtype=np.float32)
    assert not guard.is_echo(quiet, now=0.0)  # nothing plays yet
    guard.queued(clip, 16000, now=2.0)
    guard.queued(clip, 16000, now=2.5)  # queued behind the first: plays until 4.0
    assert guard.is_echo(quiet, now=3.9) and not guard.is_echo(loud, now=3.9)  # 0.2 < 0.1 * 10 ** 0.5 < 0.5
    assert not guard.is_echo(quiet, now=4.0)
    guard.queued(clip, 16000, now=5.0)
    guard.cut(now=5.2)  # interrupted: the player stops
    assert not guard.is_echo(quiet, now=5.3)
    guard.reported(0.01)  # the caller's own report wins over the estimate
    assert guard.is_echo(np.full(320, 0.02, dtype=np.float32), now=100.0)
    guard.reported(None)
    assert not guard.is_echo(np.full(320, 0.02, dtype=np.float32), now=100.0)


@pytest.mark.parametrize("rate", [7999, 192001, 22050.5])
def test_resampler_refuses_rates_it_cannot_take(rate):
    with pytest.raises(ValueError, match="between 8000 and 192000"):
        Resampler(rate)


def test_copy_chunk_copies_and_never_raises():
    from modeling_vita.duplex_audio_input import copy_chunk

    buffer = np.ones(8, dtype=np.float32)
    samples, problem = copy_chunk(buffer)
    buffer[:] = 0  # the caller reuses its buffer: the queued copy keeps what was pushed
    assert problem is None and samples.tolist() == [1.0] * 8
    torch = pytest.importorskip("torch")
    samples, problem = copy_chunk(torch.ones(4, requires_grad=True))
    assert problem is None and samples.dtype == np.float32 and samples.tolist() == [1.0] * 4
    assert copy_chunk(torch.ones(4, dtype=torch.bfloat16)) == (
        None,
        "audio chunk dtype must be int16, float16, float32 or float64, found torch.bfloat16",
    )
    samples, problem = copy_chunk([[0.1, 0.2], [0.3]])
    assert samples is None and problem.startswith("audio chunk must be a 1-D array of numbers, found a list numpy")


@pytest.mark.parametrize("rate", [16000, 48_000.0, np.int64(22050), 8000, 192_000])
def test_checked_rate_takes_whole_hz(rate):
    from modeling_vita.duplex_audio_input import checked_rate

    assert checked_rate(rate) == int(rate) and type(checked_rate(rate)) is int


@pytest.mark.parametrize("rate", [7999, 192_001, 22050.5, float("nan"), float("inf"), None, "16000", True, 0])
def test_checked_rate_refuses_the_rest_naming_it(rate):
    from modeling_vita.duplex_audio_input import checked_rate

    with pytest.raises(ValueError, match=rf"between 8000 and 192000, found {re.escape(repr(rate))}$"):
        checked_rate(rate)
