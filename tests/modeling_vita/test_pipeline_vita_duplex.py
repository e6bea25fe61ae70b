"""Tests of the `vita-duplex` pipeline with the tiny VITA model (random weights) and the tiny processor."""

import json
import threading

import numpy as np
import pytest
import torch
from transformers import pipeline

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.duplex_session import DuplexSession
from modeling_vita.duplex_vad import VADParams
from modeling_vita.pipeline_vita_duplex import VitaDuplexPipeline, register_vita_duplex_pipeline
from modeling_vita.testing_utils import tiny_vita_config
from processing_vita.testing_utils import tiny_vita_processor
from tests.utils import run_with_project_hidden

STATES = ("query_audio", "noisy_audio", "query_text")


@pytest.fixture(scope="module")
def pipe():
    torch.manual_seed(0)
    model = VitaForConditionalGeneration(tiny_vita_config()).eval()
    return VitaDuplexPipeline(model=model, processor=tiny_vita_processor(), max_new_tokens=8)


def noise(secs, rate=16_000, seed=0):
    return (np.random.default_rng(seed).standard_normal(int(secs * rate)) * 0.1).astype(np.float32)


def test_one_shot_audio(pipe):
    out = pipe(audio=noise(1.0))
    assert set(out) == {"state", "text"} and out["state"] in STATES and isinstance(out["text"], str)
    for token in ("<1>", "<2>", "<3>"):
        assert token not in out["text"]


def test_one_shot_text_is_a_text_query(pipe):
    out = pipe(text="What time is it?", max_new_tokens=4)
    assert out["state"] == "query_text" and isinstance(out["text"], str)


def test_one_shot_audio_image_text_and_other_rate(pipe):
    from PIL import Image

    out = pipe(audio=noise(0.5, rate=8000), sampling_rate=8000, images=Image.new("RGB", (56, 56)), text="What?")
    assert out["state"] in STATES


def test_noisy_state_stops_at_the_state_token(pipe):
    noisy = pipe.processor.tokenizer.convert_tokens_to_ids("<2>")

    class PreferNoisy:
        def __call__(self, input_ids, scores):
            scores = scores.clone()
            scores[:, noisy] += 1e4
            return scores

    out = pipe(audio=noise(1.0), generate_kwargs={"logits_processor": [PreferNoisy()]})
    assert out == {"state": "noisy_audio", "text": ""}


def test_bad_inputs_raise(pipe):
    with pytest.raises(ValueError, match="audio or text"):
        pipe(images=None)
    with pytest.raises(ValueError, match="unexpected parameters"):
        pipe(audio=noise(0.5), temperature_typo=1.0)


def test_registered_task_and_session(pipe):
    register_vita_duplex_pipeline()
    registered = pipeline("vita-duplex", model=pipe.model, processor=pipe.processor, max_new_tokens=4)
    assert isinstance(registered, VitaDuplexPipeline)
    assert registered(audio=noise(1.0))["state"] in STATES

    before = set(threading.enumerate())
    session = registered.session(vad=VADParams(stop_secs=0.3))
    assert isinstance(session, DuplexSession) and session.generation_kwargs["max_new_tokens"] == 4
    session.push_text("Hello")
    assert session.wait_idle(20)
    types = [event.type for event in session.events(timeout=0.05)]
    session.close()
    assert types[0] == "state_decided" and types[-1] == "response_done"
    assert not [thread for thread in set(threading.enumerate()) - before if thread.is_alive()]


def test_saved_pipeline_loads_as_remote_code_where_the_project_is_hidden(tmp_path):
    register_vita_duplex_pipeline()
    model = VitaForConditionalGeneration(tiny_vita_config()).eval()
    pipeline("vita-duplex", model=model, processor=tiny_vita_processor()).save_pretrained(tmp_path / "vita")
    config = json.loads((tmp_path / "vita" / "config.json").read_text())
    assert config["custom_pipelines"]["vita-duplex"]["impl"] == "pipeline_vita_duplex.VitaDuplexPipeline"
    stdout = run_with_project_hidden(
        f"""
        import numpy as np
        from transformers import pipeline
        pipe = pipeline("vita-duplex", model={str(tmp_path / "vita")!r}, trust_remote_code=True)
        assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
        out = pipe(audio=np.zeros(24000, dtype=np.float32), max_new_tokens=4)
        assert out["state"] in ("query_audio", "noisy_audio", "query_text"), out
        print("PIPELINE_OK", out)
        """,
        tmp_path,
    )
    assert "PIPELINE_OK" in stdout
