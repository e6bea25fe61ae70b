"""Tests of the threaded duplex session: a scripted fake model and an energy VAD for control, then the tiny real model
on espeak-ng speech with the Silero VAD. Every test checks that `close()` joins every thread the session started."""

import shutil
import threading
import time

import numpy as np
import pytest
import torch

from modeling_vita.duplex_events import AudioOut
from modeling_vita.duplex_session import DuplexSession
from modeling_vita.duplex_vad import VADParams
from processing_vita.testing_utils import tiny_vita_processor
from tests.duplex_helpers import SR, Collector, EnergyScorer, has, push, silence, tone
from tests.utils import espeak

FAST_VAD = VADParams(start_secs=0.064, stop_secs=0.2, min_segment_secs=0.2, pre_roll_secs=0.1)
QUERY, NOISE, TEXT, EOS = 7, 8, 9, 2


class ScriptedModel:
    """A stand-in for `model.generate`: the n-th call emits `scripts[n]` (token ids, or an exception to raise, any
    `BaseException`).

    It honours the logits processors (so the session's state constraint really applies), the stopping criteria and
    the streamer, like transformers' decoding loop.
    """

    device = torch.device("cpu")

    def __init__(self, scripts, step_delay=0.0, prefill_delay=0.0, vocab_size=1024):
        self.scripts = list(scripts)
        self.step_delay = step_delay
        self.prefill_delay = prefill_delay
        self.vocab_size = vocab_size
        self.calls = []
        self.generated = {}  # call index -> number of tokens generated
        self._lock = threading.Lock()

    def generate(self, input_ids, logits_processor=(), stopping_criteria=(), streamer=None, **kwargs):
        with self._lock:
            index = len(self.calls)
            self.calls.append(input_ids)
        script = self.scripts[index] if index < len(self.scripts) else [QUERY, EOS]
        if isinstance(script, BaseException):  # KeyboardInterrupt and SystemExit too
            raise script
        if streamer is not None:
            streamer.put(input_ids)
        time.sleep(self.prefill_delay)
        sequence = input_ids
        for token in script[: kwargs.get("max_new_tokens", 64)]:
            time.sleep(self.step_delay)
            scores = torch.zeros(1, self.vocab_size)
            scores[0, token] = 1.0
            for processor in logits_processor:
                scores = processor(sequence, scores)
            chosen = int(scores.argmax())
            sequence = torch.cat([sequence, torch.tensor([[chosen]])], dim=1)
            if streamer is not None:
                streamer.put(torch.tensor([chosen]))
            if chosen == EOS or any(bool(criteria(sequence, scores).all()) for criteria in stopping_criteria):
                break
        if streamer is not None:
            streamer.end()
        self.generated[index] = sequence.shape[1] - input_ids.shape[1]
        return sequence


@pytest.fixture(scope="module")
def processor():
    return tiny_vita_processor()


@pytest.fixture
def no_thread_left():
    before = set(threading.enumerate())
    yield
    left = [thread for thread in set(threading.enumerate()) - before if thread.is_alive()]
    assert not left, f"threads left after close(): {left}"


def words(processor, text):
    return processor.tokenizer.encode(text, add_special_tokens=False)


def make_session(processor, model, **kwargs):
    # Tones, not speech: the segments end on FAST_VAD's silence rule, not on a turn model's reading of a tone.
    kwargs.setdefault("turn_detector", None)
    return DuplexSession(model, processor, vad=FAST_VAD, vad_scorer=EnergyScorer(), **kwargs)


