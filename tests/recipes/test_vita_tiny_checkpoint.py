"""Acceptance tests of the committed vita-tiny checkpoint (`spaces_demo/vita-tiny/`, made by `python -m
recipes.vita_tiny`): it loads as remote code where nothing of the project is importable, answers a spoken question
about a picture with `<1>` and the right word, answers background talk with `<2>` alone, through `model.generate`
and through `pipeline("vita-duplex")`; the folder is small, complete and documented; the `vita-duplex` command uses
it when no model is given.

Questions are spoken by espeak-ng's default voice (not one of the training voices) and the
pictures are drawn afresh by the data generator's own drawing code with a new seed.
"""

import json
import re

import numpy as np
import pytest

from recipes.vita_tiny.world import draw_shapes_image
from tests.utils import espeak, requires_espeak, run_with_project_hidden

from . import REPO_ROOT

CHECKPOINT = REPO_ROOT / "spaces_demo" / "vita-tiny"
pytestmark = pytest.mark.skipif(
    not (CHECKPOINT / "model.safetensors").is_file(),
    reason=f"{CHECKPOINT} is missing; it is committed, or made by `python -m recipes.vita_tiny`",
)

# (picture: colour, shape, count, position), spoken question, expected answer
SPOKEN_IMAGE_QUESTIONS = [
    (("red", "circle", 1, "left"), "What colour is the shape?", "red"),
    (("blue", "square", 3, None), "How many shapes are there?", "three"),
    (("green", "triangle", 1, "top"), "What shape is this?", "triangle"),
]
BACKGROUND_TALK = ["My sister is coming home tonight.", "I left my keys at the office."]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Pictures and espeak-ng recordings of the questions and of background talk, in one folder."""
    folder = tmp_path_factory.mktemp("vita_tiny_media")
    rng = np.random.default_rng(123)
    cases = []
    for index, ((colour, shape, count, position), question, answer) in enumerate(SPOKEN_IMAGE_QUESTIONS):
        image = folder / f"picture{index}.png"
        draw_shapes_image(colour, shape, count, position, rng).save(image)
        espeak(question, folder / f"question{index}.wav")
        cases.append((str(image), str(folder / f"question{index}.wav"), answer))
    talk = []
    for index, sentence in enumerate(BACKGROUND_TALK):
        espeak(sentence, folder / f"talk{index}.wav")
        talk.append(str(folder / f"talk{index}.wav"))
    return folder, cases, talk


def test_checkpoint_is_small_complete_and_documented():
    files = {p.name for p in CHECKPOINT.iterdir()}
    size = sum(p.stat().st_size for p in CHECKPOINT.rglob("*") if p.is_file())
    assert size < 40 * 2**20, f"{size / 2**20:.1f} MiB; expected under 40 MiB"
    assert {"model.safetensors", "config.json", "processor_config.json", "chat_template.jinja", "tokenizer.json",
            "modeling_vita.py", "processing_vita.py", "pipeline_vita_duplex.py", "README.md"} <= files  # fmt: skip
    config = json.loads((CHECKPOINT / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"].endswith("VitaForConditionalGeneration")
    assert "vita-duplex" in config["custom_pipelines"]
    card = (CHECKPOINT / "README.md").read_text()
    for metric in ("state accuracy", "image QA", "video QA", "WER"):
        assert re.search(rf"\| {metric} \| \d\.\d{{3}} \|", card), metric


def _generate_and_pipe_where_the_project_is_hidden(cases, talk, workdir) -> dict:
    """Every case through `model.generate` and `pipeline("vita-duplex")`, in a process where only the checkpoint's
    own code can serve."""
    stdout = run_with_project_hidden(
        f"""
        import json
        from transformers import AutoModelForCausalLM, AutoProcessor, pipeline
        path = {str(CHECKPOINT)!r}
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
        assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
        results = {{"generate": [], "pipeline": []}}
        def generate(content):
            inputs = processor.apply_chat_template(
                [{{"role": "user", "content": content}}], add_generation_prompt=True, tokenize=True,
                return_dict=True, return_tensors="pt")
            out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
            return processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=False)
        for image, audio, _ in {cases!r}:
            content = [{{"type": "image", "image": image}}, {{"type": "audio", "audio": audio}}]
            results["generate"].append(generate(content))
        for audio in {talk!r}:
            results["generate"].append(generate([{{"type": "audio", "audio": audio}}]))
        pipe = pipeline("vita-duplex", model=path, trust_remote_code=True)
        for image, audio, _ in {cases!r}:
            results["pipeline"].append(pipe(audio=audio, images=image, max_new_tokens=12))
        for audio in {talk!r}:
            results["pipeline"].append(pipe(audio=audio, max_new_tokens=12))
        print("RESULTS" + json.dumps(results))
        """,
        workdir,
    )
    return json.loads(stdout.split("RESULTS", 1)[1])


STATE_OF_TOKEN = {"<1>": "query_audio", "<2>": "noisy_audio", "<3>": "query_text"}


@requires_espeak
def test_remote_code_generate_and_pipeline_agree_on_state_and_answer(media, tmp_path):
    """The hidden-project load works and the pipeline is exactly `generate` with the state read off: same state token,
    same answer text, for spoken image questions and background talk alike."""
    _, cases, talk = media
    results = _generate_and_pipe_where_the_project_is_hidden(cases, talk, tmp_path)
    assert len(results["generate"]) == len(results["pipeline"]) == len(cases) + len(talk)
    for generated, piped in zip(results["generate"], results["pipeline"]):
        token = generated[:3]
        assert token in ("<1>", "<2>"), generated  # audio is never a typed query
        assert piped["state"] == STATE_OF_TOKEN[token], (generated, piped)
        expected_text = "" if token == "<2>" else generated[3:].split("</s>")[0].strip()
        assert piped["text"] == expected_text, (generated, piped)


@requires_espeak
def test_remote_code_answers_spoken_image_question_and_ignores_background_talk(media, tmp_path):
    _, cases, talk = media
    results = _generate_and_pipe_where_the_project_is_hidden(cases, talk, tmp_path)
    for (_, _, answer), generated, piped in zip(cases, results["generate"], results["pipeline"]):
        assert generated.startswith("<1>"), generated
        assert generated[3:].replace("</s>", "").strip().lower() == answer, generated
        assert piped == {"state": "query_audio", "text": answer}, piped
    for generated, piped in zip(results["generate"][len(cases) :], results["pipeline"][len(cases) :]):
        assert generated.startswith("<2>"), generated
        assert generated[3:].replace("</s>", "").strip() == "", generated  # nothing after <2> but EOS
        assert piped == {"state": "noisy_audio", "text": ""}, piped


@requires_espeak
def test_vita_duplex_command_runs_on_the_default_checkpoint(media, capsys, monkeypatch):
    from spaces_demo.cli import main

    monkeypatch.delenv("VITA_MODEL", raising=False)
    folder, cases, talk = media
    import soundfile

    _, question, _ = cases[0]
    pieces = []
    for path in (talk[0], question):
        audio, rate = soundfile.read(path, dtype="float32")
        pieces += [np.zeros(rate, dtype=np.float32), audio]
    recording = folder / "talk_then_question.wav"
    soundfile.write(recording, np.concatenate(pieces + [np.zeros(rate, dtype=np.float32)]), rate)
    image = cases[0][0]
    assert main(["--audio", str(recording), "--image", image]) == 0
    printed = capsys.readouterr().out
    # One decision for each of the two utterances, made by the Space's default checkpoint (no --model given).
    decisions = re.findall(r"state_decided\s+turn \d+: (\S+)", printed)
    assert len(decisions) == 2 and set(decisions) <= {"query_audio", "noisy_audio"}, printed
