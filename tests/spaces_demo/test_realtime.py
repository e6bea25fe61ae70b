"""Tests of the real-time tab's handler (`spaces_demo/realtime.py`), driven like a browser microphone, no browser.

The main test plays espeak-ng speech in 0.25 s chunks of 48 kHz int16 (what gradio's streaming microphone sends): a
question, background talk while the answer streams, then a question spoken over the still running answer. The random
tiny model's decisions are scripted (`<1>`, `<2>`, `<1>`) and its first answer made slow, so what is checked is the
handler and the session doing the right thing with them: three speech segments where the speech is, the background
talk ignored without cutting the answer, the first answer interrupted by the second question, the history, and the
timeline the page shows (transcript lines and the picture: three speech bars, a red interruption).
"""

import time
from types import SimpleNamespace

import numpy as np
import pytest

from modeling_vita import duplex_timeline
from modeling_vita.duplex_events import (
    AnswerDucked,
    AnswerResumed,
    AudioOut,
    Ignored,
    Interrupted,
    ResponseDone,
    SpeechEnded,
    StateDecided,
    TextDelta,
)
from processing_vita import DEFAULT_STATE_TOKENS, VitaState
from spaces_demo.limits import Limits
from spaces_demo.realtime import CUT_SECS, RealtimeHandler

SR = 16_000
MIC_RATE = 48_000
CHUNK_SECS = 0.25


