"""The two small records of a `DuplexSession` (`duplex_session.py`): its options, fixed at creation, and the state
its dispatcher thread changes as the conversation goes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .duplex_audio_input import EchoGuard

DEFAULT_GENERATION_KWARGS = {"max_new_tokens": 64, "do_sample": False}


@dataclass(frozen=True)
class SessionOptions:
    """The tunables of a `DuplexSession` (see its arguments)."""

    generation_kwargs: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_GENERATION_KWARGS))
    max_frames: int = 4
    max_history_turns: int | None = None
    restart_with_consolidated_history: bool = False
    echo_margin_db: float = 10.0

    def __post_init__(self) -> None:
        if "streamer" in self.generation_kwargs:
            raise ValueError("generation_kwargs must not set 'streamer' (the session owns it), found one")


@dataclass
class SessionState:
    """What the dispatcher thread changes as the conversation goes (only that thread writes it)."""

    input_secs: float = 0.0  # the audio clock
    echo: EchoGuard = field(default_factory=EchoGuard)


__all__ = ["DEFAULT_GENERATION_KWARGS", "SessionOptions", "SessionState"]
