"""Pinned behaviour of the committed vita-tiny: greedy tokens of `generate`, the pipeline's answers and the events of a
duplex session, recorded once from the checkpoint and compared on every run.

They guard refactors: moving code must not change what the embedded model says or when the session says it. The
pins live in `tests/data/vita_tiny_pins.json`; after a deliberate change of behaviour (a retrained checkpoint) rewrite
them with `VITA_WRITE_PINS=1 python -m pytest tests/test_vita_tiny_behaviour_pins.py` and say why in the commit.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoProcessor, pipeline

import modeling_vita  # noqa: F401 - registers the vita-duplex task
from tests.utils import espeak, requires_espeak

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO_ROOT / "spaces_demo" / "vita-tiny"
PINS = Path(__file__).parent / "data" / "vita_tiny_pins.json"
WRITE = os.environ.get("VITA_WRITE_PINS") == "1"

pytestmark = [
    requires_espeak,
    pytest.mark.skipif(not (CHECKPOINT / "model.safetensors").is_file(), reason=f"{CHECKPOINT} is missing"),
]


@pytest.fixture(scope="module")
def loaded():
    model = AutoModelForCausalLM.from_pretrained(CHECKPOINT, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(CHECKPOINT, trust_remote_code=True)
    return model, processor


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from recipes.vita_tiny.world import draw_shapes_image

    folder = tmp_path_factory.mktemp("pins")
    image = draw_shapes_image("red", "circle", 1, "left", np.random.default_rng(7))
    question, rate = espeak("What colour is the shape?", folder / "question.wav")
    talk, _ = espeak("We are out of milk again.", folder / "talk.wav")
    assert rate == 22050
    return image, (question, rate), (talk, rate)


def _check(key: str, found):
    pins = json.loads(PINS.read_text()) if PINS.is_file() else {}
    if WRITE:
        pins[key] = found
        PINS.parent.mkdir(exist_ok=True)
        PINS.write_text(json.dumps(pins, indent=1, sort_keys=True) + "\n")
        return
    assert key in pins, f"no pin {key!r} in {PINS}; write them with VITA_WRITE_PINS=1"
    assert found == pins[key]


def _generate(model, processor, content) -> list[int]:
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt", sampling_rate=16000,
    )  # fmt: skip
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=24, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def test_generate_gives_the_pinned_tokens(loaded, media):
    model, processor = loaded
    image, question, talk = media
    found = {
        "typed_image_question": _generate(
            model,
            processor,
            [{"type": "image", "image": image}, {"type": "text", "text": "What colour is the shape?"}],
        ),
        "spoken_image_question": _generate(
            model, processor, [{"type": "image", "image": image}, {"type": "audio", "audio": question}]
        ),
        "background_talk": _generate(model, processor, [{"type": "audio", "audio": talk}]),
    }
    _check("generate", found)


def test_pipeline_gives_the_pinned_answers(loaded, media):
    model, processor = loaded
    image, (question, rate), (talk, _) = media
    pipe = pipeline("vita-duplex", model=model, processor=processor)
    found = [
        pipe(audio=question, images=image, sampling_rate=rate, max_new_tokens=24),
        pipe(audio=talk, sampling_rate=rate, max_new_tokens=24),
        pipe(text="What colour is the shape?", images=image, max_new_tokens=24),
    ]
    _check("pipeline", [{"state": str(getattr(r["state"], "value", r["state"])), "text": r["text"]} for r in found])


def _describe(event) -> list:
    row = [event.type, round(event.time, 3)]
    for name in ("state", "text", "turn_id"):
        if hasattr(event, name):
            value = getattr(event, name)
            row.append(str(getattr(value, "value", value)))
    return row


def test_duplex_session_gives_the_pinned_events(loaded, media):
    model, processor = loaded
    image, (question, rate), (talk, _) = media
    pipe = pipeline("vita-duplex", model=model, processor=processor)
    gap = np.zeros(int(1.2 * rate), dtype=np.float32)
    recording = np.concatenate([gap, question, gap, talk, gap])
    session = pipe.session(generation_kwargs={"max_new_tokens": 24})
    try:
        session.push_image(image)
        events = [_describe(event) for event in session.run(recording, sampling_rate=rate)]
        history = [
            (turn.role, turn.content, str(getattr(turn.state, "value", turn.state))) for turn in session.history
        ]
    finally:
        session.close()
    _check("session", {"events": events, "history": [list(entry) for entry in history]})
