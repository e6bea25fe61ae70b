"""Tests of the speech decoder recipe (recipes/speech_decoder.py, recipes/speech_decoder_data.py) on a tiny VITA:
the prepared pairs hold the codec's own tokens and frames of the decoder's width; training overfits a handful of clips
and changes only the decoder (with LoRA only the adapters), and the saved checkpoint speaks with it; bad pairs are
refused with the row, what was found, what was expected and the fix."""

import json
import shutil

import datasets
import numpy as np
import pytest
import soundfile
import torch

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.testing_utils import tiny_speech_config, tiny_vita_config
from processing_vita.feature_extraction_vita import resample_waveform
from processing_vita.testing_utils import tiny_vita_processor
from recipes.speech_decoder import build_trainer, main, parse_args
from recipes.speech_decoder_data import (
    SMOKE_SENTENCES,
    SpeechDecoderCollator,
    load_pairs,
    make_pairs,
    prepare_pairs,
)
from recipes.speech_decoder_data import main as data_main

from . import SMOKE_YAML as SMOKE

SMOKE_YAML = SMOKE.with_name("speech_decoder_smoke.yaml")  # package data of recipes.vita_tiny, beside smoke.yaml
CODEC_RATE = 1600  # the tiny codec's 16-sample tokens at 100 a second: clips of 35-75 tokens
DECODER = "speech_model.decoder."


class ToneTTS:
    """A stand-in TTS: 15 ms of tone a character, its pitch set by the character, at 16 kHz."""

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        rate = 16_000
        t = np.arange(int(0.015 * rate)) / rate
        tones = [0.5 * np.sin(2 * np.pi * (150 + 40 * (ord(c) % 32)) * t) * np.hanning(t.size) for c in text]
        return np.concatenate(tones).astype(np.float32), rate


@pytest.fixture(scope="module")
def vita_dir(tmp_path_factory):
    """A saved tiny VITA (Qwen2 LLM, as VITA-1.5) with a tiny speech decoder and codec, and its processor."""
    torch.manual_seed(0)
    speech_config = tiny_speech_config(codec_config={"sampling_rate": CODEC_RATE})
    model = VitaForConditionalGeneration(tiny_vita_config("qwen2", speech_config=speech_config))
    path = tmp_path_factory.mktemp("vita")
    model.save_pretrained(path)
    tiny_vita_processor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return make_pairs(list(SMOKE_SENTENCES), tmp_path_factory.mktemp("pairs"), ToneTTS())


def _cli(vita_dir, pairs, output_dir, **overrides) -> list[str]:
    args = ["--config", str(SMOKE_YAML), "--tiny_model", "false", "--model_name_or_path", str(vita_dir),
            "--dataset_name", str(pairs), "--output_dir", str(output_dir), "--disable_tqdm", "true"]  # fmt: skip
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    return args


def _state(path) -> dict[str, torch.Tensor]:
    return VitaForConditionalGeneration.from_pretrained(path).state_dict()


def _loss(trainer) -> float:
    """Mean loss of the decoder on all training pairs in one batch, in eval mode."""
    module = trainer.model.eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    with torch.no_grad():
        return float(module(**batch).loss)


def test_prepared_pairs_hold_the_codecs_tokens_and_frames_of_the_decoders_width(vita_dir, pairs):
    model = VitaForConditionalGeneration.from_pretrained(vita_dir).eval()
    processor = tiny_vita_processor()
    rows = load_pairs(str(pairs))
    prepared = prepare_pairs(rows, processor.tokenizer, model.speech_model.codec, media_root=str(pairs.parent))
    assert prepared.column_names == ["text_ids", "codec_tokens"] and len(prepared) == len(SMOKE_SENTENCES)
    codec = model.speech_model.codec
    for row, sample in zip(rows, prepared):
        assert sample["text_ids"] == processor.tokenizer(row["text"], add_special_tokens=False)["input_ids"]
        wave, rate = soundfile.read(pairs.parent / row["audio"], dtype="float32")
        with torch.no_grad():
            expected, _ = codec.encode(resample_waveform(torch.from_numpy(wave), rate, CODEC_RATE)[None])
        assert sample["codec_tokens"] == expected[0].tolist() and len(set(sample["codec_tokens"])) > 5

    batch = SpeechDecoderCollator(model.get_input_embeddings(), 32)([prepared[0], prepared[4]])
    lengths = [len(prepared[i]["text_ids"]) * 2 for i in (0, 4)]  # each 64-wide LLM token is two 32-wide rows
    assert batch["frames"].shape == (2, max(lengths), 32) and batch["frames"].dtype == torch.float32
    assert batch["frames_mask"].sum(-1).tolist() == lengths
    for row, (index, length) in enumerate(zip((0, 4), lengths)):
        generate_speech_frames = model.speech_frames(torch.tensor([prepared[index]["text_ids"]]))
        assert torch.equal(batch["frames"][row, :length], generate_speech_frames[0])
        assert not batch["frames"][row, length:].any()
        tokens = prepared[index]["codec_tokens"]
        assert batch["labels"][row, : len(tokens)].tolist() == tokens
        assert (batch["labels"][row, len(tokens) :] == -100).all()
        assert batch["labels_mask"][row].sum() == len(tokens)