def test_noise_during_answer_does_not_interrupt(processor, no_thread_left):
    answer = words(processor, "The cat sits on the mat. A dog runs in the park.")
    model = ScriptedModel([[QUERY, *answer, EOS], [NOISE, *words(processor, "never said"), EOS]], step_delay=0.04)
    with make_session(processor, model) as session:
        events = Collector(session)
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("text_delta"))
        push(session, np.concatenate([tone(0.4, amplitude=0.1), silence(0.3)]))
        events.until(has("response_done"))
        assert [e.type for e in events.of("ignored")] == ["ignored"]
        kinds = [e.type for e in events.events]
        assert kinds.index("ignored") < kinds.index("response_done")  # the noise came while the answer streamed
        assert not events.of("interrupted")
        decided = events.of("state_decided")
        assert [(e.turn_id, e.state) for e in decided] == [(1, "query_audio"), (2, "noisy_audio")]
        done = events.of("response_done")[0]
        assert done.turn_id == 1 and done.text == processor.decode(answer) == "".join(
            e.text for e in events.of("text_delta")
        )
        assert len(model.calls) == 2  # the noisy turn stopped at its state token, nothing else ran
        history = session.history
        assert [(t.role, t.outcome) for t in history] == [
            ("user", "answered"),
            ("assistant", "answered"),
            ("user", "ignored"),  # the noise has its entry too, never shown to the model again
            ("assistant", "ignored"),
        ]
        assert history[1].content == done.text and not history[1].interrupted


def test_interrupting_query_answers_from_its_decision_cache(processor, no_thread_left):
    long_answer = words(processor, "The cat sits on the mat. A dog runs in the park. The weather is nice today.")
    second = words(processor, "I am fine, thank you.")
    model = ScriptedModel([[QUERY, *long_answer, EOS], [QUERY, *second, EOS]], step_delay=0.03)
    with make_session(processor, model) as session:
        events = Collector(session)
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("text_delta", 2))
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("response_done"))
        (interrupted,) = events.of("interrupted")
        assert interrupted.turn_id == 1 and interrupted.text
        done = events.of("response_done")[0]
        assert done.turn_id == 2 and done.text == processor.decode(second)
        session.wait_idle()
        assert len(model.calls) == 2  # the interrupting query was answered by the generate that decided it
        assert [(t.role, t.interrupted) for t in session.history] == [
            ("user", False),
            ("assistant", True),
            ("user", False),
            ("assistant", False),
        ]


def test_query_during_answer_restarts_with_consolidated_history_when_asked(processor, no_thread_left):
    long_answer = words(processor, "The cat sits on the mat. A dog runs in the park. The weather is nice today.")
    second = words(processor, "I am fine, thank you.")
    # Call 3 is the restart of the new query with the consolidated history (its state token is forced).
    scripts = [[QUERY, *long_answer, EOS], [QUERY, EOS], [NOISE, *second, EOS]]
    model = ScriptedModel(scripts, step_delay=0.03)
    with make_session(processor, model, restart_with_consolidated_history=True) as session:
        events = Collector(session)
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("text_delta", 2))
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("response_done"))
        interrupted = events.of("interrupted")
        assert len(interrupted) == 1 and interrupted[0].turn_id == 1
        partial = interrupted[0].text
        assert (
            partial and processor.decode(long_answer).startswith(partial) and partial != processor.decode(long_answer)
        )
        assert partial == "".join(e.text for e in events.of("text_delta") if e.turn_id == 1)
        # The interrupted generate really stopped (within a step or two of the cancel), it did not run on.
        assert model.generated[0] < len(long_answer) - 3
        done = events.of("response_done")[0]
        assert done.text == processor.decode(second)
        session.wait_idle()
        history = session.history
        assert [(t.role, t.interrupted, t.state) for t in history] == [
            ("user", False, "query_audio"),
            ("assistant", True, "query_audio"),
            ("user", False, "query_audio"),
            ("assistant", False, "query_audio"),
        ]
        assert history[1].content == partial and history[3].content == done.text
        # The restarted prompt shows the interrupted answer with its state token restored.
        restarted_prompt = processor.decode(model.calls[2][0])
        assert f"<1> {partial}" in restarted_prompt


def test_bad_chunks_give_errors_and_the_session_goes_on(processor, no_thread_left):
    model = ScriptedModel([[QUERY, *words(processor, "Hello"), EOS]])
    with make_session(processor, model) as session:
        events = Collector(session)
        bad = tone(0.02)
        bad[3] = np.nan
        session.push_audio(bad, SR)
        session.push_audio(np.ones(320, dtype=np.int32), SR)
        session.push_audio(tone(0.02), 4_000)
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("response_done"))
        errors = events.of("error")
        assert len(errors) == 3
        assert "NaN" in errors[0].message and "int32" in errors[1].message and "4000" in errors[2].message
        assert [e.type for e in events.events[3:]] == [
            "speech_started",
            "speech_ended",
            "state_decided",
            "text_delta",
            "response_done",
        ]
        assert events.of("speech_ended")[0].start == pytest.approx(0.0, abs=0.05)  # bad chunks did not move the clock


