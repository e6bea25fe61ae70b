"""Tests of `modeling_vita.convert_vita_original_to_hf` on a tiny checkpoint in the original VITA-1.0 layout.

The checkpoint and the independent re-implementation of the original forward pass live in `original_vita.py`
(written from the released code); loading as Hub remote code runs through
`tests.utils.run_with_project_hidden`.
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.audio_encoder import get_audio_token_count
from modeling_vita.convert_vita_original_to_hf import (
    CMVN_KEYS,
    TABLE,
    build_vita_config,
    convert,
    convert_key,
    convert_state_dict,
    load_global_cmvn,
    main,
    new_pieces,
    original_pieces,
    parse_args,
    revert_key,
    revert_state_dict,
)
from tests.modeling_vita import original_vita
from tests.utils import run_with_project_hidden

TOKEN_IDS = ["--image-token-id", "4", "--video-token-id", "5", "--audio-token-id", "6"]
MEDIA_IDS = {"image": 4, "audio": 6}


def _convert(original: Path, audio: Path | None, output: Path, *extra: str) -> Path:
    """Convert; a refused input raises its `ValueError` here (`main` prints it and returns 2)."""
    argv = ["--input", str(original), "--output", str(output), "--no-progress", *TOKEN_IDS, *extra]
    if audio is not None:
        argv += ["--audio-encoder", str(audio)]
    return convert(parse_args(argv))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("vita_original")
    state_dict = original_vita.original_state_dict()
    original_vita.write_original_checkpoint(root / "VITA_ckpt", state_dict, num_shards=3)
    original_vita.write_audio_encoder_folder(root / "audio-encoder", state_dict)
    # A small shard size forces several output shards, so the fused experts and the index are exercised.
    converted = _convert(
        root / "VITA_ckpt",
        root / "audio-encoder",
        root / "converted",
        "--dtype",
        "float32",
        "--max-shard-size",
        "300KB",
    )
    return {"root": root, "state_dict": state_dict, "converted": converted}


def _load_converted(folder: Path) -> dict[str, torch.Tensor]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        state.update(load_file(folder / shard))
    assert set(state) == set(index["weight_map"])
    return state


def _multimodal_inputs(state_dict, seconds: float = 1.5, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(1, 3, 56, 56, generator=generator)
    frames = 1 + (int(seconds * 16000) - 400) // 160
    mean, istd = state_dict[CMVN_KEYS["mean"]], state_dict[CMVN_KEYS["istd"]]
    raw_fbank = mean + torch.randn(frames, 80, generator=generator) / istd  # about N(0, 1) after CMVN
    before, between, after = [1, 20, 21], [40], [30, 31, 32, 33]
    original_ids = before + [original_vita.IMAGE_TOKEN_INDEX] + between + [original_vita.AUDIO_TOKEN_INDEX] + after
    ids = before + [MEDIA_IDS["image"]] * 4 + between + [MEDIA_IDS["audio"]] * get_audio_token_count(frames) + after
    ours = {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "pixel_values": pixel_values,
        "input_features": ((raw_fbank - mean) * istd)[None],  # the feature extractor applies CMVN
    }
    return original_ids, pixel_values, raw_fbank, ours


def test_converted_folder_loads_without_missing_or_unexpected_keys(checkpoint):
    model, info = VitaForConditionalGeneration.from_pretrained(checkpoint["converted"], output_loading_info=True)
    assert info == {"missing_keys": set(), "unexpected_keys": set(), "mismatched_keys": set(), "error_msgs": []}
    config = model.config
    assert config.text_config.rope_parameters["rope_theta"] == original_vita.ROPE_THETA
    assert (config.audio_config.num_hidden_layers, config.audio_config.num_attention_heads) == (2, 4)
    assert (config.vision_config.hidden_size, config.vision_config.image_size[0]) == (32, 56)
    assert config.auto_map["AutoModel"] == "modeling_vita.VitaForConditionalGeneration"


def test_folder_has_code_card_generation_config_and_cmvn(checkpoint):
    folder = checkpoint["converted"]
    for name in ("configuration_vita.py", "modeling_vita.py", "audio_encoder.py", "README.md", "cmvn.json"):
        assert (folder / name).is_file(), name
    generation = json.loads((folder / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)
    card = (folder / "README.md").read_text()
    for needle in ("license: apache-2.0", "2408.05211", "`<1>`", "trust_remote_code=True", "AutoProcessor"):
        assert needle in card
    cmvn = json.loads((folder / "cmvn.json").read_text())
    state_dict = checkpoint["state_dict"]
    # Taken from the checkpoint's buffers, so exact.
    assert torch.equal(torch.tensor(cmvn["cmvn_mean"]).float(), state_dict[CMVN_KEYS["mean"]])
    assert torch.equal(torch.tensor(cmvn["cmvn_istd"]).float(), state_dict[CMVN_KEYS["istd"]])
    if (folder / "preprocessor_config.json").is_file():  # written when processing_vita is importable
        saved = json.loads((folder / "preprocessor_config.json").read_text())
        assert saved["cmvn_mean"] == pytest.approx(cmvn["cmvn_mean"])


def test_global_cmvn_file_gives_the_encoder_buffers(checkpoint):
    mean, istd = load_global_cmvn(checkpoint["root"] / "audio-encoder" / "global_cmvn")
    state_dict = checkpoint["state_dict"]
    assert len(mean) == len(istd) == 80
    torch.testing.assert_close(torch.tensor(mean).float(), state_dict[CMVN_KEYS["mean"]], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(istd).float(), state_dict[CMVN_KEYS["istd"]], rtol=1e-4, atol=1e-6)


def test_every_key_round_trips_through_convert_and_revert(checkpoint):
    state_dict = checkpoint["state_dict"]
    for key, tensor in state_dict.items():
        if key in CMVN_KEYS.values():
            assert convert_key(key) is None
            continue
        for piece, _, _ in original_pieces(key, tuple(tensor.shape)):
            new = convert_key(piece)
            assert new is not None, piece
            assert revert_key(new) == piece
    converted = _load_converted(checkpoint["converted"])
    for key, tensor in converted.items():
        for piece, _ in new_pieces(key, tensor):
            assert convert_key(revert_key(piece)) == piece
    assert len(TABLE) > 20 and all(isinstance(a, str) and isinstance(b, str) for a, b in TABLE)


def test_reverse_conversion_gives_back_the_original_tensors_bit_for_bit(checkpoint):
    state_dict = checkpoint["state_dict"]
    converted = _load_converted(checkpoint["converted"])
    cmvn = json.loads((checkpoint["converted"] / "cmvn.json").read_text())
    cmvn = {"mean": torch.tensor(cmvn["cmvn_mean"]).float(), "istd": torch.tensor(cmvn["cmvn_istd"]).float()}
    reverted = revert_state_dict(converted, cmvn)
    assert set(reverted) == set(state_dict)
    for key, tensor in state_dict.items():
        assert torch.equal(reverted[key], tensor), key
    # The in-memory path agrees with the streamed one.
    in_memory, buffers = convert_state_dict(state_dict, num_experts=original_vita.LLM["experts"])
    assert set(in_memory) == set(converted) and all(torch.equal(in_memory[k], converted[k]) for k in converted)
    assert torch.equal(buffers["mean"], state_dict[CMVN_KEYS["mean"]])


def test_logits_match_the_original_forward_pass(checkpoint):
    state_dict = checkpoint["state_dict"]
    model = VitaForConditionalGeneration.from_pretrained(checkpoint["converted"]).eval()
    original_ids, pixel_values, raw_fbank, ours = _multimodal_inputs(state_dict)
    with torch.no_grad():
        expected = original_vita.original_forward(state_dict, original_ids, pixel_values, raw_fbank)
        logits = model(**ours).logits[0]
    assert logits.shape == expected.shape == (ours["input_ids"].shape[1], original_vita.LLM["vocab"])
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_bfloat16_conversion_writes_bfloat16_and_config_dtype(checkpoint, tmp_path):
    root = checkpoint["root"]
    output = _convert(root / "VITA_ckpt", root / "audio-encoder", tmp_path / "bf16", "--dtype", "bfloat16")
    assert not (output / "model.safetensors.index.json").exists()  # fits one shard
    weights = load_file(output / "model.safetensors")
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    assert json.loads((output / "config.json").read_text())["dtype"] == "bfloat16"


def test_pytorch_bin_checkpoint_converts_like_safetensors(checkpoint, tmp_path):
    folder = tmp_path / "bin_ckpt"
    folder.mkdir()
    state_dict = checkpoint["state_dict"]
    keys = list(state_dict)
    torch.save({k: state_dict[k] for k in keys[:60]}, folder / "pytorch_model-00001-of-00002.bin")
    torch.save({k: state_dict[k] for k in keys[60:]}, folder / "pytorch_model-00002-of-00002.bin")
    (folder / "config.json").write_text(json.dumps(original_vita.original_config()))
    output = _convert(folder, checkpoint["root"] / "audio-encoder", tmp_path / "out", "--dtype", "float32")
    converted, expected = load_file(output / "model.safetensors"), _load_converted(checkpoint["converted"])
    assert set(converted) == set(expected) and all(torch.equal(converted[k], expected[k]) for k in expected)


def test_unknown_keys_are_refused_with_their_names(checkpoint, tmp_path):
    extra = {"model.mm_projector.4.weight": torch.zeros(2, 2), "model.audio_encoder.foo": torch.zeros(1)}
    original_vita.write_original_checkpoint(tmp_path / "odd", checkpoint["state_dict"], num_shards=2, extra=extra)
    with pytest.raises(ValueError, match="Refusing 2 key") as error:
        _convert(tmp_path / "odd", checkpoint["root"] / "audio-encoder", tmp_path / "out")
    assert "model.mm_projector.4.weight" in str(error.value) and "model.audio_encoder.foo" in str(error.value)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))  # nothing left behind


def test_missing_keys_are_reported(checkpoint, tmp_path):
    audio = checkpoint["root"] / "audio-encoder"
    state_dict = dict(checkpoint["state_dict"])
    del state_dict["model.layers.1.block_sparse_moe.experts.2.w3.weight"], state_dict["model.norm.weight"]
    original_vita.write_original_checkpoint(tmp_path / "partial", state_dict)
    with pytest.raises(ValueError, match=r"gate_up_proj: only 7 of 8 expert pieces"):
        _convert(tmp_path / "partial", audio, tmp_path / "out")
    del state_dict["model.layers.1.block_sparse_moe.experts.2.w1.weight"]
    state_dict.pop("model.layers.1.block_sparse_moe.experts.2.w2.weight")
    for e in (0, 1, 3):
        for w in ("w1", "w2", "w3"):
            state_dict.pop(f"model.layers.1.block_sparse_moe.experts.{e}.{w}.weight")
    original_vita.write_original_checkpoint(tmp_path / "partial2", state_dict)
    with pytest.raises(ValueError, match=r"lacks 3 weight.*model\.language_model\.norm\.weight"):
        _convert(tmp_path / "partial2", audio, tmp_path / "out2")
    _convert(tmp_path / "partial2", audio, tmp_path / "out3", "--allow-missing")
    assert (tmp_path / "out3" / "model.safetensors").is_file()


def test_shape_mismatch_names_the_key_with_found_and_expected_shapes(checkpoint, tmp_path):
    # A train.yaml that promises a wider encoder than the weights hold.
    import yaml

    audio = tmp_path / "audio-encoder"
    shutil.copytree(checkpoint["root"] / "audio-encoder", audio)
    train = yaml.safe_load((audio / "train.yaml").read_text())
    train["encoder_conf"]["para_conf"]["transformer"]["transformer-output-dim"] = 48
    train["model_conf"]["enc_out_dim"] = 48
    (audio / "train.yaml").write_text(yaml.safe_dump(train))
    with pytest.raises(ValueError, match=r"subsampling\.conv\.0\.bias: found \(32,\), expected \(48,\)"):
        _convert(checkpoint["root"] / "VITA_ckpt", audio, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))


def test_tokenizer_in_the_input_gives_a_processor_and_the_placeholder_ids(checkpoint, tmp_path):
    testing_utils = pytest.importorskip("processing_vita.testing_utils")
    from processing_vita import VitaProcessor

    original_vita.write_original_checkpoint(tmp_path / "with_tokenizer", checkpoint["state_dict"])
    testing_utils.tiny_vita_tokenizer().save_pretrained(tmp_path / "with_tokenizer")
    argv = ["--input", str(tmp_path / "with_tokenizer"), "--output", str(tmp_path / "out"), "--no-progress"]
    assert main([*argv, "--audio-encoder", str(checkpoint["root"] / "audio-encoder")]) == 0  # no --*-token-id
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert (config["image_token_id"], config["video_token_id"], config["audio_token_id"]) == (4, 5, 6)
    processor = VitaProcessor.from_pretrained(tmp_path / "out")
    mean = checkpoint["state_dict"][CMVN_KEYS["mean"]]
    assert torch.equal(torch.tensor(processor.feature_extractor.cmvn_mean).float(), mean)
    assert processor.audio_token_id == 6


def test_the_command_prints_a_refused_input_and_exits_2(tmp_path, capsys):
    assert main(["--input", str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("vita-convert-original: error:") and "config.json does not exist" in error
    assert "Traceback" not in error and not (tmp_path / "out").exists()


def test_config_mismatch_names_found_and_expected():
    config = original_vita.original_config()
    config["mm_hidden_size"] = 4096
    with pytest.raises(ValueError, match=r"mm_hidden_size 4096, but the vision tower .* gives 128"):
        build_vita_config(config, "1.0", image_token_id=4, video_token_id=5, audio_token_id=6)


def test_dry_run_push_writes_the_folder_and_never_touches_the_network(checkpoint, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("the network was called during --dry-run")

    for name in ("upload_folder", "create_repo", "upload_file", "create_commit"):
        monkeypatch.setattr(huggingface_hub, name, refuse)
        monkeypatch.setattr(huggingface_hub.HfApi, name, refuse)
    root = checkpoint["root"]
    output = tmp_path / "dry"
    argv = ["--input", str(root / "VITA_ckpt"), "--output", str(output), "--no-progress", *TOKEN_IDS]
    argv += ["--audio-encoder", str(root / "audio-encoder"), "--push-to-hub", "org/vita", "--dry-run"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[dry-run] would push" in printed and "org/vita" in printed and "model.safetensors" in printed
    assert (output / "model.safetensors").is_file() and (output / "config.json").is_file()


@pytest.mark.slow
def test_hub_cache_layout_loads_as_remote_code_with_the_project_hidden(checkpoint, tmp_path):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--org--vita"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for path in checkpoint["converted"].iterdir():
        (snapshot / path.name).write_bytes(path.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    state_dict = checkpoint["state_dict"]
    original_ids, pixel_values, raw_fbank, ours = _multimodal_inputs(state_dict)
    with torch.no_grad():
        expected = original_vita.original_forward(state_dict, original_ids, pixel_values, raw_fbank)
    torch.save({"inputs": ours, "expected": expected}, tmp_path / "expected.pt")
    stdout = run_with_project_hidden(
        f"""
        import torch
        from transformers import AutoModel
        data = torch.load({str(tmp_path / "expected.pt")!r}, weights_only=True)
        model, info = AutoModel.from_pretrained("org/vita", trust_remote_code=True, output_loading_info=True)
        assert not (info["missing_keys"] or info["unexpected_keys"]), info
        assert type(model).__name__ == "VitaForConditionalGeneration", type(model)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        with torch.no_grad():
            logits = model.eval()(**data["inputs"]).logits[0]
        torch.testing.assert_close(logits, data["expected"], atol=1e-4, rtol=1e-4)
        print("HUB_CACHE_OK")
        """,
        tmp_path,
        env={"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"},
    )
    assert "HUB_CACHE_OK" in stdout


def test_a_hub_cache_snapshot_of_links_into_its_blobs_converts(checkpoint, tmp_path):
    """`<repo>/snapshots/<revision>/` holds links to `<repo>/blobs/`: inside the download, so not refused (a link out
    of the checkpoint folder otherwise is, tests/bad_inputs)."""
    repo = tmp_path / "models--org--vita"
    snapshot = repo / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for index, path in enumerate(sorted((checkpoint["root"] / "VITA_ckpt").iterdir())):
        blob = repo / "blobs" / f"blob{index}"
        shutil.copy(path, blob)
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", blob.name))
    output = _convert(snapshot, checkpoint["root"] / "audio-encoder", tmp_path / "out", "--dtype", "float32")
    converted, expected = load_file(output / "model.safetensors"), _load_converted(checkpoint["converted"])
    assert set(converted) == set(expected) and all(torch.equal(converted[k], expected[k]) for k in expected)
