"""No input is lost and a speech onset ducks the answer: the threaded session with a scripted model (no weights).

Every speech segment and typed query ends in exactly one of answered, ignored, interrupted or error, with its event
and its history entry, whatever the timing; the pure machine's property test covers random interleavings
(test_duplex_state.py), these cover the two orders that used to lose a turn and ducking end to end.
"""

import numpy as np

from tests.modeling_vita.test_duplex_session import (
    EOS,
    NOISE,
    QUERY,
    TEXT,
    Collector,
    FakeTTS,
    ScriptedModel,
    has,
    make_session,
    no_thread_left,  # noqa: F401 (fixture)
    processor,  # noqa: F401 (fixture)
    push,
    silence,
    tone,
    words,
)


def outcomes(session):
    return [(t.turn_id, t.outcome) for t in session.history[1::2]]


def prompt_length(tiny_processor, secs):
    message = {"role": "user", "content": [{"type": "audio", "audio": silence(secs)}]}
    inputs = tiny_processor.apply_chat_template([message], add_generation_prompt=True, tokenize=True, return_dict=True)
    return len(inputs["input_ids"][0])


class ByLength(ScriptedModel):
    """A prompt longer than `threshold` tokens (the question) gets the first script, whichever turn calls first."""

    def generate(self, input_ids, **kwargs):
        script = self.by_length[0] if input_ids.shape[1] > self.threshold else self.by_length[1]
        with self._lock:
            self.scripts = [*self.scripts[: len(self.calls)], script]
        return super().generate(input_ids, **kwargs)


def test_question_then_noise_ending_while_it_decides_are_both_kept(processor, no_thread_left):  # noqa: F811
    # The question's prefill takes 0.5 s, so the noise segment ends while the question is still being decided.
    model = ByLength([], prefill_delay=0.5)
    model.by_length = [[QUERY, *words(processor, "It is red."), EOS], [NOISE, EOS]]
    model.threshold = (prompt_length(processor, 1.4) + prompt_length(processor, 0.5)) // 2
    with make_session(processor, model) as session:
        events = Collector(session)
        push(session, np.concatenate([tone(1.2), silence(0.25), tone(0.3, amplitude=0.1), silence(0.3)]))
        events.until(lambda seen: has("response_done")(seen) and has("ignored")(seen))
        assert len(events.of("state_decided")) == 2 and not events.of("error")
        assert outcomes(session) == [(1, "answered"), (2, "ignored")]
        assert session.history[1].content == "It is red."


def test_typed_question_while_the_user_speaks_is_answered(processor, no_thread_left):  # noqa: F811
    model = ScriptedModel([[TEXT, *words(processor, "Noon."), EOS], [NOISE, EOS]], step_delay=0.02)
    with make_session(processor, model) as session:
        events = Collector(session)
        push(session, tone(0.3))
        events.until(has("speech_started"))
        session.push_text("what time is it?")
        push(session, np.concatenate([tone(0.2), silence(0.3)]))
        events.until(lambda seen: has("response_done")(seen) and has("ignored")(seen))
        assert outcomes(session) == [(1, "answered"), (2, "ignored")]
        assert session.history[0].content == "what time is it?" and session.history[1].content == "Noon."


def test_speech_onset_ducks_the_answer_and_noise_resumes_it(processor, no_thread_left):  # noqa: F811
    answer = words(processor, "The cat sits on the mat and the dog runs in the park all day long.")
    model = ScriptedModel([[QUERY, *answer, EOS], [NOISE, EOS]], step_delay=0.05)
    with make_session(processor, model) as session:
        events = Collector(session)
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("text_delta"))
        push(session, tone(0.3, amplitude=0.1))
        events.until(has("answer_ducked"))
        push(session, silence(0.3))
        events.until(lambda seen: has("answer_resumed")(seen) and has("response_done")(seen))
        kinds = [e.type for e in events.events]
        assert kinds.index("answer_ducked") < kinds.index("ignored") <= kinds.index("answer_resumed")
        assert {e.turn_id for e in events.of("answer_ducked") + events.of("answer_resumed")} == {1}
        assert not events.of("interrupted") and outcomes(session) == [(1, "answered"), (2, "ignored")]


def test_query_during_the_spoken_answer_cuts_it_where_it_was_heard(processor, no_thread_left):  # noqa: F811
    # Two sentences of 1 s each; the text is complete at once, the speech plays on the audio clock.
    model = ScriptedModel([[QUERY, *words(processor, "It is red. It is round."), EOS], [QUERY, EOS]])
    with make_session(processor, model, tts=FakeTTS(secs=1.0)) as session:
        events = Collector(session)
        push(session, np.concatenate([tone(0.4), silence(0.3)]))
        events.until(has("audio_out", 2))
        events.until(has("response_done"))
        push(session, silence(0.3))  # 0.3 s into the first sentence (quiet: not echo, not speech)
        push(session, np.concatenate([tone(0.4, amplitude=0.9), silence(0.3)]))
        events.until(has("interrupted"))
        (cut,) = events.of("interrupted")
        assert cut.turn_id == 1 and cut.text == "It is red."  # the user never heard the second sentence
        assert events.of("answer_ducked")[0].turn_id == 1
        assert outcomes(session)[0] == (1, "interrupted") and session.history[1].content == "It is red."
