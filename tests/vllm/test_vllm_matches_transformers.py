"""vLLM serving a tiny VITA gives transformers' answers: prompt token ids after placeholder expansion, greedy
tokens and the first step's top log-probabilities, for a text, an image, a video and an audio chat, on Qwen2
(VITA-1.5's LLM) and Mixtral (VITA-1.0's). The reference is transformers' float32 run (`make_reference.py`)."""

from __future__ import annotations

import gc
import logging

import numpy as np
import pytest
from PIL import Image

from .conftest import ENGINE_ARGS, load_reference, reference_folder

logger = logging.getLogger(__name__)

LOGPROB_TOLERANCE = 1e-3


@pytest.fixture(scope="module", params=["qwen2", "mixtral"])
def served(request):
    from vllm import LLM

    folder = reference_folder(request.param)
    llm = LLM(model=str(folder), **ENGINE_ARGS)
    yield folder, llm
    # Stop the engine process before the next backbone starts its own.
    llm.llm_engine.engine_core.shutdown()
    del llm
    gc.collect()


def _prompt(folder, name: str, prompt: str) -> dict:
    media = {}
    if name == "image":
        media["image"] = Image.open(folder / "image.png").convert("RGB")
    if name == "video":
        media["video"] = np.load(folder / "video.npy")  # (T, H, W, C) uint8 frames, as vLLM takes a video
    if name == "audio":
        media["audio"] = (np.load(folder / "audio.npy"), 16000)
    return {"prompt": prompt, "multi_modal_data": media} if media else {"prompt": prompt}


@pytest.mark.parametrize("name", ["text", "image", "video", "audio"])
def test_tokens_and_first_step_logprobs_match_transformers(served, name):
    from vllm import SamplingParams

    folder, llm = served
    reference = load_reference(folder)[name]
    params = SamplingParams(
        max_tokens=len(reference["output_token_ids"]), temperature=0.0, logprobs=5, ignore_eos=True
    )
    output = llm.generate([_prompt(folder, name, reference["prompt"])], params, use_tqdm=False)[0]

    # The placeholders expanded as VitaProcessor expands them: the same ids, token for token.
    assert list(output.prompt_token_ids) == reference["prompt_token_ids"]
    assert list(output.outputs[0].token_ids) == reference["output_token_ids"]
    first = output.outputs[0].logprobs[0]
    for token_id, expected in zip(reference["top_token_ids"], reference["top_logprobs"]):
        assert token_id in first, f"token {token_id} of transformers' top 5 is missing from vLLM's"
        assert abs(first[token_id].logprob - expected) < LOGPROB_TOLERANCE, (token_id, first[token_id], expected)
