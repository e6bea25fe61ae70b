"""Tests of converting releases exactly as published: a tiny VITA-1.5 in the original layout (Qwen2 keys, the towers
in their own folders, whale `train.yaml` in its own schema, a ChatML tokenizer, the speech decoder and codec in
`vita_tts_ckpt/`), and a tiny VITA-1.0 whose towers have non-default shapes and are named by the authors' absolute
paths. Nothing but `--input` and `--output` is passed; the converted model must give the logits, greedy tokens and
speech of the independent re-implementations of the originals (`original_vita15.py`, `original_vita.py`,
`original_vita_tts.py`), and bad folders must be refused without leaving an output behind.
"""

import ast
import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.convert_vita_original_to_hf import convert, main, parse_args
from processing_vita import VitaProcessor
from processing_vita.testing_utils import tiny_vita_tokenizer
from tests.modeling_vita import original_vita, original_vita15, original_vita_tts
from tests.modeling_vita.original_towers import fbank_for
from tests.utils import run_with_project_hidden

STATE_CHARACTERS = {"query_audio": "☞", "noisy_audio": "☟", "query_text": "☜"}
# 1.0 with towers of shapes the released ones never had
NON_DEFAULT_DIMS = {
    "vision": {"hidden": 48, "heads": 3, "layers": 3},
    "audio": {"hidden": 40, "heads": 5, "layers": 3},
}


def _run(argv: list[str]) -> str:
    printed = io.StringIO()
    with redirect_stdout(printed):
        assert main(argv) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def release15(tmp_path_factory):
    root = tmp_path_factory.mktemp("vita15")
    built = original_vita15.write_original_checkpoint15(root, tower_paths="absolute")
    tts = original_vita_tts.write_original_tts_folder(built["checkpoint"])
    output = root / "vita15-hf"
    printed = _run(
        ["--input", str(built["checkpoint"]), "--output", str(output), "--dtype", "float32", "--no-progress"]
    )
    model = VitaForConditionalGeneration.from_pretrained(output).eval()
    processor = VitaProcessor.from_pretrained(output)
    return {**built, "root": root, "output": output, "printed": printed, "model": model, "processor": processor,
            "tts": tts}  # fmt: skip


def _inputs(processor, content: list[dict], **kwargs) -> dict:
    return processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=True, return_dict=True,
        return_tensors="pt", sampling_rate=16000, **kwargs,
    )  # fmt: skip


def test_release_15_converts_with_no_flag_and_says_where_everything_came_from(release15):
    printed = release15["printed"]
    print(printed)  # the converter's summary, for the record
    assert "VITA-1.5 (vita-Qwen2" in printed
    assert f"vision tower: {release15['vision_tower']}" in printed
    assert f"audio encoder: {release15['audio_encoder']}" in printed and "placeholders:" in printed
    config = release15["model"].config
    assert config.text_config.model_type == "qwen2" and config.state_tokens == STATE_CHARACTERS
    assert config.text_config.rope_parameters["rope_theta"] == original_vita15.LLM15["rope_theta"]
    processor = release15["processor"]
    assert processor.state_tokens == STATE_CHARACTERS and processor.tokenizer.eos_token == "<|im_end|>"
    prompt = processor.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello", "state": "query_text"},
         {"role": "user", "content": "and?"}], tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    assert prompt.endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n☜hello<|im_end|>\n"
                           "<|im_start|>user\nand?<|im_end|>\n<|im_start|>assistant\n")  # fmt: skip
    generation = json.loads((release15["output"] / "generation_config.json").read_text())
    assert generation["eos_token_id"] == processor.tokenizer.eos_token_id  # <|im_end|> ends an answer


def _worst(ours: torch.Tensor, original: torch.Tensor) -> float:
    assert ours.shape == original.shape, (ours.shape, original.shape)
    return float((ours - original).abs().max())


