"""The Space and `vita-duplex` on vLLM (`--backend vllm`), and `modeling_vita` under vLLM's transformers.

The Space's chat tab on one shared vLLM engine answers the same questions (an image, a follow-up, a video file) with
the same words as on transformers (the reference is `make_reference.py`'s `space_chat`); its real-time tab runs a
spoken turn through the engine; the command line plays a recording to a session on vLLM. In this environment
(transformers 5.19) `modeling_vita` imports with its duplex runtime and names the transformers its model classes need.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from .conftest import ENGINE_ARGS, load_reference, reference_folder
from .duplex_support import SR, EnergyScorer, silence, tone

logger = logging.getLogger(__name__)

MIC_RATE = 48_000


def test_model_classes_name_the_transformers_they_need():
    import transformers

    import modeling_vita

    if modeling_vita.HAS_MODEL_CLASSES:
        pytest.skip(f"transformers {transformers.__version__} has the model classes; the vLLM environment has 5.19")
    with pytest.raises(ImportError, match=r"needs transformers >= 5\.24, found transformers 5\.19") as raised:
        modeling_vita.VitaForConditionalGeneration  # noqa: B018
    assert "backend='vllm'" in str(raised.value)
    assert "DuplexSession" in modeling_vita.__all__ and "VitaConfig" not in modeling_vita.__all__
    with pytest.raises(AttributeError):
        modeling_vita.NoSuchName  # noqa: B018


@pytest.fixture(scope="module")
def space_runtime():
    from spaces_demo.runtime import load_runtime

    args = dict(ENGINE_ARGS, limit_mm_per_prompt={"image": 2, "audio": 4, "video": 1})
    runtime = load_runtime(str(reference_folder("qwen2")), backend="vllm", engine_args=args)
    yield runtime
    runtime.close()


def test_space_chat_on_vllm_answers_as_on_transformers(space_runtime):
    from spaces_demo.chat import ChatSession, ChatTurn
    from spaces_demo.page import build_demo

    from .make_reference import NEW_TOKENS, space_chat_turns

    folder = reference_folder("qwen2")
    demo = build_demo(runtime=space_runtime, tts="none")  # the page is built over the vLLM runtime
    assert demo.vita_space.runtime is space_runtime and space_runtime.model is None
    session = ChatSession(space_runtime, max_new_tokens=NEW_TOKENS)
    answers = []
    for fields in space_chat_turns(folder):
        turn = list(session.ask(ChatTurn(**fields)))[-1]
        assert turn.done and turn.error is None
        answers.append({"state": turn.state.value, "answer": turn.answer})
    # Equal answers to a video file too: vLLM gets the frames `VitaProcessor` would sample from it (`video_frames`).
    assert answers == load_reference(folder)["space_chat"]
    assert answers[0]["answer"]  # a real answer, not an empty match


def test_space_realtime_tab_runs_a_spoken_turn_on_vllm(space_runtime):
    from modeling_vita.duplex_events import Error, ResponseDone, StateDecided
    from modeling_vita.duplex_vad import VADParams
    from spaces_demo.realtime import RealtimeHandler

    vad = VADParams(start_secs=0.064, stop_secs=0.2, min_segment_secs=0.2, pre_roll_secs=0.1)
    handler = RealtimeHandler(
        space_runtime,
        vad=vad,
        vad_scorer=EnergyScorer(),
        turn_detector=None,
        generation_kwargs={"max_new_tokens": 8},
    )
    try:
        recording = np.concatenate([silence(0.3), tone(1.0), silence(1.5)])
        mic = (np.repeat(recording, MIC_RATE // SR) * 32767).astype(np.int16)
        step = MIC_RATE // 10
        for start in range(0, len(mic), step):
            handler.receive((MIC_RATE, mic[start : start + step]))
        handler.finish(timeout=60.0)
        decided = [event for event in handler.events if isinstance(event, StateDecided)]
        assert len(decided) == 1, handler.transcript()
        if decided[0].state.value != "noisy_audio":  # a random model decides at random; a query is answered
            assert any(isinstance(event, ResponseDone) for event in handler.events), handler.transcript()
        assert not [event for event in handler.events if isinstance(event, Error)], handler.transcript()
    finally:
        handler.close()


def test_vita_duplex_command_runs_a_session_on_vllm(tmp_path):
    import soundfile

    from tests.utils import espeak

    speech, rate = espeak("What colour is the circle?", tmp_path / "question.wav")
    wav = tmp_path / "talk.wav"
    soundfile.write(
        wav, np.concatenate([np.zeros(rate // 2, np.float32), speech, np.zeros(2 * rate, np.float32)]), rate
    )
    args = dict(ENGINE_ARGS, limit_mm_per_prompt={"image": 1, "audio": 4, "video": 0})
    command = [sys.executable, "-m", "modeling_vita.cli_vita_duplex", "--model", str(reference_folder("qwen2"))]
    command += ["--audio", str(wav), "--backend", "vllm", "--vllm-engine-args", json.dumps(args)]
    command += ["--max-new-tokens", "8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    logger.info("vita-duplex printed:\n%s\n%s", done.stdout, done.stderr[-3000:])
    assert done.returncode == 0, done.stderr[-3000:]
    # Silero heard the question, the turn was decided by the model served on vLLM and ended.
    assert "speech from" in done.stdout and "turn 1: " in done.stdout, done.stdout
    assert "done" in done.stdout or "ignored" in done.stdout, done.stdout
