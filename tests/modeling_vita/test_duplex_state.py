"""Tests of the pure duplex state machine, driven by scripted events on a virtual clock (no threads, no model)."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_vita.duplex_events import (
    AnswerDucked,
    AnswerResumed,
    AudioOut,
    CancelTurn,
    Error,
    Ignored,
    ImageInput,
    Interrupted,
    ResponseDone,
    SpeakAhead,
    SpeechDiscarded,
    SpeechEnded,
    SpeechPaused,
    SpeechResumed,
    SpeechStarted,
    StartTurn,
    StateDecided,
    TextDelta,
    TextInput,
)
from modeling_vita.duplex_state import DuplexState, DuplexStateMachine


def segment(t: float, seconds: float = 1.0) -> SpeechEnded:
    audio = np.zeros(int(seconds * 16000), dtype=np.float32)
    return SpeechEnded(t, segment=audio, start=t - seconds, end=t)


def of(outputs, cls):
    return [item for item in outputs if isinstance(item, cls)]


def speak(machine: DuplexStateMachine, t: float) -> int:
    """The user speaks a segment that ends at `t`; returns the id of the turn it starts."""
    machine.handle(SpeechStarted(t - 1.0))
    (start,) = of(machine.handle(segment(t)), StartTurn)
    return start.turn_id


def answering(machine: DuplexStateMachine, t: float, text: str = "Once upon a time") -> int:
    """A spoken query answered with `text` streamed (not finished); returns the responding turn id."""
    turn = speak(machine, t)
    out = machine.handle(StateDecided(t + 0.2, state="query_audio", turn_id=turn))
    assert not of(out, StartTurn) and machine.responding_turn == turn  # it goes on from its decision
    for i, word in enumerate(text.split(" ")):
        machine.handle(TextDelta(t + 0.3 + 0.1 * i, text=word if i == 0 else " " + word, turn_id=turn))
    return turn


def test_noise_segment_does_not_interrupt_answer():
    machine = DuplexStateMachine()
    answer = answering(machine, 2.0, "Once upon")
    noise = speak(machine, 4.0)
    assert machine.state == DuplexState.DECIDING and machine.responding_turn == answer
    assert machine.ducked_turn == answer  # the onset paused the answer
    out = machine.handle(StateDecided(4.15, state="noisy_audio", turn_id=noise))
    # Its generation already ended at the state token (the streamer's stop); the machine only reports it.
    assert [item.type for item in out] == ["state_decided", "ignored", "answer_resumed"]
    assert out[0].latency == 4.15 - 4.0 and out[1] == Ignored(4.15, turn_id=noise)
    assert out[2] == AnswerResumed(4.15, turn_id=answer) and machine.ducked_turn is None
    assert machine.handle(ResponseDone(4.2, turn_id=noise)) == []
    assert machine.state == DuplexState.RESPONDING and machine.responding_turn == answer
    assert machine.handle(TextDelta(4.3, text=" a time", turn_id=answer)) == [TextDelta(4.3, " a time", answer)]
    assert machine.handle(ResponseDone(5.0, turn_id=answer)) == [ResponseDone(5.0, "Once upon a time", answer)]
    # The noise has its entry too (in input order), never shown to the model again.
    assert [(t.role, t.content, t.outcome, t.in_prompt) for t in machine.history] == [
        ("user", "", "answered", True),
        ("assistant", "Once upon a time", "answered", True),
        ("user", "", "ignored", False),
        ("assistant", "", "ignored", False),
    ]
    assert machine.state == DuplexState.LISTENING


def test_query_during_answer_interrupts_it_and_history_holds_both_turns():
    machine = DuplexStateMachine(restart_with_consolidated_history=True)
    first = answering(machine, 2.0, "Once upon")
    second = speak(machine, 4.0)
    out = machine.handle(StateDecided(4.2, state="query_audio", turn_id=second))
    assert of(out, Interrupted) == [Interrupted(4.2, text="Once upon", turn_id=first)]
    assert CancelTurn(first, reason="interrupted") in out
    # The second turn's prompt was built before the first answer entered the history: it restarts with the
    # consolidated history and its state already decided (no second decision).
    assert CancelTurn(second, reason="restarted") in out
    (restart,) = of(out, StartTurn)
    assert restart.state == "query_audio" and restart.kind == "audio"
    assert [(t.role, t.content, t.interrupted) for t in restart.history] == [
        ("user", "", False),
        ("assistant", "Once upon", True),
    ]
    assert machine.handle(TextDelta(4.3, text="late", turn_id=first)) == []  # the cut answer is silent now
    machine.handle(TextDelta(4.4, text="Sure.", turn_id=restart.turn_id))
    machine.handle(ResponseDone(4.6, turn_id=restart.turn_id))
    history = machine.history
    assert [(t.role, t.content, t.state, t.interrupted) for t in history] == [
        ("user", "", "query_audio", False),
        ("assistant", "Once upon", "query_audio", True),
        ("user", "", "query_audio", False),
        ("assistant", "Sure.", "query_audio", False),
    ]
    assert history[2].audio is not None and len(history[2].audio) == 16000
    assert machine.state == DuplexState.LISTENING


def test_query_during_answer_keeps_the_decision_cache_by_default():
    machine = DuplexStateMachine()
    first = answering(machine, 2.0, "Once upon")
    second = speak(machine, 4.0)
    out = machine.handle(StateDecided(4.2, state="query_audio", turn_id=second))
    assert [item.type for item in out] == ["state_decided", "interrupted", "cancel_turn"]  # no restart
    assert out[1] == Interrupted(4.2, text="Once upon", turn_id=first)
    assert machine.responding_turn == second  # it goes on from its decision: no second prefill
    machine.handle(TextDelta(4.4, text="Sure.", turn_id=second))
    machine.handle(ResponseDone(4.6, turn_id=second))
    assert [(t.role, t.content, t.interrupted) for t in machine.history] == [
        ("user", "", False),
        ("assistant", "Once upon", True),
        ("user", "", False),
        ("assistant", "Sure.", False),
    ]
    # The next turn's prompt holds the consolidated history, the interrupted answer included.
    (start,) = of(machine.handle(segment(6.0)), StartTurn)
    assert [(t.content, t.interrupted) for t in start.history][1] == ("Once upon", True)


def test_back_to_back_interrupts():
    machine = DuplexStateMachine(restart_with_consolidated_history=True)
    current = answering(machine, 1.0, "one")
    for k, t in enumerate((3.0, 3.5, 4.0)):
        new = speak(machine, t)
        out = machine.handle(StateDecided(t + 0.1, state="query_audio", turn_id=new))
        assert len(of(out, Interrupted)) == 1
        (restart,) = of(out, StartTurn)
        current = restart.turn_id
        assert machine.responding_turn == current
        if k < 2:
            machine.handle(TextDelta(t + 0.2, text=f"part{k}", turn_id=current))
    machine.handle(ResponseDone(5.0, text="final", turn_id=current))
    assert [(t.role, t.content, t.interrupted) for t in machine.history] == [
        ("user", "", False),
        ("assistant", "one", True),
        ("user", "", False),
        ("assistant", "part0", True),
        ("user", "", False),
        ("assistant", "part1", True),
        ("user", "", False),
        ("assistant", "final", False),
    ]


def test_query_without_running_answer_continues_the_same_turn():
    machine = DuplexStateMachine()
    turn = speak(machine, 2.0)
    out = machine.handle(StateDecided(2.3, state="query_audio", turn_id=turn))
    assert [item.type for item in out] == ["state_decided"] and machine.responding_turn == turn
    assert out[0].latency == 2.3 - 2.0


def test_second_segment_while_first_is_deciding_loses_neither():
    machine = DuplexStateMachine()
    first = speak(machine, 2.0)
    machine.handle(SpeechStarted(2.5))
    out = machine.handle(segment(3.0))
    assert not of(out, CancelTurn)  # both decide
    (second,) = of(out, StartTurn)
    assert machine.deciding_turns == (first, second.turn_id)
    # The question decides first and is answered; the later segment is noise and is ignored.
    machine.handle(StateDecided(3.1, state="query_audio", turn_id=first))
    assert machine.responding_turn == first
    out = machine.handle(StateDecided(3.2, state="noisy_audio", turn_id=second.turn_id))
    assert [item.type for item in out] == ["state_decided", "ignored"]
    machine.handle(TextDelta(3.3, text="Red.", turn_id=first))
    machine.handle(ResponseDone(3.4, turn_id=first))
    assert [(t.turn_id, t.outcome) for t in machine.history[::2]] == [(first, "answered"), (second.turn_id, "ignored")]


def test_older_query_deciding_after_a_newer_one_answers_is_superseded():
    machine = DuplexStateMachine()
    old = speak(machine, 2.0)
    new = speak(machine, 3.0)
    machine.handle(StateDecided(3.1, state="query_audio", turn_id=new))
    out = machine.handle(StateDecided(3.2, state="query_audio", turn_id=old))
    assert [item.type for item in out] == ["state_decided", "interrupted", "cancel_turn"]
    assert out[1] == Interrupted(3.2, text="", turn_id=old) and out[2] == CancelTurn(old, reason="superseded")
    assert machine.handle(TextDelta(3.3, text="stale", turn_id=old)) == []
    assert machine.handle(ResponseDone(3.4, text="stale", turn_id=old)) == []
    assert machine.responding_turn == new
    machine.handle(ResponseDone(3.6, text="Sure.", turn_id=new))
    assert [(t.turn_id, t.content, t.outcome) for t in machine.history[1::2]] == [
        (old, "", "interrupted"),
        (new, "Sure.", "answered"),
    ]


def test_response_finishing_while_new_segment_is_decided():
    machine = DuplexStateMachine(restart_with_consolidated_history=True)
    answer = answering(machine, 1.0, "All done")
    pending = speak(machine, 3.0)
    assert machine.handle(ResponseDone(3.05, turn_id=answer)) == [ResponseDone(3.05, "All done", answer)]
    assert machine.state == DuplexState.DECIDING
    out = machine.handle(StateDecided(3.2, state="query_audio", turn_id=pending))
    assert of(out, Interrupted) == []  # nothing left to interrupt
    (restart,) = of(out, StartTurn)  # but the history changed: answer with it
    assert [t.content for t in restart.history] == ["", "All done"]
    # The same with a noisy segment: ignored, nothing restarted, back to listening.
    other = speak(machine, 5.0)
    out = machine.handle(StateDecided(5.1, state="noisy_audio", turn_id=other))
    assert of(out, Ignored) and not of(out, StartTurn)
    assert machine.state == DuplexState.RESPONDING  # the restarted answer is still the one running


def test_error_in_one_turn_keeps_the_machine_consistent():
    machine = DuplexStateMachine()
    answer = answering(machine, 1.0, "Half an")
    out = machine.handle(Error(2.0, message="CUDA out of memory", turn_id=answer))
    assert out == [Error(2.0, message="CUDA out of memory", turn_id=answer), CancelTurn(answer, reason="error")]
    assert machine.state == DuplexState.LISTENING
    assert [(t.content, t.interrupted) for t in machine.history] == [("", False), ("Half an", True)]
    deciding = speak(machine, 3.0)
    assert machine.handle(Error(3.1, message="bad features", turn_id=deciding))[1] == CancelTurn(deciding, "error")
    assert machine.state == DuplexState.LISTENING and len(machine.history) == 4
    assert [t.outcome for t in machine.history[1::2]] == ["error", "error"]
    assert [t.in_prompt for t in machine.history[1::2]] == [True, False]  # the half answer stays in the prompt
    assert machine.handle(Error(3.2, message="bad chunk")) == [Error(3.2, message="bad chunk")]
    ended_early = speak(machine, 4.0)
    (error,) = machine.handle(ResponseDone(4.1, turn_id=ended_early))
    assert isinstance(error, Error) and "state token" in error.message
    # The session goes on: the next query is answered normally.
    answering(machine, 6.0, "fine")
    assert machine.state == DuplexState.RESPONDING


def test_text_query_interrupts_answer_immediately():
    machine = DuplexStateMachine()
    answer = answering(machine, 1.0, "Let me")
    out = machine.handle(TextInput(2.0, text="stop, what time is it?"))
    assert [item.type for item in out] == ["interrupted", "cancel_turn", "start_turn"]
    start = out[-1]
    assert start.kind == "text" and start.text == "stop, what time is it?"
    assert [t.content for t in start.history] == ["", "Let me"]  # already consolidated: no restart needed
    # Even a hesitant model (<2> on typed text) cannot make the assistant ignore a typed query.
    out = machine.handle(StateDecided(2.1, state="noisy_audio", turn_id=start.turn_id))
    assert out[0].state == "query_text" and not of(out, Ignored)
    assert machine.responding_turn == start.turn_id
    machine.handle(ResponseDone(2.5, text="Noon.", turn_id=start.turn_id))
    assert machine.history[-2].content == "stop, what time is it?" and machine.history[-2].state == "query_text"
    assert answer != start.turn_id


def test_frames_go_with_the_first_query_that_sees_them():
    machine = DuplexStateMachine(max_frames=2)
    for i in range(5):
        assert machine.handle(ImageInput(0.1 * i, image=f"frame{i}")) == []
    assert machine.frames == ("frame3", "frame4")
    noise = speak(machine, 1.0)
    machine.handle(StateDecided(1.1, state="noisy_audio", turn_id=noise))
    assert machine.frames == ("frame3", "frame4")  # noise is never shown to the model again: still unseen
    turn = speak(machine, 2.0)
    machine.handle(StateDecided(2.1, state="query_audio", turn_id=turn))
    machine.handle(ResponseDone(2.5, text="A cat.", turn_id=turn))
    assert machine.frames == ()
    (start,) = of(machine.handle(TextInput(3.0, text="and now?")), StartTurn)
    assert start.images == ()  # already in the history, where the conversation's cached prefix holds them
    assert [(t.content, t.images) for t in start.history] == [("", ("frame3", "frame4")), ("A cat.", ())]
    machine.handle(ImageInput(3.5, image="frame5"))
    assert machine.frames == ("frame5",)
    # A prompt without history (max_history_turns=0) shows the latest frames again with every query.
    forgetful = DuplexStateMachine(max_frames=2, max_history_turns=0)
    forgetful.handle(ImageInput(0.1, image="still"))
    for t in (1.0, 2.0):
        (start,) = of(forgetful.handle(TextInput(t, text="and now?")), StartTurn)
        assert start.images == ("still",) and start.history == ()
        forgetful.handle(StateDecided(t + 0.1, state="query_text", turn_id=start.turn_id))
        forgetful.handle(ResponseDone(t + 0.2, text="A cat.", turn_id=start.turn_id))


def test_speech_onset_ducks_a_spoken_answer_and_a_query_cuts_it_where_it_was_heard():
    machine = DuplexStateMachine(speaks_answers=True)
    answer = answering(machine, 1.0, "Red. It is round.")
    machine.handle(ResponseDone(1.8, turn_id=answer))
    one_second = np.zeros(16000, dtype=np.float32)
    for t, text in ((1.5, "Red."), (1.6, "It is round.")):
        assert of(machine.handle(AudioOut(t, audio=one_second, text=text, turn_id=answer)), AudioOut)
    # Its text is complete but the second sentence plays from 2.5 to 3.5 s: the answer is live.
    assert machine.handle(SpeechStarted(2.7)) == [SpeechStarted(2.7), AnswerDucked(2.7, turn_id=answer)]
    query = of(machine.handle(segment(3.0)), StartTurn)[0].turn_id
    out = machine.handle(StateDecided(3.2, state="query_audio", turn_id=query))
    assert of(out, Interrupted) == [Interrupted(3.2, text="Red. It is round.", turn_id=answer)]
    assert machine.history[1].outcome == "interrupted" and machine.history[1].content == "Red. It is round."
    # Paused at 2.2 s, the second sentence (from 2.5 s) had not started: it was never heard.
    machine2 = DuplexStateMachine(speaks_answers=True)
    answer = answering(machine2, 1.0, "Red. It is round.")
    machine2.handle(AudioOut(1.4, audio=one_second, text="Red.", turn_id=answer))
    machine2.handle(AudioOut(1.45, audio=one_second, text="It is round.", turn_id=answer))
    machine2.handle(SpeechStarted(2.2))
    query = of(machine2.handle(segment(3.0)), StartTurn)[0].turn_id
    out = machine2.handle(StateDecided(3.2, state="query_audio", turn_id=query))
    assert of(out, Interrupted)[0].text == "Red." and machine2.history[1].content == "Red."


def test_turn_started_on_a_pause_is_hidden_until_the_segment_ends():
    machine = DuplexStateMachine()
    machine.handle(SpeechStarted(0.5))
    audio = np.ones(16000, dtype=np.float32)
    (start,) = machine.handle(SpeechPaused(1.6, segment=audio, start=0.4, end=1.5))
    assert isinstance(start, StartTurn) and machine.speculative_turn == start.turn_id
    turn = start.turn_id
    # The model runs ahead: nothing is shown, the text goes to the speech engine.
    assert machine.handle(StateDecided(1.7, state="query_audio", turn_id=turn)) == []
    (ahead,) = machine.handle(TextDelta(1.75, text="Red.", turn_id=turn))
    assert isinstance(ahead, SpeakAhead) and ahead.event.text == "Red."
    assert machine.handle(AudioOut(1.8, audio=audio, text="Red.", turn_id=turn)) == []
    assert machine.history == [] and machine.state == DuplexState.USER_SPEAKING
    out = machine.handle(SpeechEnded(1.9, segment=audio, start=0.4, end=1.5))
    assert [item.type for item in out] == ["speech_ended", "state_decided", "text_delta", "audio_out"]
    assert all(item.time == 1.9 for item in out) and out[1].latency == 0.0
    assert machine.responding_turn == turn and machine.speculative_turn is None
    machine.handle(ResponseDone(2.0, turn_id=turn))
    assert [(t.turn_id, t.content, t.outcome) for t in machine.history[1::2]] == [(turn, "Red.", "answered")]


def test_speech_resuming_after_a_pause_cancels_the_hidden_turn():
    machine = DuplexStateMachine()
    machine.handle(SpeechStarted(0.5))
    audio = np.ones(8000, dtype=np.float32)
    (start,) = machine.handle(SpeechPaused(1.0, segment=audio, start=0.4, end=0.9))
    machine.handle(StateDecided(1.1, state="query_audio", turn_id=start.turn_id))
    assert machine.handle(SpeechResumed(1.2)) == [CancelTurn(start.turn_id, reason="speculation")]
    assert machine.handle(TextDelta(1.3, text="stale", turn_id=start.turn_id)) == []
    # The whole sentence ends later: a new turn with all of it; the hidden one never was an input.
    longer = np.ones(32000, dtype=np.float32)
    out = machine.handle(SpeechEnded(2.5, segment=longer, start=0.4, end=2.4))
    (new,) = of(out, StartTurn)
    assert new.turn_id != start.turn_id and len(new.audio) == 32000
    # A pause whose segment then ends differently (another start) is dropped the same way.
    (again,) = machine.handle(SpeechPaused(3.0, segment=audio, start=2.6, end=2.9))
    out = machine.handle(SpeechEnded(3.5, segment=longer, start=2.7, end=3.4))
    assert CancelTurn(again.turn_id, reason="speculation") in out and of(out, StartTurn)


def test_short_sound_resumes_a_ducked_answer():
    machine = DuplexStateMachine()
    answer = answering(machine, 1.0)
    assert of(machine.handle(SpeechStarted(2.0)), AnswerDucked) == [AnswerDucked(2.0, turn_id=answer)]
    assert machine.handle(SpeechStarted(2.1)) == [SpeechStarted(2.1)]  # one duck at a time
    out = machine.handle(SpeechDiscarded(2.3, start=1.9, end=2.2))
    assert of(out, AnswerResumed) == [AnswerResumed(2.3, turn_id=answer)] and machine.responding_turn == answer
    # Two segments in a row: the answer plays on only when both turned out to be noise.
    machine.handle(SpeechStarted(3.0))
    first = of(machine.handle(segment(3.5)), StartTurn)[0].turn_id
    machine.handle(SpeechStarted(3.6))
    second = of(machine.handle(segment(4.0)), StartTurn)[0].turn_id
    assert not of(machine.handle(StateDecided(4.1, state="noisy_audio", turn_id=first)), AnswerResumed)
    out = machine.handle(StateDecided(4.2, state="noisy_audio", turn_id=second))
    assert of(out, AnswerResumed) == [AnswerResumed(4.2, turn_id=answer)]


def test_state_follows_speech_and_turns():
    machine = DuplexStateMachine(max_history_turns=1)
    assert machine.state == DuplexState.LISTENING
    machine.handle(SpeechStarted(0.5))
    assert machine.state == DuplexState.USER_SPEAKING
    machine.handle(SpeechDiscarded(0.9, start=0.4, end=0.8))
    assert machine.state == DuplexState.LISTENING
    answer = answering(machine, 2.0)
    machine.handle(SpeechStarted(3.0))
    assert machine.state == DuplexState.USER_SPEAKING and machine.responding_turn == answer
    machine.handle(ResponseDone(3.5, turn_id=answer))
    answering(machine, 5.0)
    (start,) = of(machine.handle(TextInput(6.0, text="x")), StartTurn)
    assert len(start.history) == 2 and len(machine.history) == 4  # the prompt keeps the last exchange only
    assert len(machine.reset()) == 1 and machine.history == [] and machine.state == DuplexState.LISTENING


# Any sequence of inputs, including late and unknown turn ids, leaves the machine consistent.
_event = st.one_of(
    st.tuples(st.just("speech_started")),
    st.tuples(st.just("speech_ended")),
    st.tuples(st.just("text")),
    st.tuples(st.just("image")),
    st.tuples(st.just("decided"), st.integers(1, 12), st.sampled_from(["query_audio", "noisy_audio", "query_text"])),
    st.tuples(st.just("delta"), st.integers(1, 12)),
    st.tuples(st.just("done"), st.integers(1, 12)),
    st.tuples(st.just("error"), st.one_of(st.none(), st.integers(1, 12))),
)


def _make_event(t, kind, args):
    if kind == "speech_started":
        return SpeechStarted(t)
    if kind == "speech_ended":
        return segment(t)
    if kind == "text":
        return TextInput(t, text="q")
    if kind == "image":
        return ImageInput(t, image=t)
    if kind == "decided":
        return StateDecided(t, state=args[1], turn_id=args[0])
    if kind == "delta":
        return TextDelta(t, text="w", turn_id=args[0])
    if kind == "done":
        return ResponseDone(t, turn_id=args[0])
    return Error(t, message="boom", turn_id=args[0])


@settings(max_examples=200, deadline=None)
@given(st.lists(_event, max_size=40))
def test_history_is_consistent_after_any_sequence(script):
    machine = DuplexStateMachine(max_frames=3)
    started, cancelled = set(), set()
    for t, (kind, *args) in enumerate(script):
        event = _make_event(t, kind, args)
        for item in machine.handle(event):
            if isinstance(item, StartTurn):
                assert item.turn_id not in started
                started.add(item.turn_id)
                assert len(item.images) <= 3
            if isinstance(item, CancelTurn):
                assert item.turn_id in started and item.turn_id not in cancelled
                cancelled.add(item.turn_id)
            if isinstance(item, TextDelta):
                assert item.turn_id == machine.responding_turn
        history = machine.history
        assert len(history) % 2 == 0
        for user, assistant in zip(history[::2], history[1::2]):
            assert user.role == "user" and assistant.role == "assistant" and user.turn_id == assistant.turn_id
            assert user.outcome == assistant.outcome and assistant.state == user.state
        assert [t.turn_id for t in history[::2]] == sorted(t.turn_id for t in history[::2])
        active = set(machine.deciding_turns) | ({machine.responding_turn} - {None})
        assert active <= started and not active & cancelled
        assert machine.responding_turn not in machine.deciding_turns


# Random interleavings of speech, noise, typed questions and images, with a scripted model that decides each turn
# some steps later (in any order) and answers queries: every input ends in exactly one outcome.
_input = st.one_of(
    st.tuples(st.just("speech"), st.booleans(), st.booleans(), st.sampled_from(["", "pause", "resume"])),
    st.tuples(st.just("text")),
    st.tuples(st.just("image")),
    st.tuples(st.just("model"), st.integers(0, 5), st.sampled_from(["decide", "text", "done", "fail"])),
)

_OUTCOME_EVENTS = {"response_done": "answered", "ignored": "ignored", "interrupted": "interrupted", "error": "error"}


@settings(max_examples=300, deadline=None)
@given(st.lists(_input, max_size=30))
def test_every_input_ends_in_exactly_one_outcome(script):
    machine = DuplexStateMachine(max_frames=2)
    is_query: dict[int, bool] = {}
    decided: set[int] = set()
    reported: dict[int, list[str]] = {}
    inputs = 0
    t = 0.0

    def feed(event):
        for item in machine.handle(event):
            if isinstance(item, StartTurn):
                is_query.setdefault(item.turn_id, item.kind == "text" or pending_query[0])
            outcome = _OUTCOME_EVENTS.get(item.type)
            if outcome is not None and getattr(item, "turn_id", None) is not None:
                reported.setdefault(item.turn_id, []).append(outcome)

    pending_query = [False]
    for kind, *args in script:
        t += 0.1
        if kind == "speech":
            # (is a query, too short to keep, paused before its end: the pause confirmed or speech resumed)
            feed(SpeechStarted(t))
            pending_query[0] = args[0]
            if args[2]:
                feed(SpeechPaused(t + 0.03, segment=np.zeros(160, np.float32), start=t, end=t + 0.02))
            if args[2] == "resume":
                feed(SpeechResumed(t + 0.04))
            if args[1]:
                feed(SpeechDiscarded(t + 0.05, start=t, end=t + 0.04))
            else:
                inputs += 1
                end = t + 0.02 if args[2] == "pause" else t + 0.05
                feed(SpeechEnded(t + 0.05, segment=np.zeros(160, np.float32), start=t, end=end))
        elif kind == "text":
            inputs += 1
            feed(TextInput(t, text="q"))
        elif kind == "image":
            feed(ImageInput(t, image=t))
        else:
            running = set(machine.deciding_turns) | {machine.responding_turn, machine.speculative_turn}
            running = sorted(running - {None})
            if not running:
                continue
            turn = running[args[0] % len(running)]
            feed(_model_step(t, turn, args[1], turn in decided, is_query[turn]))
            decided.add(turn)
    # The scripted model finishes every turn still running.
    feed(SpeechResumed(t))  # a pause never confirmed is no input
    while machine.deciding_turns or machine.responding_turn is not None:
        t += 0.1
        turn = (machine.deciding_turns or (machine.responding_turn,))[0]
        feed(_model_step(t, turn, "done", turn in decided, is_query[turn]))
        decided.add(turn)
    history = machine.history
    assert len(history) == 2 * inputs
    for user in history[::2]:
        assert reported.get(user.turn_id) == [user.outcome], (user.turn_id, reported.get(user.turn_id), user.outcome)
    assert machine.ducked_turn is None


def _model_step(t, turn, step, was_decided, query):
    if step == "fail":
        return Error(t, message="boom", turn_id=turn)
    if not was_decided:
        return StateDecided(t, state="query_audio" if query else "noisy_audio", turn_id=turn)
    if step == "text":
        return TextDelta(t, text="w", turn_id=turn)
    return ResponseDone(t, turn_id=turn)
