"""transformers' standard pipelines on VITA: "any-to-any" (text + image, audio or video) and "image-text-to-text"
(text + image or video), with this package installed (its import registers the Auto classes) and as Hub remote code
from a saved folder where the project cannot be imported.

Each pipeline answer is checked token for token against `model.generate` on the processor's chat-template inputs.
"""

import inspect
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoModelForMultimodalLM, pipeline

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.testing_utils import tiny_vita_config
from processing_vita.testing_utils import tiny_vita_processor
from tests.utils import run_with_project_hidden

logger = logging.getLogger(__name__)

NEW_TOKENS = 4
GREEDY = {"do_sample": False, "min_new_tokens": NEW_TOKENS}
CASES = [
    ("any-to-any", "image"),
    ("any-to-any", "audio"),
    ("any-to-any", "video"),
    ("image-text-to-text", "image"),
    ("image-text-to-text", "video"),
]
QUESTIONS = {"image": "What is in the picture?", "audio": "What did you hear?", "video": "Describe the video."}


def media(kind: str) -> object:
    """Deterministic media: an 80x60 picture, one second of noise at 16 kHz, six 64x64 frames."""
    rng = np.random.RandomState({"image": 0, "audio": 1, "video": 2}[kind])
    if kind == "image":
        return Image.fromarray(rng.randint(0, 255, (60, 80, 3), dtype=np.uint8))
    if kind == "audio":
        return (rng.randn(16000).astype(np.float32) * 0.1, 16000)
    return list(rng.randint(0, 255, (6, 64, 64, 3), dtype=np.uint8))


def chat(kind: str) -> list[dict]:
    return [
        {"role": "user", "content": [{"type": kind, kind: media(kind)}, {"type": "text", "text": QUESTIONS[kind]}]}
    ]


@pytest.fixture(scope="module")
def model_and_processor():
    torch.manual_seed(0)
    return VitaForConditionalGeneration(tiny_vita_config()).eval(), tiny_vita_processor()


def generate_directly(model, processor, messages: list[dict]) -> list[int]:
    inputs = processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    return model.generate(**inputs, max_new_tokens=NEW_TOKENS, **GREEDY)[0].tolist()


def test_vita_declares_its_modalities_and_is_the_auto_class_of_both_tasks():
    config = tiny_vita_config()
    for auto_class in (AutoModelForMultimodalLM, AutoModelForImageTextToText):
        assert type(auto_class.from_config(config)) is VitaForConditionalGeneration
    assert set(VitaForConditionalGeneration.input_modalities) == {"text", "image", "video", "audio"}
    assert tuple(VitaForConditionalGeneration.output_modalities) == ("text",)


@pytest.mark.parametrize("task, kind", CASES)
def test_pipeline_answers_a_chat_with_media_as_generate_does(model_and_processor, task, kind):
    model, processor = model_and_processor
    pipe = pipeline(task, model=model, processor=processor)
    expected = generate_directly(model, processor, chat(kind))
    tensors = pipe(text=chat(kind), max_new_tokens=NEW_TOKENS, generate_kwargs=GREEDY, return_tensors=True)
    assert tensors[0]["generated_token_ids"].tolist() == expected
    text = pipe(text=chat(kind), max_new_tokens=NEW_TOKENS, generate_kwargs=GREEDY, return_full_text=False)
    assert text[0]["generated_text"] == processor.decode(expected[-NEW_TOKENS:], skip_special_tokens=True)


@pytest.mark.parametrize("task", ["any-to-any", "image-text-to-text"])
def test_pipeline_takes_a_plain_prompt_with_a_placeholder(model_and_processor, task):
    model, processor = model_and_processor
    pipe = pipeline(task, model=model, processor=processor)
    out = pipe(text="<image>\nWhat is it?", images=media("image"), max_new_tokens=NEW_TOKENS, generate_kwargs=GREEDY)
    inputs = processor(text="<image>\nWhat is it?", images=media("image"), return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=NEW_TOKENS, **GREEDY)[0, -NEW_TOKENS:]
    assert out[0]["generated_text"] == "<image>\nWhat is it?" + processor.decode(expected, skip_special_tokens=True)