def test_training_overfits_a_handful_of_clips_changes_only_the_decoder_and_the_checkpoint_speaks(
    vita_dir, pairs, tmp_path
):
    trainer = build_trainer(*parse_args(_cli(vita_dir, pairs, tmp_path, max_steps=80, learning_rate=1e-2)))
    assert trainer.model is trainer.vita_model.speech_model.decoder and not trainer.model_accepts_loss_kwargs
    trained = {name for name, p in trainer.vita_model.named_parameters() if p.requires_grad}
    assert trained == {name for name, _ in trainer.vita_model.named_parameters() if name.startswith(DECODER)}
    before = _loss(trainer)
    trainer.train()
    after = _loss(trainer)
    print(f"loss over the 8 clips: {before:.3f} -> {after:.3f}")
    assert after * 5 <= before
    trainer.save_speaking_checkpoint(str(tmp_path))

    original, saved = _state(vita_dir), _state(tmp_path)
    assert original.keys() == saved.keys()
    frozen = [k for k in original if not k.startswith(DECODER)]
    assert all(torch.equal(original[k], saved[k]) for k in frozen)  # LLM, towers, codec: bit-identical
    decoder = [k for k in original if k.startswith(DECODER)]
    changed = {k for k in decoder if not torch.equal(original[k], saved[k])}
    assert changed == set(decoder)
    trained_decoder = trainer.vita_model.speech_model.decoder.state_dict()
    assert all(torch.equal(saved[DECODER + k], v) for k, v in trained_decoder.items())
    # The saved checkpoint speaks with the trained decoder: teacher forced, it predicts most codec tokens of the clips.
    model = VitaForConditionalGeneration.from_pretrained(tmp_path).eval()
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(trainer.train_dataset))])
    with torch.no_grad():
        out = model.speech_model(**batch)
    assert abs(float(out.loss) - after) < 1e-5
    real = batch["labels_mask"].bool()
    accuracy = float((out.logits[:, :-1].argmax(-1) == batch["labels"])[real].float().mean())
    print(f"teacher-forced accuracy of the saved decoder: {accuracy:.3f}")
    assert accuracy > 0.8
    speech = model.generate_speech(
        torch.tensor([trainer.train_dataset[0]["text_ids"]]), do_sample=False, max_speech_tokens=10
    )
    assert speech.codec_tokens.shape[1] >= 1 and speech.audio.shape[1] == speech.codec_tokens.shape[1] * 16


def test_lora_trains_only_the_adapters_and_merges_them_into_the_saved_decoder(vita_dir, pairs, tmp_path):
    trainer = build_trainer(*parse_args(_cli(vita_dir, pairs, tmp_path, max_steps=10, learning_rate=1e-2,
                                             lora="true", lora_r=4, lora_alpha=8)))  # fmt: skip
    trained = {name for name, p in trainer.model.named_parameters() if p.requires_grad}
    assert trained and all(".lora_A." in name or ".lora_B." in name for name in trained)
    base_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if n not in trained}
    adapters_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if n in trained}
    before = _loss(trainer)
    trainer.train()
    assert _loss(trainer) < before
    params = dict(trainer.model.named_parameters())
    assert all(torch.equal(params[n], value) for n, value in base_before.items())
    assert all(not torch.equal(params[n], value) for n, value in adapters_before.items() if ".lora_B." in n)
    trainer.save_speaking_checkpoint(str(tmp_path))

    assert (tmp_path / "speech_decoder_lora" / "adapter_model.safetensors").is_file()
    original, saved = _state(vita_dir), _state(tmp_path)
    changed = {k for k in original if not torch.equal(original[k], saved[k])}
    projections = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    adapted = {k for k in original if k.startswith(DECODER) and k.split(".")[-2] in projections}
    assert changed == adapted  # merged into the projections; norms, embeddings, head, LLM and codec untouched


def test_the_command_line_trains_from_the_smoke_yaml_and_saves_a_speaking_checkpoint(vita_dir, pairs, tmp_path):
    main(*parse_args(_cli(vita_dir, pairs, tmp_path, max_steps=2)))
    model = VitaForConditionalGeneration.from_pretrained(tmp_path).eval()
    out = model.generate_speech(torch.tensor([[11, 12, 13]]), do_sample=False, max_speech_tokens=4)
    assert out.audio.shape[1] == out.codec_tokens.shape[1] * 16
    assert (tmp_path / "tokenizer.json").is_file() and (tmp_path / "processor_config.json").is_file()


