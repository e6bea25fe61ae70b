"""Test audio, an energy VAD and an event collector for the duplex session tests (the transformers ones and the vLLM
ones, which run where `modeling_vita` itself does not import): numpy only."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

SR = 16_000


class EnergyScorer:
    """Speech probability 1 for a loud window, 0 otherwise: segments follow the test audio exactly."""

    def score(self, window: np.ndarray) -> float:
        return float(np.sqrt(np.mean(window**2)) > 0.05)

    def reset_states(self) -> None:
        pass


def tone(secs: float, amplitude: float = 0.3, freq: float = 220.0) -> np.ndarray:
    t = np.arange(int(secs * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def silence(secs: float) -> np.ndarray:
    return np.zeros(int(secs * SR), dtype=np.float32)


def push(session: Any, audio: np.ndarray, chunk_secs: float = 0.02) -> None:
    step = int(chunk_secs * SR)
    for start in range(0, len(audio), step):
        session.push_audio(audio[start : start + step], SR)


class Collector:
    """Reads a session's events in the background of a test and waits for conditions on them."""

    def __init__(self, session: Any, timeout: float = 10.0) -> None:
        self.session = session
        self.timeout = timeout
        self.events: list[Any] = []

    def until(self, predicate: Any, timeout: float | None = None) -> list[Any]:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not predicate(self.events):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events so far: {[e.type for e in self.events]}")
            self.events.extend(self.session.events(timeout=0.02))
        return self.events

    def of(self, kind: str) -> list[Any]:
        return [event for event in self.events if event.type == kind]


def has(kind: str, count: int = 1) -> Any:
    return lambda events: sum(event.type == kind for event in events) >= count
