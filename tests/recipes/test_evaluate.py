"""Tests of recipes/evaluate.py: exact state/QA/multiple-choice accuracies and WER with a scripted fake model, the
JSON report of the CLI path, and a smoke run of the real tiny random model."""

import json

import pytest
import torch

from processing_vita.testing_utils import tiny_vita_processor
from recipes.data import write_smoke_data
from recipes.evaluate import choice_letter, evaluate, format_report, main, normalize, option_letters, split_row

pytest.importorskip("jiwer")


class ScriptedModel:
    """Returns the prompt followed by the next scripted answer (text with its state token, then `</s>`)."""

    def __init__(self, tokenizer, answers):
        self.tokenizer, self.answers, self.calls = tokenizer, list(answers), []

    def generate(self, input_ids, max_new_tokens, **kwargs):
        self.calls.append({"input_ids": input_ids, **kwargs})
        ids = self.tokenizer(self.answers.pop(0), add_special_tokens=False)["input_ids"] + [
            self.tokenizer.eos_token_id
        ]
        return torch.cat([input_ids, torch.tensor([ids[:max_new_tokens]])], dim=1)


def _row(id, user, answer, images=(), videos=(), audios=(), **extra):
    content = [{"type": "image", "text": None}] * len(images) + [{"type": "video", "text": None}] * len(videos)
    content += [{"type": "audio", "text": None}] * len(audios)
    if user:
        content.append({"type": "text", "text": user})
    messages = [
        {"role": "user", "content": content},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]
    media = {"images": list(images), "videos": list(videos), "audios": list(audios)}
    return {"id": id, "messages": messages, **media, "end_tag": True, **extra}


ROWS = [
    _row("em-image", "What is in the picture?", "<3>A cat sits on the mat.", images=["image_0.png"]),
    _row("em-text", "What time is it?", "<3>It is three."),
    _row("noisy", None, "<2>", audios=["audio_0.wav"]),
    _row("spoken", None, "<1>Hello!", audios=["audio_1.wav"]),
    _row("mc-image", "Which animal?\nA. cat\nB. dog", "<3>B", images=["image_1.png"]),
    _row("mc-video", "Which one?", "<3>A", videos=["video_0.mp4"], choices=["dance", "sing"]),
    _row("asr", None, "<1>the cat sat on the mat", audios=["audio_2.wav"], task="asr"),
    _row("repeat", "Please repeat: hello world", "<3>Hello, world."),
]
ANSWERS = [
    "<3>a cat sits on the mat",  # exact match after normalisation (image)
    "It is four.",  # no state token: unparsed, and a wrong answer (other)
    "<2>",
    "<3>Hello",  # state wrong (query_audio -> query_text), answer right
    "<3>B. dog",  # multiple choice right (image)
    "<3>sing",  # the choice text of B: wrong (video)
    "<1>the cat sit on mat",  # 1 substitution + 1 deletion over 6 words
    "<3>hello there world",  # 1 insertion over 2 words
]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    pytest.importorskip("av")
    return write_smoke_data(tmp_path_factory.mktemp("smoke"))[1]


@pytest.fixture(scope="module")
def report(media):
    processor = tiny_vita_processor()
    model = ScriptedModel(processor.tokenizer, ANSWERS)
    result = evaluate(model, processor, ROWS, media_root=media, max_new_tokens=32)
    assert not model.answers
    assert all(call["do_sample"] is False for call in model.calls)
    return result


def test_state_accuracy_and_confusion(report):
    state = report["state"]
    assert (state["correct"], state["n"], state["unparsed"]) == (6, 8, 1)
    assert state["accuracy"] == pytest.approx(0.75)
    assert state["confusion"]["query_audio"] == {"query_audio": 1, "noisy_audio": 0, "query_text": 1}
    assert state["confusion"]["noisy_audio"] == {"query_audio": 0, "noisy_audio": 1, "query_text": 0}
    assert state["confusion"]["query_text"] == {"query_audio": 0, "noisy_audio": 0, "query_text": 4}


def test_qa_accuracies_by_group(report):
    exact = report["exact_match"]
    assert (exact["image"]["accuracy"], exact["other"]["accuracy"], exact["video"]["accuracy"]) == (1.0, 0.5, None)
    assert exact["all"] == {"accuracy": pytest.approx(2 / 3), "correct": 2, "n": 3}
    choice = report["multiple_choice"]
    assert (choice["image"]["accuracy"], choice["video"]["accuracy"], choice["all"]["accuracy"]) == (1.0, 0.0, 0.5)


def test_wer_by_hand(report):
    # (1 substitution + 1 deletion + 1 insertion) / (6 + 2 reference words)
    assert report["asr"] == {"wer": pytest.approx(3 / 8), "n": 2}
    tasks = {s["id"]: s["task"] for s in report["samples"]}
    assert tasks["asr"] == tasks["repeat"] == "asr" and tasks["noisy"] == "state"


def test_report_table_and_helpers(report):
    table = format_report(report)
    assert "state accuracy 0.7500" in table and "multiple_choice" in table and "0.3750" in table
    assert normalize("  Hello,   World! ") == "hello world"
    assert option_letters("Pick: A. red B. blue C. green") == ["A", "B", "C"]
    assert option_letters("A. single sentence.") == []
    assert choice_letter("The answer is (C).", ["A", "B", "C"]) == "C"
    with pytest.raises(ValueError, match="no assistant turn"):
        split_row({"id": "q", "messages": [{"role": "user", "content": []}]})


def test_cli_writes_report_with_a_tiny_random_model(media, tmp_path):
    from modeling_vita import VitaForConditionalGeneration
    from modeling_vita.testing_utils import tiny_vita_config

    checkpoint = tmp_path / "vita-tiny"
    VitaForConditionalGeneration(tiny_vita_config()).save_pretrained(checkpoint)
    tiny_vita_processor().save_pretrained(checkpoint)
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:4]))
    output = tmp_path / "report.json"
    args = [str(checkpoint), str(data), "--media-root", media, "--output", str(output), "--max-new-tokens", "3"]
    main(args)
    written = json.loads(output.read_text())
    assert {"n_rows", "state", "exact_match", "multiple_choice", "asr", "samples"} <= set(written)
    assert written["n_rows"] == 4 and set(written["exact_match"]) == {"image", "video", "other", "all"}
    with pytest.raises(ValueError, match="does not exist"):
        main([str(checkpoint), str(tmp_path / "missing.jsonl")])
