"""Supervised fine-tuning of VITA, one script for every training stage, driven by one YAML per stage.

The stages are VITA's (what each released script trains, its learning rates and lengths), run on TRL's SFTTrainer
with a custom multimodal model and collator and LoRA targets; the layout is that of alignment-handbook / open-r1
`sft.py`.

Usage:

    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml -m recipes.sft \\
        --config recipes/vita-mixtral-8x7b/stage3_multimodal_sft.yaml

Stages (`stage:`), what they train (everything else is frozen):
    llm             language model (embeddings included) + LM head
    vision_align    vision projector (`multi_modal_projector`)
    audio_align     audio encoder + its adapter (`audio_tower`)
    multimodal_sft  vision projector + language model + LM head (+ audio adapter with `train_audio_adapter`)

TRL's fused LM head (on by default in SFTTrainer 1.16) runs `model.model(...)` and `model.get_output_embeddings()`;
`VitaModel` takes every multimodal input and returns `last_hidden_state` (and Mixtral's `router_logits`), so it
works as is: `tests/recipes` checks that the trainer's loss equals the model's own loss on the same batch.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
import transformers
from accelerate import PartialState
from transformers import set_seed
from trl import (
    ModelConfig,
    ScriptArguments,
    SFTConfig,
    SFTTrainer,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)

from recipes.collator import VitaDataCollator
from recipes.data import convert_records, load_original_json

logger = logging.getLogger(__name__)

STAGES = ("llm", "vision_align", "audio_align", "multimodal_sft")
LANGUAGE_MODEL_ATTENTION = r"model\.language_model\..*\.(q_proj|k_proj|v_proj|o_proj)"


@dataclass
class VitaScriptArguments(ScriptArguments):
    """Data and stage arguments. `dataset_name` is a folder written by `Dataset.save_to_disk` or a JSON/JSONL file,
    in the converted format of `recipes/data.py` (original VITA JSON is converted on the fly)."""

    stage: str = field(default="multimodal_sft", metadata={"help": f"Training stage, one of {STAGES}."})
    media_root: str | None = field(
        default=None, metadata={"help": "Folder the media paths of the data are relative to."}
    )
    train_audio_adapter: bool = field(
        default=False, metadata={"help": "multimodal_sft: also train the audio adapter (the original finetune.sh)."}
    )
    pack_to_length: int | None = field(
        default=None,
        metadata={"help": "Pack image/text samples into rows of at most this many tokens (6000 in VITA)."},
    )
    tiny_model: bool = field(
        default=False, metadata={"help": "Train a freshly initialised tiny VITA with the tiny processor (smoke runs)."}
    )
    text_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Compose a fresh VITA: the causal LM (and its tokenizer) to start from, instead of a VITA."},
    )
    vision_model_name_or_path: str | None = field(
        default=None, metadata={"help": "With text_model_name_or_path: an internvl_vision (or internvl) checkpoint."}
    )
    audio_model_name_or_path: str | None = field(
        default=None, metadata={"help": "With text_model_name_or_path: a saved VitaAudioEncoder."}
    )
    unfreeze_modules: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Submodules trained on top of the stage's set, e.g. model.vision_tower for towers that start "
            "from random weights (vita-tiny); the released recipes leave it empty."
        },
    )
    freeze_modules: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Submodules kept frozen although the stage (or unfreeze_modules) trains them, e.g. a pretrained "
            "audio encoder under its adapter (model.audio_tower.layers); applied last."
        },
    )
    lora_target_regex: str = field(
        default=LANGUAGE_MODEL_ATTENTION,
        metadata={"help": "LoRA targets when `use_peft` and no `lora_target_modules`: a regex over module names."},
    )

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage={self.stage!r}; expected one of {STAGES}. Set `stage:` in the recipe YAML.")
        if self.dataset_name is None:
            raise ValueError("dataset_name is None; expected a save_to_disk folder or a JSON/JSONL file of samples.")


def _check_module_names(model: torch.nn.Module, names: list[str], option: str) -> None:
    for name in names:
        try:
            model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"{option} names {name!r}, which the model does not have; expected a submodule name such as "
                "model.vision_tower, model.audio_tower or model.multi_modal_projector."
            ) from None


def set_trainable(
    model: torch.nn.Module,
    stage: str,
    train_audio_adapter: bool = False,
    unfreeze_modules: list[str] | None = None,
    freeze_modules: list[str] | None = None,
) -> list[str]:
    """Freeze `model` (a VitaForConditionalGeneration) for `stage`, unfreeze `unfreeze_modules` too, then freeze
    `freeze_modules` again; returns the names of the trained modules (before `freeze_modules`)."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r}; expected one of {STAGES}.")
    trained = {
        "llm": ["model.language_model", "lm_head"],
        "vision_align": ["model.multi_modal_projector"],
        "audio_align": ["model.audio_tower"],
        "multimodal_sft": ["model.multi_modal_projector", "model.language_model", "lm_head"],
    }[stage]
    if stage == "multimodal_sft" and train_audio_adapter:
        trained.append("model.audio_tower.adapter")
    _check_module_names(model, unfreeze_modules or [], "unfreeze_modules")
    _check_module_names(model, freeze_modules or [], "freeze_modules")
    trained += [name for name in unfreeze_modules or [] if name not in trained]
    model.requires_grad_(False)
    for name in trained:
        model.get_submodule(name).requires_grad_(True)
    for name in freeze_modules or []:
        model.get_submodule(name).requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(
            f"Nothing left to train in stage {stage!r}: freeze_modules={freeze_modules} covers all of {trained}."
        )
    return trained


