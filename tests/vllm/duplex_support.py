"""Helpers of the duplex-on-vLLM tests and benchmark: the duplex modules without `modeling_vita/__init__.py`, an
energy VAD, test audio and an event collector.

vLLM 0.32 pins transformers < 5.20; `modeling_vita/__init__.py` imports the model classes, which need 5.24, so
`import modeling_vita.duplex_session` fails in `.venv-vllm`. The duplex runtime itself (session, state machine,
VAD, turn streamer, `duplex_vllm_backend`) needs none of them: `import_duplex_modules` registers `modeling_vita`
as a bare package (its folder, without running its `__init__`) where the real one cannot import, so its submodules
import on their own.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SR = 16_000


def import_duplex_modules() -> None:
    """Make `modeling_vita.duplex_*` importable here (module docstring); a no-op where `modeling_vita` imports."""
    if "modeling_vita" in sys.modules:
        return
    try:
        importlib.import_module("modeling_vita")
        return
    except ImportError as error:
        logger.info("modeling_vita does not import here (%s); loading its duplex modules without __init__", error)
    for name in [n for n in sys.modules if n == "modeling_vita" or n.startswith("modeling_vita.")]:
        del sys.modules[name]  # what the failed import left half-done
    folder = REPO_ROOT / "modeling_vita"
    package = types.ModuleType("modeling_vita", "modeling_vita's modules, without its __init__ (tests/vllm)")
    package.__path__ = [str(folder)]
    package.__file__ = str(folder / "__init__.py")
    package.__package__ = "modeling_vita"
    sys.modules["modeling_vita"] = package


class EnergyScorer:
    """Speech probability 1 for a loud window, 0 otherwise: segments follow the test audio exactly."""

    def score(self, window: np.ndarray) -> float:
        return float(np.sqrt(np.mean(window**2)) > 0.05)

    def reset_states(self) -> None:
        pass


def tone(secs: float, freq: float = 220.0, amplitude: float = 0.3) -> np.ndarray:
    t = np.arange(int(secs * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(secs: float) -> np.ndarray:
    return np.zeros(int(secs * SR), dtype=np.float32)


def push(session: Any, audio: np.ndarray, chunk_secs: float = 0.02) -> None:
    step = int(chunk_secs * SR)
    for start in range(0, len(audio), step):
        session.push_audio(audio[start : start + step], SR)


class Collector:
    """Reads a session's events and waits for conditions on them."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.events: list[Any] = []

    def until(self, predicate: Any, timeout: float = 60.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events so far: {[e.type for e in self.events]}")
            self.events.extend(self.session.events(timeout=0.02))
        return self.events

    def of(self, kind: str) -> list[Any]:
        return [event for event in self.events if event.type == kind]


def has(kind: str, count: int = 1) -> Any:
    return lambda events: sum(event.type == kind for event in events) >= count


def read_steps(path: Path) -> dict[str, list[tuple[int, float]]]:
    """`scripted_states`' log: request id -> [(step, time), ...]."""
    steps: dict[str, list[tuple[int, float]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            request_id, step, at = line.split()
            steps.setdefault(request_id, []).append((int(step), float(at)))
    return steps


__all__ = ["SR", "Collector", "EnergyScorer", "has", "import_duplex_modules", "push", "read_steps", "silence", "tone"]
