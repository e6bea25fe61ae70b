"""The duplex session on the vLLM backend (`DuplexSession(..., backend="vllm", engine=VllmEngine(...))`): it answers
a spoken query, ignores noise, is interrupted (the aborted request really stops: the engine logs no more steps for
it), and two sessions share one engine. The tiny random model's decision is scripted by an engine-side logits
processor (`scripted_states.py`: a short sound is noise, a long one a query), under the real state constraint."""

from __future__ import annotations

import json
import logging
import os
import time

import pytest

from .conftest import ENGINE_ARGS, reference_folder
from .duplex_support import Collector, EnergyScorer, has, push, read_steps, silence, tone

logger = logging.getLogger(__name__)

NOISE_BELOW_AUDIO_TOKENS = 10  # a 0.3 s sound gives 4 audio tokens, a 1 s one 16
STEP_DELAY = 0.03


@pytest.fixture(scope="module")
def duplex(tmp_path_factory):
    """(engine, processor, steps file, session factory) on the tiny Qwen2 VITA."""
    import vllm_vita
    from modeling_vita.duplex_session import DuplexSession
    from modeling_vita.duplex_vad import VADParams
    from modeling_vita.duplex_vllm_backend import VllmEngine
    from processing_vita import VitaProcessor

    folder = reference_folder("qwen2")
    # The processor's state tokens script the engine, so read them from the folder first (vLLM's plugin registers
    # what VitaProcessor needs under vLLM's transformers).
    vllm_vita.register()
    processor = VitaProcessor.from_pretrained(folder)
    spellings = {
        name: processor.tokenizer.encode(token, add_special_tokens=False)
        for name, token in processor.state_tokens.items()
    }
    steps = tmp_path_factory.mktemp("vllm_duplex") / "steps.txt"
    script = {
        "audio_token_id": processor.audio_token_id,
        "noise_below": NOISE_BELOW_AUDIO_TOKENS,
        "noise": spellings["noisy_audio"],
        "query": spellings["query_audio"],
        "step_delay": STEP_DELAY,
        "steps_file": str(steps),
    }
    os.environ["VITA_TEST_SCRIPT"] = json.dumps(script)  # read by the engine-core process it starts
    args = dict(ENGINE_ARGS, limit_mm_per_prompt={"image": 1, "audio": 4, "video": 0})
    engine = VllmEngine(str(folder), logits_processors=["tests.vllm.scripted_states:ScriptedStates"], **args)
    vad = VADParams(start_secs=0.064, stop_secs=0.2, min_segment_secs=0.2, pre_roll_secs=0.1)

    def session(max_new_tokens: int = 16):
        kwargs = {"max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens}  # no early EOS
        return DuplexSession(
            None,
            processor,
            vad=vad,
            vad_scorer=EnergyScorer(),
            turn_detector=None,
            generation_kwargs=kwargs,
            backend="vllm",
            engine=engine,
        )

    yield engine, processor, steps, session
    engine.close()
    os.environ.pop("VITA_TEST_SCRIPT", None)


def _request(session, turn_id: int) -> str:
    return f"{session._workers._prefix}-turn-{turn_id}"


def test_answers_a_spoken_query_about_an_image(duplex):
    from PIL import Image

    engine, processor, steps, new_session = duplex
    session = new_session()
    try:
        collector = Collector(session)
        session.push_image(Image.open(reference_folder("qwen2") / "image.png").convert("RGB"))
        push(session, tone(1.0))
        push(session, silence(0.6))
        collector.until(has("response_done"))
        (decided,) = collector.of("state_decided")
        assert decided.state.value == "query_audio"
        assert "".join(event.text for event in collector.of("text_delta"))
        assert session._workers.generated[decided.turn_id] == 16
        assert session.history[-1].role == "assistant" and session.history[-1].content
        assert len(session.history[-2].images) == 1  # the frame went with the query
    finally:
        session.close()


def test_ignores_noise_and_stops_its_request(duplex):
    engine, processor, steps, new_session = duplex
    session = new_session()
    try:
        collector = Collector(session)
        push(session, tone(0.3))
        push(session, silence(0.6))
        collector.until(has("ignored"))
        (decided,) = collector.of("state_decided")
        assert decided.state.value == "noisy_audio"
        assert not collector.of("text_delta")
        assert session.wait_idle(30)
        time.sleep(0.5)
        # Aborted at its state token: a step or two at most, of the 16 its min_tokens would have made.
        logged = read_steps(steps)[_request(session, decided.turn_id)]
        logger.info("noise request: %d engine steps", len(logged))
        assert len(logged) <= 3, logged
    finally:
        session.close()


def test_interruption_aborts_the_request(duplex):
    engine, processor, steps, new_session = duplex
    session = new_session(max_new_tokens=200)  # about 6 s of answer at the scripted step delay
    try:
        collector = Collector(session)
        push(session, tone(1.0))
        push(session, silence(0.6))
        collector.until(has("text_delta", 3))
        push(session, tone(1.0, freq=330.0))
        push(session, silence(0.6))
        collector.until(has("interrupted"))
        first = collector.of("state_decided")[0].turn_id
        request = _request(session, first)
        seen = len(read_steps(steps)[request])
        time.sleep(1.0)  # 30 steps' worth
        after = len(read_steps(steps)[request])
        logger.info("interrupted request: %d engine steps at the interruption, %d a second later", seen, after)
        assert after <= seen + 2, (seen, after)  # at most the step in flight when the abort landed
        assert after < 200
        streamed = session._workers.generated[first]
        time.sleep(0.3)
        assert session._workers.generated[first] == streamed < 200
        (interrupted,) = collector.of("interrupted")
        assert interrupted.turn_id == first
        collector.until(has("response_done"), timeout=120)  # the interrupting query is answered
    finally:
        session.close()


def test_two_sessions_share_one_engine(duplex):
    engine, processor, steps, new_session = duplex
    sessions = [new_session(max_new_tokens=24) for _ in range(2)]
    try:
        collectors = [Collector(s) for s in sessions]
        for session, freq in zip(sessions, (220.0, 440.0)):
            push(session, tone(1.0, freq=freq))
        for session in sessions:
            push(session, silence(0.6))
        for collector in collectors:
            collector.until(has("response_done"))
            assert collector.of("state_decided")[0].state.value == "query_audio"
            assert "".join(event.text for event in collector.of("text_delta"))
        logged = read_steps(steps)
        windows = []
        for session, collector in zip(sessions, collectors):
            times = [at for _, at in logged[_request(session, collector.of("state_decided")[0].turn_id)]]
            windows.append((min(times), max(times)))
        # Continuous batching: the two requests were decoded in the same engine steps, not one after the other.
        logger.info("two sessions' decoding windows: %s", windows)
        assert windows[0][0] < windows[1][1] and windows[1][0] < windows[0][1], windows
    finally:
        for session in sessions:
            session.close()


def test_state_constraint_holds_for_the_first_steps_only(duplex):
    """The engine-side constraint overrides the (scripted) model's own choice, spelling by spelling, then lets go."""
    from modeling_vita.duplex_vllm_backend import sampling_params, vllm_prompt

    engine, processor, steps, new_session = duplex
    messages = [{"role": "user", "content": [{"type": "audio", "audio": tone(1.0)}]}]
    prompt = vllm_prompt(processor, messages)
    spellings = [[100, 101], [100, 102]]  # two-token "state tokens" sharing their first token
    params = sampling_params({"max_new_tokens": 8, "min_new_tokens": 8}, spellings, "constraint-check")

    async def generate() -> list[int]:
        tokens: list[int] = []
        async for output in engine.engine.generate(prompt, params, "constraint-check"):
            tokens.extend(output.outputs[0].token_ids)
        return tokens

    tokens = engine.run(generate(), timeout=120)
    assert tokens[0] == 100 and tokens[1] in (101, 102), tokens  # the script pushes the query token, 7, at step 0
    assert len(tokens) == 8 and set(tokens[2:]) - {100, 101, 102}, tokens  # free after the spelling


def test_long_history_is_cut_to_the_engine_media_limit(duplex):
    """Seven spoken exchanges, an engine that takes 4 clips a prompt: the older audio goes (the answers stay), and
    the engine answers the turn instead of rejecting it."""
    import queue

    from modeling_vita.duplex_events import StartTurn, Turn, VitaState
    from modeling_vita.duplex_inbox import TurnFinished, WorkerEvent
    from modeling_vita.duplex_vllm_backend import VllmTurnWorkers
    from modeling_vita.generation_vita import state_token_sequences

    engine, processor, steps, new_session = duplex
    history = []
    for turn_id in range(6):
        history.append(Turn("user", "", VitaState.QUERY_AUDIO, audio=tone(1.0), turn_id=turn_id))
        history.append(Turn("assistant", f"answer {turn_id}", VitaState.QUERY_AUDIO, turn_id=turn_id))
    action = StartTurn(turn_id=6, audio=tone(1.0), history=tuple(history))
    inbox: queue.Queue = queue.Queue()
    spellings = state_token_sequences(processor.tokenizer, processor.state_tokens)
    workers = VllmTurnWorkers(engine, processor, spellings, {"max_new_tokens": 4}, inbox.put)
    prompt = workers._prompt(action)
    assert len(prompt["multi_modal_data"]["audio"]) <= 4
    assert "answer 0" in prompt["prompt"] and "answer 5" in prompt["prompt"]
    workers.start(action)
    messages = []
    while not any(isinstance(m, TurnFinished) for m in messages):
        messages.append(inbox.get(timeout=120))
    events = [m.event.type for m in messages if isinstance(m, WorkerEvent)]
    assert "error" not in events and "response_done" in events, events
