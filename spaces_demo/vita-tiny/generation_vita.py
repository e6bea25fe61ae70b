"""Generation helpers for VITA's state tokens and interruptible answers (a LogitsProcessor, a StoppingCriteria).

VITA opens every answer with a state token (`design.md` sections 1 and 4, `reference/vita_original.md` 5.3): `<1>`
a spoken query, `<2>` noisy audio not meant for the assistant (acts as EOS), `<3>` a typed query. The released
model learned them as literal strings, which most tokenizers split into several pieces ("<", "1", ">"); new
trainings may register them as single special tokens. Everything here works with either:

    - `StateTokenLogitsProcessor` forces the first generated tokens to spell one of the state tokens, so the
      decision is always readable after a few constrained steps (the original demo relied on `<2>` happening to be
      the first streamed delta, bug 21 of `reference/vita_original.md` section 8);
    - `InterruptStoppingCriteria` ends a running `generate` within one decoding step once a `threading.Event` is
      set (the duplex session sets it on interruption; the original let interrupted vLLM requests run on, bug 20);
    - `parse_state` reads the state from the first generated tokens or from decoded text.

Generation stays transformers-native (no hand-written decoding loop), as `reference/aesthetics.md` section 6 asks.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import torch
from transformers import LogitsProcessor, PreTrainedTokenizerBase, StoppingCriteria

from .duplex_events import STATE_TOKENS, STATES


def _as_sequences(state_token_ids: Sequence[int] | Sequence[Sequence[int]]) -> list[tuple[int, ...]]:
    sequences = []
    for item in state_token_ids:
        sequence = (int(item),) if isinstance(item, int) or getattr(item, "ndim", None) == 0 else tuple(map(int, item))
        if not sequence:
            raise ValueError("state token spellings must hold at least one token id, found an empty one")
        sequences.append(sequence)
    if not sequences:
        raise ValueError("state_token_ids must name at least one state token, found none")
    return sequences


def state_token_sequences(tokenizer: PreTrainedTokenizerBase, tokens: Sequence[str] | None = None) -> list[list[int]]:
    """Token ids spelling each state token (default `<1>`, `<2>`, `<3>`) with `tokenizer`, no special tokens added."""
    tokens = [STATE_TOKENS[state] for state in STATES] if tokens is None else list(tokens)
    return [list(tokenizer.encode(token, add_special_tokens=False)) for token in tokens]


class StateTokenLogitsProcessor(LogitsProcessor):
    """Constrain the first generated tokens of every row to spell one of the state tokens.

    At generated step `s`, a row that has produced `g[:s]` may only choose `seq[s]` of the spellings `seq` that start
    with `g[:s]`; once a spelling is complete the row is free. Rows are independent, so a batch can decide different
    states. Use one instance per `generate` call.

    Args:
        state_token_ids: one spelling per allowed state token: a list of token id lists (multi-token literals such as
            "<1>" split into "<", "1", ">"; several spellings of one token may be given), or a flat list of single
            token ids (state tokens registered as special tokens). Restrict it to force a state (e.g. only `<3>`).
        prompt_length: length of the prompt (`input_ids.shape[1]`, padding included); default: the length seen at
            the first call, i.e. the first generated step.
    """

    def __init__(
        self, state_token_ids: Sequence[int] | Sequence[Sequence[int]], prompt_length: int | None = None
    ) -> None:
        self.sequences = _as_sequences(state_token_ids)
        self.prompt_length = prompt_length
        self.max_length = max(len(sequence) for sequence in self.sequences)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_length is None:
            self.prompt_length = input_ids.shape[1]
        step = input_ids.shape[1] - self.prompt_length
        if step < 0:
            raise ValueError(f"input_ids is shorter ({input_ids.shape[1]}) than prompt_length ({self.prompt_length})")
        if step >= self.max_length:
            return scores
        generated = input_ids[:, self.prompt_length :].tolist()
        mask = torch.zeros_like(scores, dtype=torch.bool)  # True where a token is allowed
        constrained = False
        for row, tokens in enumerate(generated):
            prefix = tuple(tokens)
            if any(len(seq) <= step and prefix[: len(seq)] == seq for seq in self.sequences):
                mask[row] = True  # a state token is already complete
                continue
            allowed = {seq[step] for seq in self.sequences if len(seq) > step and seq[:step] == prefix}
            if not allowed:
                mask[row] = True  # the row left the constraint (cannot happen when this processor ran from step 0)
                continue
            mask[row, list(allowed)] = True
            constrained = True
        if not constrained:
            return scores
        return scores.masked_fill(~mask, -float("inf"))


class InterruptStoppingCriteria(StoppingCriteria):
    """Stop a running `generate` as soon as `event` is set (checked after every decoding step, any thread may set it).

    Returns a bool tensor of shape `(batch_size,)`, all True once the event is set.
    """

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


def parse_state(
    token_ids_or_text: str | Sequence[int] | torch.Tensor,
    state_token_ids: Mapping[str, Sequence[int] | Sequence[Sequence[int]]] | None = None,
) -> tuple[str | None, str | list[int]]:
    """Read the state token that opens an answer.

    Args:
        token_ids_or_text: the decoded answer (str), or its generated token ids (without the prompt).
        state_token_ids: for token ids: `{state: spelling or list of spellings}` with states among
            "query_audio", "noisy_audio", "query_text" (a single int is a one-token spelling).

    Returns:
        `(state, rest)`: the state name or None when the answer opens with no state token, and the answer after it
        (text with the separating whitespace removed, or the remaining token ids).
    """
    if isinstance(token_ids_or_text, str):
        text = token_ids_or_text.lstrip()
        for state, literal in STATE_TOKENS.items():
            if text.startswith(literal):
                return state, text[len(literal) :].lstrip()
        return None, token_ids_or_text
    if isinstance(token_ids_or_text, torch.Tensor):
        if token_ids_or_text.ndim != 1:
            raise ValueError(
                f"parse_state expects one sequence of token ids, found shape {tuple(token_ids_or_text.shape)}"
            )
        token_ids_or_text = token_ids_or_text.tolist()
    ids = [int(token) for token in token_ids_or_text]
    if state_token_ids is None:
        raise ValueError("parse_state needs state_token_ids to read token ids, found None")
    matches = []
    for state, spellings in state_token_ids.items():
        if state not in STATES:
            raise ValueError(f"state_token_ids keys must be among {STATES}, found {state!r}")
        spellings = [spellings] if isinstance(spellings, int) else spellings
        nested = [spellings] if spellings and all(isinstance(token, int) for token in spellings) else spellings
        for sequence in _as_sequences(nested):
            if tuple(ids[: len(sequence)]) == sequence:
                matches.append((len(sequence), state))
    if not matches:
        return None, ids
    length, state = max(matches)
    return state, ids[length:]


__all__ = ["InterruptStoppingCriteria", "StateTokenLogitsProcessor", "parse_state", "state_token_sequences"]
