"""transformers' generation behaviours beyond greedy on the tiny VITA: sampling, beam search, `num_return_sequences`,
static cache, `min_new_tokens`, streamers, left-padded batches of mixed media, and `torch.compile` of the decode step.

Beam search and `num_return_sequences` repeat each prompt; each copy must see its own sample's media in order, which
the first-step logits of every copy check against the sample run alone (samples here hold two tiles, two frames or
two audio clips, where a per-tile repeat would silently give a copy the wrong media).
"""

import logging
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CompileConfig, TextIteratorStreamer

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.testing_utils import tiny_vita_config
from processing_vita.testing_utils import tiny_vita_processor
from tests.modeling_vita.inputs import build_inputs, select_sample

logger = logging.getLogger(__name__)

# Samples with several media of a kind: two tiles, two clips, two frames, and none.
BATCH = [
    [1, 20, ("image", 2), 21, 22],
    [1, 23, ("audio", 150), 24, ("audio", 90), 25],
    [1, 26, ("video", 2), 27, ("image", 1), 28],
    [1, 29, 30, 31],
]
SEED = 5
NEW = 5


def tiny_model(**overrides) -> VitaForConditionalGeneration:
    torch.manual_seed(0)
    return VitaForConditionalGeneration(tiny_vita_config(**overrides)).eval()


def batch_inputs(model) -> dict:
    return build_inputs(model.config, BATCH, torch.Generator().manual_seed(SEED))


def alone(model, index: int) -> dict:
    return select_sample(model.config, BATCH, index, generator_seed=SEED)


def greedy(model, inputs: dict, **kwargs) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=False, **kwargs)[:, -NEW:]


def test_sampling_is_seeded_and_top_k_1_sampling_is_greedy():
    model = tiny_model()
    inputs = batch_inputs(model)
    sample = {"max_new_tokens": NEW, "min_new_tokens": NEW, "do_sample": True, "top_p": 0.9, "temperature": 1.5}
    torch.manual_seed(1)
    first = model.generate(**inputs, **sample)
    torch.manual_seed(1)
    assert torch.equal(first, model.generate(**inputs, **sample))
    top1 = model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=NEW, do_sample=True, top_k=1)[:, -NEW:]
    assert torch.equal(top1, greedy(model, inputs))


@pytest.mark.parametrize(
    "settings",
    [{"num_beams": 3, "num_return_sequences": 2, "do_sample": False}, {"num_return_sequences": 3, "do_sample": True}],
    ids=["beam-search", "sampling"],
)
def test_every_expanded_sequence_sees_its_own_samples_media(settings):
    model = tiny_model()
    out = model.generate(
        **batch_inputs(model), max_new_tokens=1, output_logits=True, return_dict_in_generate=True, **settings
    )
    copies = max(settings.get("num_beams", 1), settings["num_return_sequences"])
    first_step = out.logits[0].view(len(BATCH), copies, -1)
    for index in range(len(BATCH)):
        expected = model(**alone(model, index)).logits[0, -1]
        for copy in range(copies):
            torch.testing.assert_close(first_step[index, copy], expected, atol=1e-4, rtol=1e-4)


def test_expansion_finds_each_samples_media_from_inputs_embeds_too():
    model = tiny_model()
    inputs = batch_inputs(model)
    inputs["inputs_embeds"] = model.get_input_embeddings()(inputs.pop("input_ids"))
    out = model.generate(
        **inputs,
        max_new_tokens=1,
        num_return_sequences=2,
        do_sample=True,
        output_logits=True,
        return_dict_in_generate=True,
    )
    first_step = out.logits[0].view(len(BATCH), 2, -1)
    for index in range(len(BATCH)):
        expected = model(**alone(model, index)).logits[0, -1]
        torch.testing.assert_close(first_step[index], expected.expand(2, -1), atol=1e-4, rtol=1e-4)