def lora_modules_to_save(stage: str, train_audio_adapter: bool = False) -> list[str]:
    """Modules trained in full next to the LoRA adapters of the language model."""
    if stage == "llm":
        return []
    if stage == "multimodal_sft":
        return ["multi_modal_projector"] + (["audio_tower.adapter"] if train_audio_adapter else [])
    raise ValueError(
        f"use_peft with stage={stage!r}; LoRA adapts the language model, which the alignment stages keep frozen. "
        "Expected stage 'llm' or 'multimodal_sft', or use_peft: false."
    )


def load_train_dataset(script_args: VitaScriptArguments) -> datasets.Dataset:
    path = script_args.dataset_name
    if os.path.isdir(path):
        dataset = datasets.load_from_disk(path)
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[script_args.dataset_train_split]
    elif path.endswith((".json", ".jsonl")):
        records = load_original_json(path)
        if records and "conversations" in records[0]:
            records = convert_records(records, script_args.media_root)
        dataset = datasets.Dataset.from_list(records)
    else:
        raise ValueError(f"dataset_name={path!r} is neither a folder nor a .json/.jsonl file; expected one of those.")
    if "messages" not in dataset.column_names:
        raise ValueError(
            f"The data set has columns {dataset.column_names}; expected a `messages` column. Convert original VITA "
            "JSON with `python -m recipes.data convert`."
        )
    return dataset


def load_model_and_processor(script_args: VitaScriptArguments, model_args: ModelConfig, trust_remote_code: bool):
    if script_args.tiny_model:
        from modeling_vita import VitaForConditionalGeneration
        from modeling_vita.testing_utils import tiny_vita_config
        from processing_vita.testing_utils import tiny_vita_processor

        config = tiny_vita_config()
        if model_args.attn_implementation is not None:
            config._attn_implementation = model_args.attn_implementation
        return VitaForConditionalGeneration(config), tiny_vita_processor()
    dtype = model_args.dtype if model_args.dtype in (None, "auto") else getattr(torch, model_args.dtype)
    if script_args.text_model_name_or_path is not None:
        from recipes.compose import compose_vita

        return compose_vita(
            script_args.text_model_name_or_path,
            script_args.vision_model_name_or_path,
            script_args.audio_model_name_or_path,
            dtype=None if dtype == "auto" else dtype,
            trust_remote_code=trust_remote_code,
        )
    if model_args.model_name_or_path is None:
        raise ValueError(
            "model_name_or_path is None, text_model_name_or_path is None and tiny_model is false; expected a VITA "
            "checkpoint folder, separate parts to compose, or tiny_model: true."
        )
    from transformers import AutoModelForCausalLM, AutoProcessor

    import modeling_vita  # noqa: F401  (registers the Auto classes when the package is installed)

    # QLoRA (`load_in_4bit` / `load_in_8bit`): bitsandbytes quantises the weights on load (needs a GPU).
    quantization_config = get_quantization_config(model_args)
    model = AutoModelForCausalLM.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        dtype=dtype,
        attn_implementation=model_args.attn_implementation,
        trust_remote_code=trust_remote_code,
        quantization_config=quantization_config,
        # Quantised weights are placed on this process's GPU at load time, one full copy per process.
        device_map={"": PartialState().local_process_index} if quantization_config is not None else None,
    )
    processor = AutoProcessor.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=trust_remote_code
    )
    return model, processor