def test_exception_in_a_turn_gives_error_and_next_turn_works(processor, no_thread_left):
    model = ScriptedModel([RuntimeError("boom"), [QUERY, *words(processor, "Hello"), EOS]])
    with make_session(processor, model) as session:
        events = Collector(session)
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("error"))
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("response_done"))
        error = events.of("error")[0]
        assert error.turn_id == 1 and "boom" in error.message
        assert events.of("response_done")[0].turn_id == 2
        assert [(t.turn_id, t.outcome) for t in session.history[1::2]] == [(1, "error"), (2, "answered")]


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit], ids=["KeyboardInterrupt", "SystemExit"])
@pytest.mark.parametrize("when", ["deciding", "responding"])
def test_an_interrupt_in_the_model_ends_the_turn_and_reaches_the_caller(processor, no_thread_left, interrupt, when):
    """The worker's turn ends as an `error` (the machine stays consistent), the exception is raised once in the
    caller's thread (here by `events`), and the session answers the next query."""

    class InterruptedModel(ScriptedModel):
        def generate(self, input_ids, streamer=None, **kwargs):
            if len(self.calls) == 0 and when == "deciding":
                self.calls.append(input_ids)
                raise interrupt("stop now")
            if len(self.calls) == 0:  # decide, speak one word, then be interrupted
                self.calls.append(input_ids)
                streamer.put(input_ids)
                for token in (QUERY, *words(processor, "Hello")):
                    streamer.put(torch.tensor([token]))
                time.sleep(0.2)  # the dispatcher reports the decision and the text first
                raise interrupt("stop now")
            return super().generate(input_ids, streamer=streamer, **kwargs)

    model = InterruptedModel([None, [QUERY, *words(processor, "Fine"), EOS]])
    with make_session(processor, model) as session:
        seen = []
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        with pytest.raises(interrupt, match="stop now"):
            for event in session.events(timeout=10):
                seen.append(event)
        error = [e for e in seen if e.type == "error"]
        assert len(error) == 1 and error[0].turn_id == 1
        assert error[0].message == f"turn 1 stopped by {interrupt.__name__}: stop now"
        assert session._machine.state == "listening" and session._machine.responding_turn is None
        kept = [("user", False), ("assistant", True)]  # a partial answer is kept as cut
        expected = [("user", False), ("assistant", False)] if when == "deciding" else kept
        assert [(t.role, t.interrupted) for t in session.history] == expected
        assert {t.outcome for t in session.history} == {"error"}
        session.wait_idle()  # raised once only: the session is usable again
        events = Collector(session)
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("response_done"))
        assert events.of("response_done")[0].text == "Fine" and not events.of("error")


def test_an_interrupt_in_the_dispatcher_reaches_the_caller_and_the_dispatcher_lives_on(processor, no_thread_left):
    class InterruptingScorer(EnergyScorer):
        calls = 0

        def score(self, window):
            InterruptingScorer.calls += 1
            if InterruptingScorer.calls == 3:
                raise KeyboardInterrupt("from the scorer")
            return super().score(window)

    model = ScriptedModel([[QUERY, *words(processor, "Hello"), EOS]])
    with DuplexSession(model, processor, vad=FAST_VAD, vad_scorer=InterruptingScorer()) as session:
        push(session, silence(0.2))
        with pytest.raises(KeyboardInterrupt, match="from the scorer"):
            session.wait_idle()
        (error,) = list(session.events(timeout=0.1))
        assert error.type == "error" and error.message == "KeyboardInterrupt on AudioChunk: from the scorer"
        events = Collector(session)
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("response_done"))


