"""Training of VITA-1.5's speech decoder on (text, speech) pairs; the LLM and the codec stay frozen.

Upstream released the decoder's weights but no training recipe; this one trains the decoder's own training forward
(`VitaSpeechDecoder.forward`: teacher forcing, the prefix read bidirectionally, cross-entropy over the codec tokens
and the end of speech) on what inference feeds it. The input of a pair is its text as `generate_speech` gives it to
the decoder (the LLM's input embeddings of the tokens, cut into rows of the decoder's width), the targets are the
codec tokens the checkpoint's own codec `encode`s from the recording (`recipes/speech_decoder_data.py`). Only the
decoder trains, in full or through LoRA adapters (`lora: true`), with a `transformers.Trainer`; the trained decoder
goes back into the VITA checkpoint (`speech_model.decoder`), which is saved whole to `output_dir`, so it speaks with
it (`generate_speech`, `stream_speech`).

Usage:

    python -m recipes.speech_decoder_data make-pairs data/speech-pairs --sentences sentences.txt --tts piper
    python -m recipes.speech_decoder --config recipes/speech_decoder.yaml
    accelerate launch --config_file recipes/accelerate_configs/ddp.yaml -m recipes.speech_decoder \\
        --config recipes/speech_decoder.yaml

Every YAML key is a field of `SpeechDecoderArguments` or `transformers.TrainingArguments`; any key can be overridden
on the command line. The decoder (about 100M parameters at VITA-1.5's size) is replicated on every device: DDP, not
FSDP or DeepSpeed, whose sharded parameters would not be the ones written back into the checkpoint.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import datasets
import torch
import transformers
from torch import nn
from transformers import Trainer, TrainingArguments, set_seed
from trl import TrlParser

from recipes.speech_decoder_data import (
    SpeechDecoderCollator,
    default_media_root,
    load_pairs,
    load_speaking_vita,
    prepare_pairs,
)

logger = logging.getLogger(__name__)

# Attention and feed-forward projections of the pre-network and the decoder layers.
DECODER_PROJECTIONS = r".*layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
LORA_FOLDER = "speech_decoder_lora"


@dataclass
class SpeechDecoderArguments:
    """Model, data and LoRA arguments of the speech decoder recipe."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A VITA checkpoint folder with a speech decoder (config.speech_config)."}
    )
    tiny_model: bool = field(
        default=False, metadata={"help": "Train a freshly initialised tiny VITA with a tiny speech model (smoke)."}
    )
    dtype: str | None = field(
        default=None,
        metadata={"help": "dtype of the frozen model (e.g. bfloat16); the decoder trains in float32 whatever it is."},
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Load the checkpoint with its own code."})
    dataset_name: str | None = field(
        default=None,
        metadata={"help": "Pairs: a JSON/JSONL file or a save_to_disk folder (text + audio, or prepared pairs)."},
    )
    dataset_train_split: str = field(default="train", metadata={"help": "Split of a DatasetDict folder."})
    media_root: str | None = field(
        default=None, metadata={"help": "Folder the audio paths are relative to (default: the JSONL's folder)."}
    )
    text_column: str = field(default="text", metadata={"help": "Column with the spoken text."})
    audio_column: str = field(default="audio", metadata={"help": "Column with the audio path or array dict."})
    lowercase: bool = field(
        default=False, metadata={"help": "Lower-case the text first, as VITA-1.5's server does before speaking."}
    )
    lora: bool = field(default=False, metadata={"help": "Train LoRA adapters on the decoder instead of all of it."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default=DECODER_PROJECTIONS, metadata={"help": "Regex over the decoder's module names that get adapters."}
    )
    lora_modules_to_save: list[str] = field(
        default_factory=list,
        metadata={"help": "Decoder modules trained in full next to the adapters, e.g. out_proj or embed_tokens."},
    )

    def __post_init__(self) -> None:
        if self.dataset_name is None:
            raise ValueError(
                "dataset_name is None; expected (text, audio) pairs as a JSON/JSONL file or a save_to_disk folder. "
                "`python -m recipes.speech_decoder_data make-pairs OUTPUT` writes some."
            )
        if self.model_name_or_path is None and not self.tiny_model:
            raise ValueError(
                "model_name_or_path is None and tiny_model is false; expected a VITA checkpoint folder with a speech "
                "decoder, or tiny_model: true for a smoke run."
            )


class SpeechDecoderTrainer(Trainer):
    """A `Trainer` of the speech decoder that also holds the whole VITA model, to write the decoder back into it.

    The trainer's own checkpoints (`save_steps`) hold the decoder (or its adapters) alone, for resuming;
    `save_speaking_checkpoint` writes the VITA checkpoint that speaks with the trained decoder.
    """

    def __init__(
        self, *args: Any, vita_model: nn.Module, vita_processor: Any, decoder_dtype: torch.dtype, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.vita_model = vita_model
        # Not the trainer's `processing_class`: that is aligned with the trained model's config (the decoder's own
        # special ids are fixed) and saved with each decoder checkpoint.
        self.vita_processor = vita_processor
        self.decoder_dtype = decoder_dtype

    def save_speaking_checkpoint(self, output_dir: str) -> None:
        """Merge the adapters (if any; they are also saved to `output_dir/speech_decoder_lora`), put the decoder back
        in the checkpoint's dtype and save the VITA model and its processor to `output_dir`."""
        from peft import PeftModel

        trained = self.accelerator.unwrap_model(self.model)
        if isinstance(trained, PeftModel):
            if self.accelerator.is_main_process:
                trained.save_pretrained(os.path.join(output_dir, LORA_FOLDER))
            # peft swapped the adapted layers inside the decoder object that VITA holds; merging swaps them back.
            decoder = trained.merge_and_unload()
        else:
            decoder = trained
        speech_model = self.vita_model.speech_model
        assert decoder is speech_model.decoder, "the trained decoder must be the checkpoint's own"
        speech_model.decoder.to(device="cpu", dtype=self.decoder_dtype)
        if self.accelerator.is_main_process:
            self.vita_model.save_pretrained(output_dir)
            self.vita_processor.save_pretrained(output_dir)
        self.accelerator.wait_for_everyone()
        logger.info("VITA checkpoint with the trained speech decoder saved to %s", output_dir)


def set_trainable_decoder(model: nn.Module, args: SpeechDecoderArguments) -> nn.Module:
    """Freeze `model` (a VITA with a speech model) but its speech decoder, in float32 for training; returns the module
    to train: the decoder, or a peft model of it with LoRA adapters when `args.lora`."""
    model.requires_grad_(False)
    decoder = model.speech_model.decoder
    decoder.float()  # bf16 weights would take bf16 optimizer updates; the checkpoint's dtype comes back at saving
    if not args.lora:
        decoder.requires_grad_(True)
        return decoder
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules,
        modules_to_save=args.lora_modules_to_save or None,
    )
    try:
        return get_peft_model(decoder, config)
    except ValueError as error:
        names = sorted({name.split(".")[-1] for name, _ in decoder.named_modules() if name})
        raise ValueError(
            f"LoRA found no decoder module for lora_target_modules={args.lora_target_modules!r} ({error}); expected a "
            f"regex over names such as layers.0.self_attn.q_proj (module kinds: {names})."
        ) from None


def load_train_dataset(args: SpeechDecoderArguments, tokenizer: Any, codec: nn.Module) -> datasets.Dataset:
    """The pairs of `args.dataset_name` as `text_ids` / `codec_tokens` (encoded now unless prepared already)."""
    pairs = load_pairs(args.dataset_name, args.dataset_train_split)
    media_root = default_media_root(args.dataset_name, args.media_root)
    return prepare_pairs(
        pairs, tokenizer, codec, media_root, args.text_column, args.audio_column, lowercase=args.lowercase
    )


def _warn_past_positions(dataset: datasets.Dataset, rows_per_token: int, max_positions: int) -> None:
    # Rotary positions go on past the limit, but into positions the released decoder never saw.
    lengths = [len(t) * rows_per_token + 1 + len(c) + 1 for t, c in zip(dataset["text_ids"], dataset["codec_tokens"])]
    over = sum(length > max_positions for length in lengths)
    if over:
        logger.warning(
            "%d of %d pairs are longer than the decoder's %d positions (frames + BOS + codec tokens + EOS, longest "
            "%d); split long clips into sentences.", over, len(lengths), max_positions, max(lengths),
        )  # fmt: skip


def build_trainer(args: SpeechDecoderArguments, training_args: TrainingArguments) -> SpeechDecoderTrainer:
    """Everything up to training: model, freezing (or LoRA), data and collator, the trainer."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    log_level = training_args.get_process_log_level()
    logger.setLevel(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    logger.info("Script arguments %s", args)
    set_seed(training_args.seed)
    # The raw `text_ids` / `codec_tokens` columns must reach the collator (they are no forward arguments).
    training_args.remove_unused_columns = False

    model, processor = load_speaking_vita(args.model_name_or_path, args.dtype, args.trust_remote_code, args.tiny_model)
    decoder = model.speech_model.decoder
    decoder_dtype = decoder.dtype
    train_module = set_trainable_decoder(model, args)
    n_trained = sum(p.numel() for p in train_module.parameters() if p.requires_grad)
    logger.info(
        "Training the speech decoder%s: %d of its %d parameters (VITA total %d)",
        " (LoRA)" if args.lora else "", n_trained, decoder.num_parameters(), model.num_parameters(),
    )  # fmt: skip

    train_dataset = load_train_dataset(args, processor.tokenizer, model.speech_model.codec)
    decoder_config = decoder.config
    rows_per_token = model.config.text_config.hidden_size // decoder_config.input_dim
    _warn_past_positions(train_dataset, rows_per_token, decoder_config.max_position_embeddings)
    collator = SpeechDecoderCollator(model.get_input_embeddings(), decoder_config.input_dim)
    trainer = SpeechDecoderTrainer(
        model=train_module,
        args=training_args,
        train_dataset=train_dataset,
        data_collator=collator,
        vita_model=model,
        vita_processor=processor,
        decoder_dtype=decoder_dtype,
    )
    if trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled:
        raise ValueError(
            "The speech decoder recipe runs with DDP (recipes/accelerate_configs/ddp.yaml) or one device; found FSDP "
            "or DeepSpeed, whose sharded parameters would not be the decoder written back into the checkpoint. "
            "The decoder is small enough to replicate."
        )
    return trainer


def main(args: SpeechDecoderArguments, training_args: TrainingArguments) -> SpeechDecoderTrainer:
    trainer = build_trainer(args, training_args)
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    trainer.save_speaking_checkpoint(training_args.output_dir)
    return trainer


def parse_args(argv: list[str] | None = None) -> tuple[SpeechDecoderArguments, TrainingArguments]:
    parser = TrlParser((SpeechDecoderArguments, TrainingArguments))
    return parser.parse_args_and_config(argv)


if __name__ == "__main__":
    trainer = main(*parse_args())
    trainer.accelerator.end_training()
