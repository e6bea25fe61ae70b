"""The records the duplex state machine keeps of what is in flight: its state, the running turns, a duck.

Plain data, owned and changed only by `DuplexStateMachine` (`duplex_state.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

from .duplex_events import VitaState


class DuplexState(str, Enum):
    LISTENING = "listening"
    USER_SPEAKING = "user_speaking"
    DECIDING = "deciding"
    RESPONDING = "responding"


@dataclass
class ActiveTurn:
    turn_id: int
    kind: str  # "audio" or "text"
    started_at: float
    history_version: int
    audio: np.ndarray | None = None
    text: str = ""
    state: VitaState | None = None
    images: tuple[Any, ...] = ()
    parts: list[str] = field(default_factory=list)


@dataclass
class Duck:
    turn_id: int  # the answer that is paused
    holders: set[int] = field(default_factory=set)  # turns started since the duck that have not decided yet


__all__ = ["ActiveTurn", "Duck", "DuplexState"]
