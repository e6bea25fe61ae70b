"""Prefix KV reuse across turns and the bounded context (`modeling_vita/prompt_cache_vita.py`) on the embedded
vita-tiny: the same greedy answers as a full prefill, only the new tokens prefilled, the prompt kept within budget."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from modeling_vita.duplex_events import StartTurn, Turn
from modeling_vita.generation_vita import (
    VitaTurnStreamer,
    checkpoint_state_tokens,
    run_turn,
    state_token_sequences,
)
from modeling_vita.prompt_cache_vita import ContextBudget, PromptCache

TINY = Path(__file__).resolve().parents[2] / "spaces_demo" / "vita-tiny"
GREEDY = {"max_new_tokens": 12, "do_sample": False}


@pytest.fixture(scope="module")
def tiny():
    processor = AutoProcessor.from_pretrained(TINY, trust_remote_code=True)
    model = AutoModel.from_pretrained(TINY, trust_remote_code=True).eval()
    return model, processor, state_token_sequences(processor.tokenizer, checkpoint_state_tokens(model, processor))


def answer(tiny, prepared):
    model, processor, spellings = tiny
    streamer = VitaTurnStreamer(processor.tokenizer, spellings)
    run_turn(model, prepared.inputs, streamer, None, GREEDY)
    return streamer


def noise(seed, secs=1.2):
    return (np.random.default_rng(seed).standard_normal(int(secs * 16000)) * 0.05).astype(np.float32)


def test_reused_prefix_gives_the_same_greedy_answers_as_a_full_prefill(tiny):
    model, processor, _ = tiny
    cache, whole = PromptCache(model, processor), PromptCache(model, processor, enabled=False)
    image = Image.new("RGB", (224, 224), (200, 10, 10))
    messages, previous = [], None
    for turn in range(4):
        content = [{"type": "audio", "audio": noise(turn)}]
        if turn == 0:
            content.insert(0, {"type": "image", "image": image})
        messages.append({"role": "user", "content": content})
        prepared = cache.prepare(messages)
        reused = answer(tiny, prepared)
        cache.keep(prepared)
        full = answer(tiny, whole.prepare(messages))
        assert (reused.state, reused.token_ids) == (full.state, full.token_ids)
        if turn:
            # Only the previous answer and the new audio are prefilled; the image and old audio come from the cache
            # (all of the previous prompt but its generation prompt, a few tokens).
            assert prepared.reused_tokens >= previous.prompt_tokens - 4
            assert "pixel_values" not in prepared.inputs and prepared.inputs["input_features"].shape[0] == 1
        previous = prepared
        messages.append({"role": "assistant", "content": reused.text or "red", "state": "query_audio"})


def test_other_media_at_the_same_place_is_not_taken_from_the_cache(tiny):
    model, processor, _ = tiny
    cache = PromptCache(model, processor)
    first = [{"role": "user", "content": [{"type": "audio", "audio": noise(1)}]}]
    answer(tiny, prepared := cache.prepare(first))
    cache.keep(prepared)
    follow_up = [
        {"role": "assistant", "content": "x"},
        {"role": "user", "content": [{"type": "audio", "audio": noise(2)}]},
    ]
    assert cache.prepare(first + follow_up).reused_tokens > 0
    # Equal samples in another array: the same text, but not the same object, so nothing is taken from the cache.
    same_text_other_audio = [{"role": "user", "content": [{"type": "audio", "audio": noise(1)}]}]
    assert cache.prepare(same_text_other_audio + follow_up).reused_tokens == 0


def test_typed_control_tokens_stay_text_when_the_prefix_is_reused(tiny):
    model, processor, _ = tiny
    cache, whole = PromptCache(model, processor), PromptCache(model, processor, enabled=False)
    messages = [{"role": "user", "content": [{"type": "text", "text": "what is </s> <audio> here?"}]}]
    prepared = cache.prepare(messages)
    answer(tiny, prepared)
    cache.keep(prepared)
    messages += [
        {"role": "assistant", "content": "a red circle", "state": "query_text"},
        {"role": "user", "content": [{"type": "text", "text": "and <image> </s>?"}]},
    ]
    reused, full = cache.prepare(messages), whole.prepare(messages)
    assert reused.reused_tokens > 0
    assert torch.equal(reused.inputs["input_ids"], full.inputs["input_ids"])


def _history(n, audio=True):
    turns = []
    for turn_id in range(1, n + 1):
        images = ("image",) if turn_id == 1 else ()
        turns.append(
            Turn(
                "user", "", "query_audio", audio=noise(turn_id, 0.1) if audio else None, turn_id=turn_id, images=images
            )
        )
        turns.append(Turn("assistant", f"answer {turn_id}", "query_audio", turn_id=turn_id))
    return turns


def test_budget_drops_old_audio_first_then_old_exchanges_and_keeps_the_image():
    budget = ContextBudget(max_tokens=100)
    history = _history(8)
    assert budget.cut(history) and budget.audio_from_turn == 5 and budget.first_turn == 0
    shown = budget.select(history)
    assert [t.audio is None for t in shown[::2]] == [True] * 4 + [False] * 4
    assert budget.cut(history) and budget.first_turn == 5
    shown = budget.select(history)
    assert [t.turn_id for t in shown[::2]] == [5, 6, 7, 8]
    assert shown[0].images == ("image",)  # moved from the dropped first exchange
    assert [t.content for t in shown[1::2]] == ["answer 5", "answer 6", "answer 7", "answer 8"]


def test_prompt_stays_within_the_budget_over_many_turns_and_keeps_the_image(tiny):
    model, processor, _ = tiny
    cache = PromptCache(model, processor, budget=ContextBudget(max_tokens=160))
    image = Image.new("RGB", (224, 224), (10, 10, 200))
    history, frames, lengths = (), (image,), []
    for turn_id in range(1, 16):
        action = StartTurn(turn_id, kind="audio", audio=noise(turn_id, 0.8), history=history, images=frames)
        prepared = cache.prepare_turn(action)
        assert prepared.prompt_tokens <= 160
        ids = prepared.inputs["input_ids"][0]
        assert int((ids == processor.image_token_id).sum()) > 0  # the image is never dropped
        lengths.append(prepared.prompt_tokens)
        streamer = answer(tiny, prepared)
        cache.keep(prepared)
        history += (
            Turn("user", "", "query_audio", audio=action.audio, turn_id=turn_id, images=frames),
            Turn("assistant", streamer.text or "red", "query_audio", turn_id=turn_id),
        )
        frames = ()
    assert cache.budget.cuts >= 2 and max(lengths[5:]) <= 160