def test_an_interrupt_in_the_speech_engine_reaches_the_caller_and_speaking_goes_on(processor, no_thread_left):
    class InterruptedTTS(FakeTTS):
        def synthesize(self, text):
            if not self.sentences:
                self.sentences.append(text)
                raise SystemExit("tts says bye")
            return super().synthesize(text)

    tts = InterruptedTTS(secs=0.1)
    model = ScriptedModel([[QUERY, *words(processor, "Hello, how are you? I am fine."), EOS]])
    with make_session(processor, model, tts=tts) as session:
        seen = []
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        with pytest.raises(SystemExit, match="tts says bye"):
            for event in session.events(timeout=10):
                seen.append(event)
        assert [e.message for e in seen if e.type == "error"] == [
            "speech synthesis for turn 1 stopped by SystemExit: tts says bye"
        ]
        assert session.wait_idle()  # the speech thread lives on: nothing stays queued
        seen += session.events(timeout=0.1)
        assert [e.type for e in seen].count("response_done") == 1
        assert [e.text for e in seen if e.type == "audio_out"] == ["I am fine."]


def test_rate_changes_mid_stream_keep_the_clock_and_the_segment(processor, no_thread_left):
    """10 ms chunks alternate 48 kHz, 16 kHz and 44.1 kHz: nothing is dropped at a switch (about 9 samples were,
    each time a resampler was left), so the segment's times match the audio pushed and the VAD's 16 kHz clock
    matches the session's."""
    rates = [48_000, 16_000, 44_100]
    model = ScriptedModel([[QUERY, *words(processor, "Hello"), EOS]])
    with make_session(processor, model) as session:
        events = Collector(session)
        pushed = 0.0
        for index, loud in enumerate([False] * 100 + [True] * 60 + [False] * 40):  # 1 s, 0.6 s, 0.4 s
            rate = rates[index % 3]
            t = np.arange(rate // 100) / rate
            session.push_audio((0.3 * np.sin(2 * np.pi * 220 * t) * loud).astype(np.float32), rate)
            pushed += len(t) / rate
        events.until(has("response_done"))
        (ended,) = events.of("speech_ended")
        assert session.time == pytest.approx(pushed, abs=1e-9) and pushed == pytest.approx(2.0)
        assert 0 <= pushed - session._segmenter.time < 0.032  # at most the part of a window still pending
        assert ended.start == pytest.approx(0.992 - FAST_VAD.pre_roll_secs, abs=0.004)  # onset window 31 at 0.992 s
        assert ended.end == pytest.approx(1.6 + FAST_VAD.post_roll_secs, abs=0.004)


def test_push_audio_does_not_wait_for_the_model(processor, no_thread_left):
    model = ScriptedModel([[QUERY, EOS]], prefill_delay=1.0)
    with make_session(processor, model) as session:
        events = Collector(session)
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("speech_ended"))
        durations = []
        for chunk in np.split(tone(0.2), 10):
            started = time.perf_counter()
            session.push_audio(chunk, SR)
            durations.append(time.perf_counter() - started)
        assert max(durations) < 0.05
        assert not events.of("state_decided")  # the model was indeed still busy
        events.until(has("response_done"))


def test_typed_query_and_images(processor, no_thread_left):
    from PIL import Image

    model = ScriptedModel([[QUERY, *words(processor, "A cat."), EOS]])
    with make_session(processor, model) as session:
        events = Collector(session)
        session.push_image(Image.new("RGB", (56, 56), "red"))
        session.push_text("What is in the picture?")
        events.until(has("response_done"))
        assert events.of("state_decided")[0].state == "query_text"
        prompt = processor.decode(model.calls[0][0])
        assert "<image>" in prompt and "What is in the picture?" in prompt
        assert session.history[0].content == "What is in the picture?"


class FakeTTS:
    def __init__(self, secs=0.5):
        self.secs = secs
        self.sentences = []

    def synthesize(self, text):
        self.sentences.append(text)
        return tone(self.secs, amplitude=0.1, freq=440.0), SR


def test_tts_speaks_sentence_by_sentence_and_echo_is_guarded(processor, no_thread_left):
    tts = FakeTTS(secs=2.0)
    heard = []
    model = ScriptedModel([[QUERY, *words(processor, "Hello, how are you? I am fine."), EOS]])
    with make_session(processor, model, tts=tts, on_audio=heard.append) as session:
        events = Collector(session)
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("audio_out", 2))
        assert tts.sentences == ["Hello, how are you?", "I am fine."]
        outs = events.of("audio_out")
        assert all(isinstance(e, AudioOut) and e.sampling_rate == SR for e in outs) and heard == outs
        # While the 4 s of speech play, echo at the level of the played audio starts nothing...
        push(session, np.concatenate([tone(0.4, amplitude=0.2), silence(0.3)]))
        session.wait_idle()
        events.events.extend(session.events(timeout=0.05))
        assert len(events.of("speech_started")) == 1 and len(events.of("audio_out")) == 2
        # ...but the user speaking well above the margin does.
        push(session, np.concatenate([tone(0.4, amplitude=0.9), silence(0.3)]))
        events.until(has("speech_started", 2))


