"""Where the assistant's spoken answer is on the audio clock: queued pieces, pauses (ducks), what was heard.

Pure Python, owned by the duplex state machine (`duplex_state.py`). The session reports each spoken piece
(`AudioOut`) as it hands it to the player; pieces play back to back from the moment they are queued. A duck pauses
the player (the pieces not yet played slide later by the pause), a resume plays on, a cut drops the rest. From this
the machine knows whether an answer is still audible when the user starts speaking (even after its text is complete)
and what part of it the user had heard when it was cut, which is what the history records.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class _Piece:
    start: float
    end: float
    text: str


class AnswerPlayback:
    """The spoken pieces of one answer turn on the audio clock (times in seconds)."""

    def __init__(self, turn_id: int) -> None:
        self.turn_id = turn_id
        self._pieces: list[_Piece] = []
        self._paused_at: float | None = None
        self._cut_at: float | None = None

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    @property
    def end(self) -> float:
        """When the queued audio finishes playing if nothing else happens (a paused answer: never)."""
        if self._cut_at is not None:
            return self._cut_at
        if self._paused_at is not None:
            return float("inf")
        return self._pieces[-1].end if self._pieces else 0.0

    def queue(self, now: float, duration: float, text: str) -> None:
        """A piece of `duration` seconds was handed to the player at `now`; it plays after the ones queued before."""
        if self._cut_at is not None:
            return
        start = max(now, self._pieces[-1].end if self._pieces else now)
        if self._paused_at is not None:
            start = max(start, self._paused_at)
        self._pieces.append(_Piece(start, start + duration, text))

    def pause(self, now: float) -> None:
        if self._paused_at is None and self._cut_at is None:
            self._paused_at = now

    def resume(self, now: float) -> None:
        """Play on: what had not been played at the pause slides later by the length of the pause."""
        if self._paused_at is None:
            return
        paused_at, self._paused_at = self._paused_at, None
        shift = max(now - paused_at, 0.0)
        for piece in self._pieces:
            if piece.start >= paused_at:
                piece.start += shift
            if piece.end > paused_at:
                piece.end += shift

    def cut(self, now: float) -> None:
        if self._cut_at is None:
            self._cut_at = now if self._paused_at is None else min(now, self._paused_at)
            self._paused_at = None

    def audible_at(self, now: float) -> bool:
        """Queued audio that has not finished playing at `now` (a paused answer counts: it will play on)."""
        return self._cut_at is None and bool(self._pieces) and (self._paused_at is not None or now < self.end)

    def heard_text(self, now: float) -> str:
        """The text of the pieces that had started playing by `now` (a piece cut midway counts as heard)."""
        limit = now if self._cut_at is None else min(now, self._cut_at)
        if self._paused_at is not None:
            limit = min(limit, self._paused_at)
        return " ".join(piece.text.strip() for piece in self._pieces if piece.start < limit and piece.text.strip())

    @property
    def has_audio(self) -> bool:
        return bool(self._pieces)


__all__ = ["AnswerPlayback"]
