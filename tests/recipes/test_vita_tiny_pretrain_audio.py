"""Tests of vita-tiny's CTC pretraining of the audio encoder (`recipes/vita_tiny/pretrain_audio.py`): the character
targets, the greedy decoder, the error rates, and a short run on the small data build that trains the audio tower only
and leaves the rest of the model as it was."""

import json

import pytest
import torch
from safetensors.torch import load_file

from recipes.vita_tiny.pretrain_audio import (
    ALPHABET,
    CTCHead,
    _features,
    _wave,
    error_rates,
    greedy_decode,
    normalize_transcript,
    pretrain_audio_encoder,
    transcript_labels,
)
from tests.utils import requires_espeak_and_piper


def test_transcript_labels_are_the_letters_apostrophes_and_single_spaces_heard():
    assert normalize_transcript("What's two  plus THREE?\n") == "what's two plus three"
    assert normalize_transcript("Room 42, please.") == "room please"
    labels = transcript_labels("Tell me the colour.")
    assert min(labels) >= 1  # class 0 is the CTC blank
    assert "".join(ALPHABET[i - 1] for i in labels) == "tell me the colour"


def test_greedy_decode_merges_repeats_and_keeps_letters_split_by_a_blank():
    # Best path "hh_ell_loo_" ("_" the blank, 0; a letter's class is 1 + its ALPHABET index).
    path = [ALPHABET.index(c) + 1 if c != "_" else 0 for c in "hh_ell_loo_"]
    log_probs = torch.full((len(path) + 3, len(ALPHABET) + 1), -10.0)
    log_probs[torch.arange(len(path)), torch.tensor(path)] = 0.0
    log_probs[len(path) :, ALPHABET.index("x") + 1] = 0.0  # frames past the length are ignored
    assert greedy_decode(log_probs, len(path)) == "hello"


def test_error_rates_count_character_and_word_edits():
    rates = error_rates([("My friend is coming home.", "my friend is coming hom"), ("red", "Red.")])
    assert rates["cer"] == pytest.approx(1 / (len("my friend is coming home") + 3))
    assert rates["wer"] == pytest.approx(1 / 6)
    assert error_rates([("two words", "")]) == {"cer": 1.0, "wer": 1.0}


def test_speed_perturbation_changes_the_length_and_vtln_the_spectrum(tmp_path):
    import numpy as np
    import soundfile

    from processing_vita.feature_extraction_vita import VitaFeatureExtractor

    rng = np.random.default_rng(0)
    wave = (0.3 * np.sin(2 * np.pi * 220 * np.arange(22_050) / 22_050) + 0.01 * rng.normal(size=22_050)).astype(
        np.float32
    )
    soundfile.write(tmp_path / "tone.wav", wave, 22_050)
    extractor = VitaFeatureExtractor()
    plain = _features(extractor, _wave(tmp_path / "tone.wav"), 1.0, 1.0)
    assert plain.shape[0] == 98  # 1 s at 16 kHz: (16000 - 400) // 160 + 1
    faster = _features(extractor, _wave(tmp_path / "tone.wav"), 1.25, 1.0)
    slower = _features(extractor, _wave(tmp_path / "tone.wav"), 0.8, 1.0)
    assert faster.shape[0] == 78 and slower.shape[0] == 123
    warped = _features(extractor, _wave(tmp_path / "tone.wav"), 1.0, 1.1)
    assert warped.shape == plain.shape and not torch.allclose(warped, plain, atol=1e-3)


@requires_espeak_and_piper
def test_ctc_pretraining_trains_the_audio_tower_only(tmp_path):
    from modeling_vita import VitaForConditionalGeneration
    from recipes.vita_tiny.data import build_vita_tiny_data
    from recipes.vita_tiny.initialize import initialize

    data, init, out = tmp_path / "data", tmp_path / "init", tmp_path / "out"
    build_vita_tiny_data(data, seed=0, small=True)
    index = json.loads((data / "speech_index.json").read_text())
    assert index["train"] and index["heldout"]
    assert {c["voice"] for c in index["train"]}.isdisjoint({c["voice"] for c in index["heldout"]})
    initialize(data, init)
    summary = pretrain_audio_encoder(data, init, out, epochs=4)
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    assert summary["steps"] >= 4 and losses[-1] < losses[0]
    assert 0 <= summary["heldout_cer"] and set(summary["heldout_by_voice"]) == {c["voice"] for c in index["heldout"]}
    # The step trains without dropout by default; the saved encoder keeps its configured dropout for later stages.
    assert summary["encoder_dropout"] == 0.0 and summary["spec_augment"] is False
    saved = json.loads((out / "config.json").read_text())["audio_config"]["dropout"]
    assert saved == json.loads((init / "config.json").read_text())["audio_config"]["dropout"] > 0

    before = VitaForConditionalGeneration.from_pretrained(init).state_dict()
    after = VitaForConditionalGeneration.from_pretrained(out).state_dict()
    changed = {name.split(".")[1] for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"audio_tower"}
    # The adapter gets no CTC gradient (the head reads the encoder below it): only the encoder moved.
    assert all(torch.equal(before[n], after[n]) for n in before if ".adapter." in n)
    head = CTCHead(after["model.audio_tower.layer_norm.weight"].shape[0])
    head.load_state_dict(load_file(out / "ctc_head.safetensors"))
