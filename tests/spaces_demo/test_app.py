"""Tests of the Space as a program (`spaces_demo/app.py`, `runtime.py`, README front matter, requirements.txt).

Importing the app must load nothing and serve nothing; the Blocks must be wired as the page needs; the model is chosen
by `--model`, `$VITA_MODEL` or the embedded folder; and the Space must work where only `spaces_demo/` and a checkpoint
exist (this project hidden, VITA's code coming from the checkpoint as remote code).
"""

import configparser
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import gradio as gr
import pytest

from spaces_demo import app as space_app
from spaces_demo import runtime as space_runtime
from tests.utils import run_with_project_hidden

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
        assert "modeling_vita" not in sys.modules  # VITA's code only arrives with a model
        print("IMPORT_OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0 and "IMPORT_OK" in result.stdout, result.stderr[-2000:]


def test_build_demo_wires_both_tabs_without_launching(tiny_runtime):
    demo = space_app.build_demo(runtime=tiny_runtime, tts="none")
    assert isinstance(demo, gr.Blocks) and not demo.is_running
    ids = {c["props"].get("elem_id"): c["type"] for c in demo.config["components"] if c["props"].get("elem_id")}
    assert ids == {
        "vita-chatbot": "chatbot",
        "vita-text": "textbox",
        "vita-send": "button",
        "vita-image": "image",
        "vita-video": "video",
        "vita-audio": "audio",
        "vita-new-chat": "button",
        "vita-mic": "audio",
        "vita-live-image": "image",
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


def test_tts_choice(tiny_runtime):
    assert space_runtime.make_tts(tiny_runtime, "none") is None
    with pytest.raises(ValueError, match=r"one of \('auto', 'piper', 'espeak', 'none'\), found 'say'"):
        space_runtime.make_tts(tiny_runtime, "say")
    if shutil.which("espeak-ng"):
        engine = space_runtime.make_tts(tiny_runtime, "espeak")
        audio, rate = engine.synthesize("Five.\x00")  # a NUL from a random model must not reach espeak-ng
        assert rate > 8_000 and len(audio) > rate // 10


def _pins(lines):
    pins = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, version = re.split(r"(?:==|>=)", line)
            pins[name.strip().lower()] = line[len(name) :].strip()
    return pins


def test_requirements_match_setup_cfg_and_the_front_matter():
    setup = configparser.ConfigParser()
    setup.read(REPO_ROOT / "setup.cfg")
    declared = _pins(setup["options"]["install_requires"].splitlines())
    declared.update(_pins(setup["options.extras_require"]["demo"].splitlines()))
    required = _pins((SPACE_DIR / "requirements.txt").read_text().splitlines())
    assert {name: required.get(name) for name in declared} == declared
    assert required["silero-vad"] == "==6.2.3"  # the Makefile's pin: the VAD model ships in that wheel

    front = re.match(r"^---\n(.*?)\n---\n", (SPACE_DIR / "README.md").read_text(), re.S)[1]
    fields = dict(line.split(": ", 1) for line in front.splitlines() if ": " in line)
    assert fields["sdk"] == "gradio" and fields["app_file"] == "app.py" and (SPACE_DIR / fields["app_file"]).is_file()
    assert fields["sdk_version"] == gr.__version__ and required["gradio"] == f"=={gr.__version__}"
    assert {"suggested_hardware", "python_version", "title", "emoji"} <= set(fields) and "models:" in front


@pytest.mark.slow
def test_the_space_runs_from_its_folder_and_a_checkpoint_alone(tmp_path):
    """`app.py` as a Space runs it: a folder with the Space's files and `vita-tiny/`, this project not importable."""
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
    stdout = run_with_project_hidden(
        f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(space)!r})
        import app  # as `python app.py` on a Space: the siblings are top-level modules
        demo = app.build_demo(tts="none", max_new_tokens=6)
        space = demo.vita_space
        assert type(space.runtime.pipe).__module__.startswith("transformers_modules"), type(space.runtime.pipe)
        assert space.runtime.cli is None  # the checkpoint has no cli_vita_duplex.py yet
        *_, (chatbot, session, *_) = space.chat("What colour is the shape?", None, None, None, None, None)
        assert "vita-badge vita-query_text" in chatbot[-1]["content"], chatbot
        handler = space._handler(None, None)
        handler.receive((48000, np.zeros(4800, np.int16)))
        assert handler.timeline() is None and handler.emit().transcript == []
        handler.close()

        # Copied into the checkpoint, the timeline module is found there and draws.
        import shutil
        shutil.copy({str(REPO_ROOT / "modeling_vita" / "cli_vita_duplex.py")!r}, {str(space / "vita-tiny")!r})
        runtime = app.load_runtime()
        assert runtime.cli is not None and runtime.cli.__name__.startswith("transformers_modules")
        handler = app.RealtimeHandler(runtime)
        handler.receive((48000, np.zeros(4800, np.int16)))
        assert handler.timeline().size == (1000, 420)
        handler.close()
        assert not [name for name in sys.modules if name.split(".")[0] in ("modeling_vita", "processing_vita")]
        print("SPACE_OK")
        """,
        tmp_path,
    )
    assert "SPACE_OK" in stdout


def test_the_embedded_vita_tiny_answers_each_question_alone_other_checkpoints_keep_a_history(tiny_runtime, tmp_path):
    # vita-tiny learned from single questions; a past exchange in its prompt makes it repeat the old answer.
    assert space_runtime.default_history_turns(str(space_runtime.DEFAULT_MODEL_DIR)) == 0
    assert space_runtime.default_history_turns(str(tmp_path)) == space_runtime.HISTORY_TURNS == 4
    assert space_runtime.default_history_turns(None) == 4
    space = space_app.build_demo(runtime=tiny_runtime, tts="none", max_history_turns=0).vita_space
    *_, (_, session, *_) = space.chat("What colour is the shape?", None, None, None, None, None)
    assert session.max_history_turns == 0 and space.session_kwargs["max_history_turns"] == 0
    handler = space._handler(None, None)
    assert handler.session._machine.max_history_turns == 0  # the real-time tab follows the same rule
    handler.close()