def test_a_datasets_folder_with_audio_arrays_gives_the_same_pairs(vita_dir, pairs, tmp_path):
    model = VitaForConditionalGeneration.from_pretrained(vita_dir).eval()
    tokenizer, codec = tiny_vita_processor().tokenizer, model.speech_model.codec
    rows = load_pairs(str(pairs)).select(range(2))
    arrays = []
    for row in rows:
        wave, rate = soundfile.read(pairs.parent / row["audio"], dtype="float32")
        arrays.append({"sentence": row["text"], "speech": {"array": wave, "sampling_rate": rate}})
    datasets.Dataset.from_list(arrays).save_to_disk(tmp_path / "folder")
    from_folder = prepare_pairs(load_pairs(str(tmp_path / "folder")), tokenizer, codec, text_column="sentence",
                                audio_column="speech")  # fmt: skip
    from_paths = prepare_pairs(rows, tokenizer, codec, media_root=str(pairs.parent))
    assert from_folder.to_list() == from_paths.to_list()


def _write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


def test_bad_pairs_are_refused_naming_the_row_what_was_found_and_the_fix(vita_dir, pairs, tmp_path):
    model = VitaForConditionalGeneration.from_pretrained(vita_dir).eval()
    tokenizer, codec = tiny_vita_processor().tokenizer, model.speech_model.codec
    shutil.copytree(pairs.parent / "wavs", tmp_path / "wavs")
    soundfile.write(tmp_path / "wavs" / "empty.wav", np.zeros(0, dtype=np.float32), 16_000)
    soundfile.write(tmp_path / "wavs" / "short.wav", np.zeros(5, dtype=np.float32), 16_000)
    good = {"text": "Hello there.", "audio": "wavs/000000.wav"}
    cases = [
        ({"text": "   ", "audio": "wavs/000001.wav"},
         r"row 1 \('   '\): the text is empty \('   '\); expected the words spoken in the clip\. Fill in the text"),
        ({"text": None, "audio": "wavs/000001.wav"}, r"row 1 \('None'\): the text is empty \(None\)"),
        ({"text": "No clip.", "audio": None},
         r"row 1 \('No clip.'\): no audio \(the cell is None\); expected a path to an audio file .*Add its clip"),
        ({"text": "Silence.", "audio": "wavs/empty.wav"},
         r"row 1 \('Silence.'\): 'wavs/empty.wav' holds 0 samples \(0\.000 s at 16000 Hz\); expected at least "
         r"0\.010 s of speech \(one codec token, 16 samples at the codec's 1600 Hz\)\. Check the recording"),
        ({"text": "Too short.", "audio": "wavs/short.wav"}, r"'wavs/short.wav' holds 5 samples"),
        ({"text": "Gone.", "audio": "wavs/missing.wav"},
         r"row 1 \('Gone.'\): Audio file '.*wavs/missing.wav' does not exist.*Fix the path"),
    ]  # fmt: skip
    for bad, message in cases:
        path = _write_jsonl(tmp_path / "pairs.jsonl", [good, bad])
        with pytest.raises(ValueError, match=message):
            prepare_pairs(load_pairs(path), tokenizer, codec, media_root=str(tmp_path))
    loud = datasets.Dataset.from_list([{"text": "Loud.", "audio": {"array": [0.0, 3.0] * 50, "sampling_rate": 1600}}])
    with pytest.raises(ValueError, match=r"row 0 \('Loud.'\): the audio array reaches 3; expected float samples in "
                       r"\[-1, 1\]\. Scale it"):  # fmt: skip
        prepare_pairs(loud, tokenizer, codec)
    path = _write_jsonl(tmp_path / "pairs.jsonl", [{"sentence": "Hi.", "wav": "wavs/000000.wav"}])
    with pytest.raises(ValueError, match=r"columns \['sentence', 'wav'\], not \['text', 'audio'\].*text_column"):
        prepare_pairs(load_pairs(path), tokenizer, codec)


def test_a_checkpoint_that_cannot_speak_and_missing_arguments_are_refused(pairs, tmp_path):
    model = VitaForConditionalGeneration(tiny_vita_config("qwen2"))
    model.save_pretrained(tmp_path)
    tiny_vita_processor().save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"has no speech decoder \(config.speech_config is None\).*vita_tts_ckpt"):
        build_trainer(*parse_args(_cli(tmp_path, pairs, tmp_path / "out")))
    with pytest.raises(ValueError, match=r"dataset_name is None; expected \(text, audio\) pairs.*make-pairs"):
        parse_args(["--tiny_model", "true", "--output_dir", str(tmp_path)])


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt install espeak-ng)")
def test_make_pairs_speaks_a_sentence_file_with_espeak(tmp_path):
    sentences = tmp_path / "sentences.txt"
    sentences.write_text("Good morning.\n\nSee you tomorrow.\n")
    data_main(["make-pairs", str(tmp_path / "out"), "--sentences", str(sentences), "--tts", "espeak"])
    rows = [json.loads(line) for line in (tmp_path / "out" / "pairs.jsonl").read_text().splitlines()]
    assert [row["text"] for row in rows] == ["Good morning.", "See you tomorrow."]
    wave, rate = soundfile.read(tmp_path / "out" / rows[1]["audio"])
    assert rate == 22_050 and wave.size > rate // 2