def configure_training_args(training_args: SFTConfig) -> None:
    """The settings a custom multimodal collator needs (TRL must leave the batches to it)."""
    # Raw `messages`/media columns must reach the collator; TRL's tokenization and truncation would drop or cut them.
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    if training_args.max_length is not None:
        logger.warning(
            "max_length=%s is ignored (expected null): truncation would cut media spans. Set `max_length: null` in "
            "the recipe and drop over-long samples from the data instead.",
            training_args.max_length,
        )
        training_args.max_length = None
    # Frozen towers feed the trained parts; reentrant checkpointing would then see no input needing grad.
    if training_args.activation_checkpointing and training_args.activation_checkpointing_kwargs is None:
        training_args.activation_checkpointing_kwargs = {"use_reentrant": False}
        training_args.gradient_checkpointing_kwargs = training_args.activation_checkpointing_kwargs


def build_trainer(script_args: VitaScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    """Everything up to training: model, processor, stage freezing, LoRA, data and collator, the SFTTrainer."""
    ###############
    # Setup logging
    ###############
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    logger.info("Script arguments %s", script_args)
    set_seed(training_args.seed)
    configure_training_args(training_args)

    ###############
    # Load model
    ###############
    model, processor = load_model_and_processor(script_args, model_args, training_args.trust_remote_code)
    trained = set_trainable(
        model,
        script_args.stage,
        script_args.train_audio_adapter,
        script_args.unfreeze_modules,
        script_args.freeze_modules,
    )
    # With several processes (DDP, FSDP, ZeRO) a rank whose batch lacks a modality must still run that tower.
    model.model.run_idle_towers = training_args.world_size > 1
    peft_config = get_peft_config(model_args)
    if peft_config is not None:
        peft_config.target_modules = model_args.lora_target_modules or script_args.lora_target_regex
        modules = model_args.lora_modules_to_save or lora_modules_to_save(
            script_args.stage, script_args.train_audio_adapter
        )
        peft_config.modules_to_save = modules or None
    n_trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        "Stage %s trains %s: %d of %d parameters", script_args.stage, trained, n_trained, model.num_parameters()
    )

    ###############
    # Load datasets
    ###############
    train_dataset = load_train_dataset(script_args)
    collator = VitaDataCollator(
        processor, media_root=script_args.media_root, pack_to_length=script_args.pack_to_length
    )

    ###############
    # Initialize the SFT Trainer
    ###############
    return SFTTrainer(
        model=model,
        args=training_args,
        train_dataset=train_dataset,
        processing_class=processor,
        data_collator=collator,
        peft_config=peft_config,
    )


def main(script_args: VitaScriptArguments, training_args: SFTConfig, model_args: ModelConfig) -> SFTTrainer:
    trainer = build_trainer(script_args, training_args, model_args)
    state = trainer.accelerator.state
    logger.info("Distributed type %s with %d processes", state.distributed_type, state.num_processes)

    ###############
    # Training loop
    ###############
    checkpoint = training_args.resume_from_checkpoint
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    ###############
    # Save model
    ###############
    # Training turns the cache off; the saved model is for generation.
    trainer.model.config.use_cache = True
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.processing_class.save_pretrained(training_args.output_dir)
    logger.info("Model and processor saved to %s", training_args.output_dir)
    return trainer


def parse_args(args: list[str] | None = None) -> tuple[Any, ...]:
    parser = TrlParser((VitaScriptArguments, SFTConfig, ModelConfig))
    return parser.parse_args_and_config(args)


if __name__ == "__main__":
    trainer = main(*parse_args())
    # Every rank leaves the process group together: a rank that exits with it alive can abort (SIGABRT) in gloo's
    # teardown while the main process is still saving.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