def test_logits_equal_the_original_on_text_two_tiles_and_image_with_audio(release15):
    model, processor, sd = release15["model"], release15["processor"], release15["state_dict"]
    tokenizer, dims = processor.tokenizer, release15["dims"]
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (56, 112, 3), dtype=np.uint8))
    waveform = torch.from_numpy(np.random.default_rng(1).standard_normal(24000).astype(np.float32) * 0.1)
    question = "What colour is it?"
    cases = {
        "text": ([{"type": "text", "text": question}], dict(question=question)),
        "two tiles": (
            [{"type": "image", "image": image}, {"type": "text", "text": question}],
            dict(question=question),
        ),
        "image + audio": (
            [{"type": "image", "image": image}, {"type": "audio", "audio": (waveform.numpy(), 16000)}],
            dict(question="", with_audio=True),
        ),  # fmt: skip
    }
    worst = {}
    for name, (content, prompt) in cases.items():
        inputs = _inputs(processor, content)
        pixel_values = inputs.get("pixel_values")
        n_tiles = 0 if pixel_values is None else pixel_values.shape[0]
        original_ids = original_vita15.original_prompt15(n_tiles=n_tiles, tokenizer=tokenizer, **prompt)
        fbanks = [fbank_for(waveform)] if prompt.get("with_audio") else None
        with torch.no_grad():
            ours = model(**inputs).logits[0]
            original = original_vita15.original_forward15(sd, original_ids, pixel_values, fbanks, dims)
        worst[name] = _worst(ours, original)
    print("worst logit difference per case:", {name: f"{value:.2e}" for name, value in worst.items()})
    assert all(value < 1e-4 for value in worst.values()), worst
    assert n_tiles == 3  # two tiles of the 2:1 picture and its thumbnail


def test_greedy_tokens_equal_the_original(release15):
    model, processor, sd = release15["model"], release15["processor"], release15["state_dict"]
    inputs = _inputs(processor, [{"type": "text", "text": "Tell me a story."}])
    with torch.no_grad():
        ours = model.generate(**inputs, max_new_tokens=8, min_new_tokens=8, do_sample=False)[
            0, inputs["input_ids"].shape[1] :
        ]
        ids = original_vita15.original_prompt15("Tell me a story.", tokenizer=processor.tokenizer)
        greedy = []
        for _ in range(8):
            greedy.append(
                int(original_vita15.original_forward15(sd, ids + greedy, dims=release15["dims"])[-1].argmax())
            )
    assert ours.tolist() == greedy


SPEECH_SCRIPT = """
import torch
from transformers import AutoModel

model = AutoModel.from_pretrained({path!r}, trust_remote_code=True).eval()
assert type(model.speech_model).__module__.startswith("transformers_modules"), type(model.speech_model)
out = model.generate_speech(torch.tensor([{ids!r}]), do_sample=False, max_speech_tokens=30)
print("TOKENS", out.codec_tokens[0].tolist(), out.sampling_rate)
"""


def test_release_15_speaks_as_the_original_decoder_and_codec_also_as_remote_code(release15, tmp_path):
    model, sd, tts = release15["model"], release15["state_dict"], release15["tts"]
    assert "speech: " in release15["printed"] and model.config.speech_config is not None
    ids = release15["processor"].tokenizer.encode("hello, how are you today?")
    ours = model.generate_speech(torch.tensor([ids]), do_sample=False, max_speech_tokens=30)
    # The original embeds the text with the LLM's table and cuts each 64-wide row into two 32-wide frames.
    frames = sd["model.embed_tokens.weight"][ids].reshape(1, -1, 32)
    tokens = list(original_vita_tts.original_infer(tts["decoder_sd"], frames, top_k=1, max_tokens=30))
    speaker = torch.tensor(original_vita_tts.TINY_CODEC_JSON["global_tokens"])[None, None]
    with torch.no_grad():
        audio = tts["codec"](torch.tensor(tokens)[None, :, None], speaker)[:, 0]
    worst = _worst(ours.audio, audio)
    print(f"converted 1.5 speech: {len(tokens)} codec tokens, worst audio difference {worst:.1e}")
    assert ours.codec_tokens[0].tolist() == tokens and len(tokens) >= 5 and worst < 1e-5
    stdout = run_with_project_hidden(SPEECH_SCRIPT.format(path=str(release15["output"]), ids=ids), tmp_path)
    assert f"TOKENS {tokens} 24000" in stdout