def test_beam_search_on_a_batch_equals_beam_search_one_by_one():
    model = tiny_model()
    beams = {"num_beams": 3, "num_return_sequences": 3, "max_new_tokens": NEW, "min_new_tokens": NEW}
    batched = model.generate(**batch_inputs(model), **beams)[:, -NEW:].view(len(BATCH), 3, NEW)
    for index in range(len(BATCH)):
        assert batched[index].tolist() == model.generate(**alone(model, index), **beams)[:, -NEW:].tolist()


@pytest.mark.parametrize("text_model_type", ["mixtral", "qwen2", "llama"])
def test_static_cache_gives_the_dynamic_cache_tokens(text_model_type):
    model = tiny_model(text_model_type=text_model_type)
    inputs = batch_inputs(model)
    assert torch.equal(greedy(model, inputs, cache_implementation="static"), greedy(model, inputs))


def test_min_new_tokens_holds_back_the_end_token():
    model = tiny_model()
    inputs = alone(model, 0)
    first = int(greedy(model, inputs)[0, 0])  # made the end token below: without a minimum, the answer stops at once
    plain = model.generate(**inputs, max_new_tokens=NEW, do_sample=False, eos_token_id=first, pad_token_id=3)
    held = model.generate(**inputs, max_new_tokens=NEW, min_new_tokens=4, do_sample=False, eos_token_id=first)
    prompt = inputs["input_ids"].shape[1]
    assert plain[0, prompt:].tolist() == [first]
    assert held.shape[1] - prompt >= 4 and first not in held[0, prompt : prompt + 3].tolist()


def chat(kind: str, seed: int) -> list[dict]:
    rng = np.random.RandomState(seed)
    if kind == "image":
        block = {"type": "image", "image": Image.fromarray(rng.randint(0, 255, (60, 120, 3), dtype=np.uint8))}
    elif kind == "audio":
        block = {"type": "audio", "audio": (rng.randn(16000 + 4000 * seed).astype(np.float32) * 0.1, 16000)}
    elif kind == "video":
        block = {"type": "video", "video": list(rng.randint(0, 255, (5, 64, 64, 3), dtype=np.uint8))}
    else:
        return [{"role": "user", "content": [{"type": "text", "text": "Hello, how are you?"}]}]
    return [{"role": "user", "content": [block, {"type": "text", "text": "What is it?"}]}]


def processed(processor, conversations: list) -> dict:
    return processor.apply_chat_template(
        conversations, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt", padding=True
    )


def test_left_padded_processor_batch_of_mixed_media_equals_one_by_one():
    model, processor = tiny_model(), tiny_vita_processor()
    conversations = [chat("image", 1), chat("audio", 2), chat("text", 0), chat("video", 3), chat("audio", 1)]
    inputs = processed(processor, conversations)
    assert (inputs["attention_mask"][:, 0] == 0).any()  # left padded
    batched = greedy(model, inputs)
    for index, conversation in enumerate(conversations):
        assert batched[index].tolist() == greedy(model, processed(processor, [conversation]))[0].tolist(), index


def test_text_iterator_streamer_streams_the_answer_text():
    model, processor = tiny_model(), tiny_vita_processor()
    inputs = processed(processor, [chat("image", 1)])
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = {**inputs, "max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False, "streamer": streamer}
    result = {}
    thread = threading.Thread(target=lambda: result.update(out=model.generate(**kwargs)))
    thread.start()
    pieces = list(streamer)
    thread.join()
    answer = result["out"][0, inputs["input_ids"].shape[1] :]
    assert len(pieces) > 1 and "".join(pieces) == processor.tokenizer.decode(answer, skip_special_tokens=True)


@pytest.mark.slow
def test_compiled_decode_step_gives_the_eager_tokens():
    """The decode step (text only: media are read at prefill) compiles; transformers compiles it by itself with a
    static cache on accelerators, and on CPU when asked through `CompileConfig._compile_all_devices` (10-40 s here)."""
    model = tiny_model()
    inputs = batch_inputs(model)
    config = CompileConfig()
    config._compile_all_devices = True
    compiled = greedy(model, inputs, cache_implementation="static", compile_config=config)
    assert getattr(model, "_compiled_call", None) is not None  # generate took the compiled path
    assert torch.equal(compiled, greedy(model, inputs))
