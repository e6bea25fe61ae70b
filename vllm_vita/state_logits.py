"""VITA's state-token constraint as a vLLM (V1) logits processor: only the first generated steps are constrained.

VITA opens every answer with a state token (spoken query, noisy audio, typed query), spelled by one or more token
ids. transformers' side (`modeling_vita.generation_vita.StateTokenLogitsProcessor`) forces the first generated
tokens of a turn to spell one of the allowed state tokens; this is the same rule for vLLM. vLLM 0.32 has no
per-request logits processors in `SamplingParams` (its `allowed_token_ids` holds for every step, so it cannot leave
the answer free after the state token); instead an engine-level processor is built once per engine
(`logits_processors=[STATE_LOGITS_PROCESSOR]` in the engine arguments) and reads each request's spellings from
`SamplingParams.extra_args[STATE_SPELLINGS_KEY]` (a list of token id lists). A request without that key is not
touched, so the processor can be installed on an engine that serves other requests too.

At generated step `s` a request that has produced `g[:s]` may only choose `seq[s]` of the spellings `seq` that
start with `g[:s]`; once a spelling is complete (or no spelling can follow any more) the request is free.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

logger = logging.getLogger(__name__)

STATE_SPELLINGS_KEY = "vita_state_spellings"
STATE_LOGITS_PROCESSOR = "vllm_vita.state_logits:VitaStateLogitsProcessor"


def allowed_next_tokens(spellings: Sequence[Sequence[int]], generated: Sequence[int]) -> set[int] | None:
    """The token ids step `len(generated)` may take, or None when the request is free (a spelling is complete)."""
    step = len(generated)
    prefix = tuple(generated)
    if any(len(seq) <= step and prefix[: len(seq)] == tuple(seq) for seq in spellings):
        return None
    allowed = {int(seq[step]) for seq in spellings if len(seq) > step and tuple(seq[:step]) == prefix}
    return allowed or None


def _checked_spellings(value: object) -> list[list[int]]:
    if not isinstance(value, list | tuple) or not value:
        raise ValueError(f"{STATE_SPELLINGS_KEY} takes a non-empty list of token id lists, found {value!r:.80}")
    spellings = []
    for item in value:
        if not isinstance(item, list | tuple) or not item or not all(isinstance(t, int) for t in item):
            raise ValueError(f"{STATE_SPELLINGS_KEY} holds lists of token ids, found {item!r:.80}")
        spellings.append([int(t) for t in item])
    return spellings


class VitaStateLogitsProcessor(AdapterLogitsProcessor):
    """Masks every token but the allowed state-token continuations, for requests that ask for it (module docstring)."""

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        extra = sampling_params.extra_args or {}
        if STATE_SPELLINGS_KEY in extra:
            _checked_spellings(extra[STATE_SPELLINGS_KEY])

    def is_argmax_invariant(self) -> bool:
        # It changes which token wins, so vLLM must run it for greedy requests too.
        return False

    def new_req_logits_processor(self, params: SamplingParams) -> Callable | None:
        extra = params.extra_args or {}
        if STATE_SPELLINGS_KEY not in extra:
            return None
        spellings = _checked_spellings(extra[STATE_SPELLINGS_KEY])
        longest = max(len(seq) for seq in spellings)

        def constrain(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            if len(output_ids) >= longest:  # past the state token: the common case, kept cheap
                return logits
            allowed = allowed_next_tokens(spellings, output_ids)
            if allowed is None:
                return logits
            masked = torch.full_like(logits, float("-inf"))
            index = torch.tensor(sorted(allowed), device=logits.device)
            masked[index] = logits[index]
            return masked

        return constrain


__all__ = ["STATE_LOGITS_PROCESSOR", "STATE_SPELLINGS_KEY", "VitaStateLogitsProcessor", "allowed_next_tokens"]
