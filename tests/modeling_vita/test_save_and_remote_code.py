"""Saving, reloading, and loading a saved folder as Hub remote code in a process where the project is hidden."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel

from modeling_vita import VitaConfig, VitaForConditionalGeneration
from modeling_vita.testing_utils import tiny_vita_config
from tests.modeling_vita.inputs import build_inputs
from tests.utils import run_with_project_hidden

SAMPLE = [[1, 20, ("image", 2), 21, ("audio", 160), ("video", 2), 22]]


@pytest.fixture
def saved_model(tmp_path):
    model = VitaForConditionalGeneration(tiny_vita_config()).eval()
    inputs = build_inputs(model.config, SAMPLE)
    with torch.no_grad():
        logits = model(**inputs).logits
    model.save_pretrained(tmp_path / "vita")
    torch.save({"inputs": dict(inputs), "logits": logits}, tmp_path / "expected.pt")
    return tmp_path


def test_saved_folder_carries_auto_map_and_code_files(saved_model):
    folder = saved_model / "vita"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "vita"
    for auto_class in ("AutoConfig", "AutoModel", "AutoModelForCausalLM", "AutoModelForImageTextToText"):
        assert auto_class in config["auto_map"]
    for code_file in ("configuration_vita.py", "modeling_vita.py", "audio_encoder.py"):
        assert (folder / code_file).is_file()
    assert (folder / "model.safetensors").is_file()


def test_save_and_reload_gives_identical_logits(saved_model):
    expected = torch.load(saved_model / "expected.pt", weights_only=True)
    reloaded = AutoModel.from_pretrained(saved_model / "vita").eval()
    assert type(reloaded) is VitaForConditionalGeneration
    with torch.no_grad():
        logits = reloaded(**expected["inputs"]).logits
    torch.testing.assert_close(logits, expected["logits"], atol=0, rtol=0)


def test_trust_remote_code_loads_in_a_process_where_the_project_is_hidden(saved_model):
    stdout = run_with_project_hidden(
        f"""
        import torch
        from transformers import AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText
        folder = {str(saved_model / "vita")!r}
        expected = torch.load({str(saved_model / "expected.pt")!r}, weights_only=True)
        for auto_class in (AutoModel, AutoModelForCausalLM, AutoModelForImageTextToText):
            model = auto_class.from_pretrained(folder, trust_remote_code=True).eval()
            assert type(model).__name__ == "VitaForConditionalGeneration", type(model)
            assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
            with torch.no_grad():
                logits = model(**expected["inputs"]).logits
            torch.testing.assert_close(logits, expected["logits"], atol=0, rtol=0)
            out = model.generate(**expected["inputs"], max_new_tokens=3, do_sample=False)
            assert out.shape[1] == expected["inputs"]["input_ids"].shape[1] + 3
        print("REMOTE_CODE_OK")
        """,
        saved_model,
    )
    assert "REMOTE_CODE_OK" in stdout


def test_config_round_trips_through_dict_and_disk(tmp_path):
    config = tiny_vita_config(vision_feature_scale=1.0)
    config.save_pretrained(tmp_path)
    reloaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(reloaded, VitaConfig)
    saved, original = reloaded.to_dict(), config.to_dict()
    saved.pop("_name_or_path"), original.pop("_name_or_path")
    assert saved == original
    assert reloaded.text_config.model_type == "mixtral"
    assert reloaded.audio_config.output_size == reloaded.text_config.hidden_size


def test_default_config_reproduces_the_released_checkpoint_shapes():
    config = VitaConfig()
    text, vision, audio = config.text_config, config.vision_config, config.audio_config
    assert (text.model_type, text.vocab_size, text.hidden_size, text.num_hidden_layers) == ("mixtral", 51760, 4096, 32)
    assert (text.num_local_experts, text.num_experts_per_tok, text.num_key_value_heads) == (8, 2, 8)
    assert text.rope_parameters["rope_theta"] == 1e6
    assert (vision.hidden_size, vision.num_hidden_layers, vision.image_size, vision.patch_size) == (
        1024,
        24,
        (448, 448),
        (14, 14),
    )
    assert vision.attention_bias and vision.use_mean_pooling and vision.layer_norm_eps == 1e-6
    assert (audio.hidden_size, audio.num_hidden_layers, audio.num_attention_heads, audio.intermediate_size) == (
        1024,
        24,
        16,
        4096,
    )
    assert audio.output_size == 4096 and config.image_seq_length == 256
    assert config.state_tokens == {"query_audio": "<1>", "noisy_audio": "<2>", "query_text": "<3>"}


def test_placeholder_id_outside_the_vocabulary_is_rejected():
    with pytest.raises(ValueError, match=r"`audio_token_id` is 5000, outside the LLM vocabulary \[0, 1024\)"):
        tiny_vita_config(audio_token_id=5000)


def test_text_backbone_given_as_a_dict_with_its_model_type():
    config = VitaConfig(
        text_config={"model_type": "llama", "hidden_size": 96, "num_attention_heads": 4, "vocab_size": 52000}
    )
    assert config.text_config.model_type == "llama"
    assert config.audio_config.output_size == 96