def test_a_broken_or_escaping_vita_tts_ckpt_is_refused(release15, tmp_path):
    root = tmp_path / "tts"
    shutil.copytree(release15["root"], root, ignore=shutil.ignore_patterns("vita15-hf"))
    decoder = root / original_vita15.CHECKPOINT_FOLDER / "vita_tts_ckpt" / "decoder"
    torch.save({"model": torch.nn.Linear(2, 2)}, decoder / "final.pt")
    _refused(tmp_path, ["--input", str(decoder.parents[1])], r"decoder/final.pt cannot be read as weights only")
    (decoder / "final.pt").unlink()
    outside = tmp_path / "elsewhere.pt"
    torch.save({}, outside)
    (decoder / "final.pt").symlink_to(outside)
    _refused(tmp_path, ["--input", str(decoder.parents[1])], r"resolves to .*elsewhere.pt, outside the checkpoint")


def test_a_vocabulary_without_free_rows_grows_with_mean_rows(tmp_path):
    built = original_vita15.write_original_checkpoint15(tmp_path, full_vocab=True)
    rows = len(built["tokenizer"])
    printed = _run(["--input", str(built["checkpoint"]), "--output", str(tmp_path / "out"), "--dtype", "float32",
                    "--no-progress"])  # fmt: skip
    assert f"grow to {rows + 3} rows" in printed
    model = VitaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    assert model.config.text_config.vocab_size == rows + 3
    assert (model.config.image_token_id, model.config.video_token_id, model.config.audio_token_id) == (
        rows, rows + 1, rows + 2)  # fmt: skip
    embeddings = model.get_input_embeddings().weight
    torch.testing.assert_close(embeddings[rows:], embeddings[:rows].mean(0, keepdim=True).expand(3, -1))
    processor = VitaProcessor.from_pretrained(tmp_path / "out")
    inputs = _inputs(processor, [{"type": "text", "text": "hello"}])
    with torch.no_grad():
        ours = model(**inputs).logits[0, :, :rows]
        original = original_vita15.original_forward15(
            built["state_dict"], inputs["input_ids"][0].tolist(), dims=built["dims"]
        )
    assert _worst(ours, original) < 1e-4


def test_release_10_with_non_default_tower_shapes_converts_with_no_flag(tmp_path):
    state_dict = original_vita.original_state_dict(dims=NON_DEFAULT_DIMS)
    folder = tmp_path / "VITA_ckpt"
    paths = original_vita.write_original_checkpoint(folder, state_dict, dims=NON_DEFAULT_DIMS, tower_paths="absolute")
    tiny_vita_tokenizer().save_pretrained(folder)
    printed = _run(["--input", str(folder), "--output", str(tmp_path / "out"), "--dtype", "float32", "--no-progress"])
    print(printed)
    assert "VITA-1.0 (vita-mixtral" in printed and f"vision tower: {paths['vision_tower']}" in printed
    model = VitaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    vision, audio = model.config.vision_config, model.config.audio_config
    assert (vision.hidden_size, vision.num_attention_heads, vision.num_hidden_layers) == (48, 3, 3)
    assert (audio.hidden_size, audio.num_attention_heads, audio.num_hidden_layers) == (40, 5, 3)
    assert model.config.state_tokens == {"query_audio": "<1>", "noisy_audio": "<2>", "query_text": "<3>"}
    generator = torch.Generator().manual_seed(3)
    pixel_values = torch.randn(1, 3, 56, 56, generator=generator)
    raw = fbank_for(torch.randn(16000, generator=generator) * 0.1)
    cmvn = (state_dict["model.audio_encoder.encoder.global_cmvn.mean"],
            state_dict["model.audio_encoder.encoder.global_cmvn.istd"])  # fmt: skip
    audio_tokens = ((raw.shape[0] - 1) // 2 - 1) // 2
    audio_tokens = (audio_tokens - 1) // 2 + 1
    config = model.config
    before, after = [1, 20, 21], [30, 31, 32]
    ids = before + [config.image_token_id] * config.image_seq_length + [config.audio_token_id] * audio_tokens + after
    original_ids = before + [original_vita.IMAGE_TOKEN_INDEX, original_vita.AUDIO_TOKEN_INDEX] + after
    with torch.no_grad():
        ours = model(input_ids=torch.tensor([ids]), pixel_values=pixel_values,
                     input_features=((raw - cmvn[0]) * cmvn[1])[None]).logits[0]  # fmt: skip
        original = original_vita.original_forward(state_dict, original_ids, pixel_values, raw, dims=NON_DEFAULT_DIMS)
    worst = _worst(ours, original)
    print(f"VITA-1.0 non-default towers, worst logit difference {worst:.2e}")
    assert worst < 1e-4


# ------------------------------------------------------------------------------------------------------- bad input
def _refused(tmp_path: Path, argv: list[str], match: str) -> None:
    output = tmp_path / "refused-out"
    with pytest.raises(ValueError, match=match):
        convert(parse_args([*argv, "--output", str(output), "--no-progress"]))
    assert not output.exists() and not list(tmp_path.glob(".refused-out.partial-*")), "a partial output was left"


def test_a_folder_without_config_json_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path, ["--input", str(tmp_path / "empty")], r"empty/config.json does not exist .*expected a released")


