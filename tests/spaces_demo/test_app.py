"""Tests of the Space as a program (`spaces_demo/app.py`, `page.py`, `runtime.py`, `cli.py`, README front matter,
requirements.txt).

Importing the app must load no model and serve nothing; the Blocks must be wired as the page needs; the model is
chosen by `--model`, `$VITA_MODEL` or the embedded folder; and the Space must work from its own folder with the
installed packages and a checkpoint: the checkpoint's own modeling and processing code, the installed pipeline,
session and events (a checkpoint's stale pipeline or session files are never imported).
"""

import configparser
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import gradio as gr
import pytest
from packaging.specifiers import SpecifierSet

from modeling_vita import cli_vita_duplex, duplex_speech_output
from modeling_vita.duplex_events import ResponseDone, TextDelta
from processing_vita import VitaState
from spaces_demo import app as space_app
from spaces_demo import cli as space_cli
from spaces_demo import page as space_page
from spaces_demo import runtime as space_runtime

SPACE_DIR = Path(space_app.__file__).resolve().parent
REPO_ROOT = SPACE_DIR.parent


def test_importing_the_app_loads_no_model_and_starts_nothing():
    probe = textwrap.dedent(
        """
        import sys, threading
        before = threading.active_count()
        import spaces_demo.app
        loaded = [name for name in sys.modules if name.startswith("transformers_modules")]
        assert not loaded, loaded
        assert threading.active_count() == before, [t.name for t in threading.enumerate()]
        # The Space builds on the installed packages, imported statically (no module looked up at run time).
        assert "modeling_vita.pipeline_vita_duplex" in sys.modules and "processing_vita" in sys.modules
        print("IMPORT_OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0 and "IMPORT_OK" in result.stdout, result.stderr[-2000:]


def test_build_demo_wires_both_tabs_without_launching(tiny_runtime):
    demo = space_page.build_demo(runtime=tiny_runtime, tts="none")
    assert isinstance(demo, gr.Blocks) and not demo.is_running
    ids = {c["props"].get("elem_id"): c["type"] for c in demo.config["components"] if c["props"].get("elem_id")}
    assert ids == {
        "vita-header": "markdown",
        "vita-chatbot": "chatbot",
        "vita-text": "textbox",
        "vita-send": "button",
        "vita-chat-notice": "html",
        "vita-image": "image",
        "vita-video": "video",
        "vita-audio": "audio",
        "vita-new-chat": "button",
        "vita-mic": "audio",
        "vita-live-image": "image",
        "vita-live-notice": "html",
        "vita-live-reset": "button",
        "vita-live-answer": "textbox",
        "vita-live-speech": "audio",
        "vita-live-transcript": "html",
        "vita-live-timeline": "image",
    }
    mic = next(c for c in demo.config["components"] if c["props"].get("elem_id") == "vita-mic")
    assert mic["props"]["streaming"] and mic["props"]["sources"] == ["microphone"]
    triggers = sorted(trigger for dependency in demo.config["dependencies"] for _, trigger in dependency["targets"])
    assert triggers == ["change", "click", "click", "click", "stop_recording", "stream", "submit", "unload"]
    assert demo.vita_space.tts is None and demo.vita_space.runtime is tiny_runtime


def test_the_page_names_each_badge_with_the_checkpoints_state_token():
    tokens = {VitaState.QUERY_AUDIO: "[ask]", VitaState.NOISY_AUDIO: "[noise]", VitaState.QUERY_TEXT: "[typed]"}
    assert space_page.state_legend(tokens) == (
        "**answered query (audio)** `[ask]`, **ignored: background talk** `[noise]`, **typed query** `[typed]`"
    )


def test_the_model_comes_from_the_argument_then_the_environment_then_the_embedded_folder(tmp_path, monkeypatch):
    embedded = tmp_path / "vita-tiny"
    monkeypatch.setattr(space_runtime, "DEFAULT_MODEL_DIR", embedded)
    monkeypatch.delenv("VITA_MODEL", raising=False)
    with pytest.raises(ValueError, match=r"--model and \$VITA_MODEL are unset .* does not exist"):
        space_runtime.resolve_model_path()
    embedded.mkdir()
    assert space_runtime.resolve_model_path() == str(embedded)
    monkeypatch.setenv("VITA_MODEL", "org/vita")
    assert space_runtime.resolve_model_path() == "org/vita"
    assert space_runtime.resolve_model_path("other/folder") == "other/folder"


def test_main_without_a_model_exits_with_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(space_runtime, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    monkeypatch.delenv("VITA_MODEL", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        space_app.main([])
    assert exit_info.value.code == 2
    assert "--model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        space_app.main(["--tts", "festival"])
    assert "invalid choice: 'festival'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        space_app.main(["--vllm-engine-args", '{"max_model_len": 4096}'])
    assert "--vllm-engine-args needs --backend vllm" in capsys.readouterr().err


def test_the_vllm_backend_without_vllm_names_the_install(tmp_path):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed here; tests/vllm runs the Space on it")
    with pytest.raises(ImportError, match=r"the vLLM backend needs vLLM \(pip install 'vita-hf\[vllm\]'\)"):
        space_runtime.load_runtime(str(tmp_path), backend="vllm")


def test_load_runtime_refuses_an_unknown_backend_and_engine_args_without_vllm(tmp_path):
    with pytest.raises(ValueError, match="backend must be 'transformers' or 'vllm', found 'tgi'"):
        space_runtime.load_runtime(str(tmp_path), backend="tgi")
    with pytest.raises(ValueError, match=r"engine_args are vLLM engine arguments; found \['dtype'\]"):
        space_runtime.load_runtime(str(tmp_path), engine_args={"dtype": "float32"})


def test_tts_choice(tiny_runtime):
    assert space_page.make_tts is duplex_speech_output.make_tts  # one make_tts in the project
    assert space_app.build_parser().parse_args(["--tts", "espeak"]).tts == "espeak"
    assert space_page.build_demo(runtime=tiny_runtime, tts="none").vita_space.tts is None
    with pytest.raises(ValueError, match=r"one of \('auto', 'model', 'piper', 'espeak', 'none'\), found 'say'"):
        space_page.build_demo(runtime=tiny_runtime, tts="say")
    if shutil.which("espeak-ng"):
        engine = space_page.build_demo(runtime=tiny_runtime, tts="espeak").vita_space.tts
        assert isinstance(engine, duplex_speech_output.EspeakTTS)
        # A NUL from a random model must not reach espeak-ng: the session's speaker (what the real-time tab speaks
        # through) removes it before synthesis.
        spoken, failed = [], []
        speaker = duplex_speech_output.AnswerSpeaker(engine, spoken.append, failed.append)
        speaker.feed(TextDelta(0.0, text="Five.\x00", turn_id=1))
        speaker.feed(ResponseDone(0.0, turn_id=1))
        speaker.close()  # speaks what was queued, then stops
        assert not failed and len(spoken) == 1, failed
        audio, rate = spoken[0].audio, spoken[0].sampling_rate
        assert rate > 8_000 and len(audio) > rate // 10


def _requirements(lines):
    """`{name: specifier}` of requirement lines ("" for an unpinned name); comments and blank lines skipped."""
    found = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name = re.match(r"[A-Za-z0-9._-]+", line)[0]
            found[name.lower()] = line[len(name) :].strip()
    return found


def test_requirements_match_setup_cfg_constraints_and_the_front_matter():
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    declared = _requirements(setup["options"]["install_requires"].splitlines())
    declared.update(_requirements(setup["options.extras_require"]["demo"].splitlines()))
    tested = _requirements((REPO_ROOT / "constraints.txt").read_text().splitlines())
    required = _requirements((SPACE_DIR / "requirements.txt").read_text().splitlines())
    assert required.pop("vita-hf") == ""  # this project: the Space builds on its installed packages
    # Every dependency of the project and of its demo extra, at the version the tests ran with (within setup.cfg's
    # range), and nothing else but the VAD model's wheel.
    assert required == {name: tested[name] for name in [*declared, "silero-vad"]}
    for name, specifier in declared.items():
        assert required[name].removeprefix("==") in SpecifierSet(specifier), (name, required[name], specifier)
    assert required["silero-vad"] == "==6.2.3"  # the Makefile's pin: the VAD model ships in that wheel

    front = re.match(r"^---\n(.*?)\n---\n", (SPACE_DIR / "README.md").read_text(), re.S)[1]
    fields = dict(line.split(": ", 1) for line in front.splitlines() if ": " in line)
    assert fields["sdk"] == "gradio" and fields["app_file"] == "app.py" and (SPACE_DIR / fields["app_file"]).is_file()
    assert fields["sdk_version"] == gr.__version__ and required["gradio"] == f"=={gr.__version__}"
    assert {"suggested_hardware", "python_version", "title", "emoji"} <= set(fields) and "models:" in front


def test_the_space_command_is_vita_duplex_with_the_embedded_checkpoint(monkeypatch):
    """`python -m spaces_demo.cli` is the library's `vita-duplex` with the Space's checkpoint as its default model;
    the library's own command has no default model."""
    calls = []
    monkeypatch.setattr(space_cli, "vita_duplex_main", lambda argv, default_model: calls.append((argv, default_model)))
    space_cli.main(["--audio", "talk.wav"])
    assert calls == [(["--audio", "talk.wav"], str(space_runtime.DEFAULT_MODEL_DIR))]
    monkeypatch.delenv("VITA_MODEL", raising=False)
    assert cli_vita_duplex.build_parser().get_default("model") is None
    result = subprocess.run(
        [sys.executable, "-m", "spaces_demo.cli", "--help"],
        cwd=REPO_ROOT,
        env={key: value for key, value in os.environ.items() if key != "VITA_MODEL"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0 and "vita-duplex" in result.stdout, result.stderr[-2000:]
    assert str(space_runtime.DEFAULT_MODEL_DIR) in " ".join(result.stdout.split()), result.stdout


STALE = 'raise ImportError("a stale copy of the pipeline code: the Space must not import it")\n'


@pytest.mark.slow
def test_the_space_runs_from_its_folder_on_the_installed_packages_and_the_checkpoints_model_code(tmp_path):
    """`app.py` as a Space runs it: the Space's files and a checkpoint in one folder, `vita-hf` installed. The
    processor runs the checkpoint's own code (the model runs the class the installed `modeling_vita` registers, which
    transformers 5 prefers to the folder's copy); the pipeline, session and events are the installed ones, so a
    checkpoint whose pipeline and session files are stale (as in one exported by older code) still serves."""
    import torch
    from transformers import pipeline

    from modeling_vita import VitaForConditionalGeneration
    from modeling_vita.testing_utils import tiny_vita_config
    from processing_vita.testing_utils import tiny_vita_processor

    space = tmp_path / "space"
    shutil.copytree(SPACE_DIR, space, ignore=shutil.ignore_patterns("vita-tiny", "__pycache__", "__init__.py"))
    torch.manual_seed(0)
    model = VitaForConditionalGeneration(tiny_vita_config()).eval()
    pipeline("vita-duplex", model=model, processor=tiny_vita_processor()).save_pretrained(space / "vita-tiny")
    stale = ["pipeline_vita_duplex", "duplex_session", "duplex_events", "cli_vita_duplex"]
    for name in stale:
        (space / "vita-tiny" / f"{name}.py").write_text(STALE)
    probe = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(space)!r})
        import app  # as `python app.py` on a Space: the siblings are top-level modules
        import page
        import modeling_vita
        from modeling_vita.duplex_events import Event

        assert "spaces_demo" not in sys.modules and app.__file__.startswith({str(space)!r}), app.__file__
        demo = page.build_demo(tts="none", max_new_tokens=6)  # the model of `vita-tiny/` beside app.py
        runtime = demo.vita_space.runtime
        # VITA's processor and model classes are registered by the installed packages, which transformers prefers.
        assert type(runtime.processor).__name__ == "VitaProcessor", type(runtime.processor)
        assert type(runtime.pipe) is modeling_vita.VitaDuplexPipeline, type(runtime.pipe)
        *_, (chatbot, session, *_) = demo.vita_space.chat("What colour is the shape?", None, None, None, None, None)
        assert "vita-badge vita-query_text" in chatbot[-1]["content"], chatbot
        handler = demo.vita_space._handler(None, None)
        assert type(handler.session) is modeling_vita.DuplexSession
        handler.receive((48000, np.zeros(4800, np.int16)))
        assert handler.emit().transcript == [] and handler.timeline().size == (1000, 420)
        handler.session.push_text("What is two plus three?")
        assert handler.finish().transcript and all(isinstance(event, Event) for event in handler.events)
        handler.close()
        loaded = [name.rpartition(".")[2] for name in sys.modules if name.startswith("transformers_modules")]
        assert not set(loaded) & set({stale!r}), loaded
        print("SPACE_OK")
        """
    )
    env = {**os.environ, "HF_MODULES_CACHE": str(tmp_path / "modules"), "PYTHONPATH": "", "HF_HUB_OFFLINE": "1"}
    env.pop("VITA_MODEL", None)
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0 and "SPACE_OK" in result.stdout, result.stderr[-3000:]


def test_the_embedded_vita_tiny_answers_each_question_alone_other_checkpoints_keep_a_history(tiny_runtime, tmp_path):
    # vita-tiny learned from single questions; a past exchange in its prompt makes it repeat the old answer.
    assert space_runtime.default_history_turns(str(space_runtime.DEFAULT_MODEL_DIR)) == 0
    assert space_runtime.default_history_turns(str(tmp_path)) == space_runtime.HISTORY_TURNS == 4
    assert space_runtime.default_history_turns(None) == 4
    space = space_page.build_demo(runtime=tiny_runtime, tts="none", max_history_turns=0).vita_space
    *_, (_, session, *_) = space.chat("What colour is the shape?", None, None, None, None, None)
    assert session.max_history_turns == 0 and space.session_kwargs["max_history_turns"] == 0
    handler = space._handler(None, None)
    assert handler.session._machine.max_history_turns == 0  # the real-time tab follows the same rule
    handler.close()
