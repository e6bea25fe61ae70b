"""Tests of recipes/sft.py on CPU: each stage trains exactly its modules, TRL's fused LM head gives the model's own
loss, LoRA touches only adapters and saved modules, and a run through `accelerate launch` saves what it trained."""

import os
import subprocess
import sys

import pytest
import torch
from transformers import set_seed

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.testing_utils import tiny_vita_config
from processing_vita.testing_utils import tiny_vita_processor
from recipes.data import write_smoke_data
from recipes.sft import build_trainer, main, parse_args

from . import REPO_ROOT, smoke_cli_args

MODULES = {
    "vision_tower": "model.vision_tower.",
    "projector": "model.multi_modal_projector.",
    "audio_encoder": "model.audio_tower.",  # without the adapter, see _module_of
    "audio_adapter": "model.audio_tower.adapter.",
    "language_model": "model.language_model.",
    "lm_head": "lm_head.",
}
TRAINED = {
    ("llm", False): {"language_model", "lm_head"},
    ("vision_align", False): {"projector"},
    ("audio_align", False): {"audio_encoder", "audio_adapter"},
    ("multimodal_sft", False): {"projector", "language_model", "lm_head"},
    ("multimodal_sft", True): {"projector", "language_model", "lm_head", "audio_adapter"},
}
# Short runs: 6 samples in 2 steps of 3 see every modality; no saving in the in-process runs.
FAST = {"max_steps": 2, "per_device_train_batch_size": 3, "save_strategy": "no", "logging_steps": 1}


def _module_of(name: str) -> str:
    if name.startswith(MODULES["audio_adapter"]):
        return "audio_adapter"
    return next(k for k, prefix in MODULES.items() if name.startswith(prefix))


def _initial_state() -> dict[str, torch.Tensor]:
    # sft.py seeds with the smoke YAML's seed right before building the tiny model.
    set_seed(42)
    return {k: v.clone() for k, v in VitaForConditionalGeneration(tiny_vita_config()).state_dict().items()}


def _changed_modules(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> set[str]:
    return {_module_of(k) for k, v in before.items() if not torch.equal(v, after[k].to(v.dtype))}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    return write_smoke_data(tmp_path_factory.mktemp("smoke"))


@pytest.mark.parametrize("stage,adapter", sorted(TRAINED))
def test_stage_trains_exactly_its_modules(smoke, tmp_path, stage, adapter):
    dataset, media = smoke
    # Activation checkpointing on, as in the stage YAMLs (non-reentrant, around frozen towers).
    cli = smoke_cli_args(dataset, media, str(tmp_path), stage=stage, train_audio_adapter=adapter, **FAST)
    args = parse_args(cli + ["--activation_checkpointing", "true"])
    trainer = main(*args)
    model = trainer.model
    assert model.is_activation_checkpointing
    expected = TRAINED[(stage, adapter)]
    for name, param in model.named_parameters():
        assert param.requires_grad == (_module_of(name) in expected), name
    assert _changed_modules(_initial_state(), model.state_dict()) == expected


def test_unfreeze_modules_trains_a_tower_on_top_of_the_stage(smoke, tmp_path):
    dataset, media = smoke
    cli = smoke_cli_args(dataset, media, str(tmp_path), stage="vision_align", **FAST)
    trainer = main(*parse_args(cli + ["--unfreeze_modules", "model.vision_tower"]))
    expected = {"projector", "vision_tower"}
    for name, param in trainer.model.named_parameters():
        assert param.requires_grad == (_module_of(name) in expected), name
    assert _changed_modules(_initial_state(), trainer.model.state_dict()) == expected


def test_unfreeze_modules_with_an_unknown_name_is_refused():
    from recipes.sft import set_trainable

    model = VitaForConditionalGeneration(tiny_vita_config())
    with pytest.raises(ValueError, match="unfreeze_modules names 'model.vision_encoder'"):
        set_trainable(model, "llm", unfreeze_modules=["model.vision_encoder"])


def test_freeze_modules_keeps_a_pretrained_encoder_under_its_trained_adapter():
    from recipes.sft import set_trainable

    model = VitaForConditionalGeneration(tiny_vita_config())
    encoder = ["model.audio_tower.subsampling", "model.audio_tower.embedding", "model.audio_tower.layers",
               "model.audio_tower.layer_norm"]  # fmt: skip
    set_trainable(model, "audio_align", freeze_modules=encoder)
    trained = {name for name, param in model.named_parameters() if param.requires_grad}
    assert trained and all(name.startswith("model.audio_tower.adapter.") for name in trained)
    assert {n for n, _ in model.named_parameters() if n.startswith("model.audio_tower.adapter.")} == trained


def test_freeze_modules_that_leave_nothing_to_train_are_refused():
    from recipes.sft import set_trainable

    model = VitaForConditionalGeneration(tiny_vita_config())
    with pytest.raises(ValueError, match="Nothing left to train in stage 'audio_align'"):
        set_trainable(model, "audio_align", freeze_modules=["model.audio_tower"])
    with pytest.raises(ValueError, match="freeze_modules names 'model.audio_encoder'"):
        set_trainable(model, "audio_align", freeze_modules=["model.audio_encoder"])


def test_fused_lm_head_loss_equals_model_loss(smoke, tmp_path):
    dataset, media = smoke
    args = parse_args(smoke_cli_args(dataset, media, str(tmp_path), router_aux_loss_coef=0.0, **FAST))
    trainer = build_trainer(*args)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    model = trainer.model.eval()
    with torch.no_grad():
        fused = trainer.compute_loss(model, dict(batch))
        reference = model(**batch, use_cache=False).loss
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)


