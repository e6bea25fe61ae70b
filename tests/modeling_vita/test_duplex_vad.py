"""Tests of the VAD segmenter (scripted probabilities), the resampler and the Silero ONNX scorer on espeak-ng audio."""

import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from modeling_vita.duplex_audio_input import Resampler
from modeling_vita.duplex_events import SpeechDiscarded, SpeechEnded, SpeechStarted
from modeling_vita.duplex_vad import (
    WINDOW_SIZE,
    SileroVAD,
    SpeechScorer,
    VADParams,
    VADSegmenter,
    VADState,
)
from tests.utils import espeak

W = WINDOW_SIZE / 16000  # 32 ms


OFFERS = ("speech_paused", "speech_resumed")  # the early offers of a segment, tested on their own below


def edges(events):
    return [event for event in events if event.type not in OFFERS]


def run(probabilities, params=None, samples=None):
    segmenter = VADSegmenter(params or VADParams())
    return segmenter, edges(segmenter.push_probabilities(probabilities, samples))


def kinds(events):
    return [event.type for event in edges(events)]


# ---------------------------------------------------------------------------------------------------------------------
# Segmenter with scripted probabilities
# ---------------------------------------------------------------------------------------------------------------------


def test_a_pause_offers_the_segment_it_will_end_with_and_resumed_speech_withdraws_it():
    params = VADParams(stop_secs=0.5, post_roll_secs=0.1, speculate_secs=0.064)
    segmenter = VADSegmenter(params)
    samples = np.random.default_rng(0).standard_normal(150 * WINDOW_SIZE).astype(np.float32)
    # 1 s of speech, a 0.25 s pause (offered, then withdrawn), 1 s more, then silence: one segment.
    probabilities = [0.05] * 10 + [0.9] * 31 + [0.05] * 8 + [0.9] * 31 + [0.05] * 70
    events = segmenter.push_probabilities(probabilities, samples)
    assert [e.type for e in events] == [
        "speech_started",
        "speech_paused",
        "speech_resumed",
        "speech_paused",
        "speech_ended",
    ]
    first, last, ended = events[1], events[3], events[4]
    # Offered after 2 windows of silence, with the silence heard so far (less than the 0.1 s post-roll).
    assert first.time == pytest.approx((10 + 31 + 2) * W) and first.end == pytest.approx((10 + 31 + 2) * W)
    # The last offer is the segment that ends 0.4 s later, but for 36 ms more of the post-roll's silence: the
    # session adopts the turn it started on it.
    assert last.start == ended.start and ended.end - last.end == pytest.approx(0.1 - 2 * W)
    assert np.array_equal(last.segment, ended.segment[: len(last.segment)])
    # Speech too short to keep is never offered; speculate_secs=None offers nothing.
    short = [e.type for e in VADSegmenter(params).push_probabilities([0.9] * 8 + [0.05] * 40)]
    assert short == ["speech_started", "speech_discarded"]
    plain = [e.type for e in VADSegmenter(VADParams(speculate_secs=None)).push_probabilities(probabilities)]
    assert plain == ["speech_started", "speech_ended"]
    with pytest.raises(ValueError, match="speculate_secs must be None or > 0"):
        VADParams(speculate_secs=0.0)


def test_silence_only_gives_no_events():
    segmenter, events = run([0.05] * 300 + [0.55] * 20)  # 10 s of silence, then "almost speech" under threshold
    assert events == [] and segmenter.state == VADState.QUIET
    assert segmenter.flush() == []


def test_segment_keeps_pre_roll_and_ends_after_stop_silence():
    params = VADParams(threshold=0.6, start_secs=0.1, stop_secs=0.5, pre_roll_secs=0.25, post_roll_secs=0.1)
    probabilities = [0.1] * 40 + [0.9] * 50 + [0.1] * 40
    samples = np.arange(len(probabilities) * WINDOW_SIZE, dtype=np.float32) / 1e6  # a ramp: samples know their index
    segmenter, events = run(probabilities, params, samples)
    assert kinds(events) == ["speech_started", "speech_ended"]
    started, ended = events
    assert started.start == pytest.approx(40 * W) and started.time == pytest.approx(43 * W)  # 3 windows to confirm
    assert ended.start == pytest.approx(40 * W - 0.25)
    assert ended.end == pytest.approx(90 * W + 0.1)
    assert ended.time == pytest.approx((90 + 16) * W)  # 16 windows (0.5 s) of silence
    first, last = round(ended.start * 16000), round(ended.end * 16000)
    np.testing.assert_array_equal(ended.segment, samples[first:last])
    assert ended.segment.dtype == np.float32 and not ended.truncated
    assert segmenter.state == VADState.QUIET


