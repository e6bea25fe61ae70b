"""Fixtures of the Space tests: the tiny random VITA behind a `VitaRuntime`, an upload folder, espeak-ng speech and a
logits processor that scripts the state each turn decides (a random model decides at random)."""

import itertools
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.utils import espeak

SR = 16_000


@pytest.fixture(scope="session")
def tiny_runtime():
    """A random tiny VITA served through this project's `VitaDuplexPipeline` (no files, no remote code)."""
    from modeling_vita import VitaForConditionalGeneration
    from modeling_vita.pipeline_vita_duplex import VitaDuplexPipeline
    from modeling_vita.testing_utils import tiny_vita_config
    from processing_vita.testing_utils import tiny_vita_processor
    from spaces_demo.runtime import VitaRuntime

    torch.manual_seed(0)
    model = VitaForConditionalGeneration(tiny_vita_config()).eval()
    return VitaRuntime(VitaDuplexPipeline(model=model, processor=tiny_vita_processor()))


@pytest.fixture
def upload_root(tmp_path):
    """Stands for gradio's upload folder: the loaders refuse files outside it."""
    root = tmp_path / "uploads"
    root.mkdir()
    return root


@pytest.fixture
def no_thread_left():
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = [thread for thread in set(threading.enumerate()) - before if thread.is_alive()]
        if not left:
            return
        time.sleep(0.02)
    raise AssertionError(f"threads left running: {left}")


@pytest.fixture(scope="session")
def speech(tmp_path_factory):
    """`speech(text)` -> float32 mono samples at 16 kHz spoken by espeak-ng (skips without it)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    folder = tmp_path_factory.mktemp("speech")
    counter = itertools.count()

    def _speak(text: str) -> np.ndarray:
        audio, rate = espeak(text, folder / f"{next(counter)}.wav")
        positions = np.arange(int(len(audio) * SR / rate)) * rate / SR
        return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)

    return _speak


class ScriptedTurns:
    """A logits processor that makes the n-th `generate` call open with `script[n][0]` and say `script[n][1]` tokens
    (then EOS), slowly (`step_secs` a step), so a test can put a question over a running answer.

    Each turn runs `generate` in its own thread (chat worker or duplex turn worker), so a thread-local remembers which
    call a step belongs to. It is appended after the state constraint, so it only picks among the allowed tokens.
    """

    def __init__(self, spellings, script, eos_token_id, step_secs=0.0):
        self.spellings = spellings
        self.script = list(script)
        self.eos = eos_token_id
        self.step_secs = step_secs
        self.calls = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    def __call__(self, input_ids, scores):
        if not hasattr(self._local, "turn"):
            with self._lock:
                self._local.turn, self._local.prompt = self.calls, input_ids.shape[1]
                self.calls += 1
        state, length = self.script[min(self._local.turn, len(self.script) - 1)]
        step = input_ids.shape[1] - self._local.prompt
        spelling = self.spellings[state]
        scores = scores.clone()
        if step < len(spelling):
            scores[:, spelling[step]] += 1e4
        elif step - len(spelling) < length:
            scores[:, self.eos] = -float("inf")
        else:
            scores[:, self.eos] += 1e4
        time.sleep(self.step_secs)
        return scores


@pytest.fixture
def scripted(tiny_runtime):
    """`scripted([(state, answer_tokens), ...], step_secs)` -> generation kwargs scripting each turn."""

    def _make(script, step_secs=0.0, max_new_tokens=64):
        eos = tiny_runtime.model.generation_config.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        processor = ScriptedTurns(tiny_runtime.state_spellings, script, eos, step_secs)
        return {"logits_processor": [processor], "max_new_tokens": max_new_tokens}, processor

    return _make


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    """A free local TCP port for a test server."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium under Playwright, one per test module (skips, saying why, without them)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install playwright)"
    )
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"chromium not found at {CHROMIUM} (apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        # The system browser: tests never download one. --no-sandbox because CI runs as root.
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()