def test_an_unknown_architecture_is_refused_naming_it(release15, tmp_path):
    folder = tmp_path / "llama_ckpt"
    shutil.copytree(release15["checkpoint"], folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="llava_llama", architectures=["LlavaLlamaForCausalLM"])
    (folder / "config.json").write_text(json.dumps(config))
    _refused(
        tmp_path, ["--input", str(folder)], r"model_type 'llava_llama' .*LlavaLlamaForCausalLM.* not a VITA release"
    )


def test_missing_tower_folders_are_refused_with_the_paths_tried(release15, tmp_path):
    folder = tmp_path / "alone" / "VITA1.5_ckpt"
    shutil.copytree(release15["checkpoint"], folder)
    _refused(tmp_path, ["--input", str(folder)], r"names mm_vision_tower '/mnt/authors/InternViT-300M-448px', but no "
             r"folder with config.json is at .*--vision-tower DIR")  # fmt: skip
    shutil.copytree(release15["vision_tower"], folder.parent / "InternViT-300M-448px")
    _refused(
        tmp_path, ["--input", str(folder)], r"names mm_audio_encoder .* no folder with train.yaml .*--audio-encoder"
    )
    _refused(tmp_path, ["--input", str(folder), "--audio-encoder", str(tmp_path)], r"--audio-encoder .*no train.yaml")


def test_weights_that_disagree_with_the_config_are_refused_naming_found_and_expected(release15, tmp_path):
    root = tmp_path / "wide"
    shutil.copytree(release15["root"], root, ignore=shutil.ignore_patterns("vita15-hf"))
    config_path = root / original_vita15.CHECKPOINT_FOLDER / "config.json"
    config = json.loads(config_path.read_text())
    config["intermediate_size"] = 96  # the weights hold 128
    config_path.write_text(json.dumps(config))
    _refused(tmp_path, ["--input", str(config_path.parent)],
             r"mlp\.gate_proj\.weight: found \(128, 64\), expected \(96, 64\)")  # fmt: skip


def test_output_inside_the_input_is_refused(release15, tmp_path):
    with pytest.raises(ValueError, match="overlaps --input"):
        convert(parse_args(["--input", str(release15["checkpoint"]), "--output", str(release15["checkpoint"] / "x")]))


