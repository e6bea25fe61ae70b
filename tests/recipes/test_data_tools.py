"""Tests of the speech data tools of recipes/speech_data.py and their commands in recipes/data.py: `negatives` and
`speak-questions` (espeak-ng TTS and a fake TTS), their determinism, and their errors for bad arguments."""

import json
import shutil

import numpy as np
import pytest
import soundfile

from modeling_vita.duplex_speech_output import make_tts
from recipes.data import _load_rows, main
from recipes.speech_data import build_negatives, speak_questions


class BeepTTS:
    """A stand-in TTS: 0.1 s of tone a character, at 16 kHz."""

    def synthesize(self, text):
        t = np.arange(int(1600 * len(text))) / 16000
        return (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000


def _text_row(index, question, answer="<3>Fine.", images=()):
    content = [{"type": "image", "text": None}] * len(images) + [{"type": "text", "text": question}]
    return {"id": str(index), "messages": [{"role": "user", "content": content},
                                           {"role": "assistant", "content": [{"type": "text", "text": answer}]}],
            "images": list(images), "videos": [], "audios": [], "end_tag": True}  # fmt: skip


def _rows():
    rows = [_text_row(i, f"Question number {i}?", "<3>The cat sits on the mat. It is happy.") for i in range(9)]
    # An audio turn before a typed one: the spoken question's file must go after the existing clip in `audios`.
    rows.append({"id": "mixed", "messages": [
        {"role": "user", "content": [{"type": "audio", "text": None}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<1>Hello there, friend."}]},
        {"role": "user", "content": [{"type": "image", "text": None}, {"type": "text", "text": "And this?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "<3>A red car."}]}],
        "images": ["a.png"], "videos": [], "audios": ["old.wav"], "end_tag": True})  # fmt: skip
    return rows


@pytest.fixture
def espeak():
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt install espeak-ng)")
    return make_tts("espeak")


def test_negatives_with_espeak(tmp_path, espeak):
    rows = build_negatives(_rows(), tmp_path, espeak, count=2, snr_db=10.0, seed=1)
    assert len(rows) == 2
    for row in rows:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
        assert row["messages"][0]["content"] == [{"type": "audio", "text": None}]
        assert row["messages"][1]["content"] == [{"type": "text", "text": "<2>"}]
        assert row["end_tag"] is True and row["images"] == [] and len(row["audios"]) == 1
        info = soundfile.info(str(tmp_path / row["audios"][0]))
        assert info.frames / info.samplerate > 0.3


def test_negatives_cli_appends_rows(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt install espeak-ng)")
    main(["negatives", str(source), str(tmp_path / "out"), "--media-root", str(tmp_path), "--tts", "espeak",
          "--count", "1"])  # fmt: skip
    out = _load_rows(str(tmp_path / "out"))
    assert len(out) == 11 and out[10]["messages"][1]["content"][0]["text"] == "<2>"
    assert (tmp_path / out[10]["audios"][0]).is_file()


def test_speak_questions_is_deterministic_and_flips_states(tmp_path):
    rows = _rows()
    new_rows, n_spoken = speak_questions(rows, tmp_path, BeepTTS(), fraction=0.5, seed=3)
    again, _ = speak_questions(rows, tmp_path, BeepTTS(), fraction=0.5, seed=3)
    assert n_spoken == 5 and new_rows == again  # 10 typed questions -> 5
    assert rows == _rows()  # the input is left untouched
    spoken = 0
    for old, new in zip(rows, new_rows):
        for turn in range(0, len(old["messages"]), 2):
            was = old["messages"][turn + 1]["content"][0]["text"]
            now = new["messages"][turn + 1]["content"][0]["text"]
            if any(b["type"] == "audio" for b in new["messages"][turn]["content"]) and was.startswith("<3>"):
                spoken += 1
                assert now == "<1>" + was[3:]
                assert not any(b["type"] == "text" for b in new["messages"][turn]["content"])
            else:
                assert now == was
        n_audio_blocks = sum(b["type"] == "audio" for m in new["messages"] for b in m["content"])
        assert n_audio_blocks == len(new["audios"])
        assert all((tmp_path / p).is_file() for p in new["audios"] if p != "old.wav")
    assert spoken == 5
    assert speak_questions(rows, tmp_path, BeepTTS(), fraction=0.0)[1] == 0
    every, n_every = speak_questions(rows, tmp_path, BeepTTS(), fraction=1.0)
    assert n_every == 10
    mixed = every[-1]
    assert mixed["audios"][0] == "old.wav" and mixed["audios"][1] == "spoken/mixed_2.wav"
    assert [b["type"] for b in mixed["messages"][2]["content"]] == ["image", "audio"]
    other_seed, _ = speak_questions(rows, tmp_path, BeepTTS(), fraction=0.5, seed=4)
    assert other_seed != new_rows


def test_bad_arguments_raise(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps(_rows()[0]) + "\n")
    with pytest.raises(ValueError, match=r"fraction=1.5; expected a value in \[0, 1\]"):
        speak_questions(_rows(), tmp_path, BeepTTS(), fraction=1.5)
    with pytest.raises(ValueError, match="tts engine must be one of .* found 'festival'"):
        make_tts("festival")
    with pytest.raises(ValueError, match="tts engine must be one of .* found 'festival'"):
        main(["negatives", str(tmp_path / "in.jsonl"), str(tmp_path / "o"), "--media-root", "m", "--tts", "festival"])
    with pytest.raises(ValueError, match="does not exist"):
        main(["speak-questions", str(tmp_path / "nope.jsonl"), str(tmp_path / "o"), "--media-root", str(tmp_path)])
    with pytest.raises(ValueError, match=r"--fraction -0.1; expected a value in \[0, 1\]"):
        main(
            ["speak-questions", str(source), str(tmp_path / "o"), "--media-root", str(tmp_path), "--fraction", "-0.1"]
        )
    with pytest.raises(ValueError, match="count=-1"):
        build_negatives(_rows(), tmp_path, BeepTTS(), count=-1)
    with pytest.raises(ValueError, match="no sentence"):
        build_negatives([_text_row(0, "Hi?", "<3>Yes.")], tmp_path, BeepTTS())