def test_lora_changes_only_adapters_and_merges_exactly(smoke, tmp_path):
    dataset, media = smoke
    cli = smoke_cli_args(
        dataset, media, str(tmp_path), use_peft=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, **FAST
    )
    trainer = main(*parse_args(cli))
    peft_model = trainer.model.eval()
    lora_names = [n for n, _ in peft_model.named_parameters() if "lora_" in n]
    assert lora_names and all(".language_model." in n and "_proj.lora_" in n for n in lora_names)
    before = _initial_state()
    for name, value in peft_model.state_dict().items():
        if "lora_" in name or "modules_to_save" in name:
            continue
        base = name.removeprefix("base_model.model.").replace(".base_layer", "").replace(".original_module", "")
        assert torch.equal(before[base], value), name
    saved = [v for n, v in peft_model.named_parameters() if "modules_to_save" in n]
    assert saved and all(v.requires_grad for v in saved)
    assert any(not torch.equal(v, before[n.split("base_model.model.")[-1].replace(".modules_to_save.default", "")])
               for n, v in peft_model.named_parameters() if "modules_to_save" in n)  # fmt: skip

    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    batch.pop("labels")
    with torch.no_grad():
        adapted = peft_model(**batch).logits
        merged = peft_model.merge_and_unload()
        torch.testing.assert_close(merged(**batch).logits, adapted, atol=1e-4, rtol=1e-4)
        plain = VitaForConditionalGeneration(tiny_vita_config()).eval()
        plain.load_state_dict(before)
        assert (plain(**batch).logits - adapted).abs().max() > 1e-4  # the adapter did something