def test_short_pause_and_hysteresis_do_not_split_a_segment():
    probabilities = [0.1] * 10 + [0.9] * 30 + [0.5] * 20 + [0.2] * 10 + [0.8] * 30 + [0.1] * 20
    _, events = run(probabilities)  # 0.5 stays over the negative threshold 0.45; the 0.32 s dip is under stop_secs
    assert kinds(events) == ["speech_started", "speech_ended"]
    assert events[1].end == pytest.approx(100 * W + 0.1)


def test_flicker_shorter_than_start_secs_never_starts():
    _, events = run(([0.1] * 5 + [0.95, 0.95]) * 20)
    assert events == []


def test_short_speech_is_discarded():
    params = VADParams(min_segment_secs=0.5)
    _, events = run([0.1] * 10 + [0.9] * 12 + [0.1] * 30, params)  # 0.38 s of speech
    assert kinds(events) == ["speech_started", "speech_discarded"]
    assert isinstance(events[1], SpeechDiscarded) and events[1].start < events[1].end


def test_speech_that_never_ends_is_cut_at_max_segment():
    params = VADParams(max_segment_secs=2.0, pre_roll_secs=0.0)
    segmenter, events = run([0.9] * round(7.0 / W), params)
    ended = [event for event in events if isinstance(event, SpeechEnded)]
    assert len(ended) == 3 and all(event.truncated for event in ended)
    for event in ended:
        assert event.duration == pytest.approx(2.0, abs=W) and len(event.segment) == round(event.duration * 16000)
    for before, after in zip(ended, ended[1:]):  # back to back: no gap, no overlap
        assert after.start == pytest.approx(before.end)
    assert kinds(events).count("speech_started") == 4 and segmenter.state == VADState.SPEAKING
    (last,) = segmenter.flush()
    assert isinstance(last, SpeechEnded) and last.start == pytest.approx(ended[-1].end) and not last.truncated


class EnergyScorer:
    """A scripted scorer: speech where the window's RMS is high. Counts its calls."""

    def __init__(self):
        self.calls = 0

    def score(self, window):
        assert window.shape == (WINDOW_SIZE,) and window.dtype == np.float32
        self.calls += 1
        return 0.95 if np.sqrt(np.mean(window**2)) > 0.05 else 0.02

    def reset_states(self):
        pass


def test_chunks_of_any_length_give_the_same_segments():
    rng = np.random.default_rng(0)
    audio = np.zeros(16000 * 6, dtype=np.float32)
    audio[16000:40000] = 0.3 * np.sin(np.arange(24000) * 0.05)
    assert isinstance(EnergyScorer(), SpeechScorer)
    whole = edges(VADSegmenter(scorer=EnergyScorer()).push(audio))
    scorer = EnergyScorer()
    chunked, position = [], 0
    segmenter = VADSegmenter(scorer=scorer)
    while position < len(audio):
        size = int(rng.integers(1, 3000))
        chunked += edges(segmenter.push((audio[position : position + size] * 32767).astype(np.int16)))
        position += size
    assert kinds(whole) == kinds(chunked) == ["speech_started", "speech_ended"]
    assert chunked[1].start == whole[1].start and chunked[1].end == whole[1].end
    assert scorer.calls == len(audio) // WINDOW_SIZE


@pytest.mark.parametrize(
    "chunk, match",
    [
        (np.array([0.1, np.nan, 0.2], dtype=np.float32), "found 1 NaN/inf"),
        (np.array([0.1, np.inf], dtype=np.float64), "found 1 NaN/inf"),
        (np.zeros(100, dtype=np.int32), "int16, float16, float32 or float64, found int32"),
        (np.zeros((100, 2), dtype=np.float32), r"found shape \(100, 2\)"),
    ],
    ids=["nan", "inf", "int32", "stereo"],
)
def test_bad_chunk_raises_value_error_and_leaves_state_unchanged(chunk, match):
    scorer = EnergyScorer()
    segmenter = VADSegmenter(scorer=scorer)
    segmenter.push(np.zeros(700, dtype=np.float32))
    with pytest.raises(ValueError, match=match):
        segmenter.push(chunk)
    assert segmenter.time == pytest.approx(W)
    segmenter.push(np.zeros(324, dtype=np.float32))  # the 188 buffered samples are still there
    assert segmenter.time == pytest.approx(2 * W) and scorer.calls == 2


