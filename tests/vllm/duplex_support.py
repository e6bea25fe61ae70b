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
import types
from pathlib import Path
from typing import Any

from tests.duplex_helpers import SR, EnergyScorer, has, push, silence, tone  # noqa: F401 (re-exported)
from tests.duplex_helpers import Collector as _Collector

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


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


class Collector(_Collector):
    """`tests.duplex_helpers.Collector` with a minute to wait: a vLLM engine on this CPU is slower."""

    def __init__(self, session: Any, timeout: float = 60.0) -> None:
        super().__init__(session, timeout)


def read_steps(path: Path) -> dict[str, list[tuple[int, float]]]:
    """`scripted_states`' log: request id -> [(step, time), ...]."""
    steps: dict[str, list[tuple[int, float]]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            request_id, step, at = line.split()
            steps.setdefault(request_id, []).append((int(step), float(at)))
    return steps


__all__ = ["SR", "Collector", "EnergyScorer", "has", "import_duplex_modules", "push", "read_steps", "silence", "tone"]
