"""Tests of the chat tab's conversation (`spaces_demo/chat.py`) and of one conversation per browser session.

The tiny random VITA answers; where a test needs a given decision (`<2>` for background talk) the turn is scripted with
a logits processor after the state constraint, as the duplex tests do. Sessions are checked at the chat level (two
`ChatSession`s answering at the same time on one model) and at the app level (`VitaSpace` with two browser session
hashes, `unload` closing only the one that left).
"""

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from modeling_vita.generation_vita import prepare_turn_inputs
from processing_vita import VitaState
from spaces_demo.chat import ChatSession, ChatTurn, prompt_messages
from spaces_demo.handlers import VitaSpace, chat_messages


def _image(colour="red"):
    from PIL import Image

    return Image.new("RGB", (56, 56), colour)


def _noise(secs=1.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(16_000 * secs)) * 0.1).astype(np.float32), 16_000


def _answer(session, turn):
    updates = [(update.state, update.answer) for update in session.ask(turn)]
    return turn, updates


def test_typed_question_with_an_image_is_a_typed_query_streamed_token_by_token(tiny_runtime, no_thread_left):
    session = ChatSession(tiny_runtime, max_new_tokens=8)
    turn, updates = _answer(session, ChatTurn(text="What colour is the shape?", image=_image()))
    assert turn.state is VitaState.QUERY_TEXT and turn.done and turn.answered and turn.badge == "typed query"
    assert len(updates) >= 2 and all(state is VitaState.QUERY_TEXT for state, _ in updates)
    texts = [text for _, text in updates]
    assert all(later.startswith(earlier.rstrip()) for earlier, later in zip(texts, texts[1:]))  # it grows
    assert tiny_runtime.state_tokens == {"query_audio": "<1>", "noisy_audio": "<2>", "query_text": "<3>"}
    for token in tiny_runtime.state_tokens.values():
        assert token not in turn.answer
    assert session.turns == [turn] and session.history == [turn]


def test_background_talk_gets_its_badge_but_stays_out_of_the_next_prompt(tiny_runtime, scripted, no_thread_left):
    generation_kwargs, _ = scripted(
        [(VitaState.QUERY_AUDIO, 3), (VitaState.NOISY_AUDIO, 0), (VitaState.QUERY_AUDIO, 3)]
    )
    session = ChatSession(tiny_runtime, generation_kwargs=generation_kwargs)
    spoken, _ = _answer(session, ChatTurn(audio=_noise(seed=1)))
    talk, updates = _answer(session, ChatTurn(audio=_noise(seed=2)))
    assert spoken.state is VitaState.QUERY_AUDIO and spoken.answered and spoken.badge == "answered query (audio)"
    assert talk.state is VitaState.NOISY_AUDIO and talk.answer == "" and not talk.answered
    assert talk.badge == "ignored: background talk" and updates == [(VitaState.NOISY_AUDIO, "")]
    assert session.turns == [spoken, talk] and session.history == [spoken]

    follow_up = ChatTurn(text="And now?")
    messages = prompt_messages(session.history, follow_up)
    assert [message["role"] for message in messages] == ["user", "assistant", "user"]
    assert messages[0]["content"] == [{"type": "audio", "audio": spoken.audio}]
    # Answers go back with their state; the chat template writes its token before the answer, as VITA was trained.
    assert messages[1] == {"role": "assistant", "content": spoken.answer, "state": VitaState.QUERY_AUDIO}
    prompt = tiny_runtime.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert f"<1> {spoken.answer}".strip() in prompt and "<2>" not in prompt and "<3>" not in prompt


def test_a_video_goes_to_the_processor_as_a_video(tiny_runtime, tmp_path):
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=4)
        stream.width, stream.height, stream.pix_fmt = 56, 56, "yuv420p"
        for level in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((56, 56, 3), 30 * level, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    session = ChatSession(tiny_runtime, max_new_tokens=4)
    turn = ChatTurn(text="Which way does the shape move?", video=str(path))
    inputs = prepare_turn_inputs(tiny_runtime.processor, prompt_messages([], turn), tiny_runtime.model)
    assert "pixel_values_videos" in inputs and "pixel_values" not in inputs
    assert inputs["video_num_frames"].tolist() == [4]  # 2 s at 4 fps: one frame a second, at least 4 (VITA's rule)
    prompt = tiny_runtime.processor.decode(inputs["input_ids"][0])
    assert "<video>" in prompt and "<image>" not in prompt
    answered, _ = _answer(session, turn)
    assert answered.state is VitaState.QUERY_TEXT and answered.done


def test_two_sessions_answering_at_once_keep_their_own_history(tiny_runtime, no_thread_left):
    questions = {"a": ["What colour is the shape?", "How many shapes are there?"], "b": ["What is two plus three?"]}
    alone = {}
    for name, texts in questions.items():
        session = ChatSession(tiny_runtime, max_new_tokens=12)
        alone[name] = [_answer(session, ChatTurn(text=text))[0].answer for text in texts]

    sessions = {name: ChatSession(tiny_runtime, max_new_tokens=12) for name in questions}
    start = threading.Barrier(len(sessions))
    errors = []

    def converse(name):
        try:
            start.wait()
            for text in questions[name]:
                _answer(sessions[name], ChatTurn(text=text))
        except Exception as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=converse, args=(name,)) for name in sessions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    for name, session in sessions.items():
        assert [turn.text for turn in session.turns] == questions[name]
        assert [turn.answer for turn in session.turns] == alone[name]  # the other conversation changed nothing
    follow_up = prompt_messages(sessions["b"].history, ChatTurn(text="Why?"))
    shown = str(follow_up)
    assert "What is two plus three?" in shown and not any(text in shown for text in questions["a"])


