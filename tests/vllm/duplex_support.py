"""Helpers of the duplex-on-vLLM tests and benchmark: an energy VAD, test audio, an event collector with a longer
wait and the scripted engine's step log."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from tests.duplex_helpers import SR, EnergyScorer, has, push, silence, tone  # noqa: F401 (re-exported)
from tests.duplex_helpers import Collector as _Collector

logger = logging.getLogger(__name__)


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


__all__ = ["SR", "Collector", "EnergyScorer", "has", "push", "read_steps", "silence", "tone"]
