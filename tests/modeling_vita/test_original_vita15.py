"""Tests of the test assets alone: the tiny original-layout checkpoints (`original_vita15.py`, `original_vita.py`),
their tower folders (`original_towers.py`), the original 1.5 prompt and forward pass. No converter is involved; the
Qwen2 parity test is the one place transformers' model code is used, to show the re-implementation is meaningful."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.modeling_vita import original_towers, original_vita, original_vita15

NON_DEFAULT = {
    "vision": {"hidden": 48, "heads": 3, "layers": 3},
    "audio": {"hidden": 40, "heads": 5, "layers": 3, "ffn": 80},
}


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return original_vita15.write_original_checkpoint15(tmp_path_factory.mktemp("vita15"))


def _weights(folder) -> dict[str, torch.Tensor]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        state.update(load_file(folder / shard))
    assert set(state) == set(index["weight_map"])
    return state


def test_checkpoint_folder_has_the_released_files_keys_and_config(release):
    folder, sd, tokenizer = release["checkpoint"], release["state_dict"], release["tokenizer"]
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert {
        "vocab.json",
        "merges.txt",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    } <= names
    saved = _weights(folder)
    assert set(saved) == set(sd) and all(torch.equal(saved[k], sd[k]) for k in sd)
    for key in (
        "model.layers.1.self_attn.q_proj.bias",
        "model.layers.0.self_attn.k_proj.bias",
        "model.layers.0.mlp.gate_proj.weight",
        "model.mm_projector.2.bias",
        "model.vision_tower.vision_tower.encoder.layers.1.ls2",
        "model.audio_encoder.encoder.global_cmvn.istd",
        "model.audio_encoder.adpter.bn2.weight",
    ):
        assert key in sd, key
    assert not any("block_sparse_moe" in k for k in sd)
    config = json.loads((folder / "config.json").read_text())
    assert (config["architectures"], config["model_type"]) == (["VITAQwen2ForCausalLM"], "vita-Qwen2")
    assert "vision_config" not in config and config["tie_word_embeddings"] is False
    assert config["rope_theta"] == 500000.0 and config["rms_norm_eps"] == 1e-6
    assert config["mm_vision_tower"] == "InternViT-300M-448px" == release["vision_tower"].name
    assert config["mm_audio_encoder"] == original_vita15.AUDIO_FOLDER == release["audio_encoder"].name
    assert release["vision_tower"].parent == folder.parent == release["audio_encoder"].parent
    assert config["mm_hidden_size"] == 4 * original_vita.VISION["hidden"] == sd["model.mm_projector.0.weight"].shape[1]
    assert config["vocab_size"] == sd["model.embed_tokens.weight"].shape[0] == 1024 > len(tokenizer)
    assert config["bos_token_id"] == tokenizer.convert_tokens_to_ids("<|endoftext|>") == tokenizer.pad_token_id
    assert config["eos_token_id"] == tokenizer.convert_tokens_to_ids("<|im_end|>") == tokenizer.eos_token_id


def test_absolute_tower_paths_and_full_vocab(tmp_path):
    out = original_vita15.write_original_checkpoint15(tmp_path, tower_paths="absolute", full_vocab=True)
    config = json.loads((out["checkpoint"] / "config.json").read_text())
    for field, folder in (("mm_vision_tower", out["vision_tower"]), ("mm_audio_encoder", out["audio_encoder"])):
        assert config[field] == f"/mnt/authors/{folder.name}" and (out["checkpoint"].parent / folder.name).is_dir()
    rows = len(out["tokenizer"])
    assert out["state_dict"]["lm_head.weight"].shape[0] == rows == config["vocab_size"] == out["dims"]["llm"]["vocab"]


def test_internvit_folder_is_in_internvits_own_schema_with_older_weights(release):
    folder, sd = release["vision_tower"], release["state_dict"]
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["InternVisionModel"] and config["model_type"] == "intern_vit_6b"
    vision = original_vita.VISION
    assert (config["hidden_size"], config["num_hidden_layers"]) == (vision["hidden"], vision["layers"]) == (32, 2)
    assert (config["num_attention_heads"], config["intermediate_size"]) == (vision["heads"], vision["ffn"]) == (4, 64)
    assert (config["image_size"], config["patch_size"], config["layer_norm_eps"]) == (56, 14, 1e-6)
    for key in ("hidden_act", "qkv_bias", "qk_normalization", "norm_type", "drop_path_rate", "initializer_factor"):
        assert key in config
    assert config["use_flash_attn"] is True
    assert json.loads((folder / "preprocessor_config.json").read_text())["crop_size"] == 56
    older = load_file(folder / "model.safetensors")
    prefix = original_towers.VISION_PREFIX
    assert set(older) == {k[len(prefix) :] for k in sd if k.startswith(prefix)}
    assert all(not torch.equal(older[k], sd[prefix + k]) for k in older)


def _load_cmvn_json(path) -> tuple[torch.Tensor, torch.Tensor]:
    """What the original `load_cmvn_json` computes from the WeNet stats."""
    stats = json.loads(path.read_text())
    mean = torch.tensor(stats["mean_stat"], dtype=torch.float64) / stats["frame_num"]
    variance = (torch.tensor(stats["var_stat"], dtype=torch.float64) / stats["frame_num"] - mean**2).clamp_min(1e-20)
    return mean.float(), variance.rsqrt().float()


def test_whale_folder_has_the_original_schema_cmvn_and_an_older_adapter(release):
    folder, sd = release["audio_encoder"], release["state_dict"]
    train = yaml.safe_load((folder / "train.yaml").read_text())
    assert {"input_dim", "encoder_conf", "model_conf", "dataset_conf", "cmvn_file", "is_json_cmvn"} <= set(train)
    assert train["input_dim"] == 80 and train["is_json_cmvn"] is True
    overview, para = train["encoder_conf"]["overview_conf"], train["encoder_conf"]["para_conf"]
    assert overview == {
        "encoder-input-dim": 80,
        "encoder-output-dim": 32,
        "encoder-layer-config": "subsampling-transformer",
    }
    assert para["subsampling"]["subsampling-rate"] == 4 and para["subsampling"]["subsampling-output-dim"] == 32
    transformer = para["transformer"]
    assert all(key.startswith("transformer-") for key in transformer)
    assert (transformer["transformer-attention-heads"], transformer["transformer-num-blocks"]) == (4, 2)
    assert (transformer["transformer-linear-units"], transformer["transformer-pos-enc-class"]) == (64, "rel-enc")
    assert transformer["transformer-normalize-before"] is True and transformer["transformer-concat-after"] is False
    model = train["model_conf"]
    assert (model["enc_out_dim"], model["llm_embed_dim"], model["kernel_size"]) == (32, 64, 5)
    assert (model["adpter_type"], model["activation_func"], model["norm"]) == ("subsampling", "gelu", "layer")
    assert train["dataset_conf"]["resample_conf"] == {"resample_rate": 16000}
    fbank = train["dataset_conf"]["fbank_conf"]
    assert fbank == {"num_mel_bins": 80, "frame_length": 25, "frame_shift": 10, "dither": 0.0}
    mean, istd = _load_cmvn_json(folder / "global_cmvn")
    torch.testing.assert_close(mean, sd[original_towers.CMVN_MEAN], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(istd, sd[original_towers.CMVN_ISTD], rtol=1e-4, atol=1e-6)
    final = torch.load(folder / "final.pt", weights_only=True)
    prefix = original_towers.AUDIO_PREFIX
    assert set(final) == {k[len(prefix) :] for k in sd if k.startswith(prefix)}
    for key, tensor in final.items():
        assert torch.equal(tensor, sd[prefix + key]) == key.startswith("encoder."), key


def test_tokenizer_has_chatml_specials_and_keeps_state_characters_as_text(release):
    from transformers import AutoTokenizer, Qwen2TokenizerFast

    tokenizer = release["tokenizer"]
    assert (
        tokenizer.bos_token is None and tokenizer.pad_token == "<|endoftext|>" and tokenizer.eos_token == "<|im_end|>"
    )
    added = {t.content for t in tokenizer.backend_tokenizer.get_added_tokens_decoder().values()}
    assert added == {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}
    text = "<|im_start|>assistant\n☞好的。☟ ☜The answer is blue.<|im_end|>"
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and tokenizer.decode(ids) == text
    for char in original_vita15.STATE_CHARACTERS:
        assert char not in added and tokenizer.decode(tokenizer(char).input_ids) == char
        assert not set(tokenizer(char).input_ids) & set(tokenizer.all_special_ids)
    for loader in (AutoTokenizer, Qwen2TokenizerFast):
        loaded = loader.from_pretrained(release["checkpoint"])
        assert len(loaded) == len(tokenizer) and loaded(text).input_ids == ids and loaded.bos_token is None
    # Deterministic training: a second run gives the same tokenizer.
    assert original_vita15._tokenizer_json.__wrapped__() == original_vita15._tokenizer_json()


def test_original_prompt_renders_chatml_with_sentinels_and_no_bos(release):
    tokenizer = release["tokenizer"]
    ids = original_vita15.original_prompt15("Describe it.", n_tiles=3, with_audio=True)
    assert ids[0] == tokenizer.convert_tokens_to_ids("<|im_start|>") and tokenizer.bos_token_id is None
    assert ids.count(-200) == 3 and ids.count(-500) == 1
    start = ids.index(-200)
    assert ids[start : start + 3] == [-200] * 3 and ids[ids.index(-500) + 1] == tokenizer.convert_tokens_to_ids(
        "<|im_end|>"
    )
    system = original_vita15.ORIGINAL_SYSTEM_PROMPTS["image"]
    expected = (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n\nDescribe it.<|im_end|>\n<|im_start|>assistant\n"
    )
    assert tokenizer.decode([i for i in ids if i >= 0]) == expected
    text_only = original_vita15.original_prompt15("Hi", with_audio=True)
    assert original_vita15.ORIGINAL_SYSTEM_PROMPTS["lang"] in tokenizer.decode([i for i in text_only if i >= 0])
    with pytest.raises(ValueError, match="modality"):
        original_vita15.original_prompt15("Hi", n_tiles=1, modality="lang")


def test_system_prompts_are_the_projects():
    from processing_vita import SYSTEM_PROMPTS

    assert SYSTEM_PROMPTS == original_vita15.ORIGINAL_SYSTEM_PROMPTS


def test_audio_token_counts_follow_the_subsampling_formula(release):
    for frames in range(7, 400):
        d = ((frames - 1) // 2 - 1) // 2
        assert original_vita15.audio_token_count15(frames) == (d - 1) // 2 + 1
    sd = release["state_dict"]
    for frames in (9, 10, 11, 12, 13, 50, 101, 198):
        rows = original_vita.whale_audio(sd, torch.randn(frames, 80) / 0.3 + 14.0).shape[0]
        assert rows == original_vita15.audio_token_count15(frames), frames


def test_forward_from_raw_audio_runs_and_is_deterministic(release):
    sd, g = release["state_dict"], torch.Generator().manual_seed(3)
    wave = 0.1 * torch.randn(int(1.5 * 16000), generator=g)
    raw = original_towers.fbank_for(wave)
    assert raw.shape == (1 + (len(wave) - 400) // 160, 80)
    normalized = (raw - sd[original_towers.CMVN_MEAN]) * sd[original_towers.CMVN_ISTD]
    assert torch.equal(original_towers.fbank_for(wave, sd), normalized)
    assert torch.equal(
        original_towers.fbank_for(wave, (sd[original_towers.CMVN_MEAN], sd[original_towers.CMVN_ISTD])), normalized
    )
    pixel_values = torch.randn(2, 3, 56, 56, generator=g)
    ids = original_vita15.original_prompt15("What do you see and hear?", n_tiles=2, with_audio=True)
    logits = original_vita15.original_forward15(sd, ids, pixel_values, [raw])
    length = len(ids) - 3 + 2 * 4 + original_vita15.audio_token_count15(raw.shape[0])
    assert logits.shape == (length, 1024) and torch.isfinite(logits).all()
    assert torch.equal(logits, original_vita15.original_forward15(sd, ids, pixel_values, [raw]))
    with pytest.raises(ValueError, match="1 tiles and 1 clips"):
        original_vita15.original_forward15(sd, ids, pixel_values[:1], [raw])


def test_non_default_tower_shapes_for_both_versions(tmp_path):
    g = torch.Generator().manual_seed(4)
    pixel_values, fbank = torch.randn(1, 3, 56, 56, generator=g), torch.randn(120, 80, generator=g) / 0.3 + 14.0
    sd15 = original_vita15.original_state_dict15(1, NON_DEFAULT)
    assert sd15["model.vision_tower.vision_tower.encoder.layers.2.attn.qkv.weight"].shape == (144, 48)
    logits = original_vita15.original_forward15(sd15, [5, -200, 6, -500, 7], pixel_values, [fbank], NON_DEFAULT)
    assert logits.shape == (3 + 4 + original_vita15.audio_token_count15(120), 1024)
    sd10 = original_vita.original_state_dict(1, NON_DEFAULT)
    paths = original_vita.write_original_checkpoint(
        tmp_path / "VITA_ckpt", sd10, dims=NON_DEFAULT, tower_paths="relative"
    )
    config = json.loads((paths["checkpoint"] / "config.json").read_text())
    assert "vision_config" not in config and config["mm_hidden_size"] == 4 * 48
    assert (tmp_path / config["mm_vision_tower"]) == paths["vision_tower"] and paths["audio_encoder"].is_dir()
    vision = json.loads((paths["vision_tower"] / "config.json").read_text())
    assert (vision["hidden_size"], vision["num_attention_heads"], vision["num_hidden_layers"]) == (48, 3, 3)
    transformer = yaml.safe_load((paths["audio_encoder"] / "train.yaml").read_text())["encoder_conf"]["para_conf"][
        "transformer"
    ]
    assert [
        transformer[f"transformer-{k}"] for k in ("attention-dim", "attention-heads", "num-blocks", "linear-units")
    ] == [40, 5, 3, 80]
    logits = original_vita.original_forward(sd10, [1, -200, 2, -500, 3], pixel_values, fbank, NON_DEFAULT)
    assert logits.shape[0] == 3 + 4 + original_vita15.audio_token_count15(120) and torch.isfinite(logits).all()
    absolute = original_vita.original_config(NON_DEFAULT, tower_paths="absolute")
    assert absolute["mm_vision_tower"] == "/mnt/authors/InternViT-300M-448px"


def test_qwen2_part_matches_transformers_qwen2(release):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    sd, config = release["state_dict"], json.loads((release["checkpoint"] / "config.json").read_text())
    fields = "vocab_size hidden_size intermediate_size num_hidden_layers num_attention_heads num_key_value_heads"
    fields += " hidden_act rms_norm_eps rope_theta max_position_embeddings tie_word_embeddings use_sliding_window"
    qwen2 = Qwen2Config(**{k: config[k] for k in fields.split()}, attn_implementation="eager")
    model = Qwen2ForCausalLM(qwen2).eval()
    llm = {
        k: v for k, v in sd.items() if not k.startswith(("model.vision_tower", "model.mm_projector", "model.audio"))
    }
    model.load_state_dict(llm, strict=True)
    ids = original_vita15.original_prompt15("请描述这张图片。☞ What is in the image?")
    assert min(ids) >= 0 and len(ids) > 100
    with torch.no_grad():
        expected = model(torch.tensor([ids])).logits[0]
    ours = original_vita15.original_forward15(sd, ids)
    assert math.isclose(qwen2.rope_parameters["rope_theta"], 500000.0)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=1e-5)