def test_echo_guard_with_reported_playback(processor, no_thread_left):
    model = ScriptedModel([])
    with make_session(processor, model, echo_margin_db=10.0) as session:
        events = Collector(session)
        session.playback_started(rms=0.1)
        push(session, np.concatenate([tone(0.4, amplitude=0.2), silence(0.3)]))  # RMS 0.14: under 0.1 + 10 dB
        session.wait_idle()
        assert not [e for e in session.events(timeout=0.05) if e.type == "speech_started"]
        session.playback_stopped()
        push(session, np.concatenate([tone(0.4, amplitude=0.2), silence(0.3)]))
        events.until(has("speech_started"))


def test_run_in_real_time_paces_the_audio(processor, no_thread_left):
    model = ScriptedModel([[QUERY, *words(processor, "Hello"), EOS]])
    recording = np.concatenate([silence(0.1), tone(0.3), silence(0.3)])
    with make_session(processor, model) as session:
        started = time.monotonic()
        events = list(session.run((recording * 32767).astype(np.int16), SR, realtime=True))
        assert time.monotonic() - started >= 0.65
    assert [e.type for e in events] == [
        "speech_started",
        "speech_ended",
        "state_decided",
        "text_delta",
        "response_done",
    ]
    assert events[0].start == pytest.approx(0.1, abs=0.04)
    assert all(a.time <= b.time for a, b in zip(events, events[1:]))


def _espeak(text, tmp_path):
    return espeak(text, tmp_path / f"{abs(hash(text))}.wav")


def _resample_to_16k(audio, rate):
    target = np.arange(int(len(audio) * SR / rate)) * rate / SR
    return np.interp(target, np.arange(len(audio)), audio).astype(np.float32)


def _onset(audio):
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return loud[0] / SR, loud[-1] / SR


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt install espeak-ng)")
def test_end_to_end_tiny_model_on_espeak_speech(processor, tmp_path, no_thread_left):
    from modeling_vita import VitaForConditionalGeneration
    from modeling_vita.testing_utils import tiny_vita_config

    torch.manual_seed(0)
    model = VitaForConditionalGeneration(tiny_vita_config()).eval()
    first = _resample_to_16k(*_espeak("What is the weather like today?", tmp_path))
    second = _resample_to_16k(*_espeak("Tell me a story about a cat.", tmp_path))
    gap = silence(1.2)
    recording = np.concatenate([gap, first, gap, second, gap])
    offset = len(gap) + len(first) + len(gap)
    truth = [(len(gap) / SR + a, len(gap) / SR + b) for a, b in [_onset(first)]]
    truth += [(offset / SR + a, offset / SR + b) for a, b in [_onset(second)]]

    session = DuplexSession(model, processor, generation_kwargs={"max_new_tokens": 6})
    # The recording arrives at 48 kHz int16, as from a browser microphone.
    upsampled = (np.repeat(recording, 3) * 32767).astype(np.int16)
    events = list(session.run(upsampled, sampling_rate=48_000))
    session.close()

    started = [e for e in events if e.type == "speech_started"]
    ended = [e for e in events if e.type == "speech_ended"]
    assert len(started) == len(ended) == 2
    for onset, segment, (speech_start, speech_end) in zip(started, ended, truth):
        assert abs(onset.start - speech_start) < 0.3 and abs(segment.end - speech_end) < 0.3
    timelines = [[], []]
    segment = -1
    for event in events:
        if event.type == "speech_started":
            segment += 1
        timelines[segment].append(event.type)
    for timeline in timelines:
        assert timeline[:3] == ["speech_started", "speech_ended", "state_decided"]
        assert timeline[-1] in ("response_done", "ignored")
        assert "error" not in timeline
    decided = [e for e in events if e.type == "state_decided"]
    assert all(e.time >= ended[i].time for i, e in enumerate(decided))