def _accelerate(args: list[str], num_processes: int, config: str | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    if config is None:
        command += ["--cpu"]
    else:
        # Without a GPU, torchrun-started processes fall back to the gloo backend on CPU.
        config_file = REPO_ROOT / "recipes" / "accelerate_configs" / f"{config}.yaml"
        command += ["--config_file", str(config_file), "--mixed_precision", "no", "--main_process_port", "29533"]
    command += ["-m", "recipes.sft", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


@pytest.mark.parametrize(
    "stage",
    [
        "multimodal_sft",
        pytest.param("llm", marks=pytest.mark.slow),
        pytest.param("vision_align", marks=pytest.mark.slow),
        pytest.param("audio_align", marks=pytest.mark.slow),
    ],
)
def test_accelerate_launch_saves_the_trained_stage(smoke, tmp_path, stage):
    dataset, media = smoke
    _accelerate(smoke_cli_args(dataset, media, str(tmp_path / "out"), stage=stage, max_steps=2), num_processes=1)
    saved = VitaForConditionalGeneration.from_pretrained(tmp_path / "out").state_dict()
    assert _changed_modules(_initial_state(), saved) == TRAINED[(stage, False)]
    assert (tmp_path / "out" / "processor_config.json").is_file() or (tmp_path / "out" / "tokenizer.json").is_file()


def _losses(output_dir) -> list[float]:
    import json

    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, config):
    if config == "fsdp" and torch.cuda.device_count() < 2:
        # accelerate turns FSDP on only over multi-accelerator state; on CPU it silently runs MULTI_CPU (DDP).
        pytest.skip("FSDP needs 2 accelerators: accelerate ignores the FSDP config on CPU (gloo)")
    # Image/video/text only: the audio encoder has dropout, whose random draws differ between the two layouts.
    import datasets

    dataset, media = write_smoke_data(tmp_path / "data")
    no_audio = datasets.load_from_disk(dataset).filter(lambda row: not row["audios"])
    # An even number of rows, so both layouts see the same pairs (DDP would wrap around to fill the last step).
    datasets.concatenate_datasets([no_audio, no_audio]).save_to_disk(str(tmp_path / "no_audio"))
    common = {"max_steps": 3, "router_aux_loss_coef": 0.0, "logging_steps": 1, "log_level": "info"}
    if config == "fsdp":
        common["use_cpu"] = False
    one = smoke_cli_args(
        str(tmp_path / "no_audio"), media, str(tmp_path / "one"), per_device_train_batch_size=2, **common
    )
    two = smoke_cli_args(
        str(tmp_path / "no_audio"), media, str(tmp_path / "two"), per_device_train_batch_size=1, **common
    )
    _accelerate(one, num_processes=1)
    result = _accelerate(two, num_processes=2, config=config)
    expected_type = {"ddp": "DistributedType.MULTI_CPU", "fsdp": "DistributedType.FSDP"}[config]
    assert f"Distributed type {expected_type} with 2 processes" in result.stdout + result.stderr
    torch.testing.assert_close(torch.tensor(_losses(tmp_path / "two")), torch.tensor(_losses(tmp_path / "one")),
                               atol=1e-4, rtol=1e-4)  # fmt: skip
    saved = VitaForConditionalGeneration.from_pretrained(tmp_path / "two").state_dict()
    assert _changed_modules(_initial_state(), saved) == {"projector", "language_model", "lm_head"}


def test_trains_from_a_saved_checkpoint(smoke, tmp_path):
    dataset, media = smoke
    initial = _initial_state()
    model = VitaForConditionalGeneration(tiny_vita_config())
    model.load_state_dict(initial)
    model.save_pretrained(tmp_path / "ckpt")
    tiny_vita_processor().save_pretrained(tmp_path / "ckpt")
    cli = smoke_cli_args(dataset, media, str(tmp_path / "out"), stage="llm", tiny_model=False, **FAST)
    cli += ["--model_name_or_path", str(tmp_path / "ckpt"), "--trust_remote_code", "true", "--dtype", "float32"]
    trainer = main(*parse_args(cli))
    assert _changed_modules(initial, trainer.model.state_dict()) == TRAINED[("llm", False)]


@pytest.mark.parametrize("name", ["stage1_llm", "stage2_vision_align", "stage2_audio_align", "stage3_multimodal_sft"])
def test_stage_yamls_parse(name):
    path = REPO_ROOT / "recipes" / "vita-mixtral-8x7b" / f"{name}.yaml"
    assert path.read_text().startswith("# Config for ")
    # bf16/tf32 need a GPU; everything else is parsed as written.
    script_args, training_args, model_args = parse_args(["--config", str(path), "--bf16", "false", "--tf32", "false"])
    assert script_args.stage == name.split("_", 1)[1]
    assert training_args.activation_checkpointing and model_args.dtype == "bfloat16"
