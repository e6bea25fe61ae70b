"""Tests of the vita-tiny recipe runner: the starting point (`recipes/vita_tiny/initialize.py`: English tokenizer,
Chinese vocabulary extension, CMVN, processor, model) and, as a slow test, the whole one command on the small data
build with two steps a stage (data -> 4 stages through `python -m recipes.sft` -> evaluation -> export that loads)."""

import json

import numpy as np
import pytest
import torch

from recipes.vita_tiny.data import build_vita_tiny_data
from tests.utils import requires_espeak_and_piper

pytestmark = requires_espeak_and_piper


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("vita_tiny_small")
    build_vita_tiny_data(root, seed=0, small=True)
    return root


@pytest.fixture(scope="module")
def initialized(small_data, tmp_path_factory):
    from recipes.vita_tiny.initialize import initialize

    output = tmp_path_factory.mktemp("vita_tiny_init")
    return output, initialize(small_data, output)


def test_vocabulary_extension_adds_chinese_pieces_and_keeps_old_ids(initialized):
    from transformers import AutoTokenizer

    output, summary = initialized
    tokenizer = AutoTokenizer.from_pretrained(output)
    assert summary["chinese_pieces_added"] > 0
    assert summary["vocabulary"] == summary["base_vocabulary"] + summary["chinese_pieces_added"] == len(tokenizer)
    assert summary["chinese_sample_tokens_after"] < summary["chinese_sample_tokens_before"]
    # Special tokens came before the extension, so their ids sit below the base size.
    for token in ("<image>", "<video>", "<audio>", "<1>", "<2>", "<3>"):
        assert tokenizer.convert_tokens_to_ids(token) < summary["base_vocabulary"]
    assert tokenizer.decode(tokenizer("红色和蓝色", add_special_tokens=False)["input_ids"]) == "红色和蓝色"


def test_initialized_model_matches_its_processor(initialized, small_data):
    from transformers import AutoModelForCausalLM, AutoProcessor

    from processing_vita.feature_extraction_vita import load_audio

    output, summary = initialized
    processor = AutoProcessor.from_pretrained(output, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(output, trust_remote_code=True)
    assert model.num_parameters() == summary["parameters"]
    assert model.get_input_embeddings().weight.shape[0] == len(processor.tokenizer)
    assert model.config.image_token_id == processor.image_token_id
    assert model.config.audio_token_id == processor.audio_token_id
    assert processor.system_prompts["lang"] in processor.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True
    )
    # Global CMVN from the training speech: normalised training features are centred and of unit scale.
    clips = sorted((small_data / "media" / "speech" / "train").rglob("*.wav"))  # the small build: all of them
    assert 0 < len(clips) <= 400  # so the CMVN statistics came from exactly these clips
    frames = []
    for clip in clips:
        samples, rate = load_audio(clip)
        out = processor.feature_extractor(samples, sampling_rate=rate, return_tensors="pt")
        frames.append(out["input_features"][0, : int(out["input_features_mask"][0].sum())])
    frames = torch.cat(frames)
    assert frames.mean().abs() < 0.05 and 0.9 < frames.std() < 1.1
    # Forward on a processed image + audio question works and gives one logit row a token.
    image = np.full((56, 56, 3), 200, dtype=np.uint8)
    inputs = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "audio", "audio": str(clips[0])}]}],
        add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt",
    )  # fmt: skip
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()


@pytest.mark.slow
def test_one_command_builds_trains_evaluates_and_exports(small_data, tmp_path):
    from transformers import pipeline

    from recipes.vita_tiny.run import main

    export = tmp_path / "export"
    summary = main(["--small", "--data-dir", str(small_data), "--work-dir", str(tmp_path / "runs"),
                    "--export", str(export), "--max-steps", "2", "--eval-limit", "6", "--no-readme"])  # fmt: skip
    for stage in ("stage1_llm", "stage2_vision_align", "stage2_audio_align", "stage3_multimodal_sft"):
        history = json.loads((tmp_path / "runs" / stage / "trainer_state.json").read_text())["log_history"]
        assert any("loss" in h for h in history), stage
        assert summary["seconds"][stage] > 0
    assert set(summary["splits"]) == {"heldout", "heldout_previous"}
    for result in summary["splits"].values():
        assert set(result["headline"]) == {"state accuracy", "background ignored", "image QA", "video QA", "WER"}
    for result in summary["splits"].values():  # every spoken row scored under its voice family
        assert result["families"] and all(0 <= e["state"] <= e["n"] for e in result["families"].values())
    assert (export / "training_curves.png").stat().st_size > 10_000
    card = (export / "README.md").read_text()
    assert "| state accuracy |" in card and "| voice family, held-out (unseen families)" in card
    assert f"{summary['initialize']['chinese_pieces_added']} Chinese pieces" in " ".join(card.split())
    pipe = pipeline("vita-duplex", model=str(export), trust_remote_code=True)
    out = pipe(text="What is two plus three?", max_new_tokens=4)
    assert out["state"] == "query_text"