def test_leaving_mid_answer_stops_the_generation(tiny_runtime, scripted, no_thread_left):
    generation_kwargs, script = scripted([(VitaState.QUERY_TEXT, 200)], step_secs=0.01, max_new_tokens=256)
    session = ChatSession(tiny_runtime, generation_kwargs=generation_kwargs)
    answers = session.ask(ChatTurn(text="Tell me a long story."))
    next(answers)
    answers.close()  # what gradio does to the generator when the browser goes away
    assert session.turns[0].done and not session.turns[0].error
    session.close()
    with pytest.raises(ValueError, match="closed"):
        next(session.ask(ChatTurn(text="Hello?")))


def test_a_question_needs_text_or_audio(tiny_runtime):
    with pytest.raises(ValueError, match="found neither"):
        next(ChatSession(tiny_runtime).ask(ChatTurn(image=_image())))


def test_chat_messages_show_media_text_and_the_badge_of_each_turn():
    turns = [
        ChatTurn(text="What colour?", image_path="/up/a.png", state=VitaState.QUERY_TEXT, answer="red <b>", done=True),
        ChatTurn(audio_path="/up/q.wav", state=VitaState.QUERY_AUDIO, answer="five", done=True),
        ChatTurn(audio_path="/up/t.wav", state=VitaState.NOISY_AUDIO, done=True),
        ChatTurn(text="Next?"),
    ]
    messages = chat_messages(turns)
    assert [message["role"] for message in messages] == ["user", "user", "assistant"] + ["user", "assistant"] * 2 + [
        "user",
        "assistant",
    ]
    assert messages[0]["content"] == {"path": "/up/a.png"} and messages[1]["content"] == "What colour?"
    assert 'class="vita-badge vita-query_text"' in messages[2]["content"] and "red &lt;b&gt;" in messages[2]["content"]
    assert "answered query (audio)</span> five" in messages[4]["content"]
    assert "ignored: background talk</span>" in messages[6]["content"] and messages[6]["content"].endswith("</span>")
    assert "deciding" in messages[8]["content"]


def test_each_browser_session_gets_its_own_conversation_and_unload_closes_only_it(tiny_runtime, no_thread_left):
    space = VitaSpace(tiny_runtime, max_new_tokens=6)
    alice, bob = SimpleNamespace(session_hash="alice"), SimpleNamespace(session_hash="bob")
    *_, (chatbot_a, session_a, *cleared) = space.chat("What colour is the shape?", None, None, None, None, alice)
    *_, (chatbot_b, session_b, *_) = space.chat("What is two plus three?", None, None, None, None, bob)
    *_, (chatbot_a, same_a, *_) = space.chat("How many shapes?", None, None, None, session_a, alice)
    assert cleared == ["", None, None, None]  # the inputs are emptied for the next question
    assert same_a is session_a and session_b is not session_a
    assert [turn.text for turn in session_a.turns] == ["What colour is the shape?", "How many shapes?"]
    assert [turn.text for turn in session_b.turns] == ["What is two plus three?"]
    assert len(chatbot_a) == 4 and len(chatbot_b) == 2
    assert space.open_sessions() == 2

    space.unload(alice)
    assert space.open_sessions() == 1
    with pytest.raises(ValueError, match="closed"):
        next(session_a.ask(ChatTurn(text="Still there?")))
    *_, (_, still_b, *_) = space.chat("And four plus four?", None, None, None, session_b, bob)
    assert still_b is session_b and len(session_b.turns) == 2
    space.unload(bob)
    assert space.open_sessions() == 0
    *_, (_, reopened, *_) = space.chat("Hello again?", None, None, None, session_a, alice)  # a stale state
    assert reopened is not session_a and [turn.text for turn in reopened.turns] == ["Hello again?"]
    space.unload(alice)


def test_a_new_question_stops_the_running_answer_and_is_not_stopped_by_its_cleanup(tiny_runtime, scripted):
    generation_kwargs, _ = scripted(
        [(VitaState.QUERY_TEXT, 200), (VitaState.QUERY_TEXT, 5)], step_secs=0.01, max_new_tokens=256
    )
    session = ChatSession(tiny_runtime, generation_kwargs=generation_kwargs)
    first_turn = ChatTurn(text="Tell me a long story.")
    first = session.ask(first_turn)
    next(first)  # streaming
    second, _ = _answer(session, ChatTurn(text="What is two plus three?"))
    rest = list(first)  # the first answer's reader ends (and cleans up) after the second question ran
    assert second.done and not second.error and len(tiny_runtime.processor.tokenizer.encode(second.answer)) >= 3
    assert first_turn.done and rest and len(first_turn.answer) < 200  # it was cut short
    assert session._running is None