# --------------------------------------------------------------------------------- the duplex session on VITA-1.5
SESSION_SCRIPT = """
import threading, time
import numpy as np, torch
from transformers import LogitsProcessor, pipeline

pipe = pipeline("vita-duplex", model={path!r}, trust_remote_code=True)
assert type(pipe).__module__.startswith("transformers_modules"), type(pipe).__module__
tokenizer, states = pipe.processor.tokenizer, pipe.model.config.state_tokens
spellings = {{name: tokenizer.encode(token, add_special_tokens=False) for name, token in states.items()}}


class Plan(LogitsProcessor):
    # The random tiny model is made to open turn n (the n-th new worker thread) with the state token `plan[n]`;
    # then it never ends the first answer and writes it slowly, so a later query finds it still speaking.
    def __init__(self, plan):
        self.plan, self.turns, self.lock = plan, {{}}, threading.Lock()

    def __call__(self, input_ids, scores):
        with self.lock:
            turn = self.turns.setdefault(threading.get_ident(), (len(self.turns), input_ids.shape[1]))
        index, prompt_length = turn
        step, spelling = input_ids.shape[1] - prompt_length, spellings[self.plan[index]]
        if step < len(spelling):
            forced = torch.full_like(scores, -float("inf"))
            forced[:, spelling[step]] = 0.0
            return forced
        if index == 0:
            time.sleep(0.03)
            scores[:, tokenizer.eos_token_id] = -float("inf")
        return scores


class Energy:
    def score(self, window):
        return float(np.sqrt(np.mean(window**2)) > 0.05)

    def reset_states(self):
        pass


def tone(secs):
    t = np.arange(int(secs * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


silence = np.zeros(int(0.8 * 16000), dtype=np.float32)
plan = Plan(["query_audio", "noisy_audio", "query_audio"])
session = pipe.session(
    vad_scorer=Energy(), turn_detector=None, generation_kwargs={{"max_new_tokens": 120, "logits_processor": [plan]}}
)
seen = []


def until(kind, count=1, timeout=30.0):
    deadline = time.monotonic() + timeout
    while sum(event.type == kind for event in seen) < count:
        assert time.monotonic() < deadline, [event.type for event in seen]
        seen.extend(session.events(timeout=0.05))


for audio, wait in ((tone(1.0), ("state_decided", 1)), (tone(0.6), ("ignored", 1)), (tone(1.4), ("response_done", 1))):
    for start in range(0, len(audio) + len(silence), 320):
        session.push_audio(np.concatenate([audio, silence])[start : start + 320], 16000)
    until(*wait)
session.close()
print("EVENTS", [(event.type, str(getattr(event, "state", ""))) for event in seen if event.type != "text_delta"])
print("HISTORY", [(turn.role, str(turn.state), turn.interrupted) for turn in session.history])
print("SPELLINGS", spellings)
"""


def test_duplex_session_on_a_converted_15_folder_decides_with_its_state_characters(release15, tmp_path):
    stdout = run_with_project_hidden(SESSION_SCRIPT.format(path=str(release15["output"])), tmp_path)
    events = ast.literal_eval(stdout.split("EVENTS ", 1)[1].splitlines()[0])
    history = ast.literal_eval(stdout.split("HISTORY ", 1)[1].splitlines()[0])
    print(stdout.split("SPELLINGS ", 1)[1].splitlines()[0])
    kinds = [kind for kind, _ in events]
    decided = [state for kind, state in events if kind == "state_decided"]
    assert decided == ["query_audio", "noisy_audio", "query_audio"], events
    # The noise is ignored while the first answer goes on; the second query interrupts it.
    assert kinds.index("ignored") < kinds.index("interrupted") < kinds.index("response_done"), kinds
    assert kinds.count("interrupted") == 1 and kinds.count("response_done") == 1, kinds
    # Every input has its exchange, in input order; the noise is recorded as such (and never shown to the model).
    assert history == [
        ("user", "query_audio", False),
        ("assistant", "query_audio", True),
        ("user", "noisy_audio", False),
        ("assistant", "noisy_audio", False),
        ("user", "query_audio", False),
        ("assistant", "query_audio", False),
    ]


def test_every_value_no_file_gave_is_printed_as_defaulted(release15, tmp_path):
    import yaml

    root = tmp_path / "sparse"
    shutil.copytree(release15["root"], root, ignore=shutil.ignore_patterns("vita15-hf"))
    train_path = root / original_vita15.AUDIO_FOLDER / "train.yaml"
    train = yaml.safe_load(train_path.read_text())
    del train["model_conf"]["kernel_size"]  # the released adapter's 5 is what the weights hold
    train_path.write_text(yaml.safe_dump(train))
    checkpoint = root / original_vita15.CHECKPOINT_FOLDER
    config = json.loads((checkpoint / "config.json").read_text())
    del config["rope_theta"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    printed = _run(["--input", str(checkpoint), "--output", str(tmp_path / "out"), "--no-progress"])
    assert "defaulted audio_config.adapter_kernel_size = 5 (no file gave it)" in printed
    assert "defaulted text_config.rope_theta = 1000000.0 (no file gave it)" in printed
