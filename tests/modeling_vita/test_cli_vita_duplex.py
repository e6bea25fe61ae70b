"""Tests of the `vita-duplex` command line (`cli_vita_duplex.py`) and its timeline (`duplex_timeline.py`).

A tiny random VITA and the tiny processor are saved to a folder and loaded back as remote code; two espeak-ng
utterances separated by silence are played through the session; the printed timeline, the PNG and the spoken-answer
wav are checked. The pure helpers (clip placement, mixing, drawing) are tested without a model.
"""

import importlib.util
import re
import shutil

import numpy as np
import pytest

from modeling_vita.cli_vita_duplex import CliError, build_parser, load_model_and_processor, main
from modeling_vita.duplex_events import AnswerDucked, AnswerResumed, Interrupted, SpeechEnded, StateDecided
from modeling_vita.duplex_session import AudioOut
from modeling_vita.duplex_timeline import draw_timeline, mix_answers, place_clips
from tests.utils import espeak, requires_espeak

needs_espeak = requires_espeak
LINE = re.compile(r"^\s*(?P<time>\d+\.\d+) s  (?P<type>\S+)\s+(?P<details>.*)$")


def _speech_span(audio, rate):
    loud = np.flatnonzero(np.abs(audio) > 0.02)
    return loud[0] / rate, loud[-1] / rate


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch

    from modeling_vita import VitaForConditionalGeneration
    from modeling_vita.testing_utils import tiny_vita_config
    from processing_vita.testing_utils import tiny_vita_processor

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("vita-tiny")
    VitaForConditionalGeneration(tiny_vita_config()).save_pretrained(path)
    tiny_vita_processor().save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """Two utterances, 1 s of silence around each, stereo at espeak's 22.05 kHz; returns (path, truth, secs)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt install espeak-ng)")
    import soundfile

    folder = tmp_path_factory.mktemp("audio")
    first, rate = espeak("What is the weather like today?", folder / "a.wav")
    second, _ = espeak("Tell me a story about a cat.", folder / "b.wav")
    gap = np.zeros(rate, dtype=np.float32)
    mono = np.concatenate([gap, first, gap, second, gap])
    truth = []
    for offset, audio in ((len(gap), first), (2 * len(gap) + len(first), second)):
        start, end = _speech_span(audio, rate)
        truth.append((offset / rate + start, offset / rate + end))
    path = folder / "input.wav"
    soundfile.write(str(path), np.stack([mono, 0.5 * mono], axis=1), rate)
    return path, truth, len(mono) / rate


def _parse(output):
    lines = [LINE.match(line) for line in output.splitlines()]
    return [(float(m["time"]), m["type"], m["details"]) for m in lines if m]


@needs_espeak
def test_cli_prints_timeline_and_writes_png_and_wav(model_dir, recording, tmp_path, capsys):
    import soundfile
    from PIL import Image

    audio_path, truth, input_secs = recording
    png, wav = tmp_path / "timeline.png", tmp_path / "answers.wav"
    status = main(
        [
            "--model", str(model_dir), "--audio", str(audio_path), "--max-new-tokens", "8",
            "--timeline", str(png), "--timeline-width", "1000", "--tts", str(wav), "--tts-engine", "espeak",
        ]
    )  # fmt: skip
    output = capsys.readouterr().out
    assert status == 0, output
    events = _parse(output)
    assert "error" not in [kind for _, kind, _ in events], output

    onsets = [float(re.search(r"speech from (\d+\.\d+)", d)[1]) for _, kind, d in events if kind == "speech_started"]
    segments = [
        tuple(map(float, re.search(r"segment (\d+\.\d+)-(\d+\.\d+)", d).groups()))
        for _, kind, d in events
        if kind == "speech_ended"
    ]
    assert len(onsets) == len(segments) == 2, output
    for onset, (_, end), (speech_start, speech_end) in zip(onsets, segments, truth):
        assert abs(onset - speech_start) < 0.3 and abs(end - speech_end) < 0.3, (onset, end, truth)

    # One decision per segment, after its end, before the next segment starts.
    kinds = [kind for _, kind, _ in events]
    decisions = [index for index, kind in enumerate(kinds) if kind == "state_decided"]
    ends = [index for index, kind in enumerate(kinds) if kind == "speech_ended"]
    assert len(decisions) == 2 and ends[0] < decisions[0] < ends[1] < decisions[1], output
    for index in decisions:
        assert re.search(r"(query_audio|noisy_audio) \((query|noise)\) latency \d+\.\d+ s", events[index][2])

    with Image.open(png) as image:
        assert image.format == "PNG" and image.width == 1000 and image.height > 200
    track, rate = soundfile.read(str(wav))
    assert track.ndim == 1 and len(track) >= int(input_secs * rate)


def test_missing_model_gives_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("VITA_MODEL", raising=False)
    status = main(["--audio", str(tmp_path / "any.wav")])
    error = capsys.readouterr().err
    assert status == 2
    assert "--model" in error and "VITA_MODEL" in error


def test_unreadable_audio_gives_a_clear_error(tmp_path, capsys):
    status = main(["--model", str(tmp_path), "--audio", str(tmp_path / "missing.wav")])
    assert status == 2 and "--audio" in capsys.readouterr().err


def _loaded_remote_modules():
    import sys

    return {name for name in sys.modules if name.startswith("transformers_modules")}


@pytest.mark.parametrize("which", ["saved folder", "embedded vita-tiny"])
def test_a_vita_checkpoint_loads_through_the_installed_classes_without_trust_remote_code(model_dir, which):
    from modeling_vita import VitaForConditionalGeneration
    from processing_vita import VitaProcessor
    from tests.conftest import REPO_ROOT

    assert build_parser().parse_args(["--audio", "a.wav"]).trust_remote_code is False  # off unless asked
    path = model_dir if which == "saved folder" else REPO_ROOT / "spaces_demo" / "vita-tiny"
    before = _loaded_remote_modules()
    model, processor = load_model_and_processor(str(path))
    assert type(model) is VitaForConditionalGeneration and not model.training
    assert type(processor) is VitaProcessor
    assert _loaded_remote_modules() == before  # no code from the checkpoint was imported


def _checkpoint_with_code(folder, model_type, marker):
    """A checkpoint whose config names code in the folder that, imported, would write `marker`."""
    import json

    folder.mkdir()
    auto_map = {"AutoConfig": "configuration_odd.OddConfig", "AutoModelForCausalLM": "modeling_odd.OddModel"}
    (folder / "config.json").write_text(json.dumps({"model_type": model_type, "auto_map": auto_map}))
    for module in ("configuration_odd", "modeling_odd"):
        (folder / f"{module}.py").write_text(f"open({str(marker)!r}, 'w').write('code ran')\n")
    return folder


def test_a_checkpoint_that_needs_its_own_code_is_refused_and_its_code_never_runs(tmp_path, capsys):
    import soundfile

    folder = _checkpoint_with_code(tmp_path / "odd", "odd-model", tmp_path / "ran")
    soundfile.write(str(tmp_path / "a.wav"), np.zeros(1600, dtype=np.float32), 16000)
    assert main(["--model", str(folder), "--audio", str(tmp_path / "a.wav")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("vita-duplex: error: --model ") and "Traceback" not in error
    assert re.search(
        r"has model_type 'odd-model', which this installation does not provide; loading it would run the code the "
        r"checkpoint carries \(configuration_odd\.OddConfig, modeling_odd\.OddModel\)\. Refused: pass "
        r"--trust-remote-code to run it if you trust it",
        error,
    )
    assert not (tmp_path / "ran").exists()


def test_a_checkpoint_of_another_model_without_code_is_refused_naming_its_type(tmp_path):
    import json

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-model"}))
    with pytest.raises(CliError, match=r"has model_type 'not-a-model'; expected a VITA checkpoint \('vita'\)"):
        load_model_and_processor(str(tmp_path))
    with pytest.raises(CliError, match=r"cannot read the config\.json of --model .*nowhere"):
        load_model_and_processor(str(tmp_path / "nowhere"))


def _clip(secs, time, turn_id, rate=8000):
    return AudioOut(time, audio=np.full(int(secs * rate), 0.25, dtype=np.float32), sampling_rate=rate, turn_id=turn_id)


def test_clips_follow_each_other_within_a_turn_and_stop_at_an_interruption():
    events = [_clip(1.0, 2.0, 1), _clip(1.0, 2.0, 1), _clip(0.5, 2.5, 2), Interrupted(2.6, text="x", turn_id=1)]
    placed = [(round(start, 3), round(stop, 3), event.turn_id) for start, stop, event, _ in place_clips(events)]
    assert placed == [(2.0, 2.6, 1), (2.5, 3.0, 2)]  # the second clip of turn 1 would start at 3.0 > 2.6: dropped
    track, rate = mix_answers(events, input_secs=5.0)
    assert rate == 8000 and len(track) == 5 * rate
    assert track[int(2.55 * rate)] == pytest.approx(0.5)  # turns 1 and 2 overlap there: mixed, not concatenated
    assert track[int(2.8 * rate)] == pytest.approx(0.25) and track[int(3.5 * rate)] == 0.0


def test_a_ducked_answer_pauses_and_plays_on_from_where_it_paused():
    ramp = AudioOut(1.0, audio=np.arange(16000, dtype=np.float32) / 16000, sampling_rate=8000, turn_id=1)
    events = [ramp, AnswerDucked(2.0, turn_id=1), AnswerResumed(2.5, turn_id=1)]
    placed = [(round(a, 3), round(b, 3), round(o, 3)) for a, b, _, o in place_clips(events)]
    assert placed == [(1.0, 2.0, 0.0), (2.5, 3.5, 1.0)]  # the second second of the clip plays after the pause
    track, rate = mix_answers(events, input_secs=4.0)
    assert track[int(2.25 * rate)] == 0.0  # silent while paused
    assert track[int(2.5 * rate)] == pytest.approx(ramp.audio[8000], abs=1e-3)  # on from where it paused
    # Paused, then interrupted: the rest never plays.
    cut = [(a, b) for a, b, _, _ in place_clips([ramp, AnswerDucked(2.0, turn_id=1), Interrupted(2.5, turn_id=1)])]
    assert cut == [(1.0, 2.0)]


def test_timeline_has_the_requested_width_without_audio_out():
    audio = np.sin(np.linspace(0, 300, 16_000 * 3)).astype(np.float32)
    events = [
        SpeechEnded(1.6, start=0.5, end=1.5),
        StateDecided(1.7, state="query_audio", turn_id=1),
        SpeechEnded(2.6, start=2.0, end=2.5),
        StateDecided(2.7, state="query_audio", turn_id=2),
        Interrupted(2.7, text="partial", turn_id=1),
    ]
    image = draw_timeline(events, audio, 16_000, width=1200)
    assert image.size[0] == 1200
    pixels = np.asarray(image)
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).any()  # the interruption is red
    with pytest.raises(ValueError, match="found 100"):
        draw_timeline(events, audio, 16_000, width=100)


def test_vllm_backend_without_vllm_names_the_install(tmp_path, capsys):
    import soundfile

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here; tests/vllm runs the command on it")
    wav = tmp_path / "talk.wav"
    soundfile.write(str(wav), np.zeros(16_000, np.float32), 16_000)
    status = main(["--model", str(tmp_path), "--audio", str(wav), "--backend", "vllm"])
    error = capsys.readouterr().err
    assert status == 2 and "--backend vllm: the vLLM backend needs vLLM (pip install 'vita-hf[vllm]')" in error


def test_vllm_engine_args_must_be_a_json_object(capsys):
    for bad, expected in (("{max_model_len: 1}", "is not JSON"), ("[1, 2]", "found a JSON list")):
        with pytest.raises(SystemExit) as exit_info:
            build_parser("m").parse_args(["--audio", "a.wav", "--vllm-engine-args", bad])
        assert exit_info.value.code == 2 and expected in capsys.readouterr().err
    args = build_parser("m").parse_args(["--audio", "a.wav", "--vllm-engine-args", '{"max_model_len": 4096}'])
    assert args.vllm_engine_args == {"max_model_len": 4096} and args.backend == "transformers"