def _mic_chunks(audio_16k):
    """The 16 kHz float recording as gradio's microphone chunks: (48000, int16 mono)."""
    mic = (np.repeat(audio_16k, MIC_RATE // SR) * 32767).astype(np.int16)
    step = int(CHUNK_SECS * MIC_RATE)
    return [(MIC_RATE, mic[i : i + step]) for i in range(0, len(mic), step)]


def _speech_span(audio, offset_secs):
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return offset_secs + loud[0] / SR, offset_secs + loud[-1] / SR


def _emit_until(handler, predicate, timeout=20.0):
    deadline = time.monotonic() + timeout
    while True:
        handler.emit()
        if predicate(handler):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; transcript so far: {handler.transcript()}")
        time.sleep(0.02)


def _of(handler, kind):
    return [event for event in handler.events if isinstance(event, kind)]


def _runs(mask):
    """Number of separate runs of True in a 1-D boolean array."""
    mask = np.asarray(mask, dtype=np.int8)
    return int(np.sum(np.diff(np.concatenate([[0], mask])) == 1))


def test_handler_shows_question_ignored_talk_and_interruption(tiny_runtime, speech, scripted, no_thread_left):
    question = speech("What is two plus three?")
    talk = speech("I will buy some bread tomorrow.")
    interruption = speech("How many sides does a triangle have?")
    gap = np.zeros(int(0.8 * SR), dtype=np.float32)
    phases = [np.concatenate([gap, question, gap]), np.concatenate([talk, gap]), np.concatenate([interruption, gap])]
    starts = np.cumsum([0] + [len(phase) for phase in phases]) / SR
    truth = [_speech_span(question, starts[0] + len(gap) / SR), _speech_span(talk, starts[1])]
    truth.append(_speech_span(interruption, starts[2]))

    # Turn 1 answers slowly (up to 400 tokens, 20 ms a step), turn 2 is background talk, turn 3 answers briefly.
    generation_kwargs, script = scripted(
        [(VitaState.QUERY_AUDIO, 400), (VitaState.NOISY_AUDIO, 0), (VitaState.QUERY_AUDIO, 3)],
        step_secs=0.02,
        max_new_tokens=512,
    )
    handler = RealtimeHandler(tiny_runtime, generation_kwargs=generation_kwargs)
    try:
        for chunk in _mic_chunks(phases[0]):
            handler.receive(chunk)
        _emit_until(handler, lambda h: h.answer)  # the first answer is streaming
        for chunk in _mic_chunks(phases[1]):
            handler.receive(chunk)
        _emit_until(handler, lambda h: _of(h, Ignored))
        assert not _of(handler, Interrupted) and not _of(handler, ResponseDone)  # the answer went on
        for chunk in _mic_chunks(phases[2]):
            handler.receive(chunk)
        _emit_until(handler, lambda h: _of(h, ResponseDone))
        view = handler.finish()
        history = handler.session.history
    finally:
        handler.close()

    segments = _of(handler, SpeechEnded)
    assert len(segments) == 3, handler.transcript()
    for segment, (start, end) in zip(segments, truth):
        assert abs(segment.start - start) < 0.35 and abs(segment.end - end) < 0.35, (segment, start, end)
    decided = [(event.turn_id, event.state) for event in _of(handler, StateDecided)]
    assert decided == [(1, VitaState.QUERY_AUDIO), (2, VitaState.NOISY_AUDIO), (3, VitaState.QUERY_AUDIO)]
    (ignored,) = _of(handler, Ignored)
    (interrupted,) = _of(handler, Interrupted)
    (done,) = _of(handler, ResponseDone)
    assert ignored.turn_id == 2 and interrupted.turn_id == 1 and done.turn_id == 3
    assert interrupted.time >= segments[2].end  # cut by the second question, not by the background talk
    assert interrupted.text and len(interrupted.text) < 400  # it stopped early with the text it had
    assert [(turn.role, turn.turn_id, turn.outcome) for turn in history] == [
        ("user", 1, "interrupted"),
        ("assistant", 1, "interrupted"),
        ("user", 2, "ignored"),  # the background talk has its entry too, never shown to the model again
        ("assistant", 2, "ignored"),
        ("user", 3, "answered"),
        ("assistant", 3, "answered"),
    ]
    assert script.calls == 3  # one generate per segment: no second prefill for the interrupting question

    lines = view.transcript
    assert sum("speech segment" in line for line in lines) == 3
    assert any("<2> background talk · turn 2" in line for line in lines)  # the checkpoint's token for the state
    assert any("ignored: background talk · turn 2, the answer goes on" in line for line in lines)
    assert any("INTERRUPTED · turn 1" in line for line in lines)
    assert any("answer done · turn 3" in line for line in lines)
    assert view.answer == done.text and view.changed

    picture = np.asarray(handler.timeline(width=1000))
    assert picture.shape == (duplex_timeline.TIMELINE_HEIGHT, 1000, 3)
    speech_row = picture[133, 110:980]  # the top of the timeline's "speech" row, above the bars' labels
    assert _runs((speech_row == duplex_timeline.COLOURS["speech"]).all(axis=1)) == 3
    red = (picture == duplex_timeline.COLOURS["interrupted"]).all(axis=2)
    assert red.any(axis=0).sum() >= 2  # the interruption line (and the interrupted answer bar)


class FakeSession:
    """A `DuplexSession` stand-in that hands out scripted events (the playback queue does not need a model)."""

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.pending = []
        self.pushed = []
        self.closed = False

    def push_audio(self, chunk, sampling_rate):
        self.pushed.append((chunk, sampling_rate))

    def events(self, timeout=None):
        events, self.pending = self.pending, []
        return iter(events)

    def close(self):
        self.closed = True


def _fake_runtime():
    return SimpleNamespace(new_session=lambda **kwargs: FakeSession(**kwargs), state_tokens=DEFAULT_STATE_TOKENS)


def _clip(secs, turn_id, time_=1.0, rate=22_050):
    return AudioOut(time_, audio=np.full(int(secs * rate), 0.5, np.float32), sampling_rate=rate, turn_id=turn_id)


def test_spoken_clips_play_one_after_another_and_an_interruption_cuts_them():
    now = [0.0]
    handler = RealtimeHandler(_fake_runtime(), clock=lambda: now[0])
    session = handler.session
    assert session.kwargs["echo_margin_db"] == float("-inf")  # the browser cancels echo; see the module docstring

    session.pending = [TextDelta(1.0, text="Five.", turn_id=1), _clip(1.0, turn_id=1)]
    rate, clip = handler.emit().speech
    assert rate == 22_050 and len(clip) == 22_050 and clip.dtype == np.int16 and clip.max() > 16_000

    session.pending = [_clip(0.5, turn_id=1)]
    now[0] = 0.5
    assert handler.emit().speech is None  # the first clip still plays: the second waits
    now[0] = 1.01
    assert len(handler.emit().speech[1]) == 11_025

    now[0] = 1.2  # the second clip plays until 1.51
    session.pending = [_clip(0.5, turn_id=1), Interrupted(2.0, text="Five", turn_id=1)]
    rate, cut = handler.emit().speech
    assert len(cut) == int(rate * CUT_SECS) and not cut.any()  # silence replaces what was playing
    now[0] = 5.0
    assert handler.emit().speech is None  # the queued clip of the interrupted answer is dropped
    session.pending = [_clip(0.5, turn_id=1, time_=3.0)]
    assert handler.emit().speech is None  # a late clip of it too
    handler.close()
    assert session.closed


def test_a_ducked_answer_stops_and_plays_on_from_where_it_stopped():
    now = [0.0]
    handler = RealtimeHandler(_fake_runtime(), clock=lambda: now[0])
    session = handler.session
    ramp = AudioOut(1.0, audio=np.linspace(0, 0.9, 22_050, dtype=np.float32), sampling_rate=22_050, turn_id=1)
    session.pending = [ramp]
    assert len(handler.emit().speech[1]) == 22_050  # plays from 0.0 to 1.0
    now[0] = 0.4
    session.pending = [AnswerDucked(2.0, turn_id=1)]
    rate, cut = handler.emit().speech
    assert len(cut) == int(rate * CUT_SECS) and not cut.any()  # stopped at once
    now[0] = 2.0
    assert handler.emit().speech is None  # paused: nothing more while the user speaks
    session.pending = [AnswerResumed(2.5, turn_id=1)]
    rest = handler.emit().speech[1]
    assert len(rest) == 22_050 - int(0.4 * 22_050)  # the unplayed 0.6 s, from where it stopped
    assert rest[0] == int(np.clip(ramp.audio[int(0.4 * 22_050)], -1, 1) * 32767)
    assert any("answer paused" in line for _, line in handler._lines)
    handler.close()


def test_stereo_and_float_chunks_are_mixed_down_and_the_stream_limit_names_both_values():
    handler = RealtimeHandler(_fake_runtime(), limits=Limits(max_realtime_secs=1.0))
    stereo = np.stack([np.full(4_800, 16_384, np.int16), np.zeros(4_800, np.int16)], axis=1)
    handler.receive((48_000, stereo))
    handler.receive((48_000, np.full(24_000, 0.25, np.float32)))
    (first, rate), (second, _) = handler.session.pushed
    assert rate == 48_000 and first.dtype == np.float32 and first.shape == (4_800,)
    assert first[0] == pytest.approx(0.25) and second[0] == pytest.approx(0.25)
    with pytest.raises(ValueError, match=r"would stream 1\.1 s of audio; the limit is 1 s"):
        handler.receive((48_000, np.zeros(24_000, np.int16)))
    with pytest.raises(ValueError, match="found int32"):
        handler.receive((48_000, np.zeros(10, np.int32)))
    handler.close()
    with pytest.raises(ValueError, match="closed"):
        handler.receive((48_000, np.zeros(10, np.int16)))


def test_the_microphone_stopping_after_reset_does_not_touch_the_closed_session():
    handler = RealtimeHandler(_fake_runtime())
    flushed = []
    handler.session.flush = lambda: flushed.append(True)
    handler.close()  # Reset, or the tab went away
    view = handler.finish(timeout=1)
    assert flushed == [] and view.speech is None


def test_clips_queued_when_the_microphone_stops_are_released_after_the_playing_one():
    handler = RealtimeHandler(_fake_runtime())
    session = handler.session
    session.flush = lambda: None
    session.wait_idle = lambda timeout: True
    session.pending = [_clip(0.3, turn_id=1)]
    assert len(handler.emit().speech[1]) == int(0.3 * 22_050)  # plays for 0.3 s from now
    session.pending = [_clip(0.2, turn_id=1)]
    started = time.monotonic()
    view = handler.finish(timeout=5)
    assert 0.2 < time.monotonic() - started < 2  # it waited for the first clip to end, not for the timeout
    assert len(view.speech[1]) == int(0.2 * 22_050) and view.changed
    handler.close()


def test_a_decision_shows_the_checkpoints_own_token_for_its_state():
    tokens = {VitaState.QUERY_AUDIO: "[ask]", VitaState.NOISY_AUDIO: "[noise]", VitaState.QUERY_TEXT: "[typed]"}
    runtime = SimpleNamespace(new_session=lambda **kwargs: FakeSession(**kwargs), state_tokens=tokens)
    handler = RealtimeHandler(runtime)
    handler.session.pending = [
        StateDecided(1.5, state=VitaState.NOISY_AUDIO, turn_id=2),
        StateDecided(2.0, state=VitaState.QUERY_AUDIO, turn_id=3),
    ]
    view = handler.emit()
    assert view.transcript == [
        "  1.50 s · [noise] background talk · turn 2",
        "  2.00 s · [ask] answered query (audio) · turn 3",
    ]
    assert [kind for kind, _ in handler.lines()] == ["state_decided", "state_decided"] and view.changed
    handler.close()