def test_any_to_any_takes_a_plain_prompt_with_an_audio_array(model_and_processor):
    model, processor = model_and_processor
    pipe = pipeline("any-to-any", model=model, processor=processor)
    wave, _ = media("audio")
    out = pipe(text="<audio>\nWhat did you hear?", audio=wave, max_new_tokens=NEW_TOKENS, generate_kwargs=GREEDY)
    inputs = processor(text="<audio>\nWhat did you hear?", audio=wave, return_tensors="pt")
    expected = model.generate(**inputs, max_new_tokens=NEW_TOKENS, **GREEDY)[0, -NEW_TOKENS:]
    assert out[0]["generated_text"].endswith(processor.decode(expected, skip_special_tokens=True))


def test_pipeline_loads_a_saved_folder_through_the_registered_auto_classes(model_and_processor, tmp_path):
    model, processor = model_and_processor
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    pipe = pipeline("any-to-any", model=str(tmp_path))
    assert type(pipe.model) is VitaForConditionalGeneration
    out = pipe(text=chat("image"), max_new_tokens=NEW_TOKENS, generate_kwargs=GREEDY, return_tensors=True)
    assert out[0]["generated_token_ids"].tolist() == generate_directly(model, processor, chat("image"))


# Runs where the project is hidden; `media` and the questions are this module's own, copied into the script.
REMOTE_BODY = """
import json
import numpy as np
from PIL import Image
from transformers import pipeline
{media_source}
questions = {questions!r}
results = {{}}
for task, kind in {cases!r}:
    pipe = pipeline(task, model={folder!r}, trust_remote_code=True)
    assert type(pipe.model).__module__.startswith("transformers_modules"), type(pipe.model).__module__
    content = [{{"type": kind, kind: media(kind)}}, {{"type": "text", "text": questions[kind]}}]
    out = pipe(text=[{{"role": "user", "content": content}}], max_new_tokens={new_tokens}, generate_kwargs={greedy!r},
               return_tensors=True)
    results[task + "/" + kind] = out[0]["generated_token_ids"].tolist()
print(json.dumps(results))
"""


@pytest.mark.slow
def test_pipelines_run_vita_as_remote_code_with_the_project_hidden(model_and_processor, tmp_path):
    model, processor = model_and_processor
    folder = tmp_path / "vita"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["auto_map"]["AutoModelForMultimodalLM"]
    script = REMOTE_BODY.format(
        media_source=inspect.getsource(media),
        questions=QUESTIONS,
        cases=CASES,
        folder=str(folder),
        new_tokens=NEW_TOKENS,
        greedy=GREEDY,
    )
    results = json.loads(run_with_project_hidden(script, tmp_path).strip().splitlines()[-1])
    for task, kind in CASES:
        assert results[f"{task}/{kind}"] == generate_directly(model, processor, chat(kind)), (task, kind)


CHECKPOINT = Path(__file__).resolve().parents[2] / "spaces_demo" / "vita-tiny"
CHECKPOINT_BODY = """
import json
from transformers import pipeline
pipe = pipeline("any-to-any", model={folder!r}, trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "text", "text": "What is two plus two?"}}]}}]
out = pipe(text=messages, max_new_tokens=8, generate_kwargs={{"do_sample": False}}, return_tensors=True)
print(json.dumps(out[0]["generated_token_ids"].tolist()))
"""


@pytest.mark.slow
def test_committed_checkpoint_serves_the_any_to_any_pipeline_as_remote_code(tmp_path):
    if not (CHECKPOINT / "config.json").is_file():
        pytest.skip(f"{CHECKPOINT} is missing")
    remote = json.loads(
        run_with_project_hidden(CHECKPOINT_BODY.format(folder=str(CHECKPOINT)), tmp_path).splitlines()[-1]
    )
    pipe = pipeline("any-to-any", model=str(CHECKPOINT))
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is two plus two?"}]}]
    local = pipe(text=messages, max_new_tokens=8, generate_kwargs={"do_sample": False}, return_tensors=True)
    assert remote == local[0]["generated_token_ids"].tolist()