def test_bad_params_and_rates_raise_value_error():
    with pytest.raises(ValueError, match="found 1.5"):
        VADParams(threshold=1.5)
    with pytest.raises(ValueError, match="found 0.7"):
        VADParams(threshold=0.6, negative_threshold=0.7)
    assert VADParams(threshold=0.7).negative_threshold == pytest.approx(0.55)
    with pytest.raises(ValueError, match="found 1000"):
        VADSegmenter(scorer=EnergyScorer()).push(np.zeros(100, dtype=np.float32), sampling_rate=1000)


# ---------------------------------------------------------------------------------------------------------------------
# Silero ONNX scorer on synthesized speech
# ---------------------------------------------------------------------------------------------------------------------


def test_silero_scorer_rejects_bad_windows():
    vad = SileroVAD()
    with pytest.raises(ValueError, match=r"float32 array of shape \(512,\), found ndarray float64 \(512,\)"):
        vad.score(np.zeros(512))
    with pytest.raises(ValueError, match=r"found ndarray float32 \(256,\)"):
        vad.score(np.zeros(256, dtype=np.float32))
    with pytest.raises(ValueError, match="NaN/inf"):
        vad.score(np.full(512, np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="found int32"):
        vad(np.zeros(1024, dtype=np.int32))


def test_silero_model_loads_without_importing_the_silero_package():
    assert "silero_vad" not in sys.modules  # nothing in this test session imports it
    vad = SileroVAD()
    assert vad(np.zeros(1600, dtype=np.float32)).shape == (3,)
    assert "silero_vad" not in sys.modules  # importing it would set torch to one thread for the whole process


def _espeak(text: str, path: Path) -> tuple[np.ndarray, int]:
    audio, rate = espeak(text, path, speed=150)
    voiced = np.nonzero(np.abs(audio) > 0.01)[0]
    return audio[voiced[0] : voiced[-1] + 1], rate


@pytest.fixture(scope="module")
def placed_speech(tmp_path_factory):
    """Two espeak-ng utterances placed in silence (with faint noise); returns the 22.05 kHz mix and the placements."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng); no speech to test the real VAD with")
    folder = tmp_path_factory.mktemp("speech")
    first, rate = _espeak("What is the weather like in Paris today?", folder / "a.wav")
    second, _ = _espeak("Tell me a short story about a cat.", folder / "b.wav")
    placements, pieces, position = [], [], 0
    for gap, speech in ((1.0, first), (1.5, second), (1.5, None)):
        pieces.append(np.zeros(int(gap * rate), dtype=np.float32))
        position += int(gap * rate)
        if speech is not None:
            pieces.append(speech)
            placements.append((position / rate, (position + len(speech)) / rate))
            position += len(speech)
    mix = np.concatenate(pieces)
    mix += np.random.default_rng(0).normal(0, 1e-3, len(mix)).astype(np.float32)
    return mix, rate, placements


def _segments(audio: np.ndarray, rate: int, chunk_secs: float = 0.02) -> list[SpeechEnded]:
    segmenter = VADSegmenter(VADParams(), scorer=SileroVAD())
    step = int(chunk_secs * rate)
    events = []
    for start in range(0, len(audio), step):
        events += segmenter.push(audio[start : start + step], sampling_rate=rate)
    events = edges(events + segmenter.flush())
    assert kinds(events) == ["speech_started", "speech_ended"] * (len(events) // 2), kinds(events)
    return [event for event in events if isinstance(event, SpeechEnded)]


def test_silero_segments_placed_speech_within_tolerance(placed_speech):
    mix, rate, placements = placed_speech
    audio_16k = np.concatenate([(resampler := Resampler(rate, 16000))(mix), resampler.flush()])
    segments = _segments(audio_16k, 16000)
    assert len(segments) == len(placements)
    for segment, (start, end) in zip(segments, placements):
        assert abs(segment.start - start) <= 0.3 and abs(segment.end - end) <= 0.3, (segment, start, end)
        assert len(segment.segment) == round(segment.duration * 16000)
    # The same audio at 48 kHz (resampled from the 22.05 kHz source independently) gives the same segments.
    audio_48k = np.concatenate([(resampler := Resampler(rate, 48000))(mix), resampler.flush()])
    segments_48k = _segments(audio_48k, 48000, chunk_secs=0.01)
    assert len(segments_48k) == len(segments)
    for a, b in zip(segments, segments_48k):
        assert abs(a.start - b.start) <= 2 * W and abs(a.end - b.end) <= 2 * W, (a, b)
    # The source rate itself (22.05 kHz, int16 chunks) works too.
    segments_22k = _segments((mix * 32767).astype(np.int16), rate)
    assert [round(s.start, 1) for s in segments_22k] == pytest.approx([round(s.start, 1) for s in segments], abs=0.1)


def test_silero_silence_only_gives_no_events():
    segmenter = VADSegmenter(scorer=SileroVAD())
    noise = np.random.default_rng(1).normal(0, 1e-3, 16000 * 5).astype(np.float32)
    assert segmenter.push(np.zeros(16000 * 3, dtype=np.float32)) + segmenter.push(noise) == []


def test_report_vad_cost_per_32ms_chunk(placed_speech):
    """Prints (does not assert) the cost of one 32 ms window on one thread."""
    mix, rate, _ = placed_speech
    audio_48k = Resampler(rate, 48000)(mix)
    vad = SileroVAD(num_threads=1)
    windows = Resampler(48000)(audio_48k)[: 200 * WINDOW_SIZE].reshape(-1, WINDOW_SIZE)
    vad.score(windows[0])  # warm-up
    start = time.perf_counter()
    for window in windows:
        vad.score(window)
    score_ms = 1000 * (time.perf_counter() - start) / len(windows)
    segmenter = VADSegmenter(scorer=SileroVAD(num_threads=1))
    chunk = 1536  # 32 ms at 48 kHz
    start = time.perf_counter()
    count = 0
    for position in range(0, 200 * chunk, chunk):
        segmenter.push(audio_48k[position : position + chunk], 48000)
        count += 1
    push_ms = 1000 * (time.perf_counter() - start) / count
    print(
        f"\nVAD cost per 32 ms: Silero ONNX score {score_ms:.3f} ms; "
        f"48 kHz chunk resample+score+segment {push_ms:.3f} ms"
    )
    assert isinstance(SpeechStarted(0.0), SpeechStarted)


@pytest.mark.parametrize("chunk_rates", [[48_000, 16_000], [44_100, 48_000, 22_050], [8000, 16_000, 24_000]])
def test_a_rate_change_mid_stream_drops_no_sample(chunk_rates):
    """Leaving a resampler flushes its lookahead: the 16 kHz samples made equal the duration pushed (20 ms chunks,
    whose lengths resample to whole samples), where each switch away from a resampler dropped about 9 samples."""
    segmenter = VADSegmenter(scorer=EnergyScorer())
    switches = 300
    for index in range(switches):
        rate = chunk_rates[index % len(chunk_rates)]
        segmenter.push(np.full(rate // 50, 0.01, dtype=np.float32), rate)
    framer = segmenter._framer
    held_back = 0 if framer._resampler is None else len(framer._resampler.flush())
    produced = round(segmenter.time * 16000) + len(framer._pending) + held_back
    assert abs(produced - switches * 320) <= 1


def test_a_bad_rate_mid_stream_leaves_the_stream_as_it_was():
    segmenter = VADSegmenter(scorer=EnergyScorer())
    segmenter.push(np.zeros(480, dtype=np.float32), 48_000)
    resampler, pending = segmenter._framer._resampler, segmenter._framer._pending.copy()
    for rate in (float("nan"), 4000, "48000"):
        with pytest.raises(ValueError, match=r"whole number of Hz between 8000 and 192000, found"):
            segmenter.push(np.zeros(480, dtype=np.float32), rate)
    assert segmenter._framer._resampler is resampler and np.array_equal(segmenter._framer._pending, pending)
