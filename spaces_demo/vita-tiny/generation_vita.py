"""One VITA turn with transformers' `generate`: the state-token constraint, the turn streamer and the stop switch.

VITA opens every answer with a state token (`VitaConfig.state_tokens`): a spoken query, noisy audio not meant for
the assistant (it acts as EOS: nothing is said), or a typed query. Checkpoints learned them as literal strings that
most tokenizers split into several pieces ("<", "1", ">"), or as single special tokens; everything here works with
either, from the token ids that spell each one (`state_token_sequences`).

The pipeline, the duplex session and the Space's chat run a turn the same way, through the pieces of this file:

    - `prepare_turn_inputs` turns chat messages into model inputs on the model's device and dtype;
    - `StateTokenLogitsProcessor` forces the first generated tokens to spell one of the allowed state tokens, so the
      decision is always readable after a few constrained steps;
    - `VitaTurnStreamer` reads the tokens as `generate` makes them: it decides the state as soon as its spelling is
      complete, stops a noisy turn at once and reports the answer text as deltas, through two callbacks;
    - `InterruptStoppingCriteria` ends a running `generate` within one decoding step once a `threading.Event` is set
      (the streamer sets it for noisy audio; the session sets it on interruption);
    - `run_turn` is the one `generate` call that wires them together.

Generation stays transformers-native (no hand-written decoding loop): sampling, beams of one, caches and streamers
work as they do for any transformers model.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

try:  # Hub remote code: a checkpoint folder holds processing_vita's files beside these
    from .tokenization_vita import VitaState, checked_state_tokens
except ImportError:  # this project's source tree: processing_vita is a sibling package
    from processing_vita.tokenization_vita import VitaState, checked_state_tokens

logger = logging.getLogger(__name__)

StateSpellings = Mapping[VitaState, Sequence[int]]


def state_token_sequences(tokenizer: Any, state_tokens: Mapping[str, str] | None = None) -> dict[VitaState, list[int]]:
    """The token ids that spell each state's token (`state_tokens`, default VITA-1.0's), no special tokens added."""
    tokens = checked_state_tokens(state_tokens)
    spellings = {
        VitaState(name): list(tokenizer.encode(token, add_special_tokens=False)) for name, token in tokens.items()
    }
    for state, spelling in spellings.items():
        if not spelling:
            raise ValueError(f"the tokenizer spells the {state} token {tokens[state.value]!r} with no token ids")
    return spellings


def checkpoint_state_tokens(model: Any, processor: Any) -> dict[str, str]:
    """The checkpoint's state tokens: the model config's, which the processor must share (default VITA-1.0's)."""
    config_tokens = getattr(getattr(model, "config", None), "state_tokens", None)
    processor_tokens = getattr(processor, "state_tokens", None)
    found = [checked_state_tokens(tokens) for tokens in (config_tokens, processor_tokens) if tokens is not None]
    if len(found) == 2 and found[0] != found[1]:
        raise ValueError(
            f"the model config's state_tokens {found[0]} differ from the processor's {found[1]}; expected one "
            "vocabulary (save both from the same checkpoint)"
        )
    return found[0] if found else checked_state_tokens(None)


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


class StateTokenLogitsProcessor(LogitsProcessor):
    """Constrain the first generated tokens of every row to spell one of the state tokens.

    At generated step `s`, a row that has produced `g[:s]` may only choose `seq[s]` of the spellings `seq` that start
    with `g[:s]`; once a spelling is complete the row is free. Rows are independent, so a batch can decide different
    states. Use one instance per `generate` call.

    Args:
        state_token_ids: one spelling per allowed state token: a list of token id lists (multi-token literals such as
            "<1>" split into "<", "1", ">"), or a flat list of single token ids (state tokens registered as special
            tokens). Restrict it to force a state (e.g. only the typed-query token).
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

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)


class VitaTurnStreamer(BaseStreamer):
    """Reads one turn's tokens as `generate` makes them: the state token first, then the answer text.

    `generate` hands the prompt first (skipped), then each new token. While the state token is incomplete the tokens
    are held; once one state's spelling is complete the state is decided (`on_state(state)`). A noisy-audio turn
    sets `stop` at once, so `generate` ends at that same step (the state token acts as EOS). Answer tokens are
    decoded as they come and each new piece of text is passed to `on_text(delta)`; the separator space after the
    state token is dropped, and an unfinished multi-byte character waits for its next token. Callbacks run on the
    thread that runs `generate`.

    Args:
        tokenizer: decodes the answer (special tokens skipped).
        spellings: token ids of each state token (`state_token_sequences`).
        stop: the event an `InterruptStoppingCriteria` of the same `generate` watches.
        forced_state: the state decided before generation (the turn restarts with a known state); it is reported
            as decided by whatever state token the model writes.
        on_state, on_text: callbacks, see above.

    After `generate` returns: `state` (None when generation ended before a state token was complete), `text` (the
    whole answer) and `token_ids` (the answer's ids without the state token).
    """

    def __init__(
        self,
        tokenizer: Any,
        spellings: StateSpellings,
        stop: threading.Event | None = None,
        forced_state: VitaState | None = None,
        on_state: Callable[[VitaState], None] | None = None,
        on_text: Callable[[str], None] | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.spellings = {VitaState(state): list(spelling) for state, spelling in spellings.items()}
        self.stop = stop if stop is not None else threading.Event()
        self.forced_state = forced_state
        self.on_state = on_state
        self.on_text = on_text
        self.state: VitaState | None = None
        self.token_ids: list[int] = []
        self.text = ""
        self._prompt_seen = False
        self._head: list[int] = []  # tokens read while the state token is incomplete

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True  # generate() first passes the prompt
            return
        for token in value.reshape(-1).tolist():
            if self.state is not None:
                self.token_ids.append(int(token))
                continue
            self._head.append(int(token))
            for state, spelling in self.spellings.items():
                if self._head[: len(spelling)] == spelling:
                    self._decide(state, self._head[len(spelling) :])
                    break
        self._emit_text(final=False)

    def end(self) -> None:
        self._emit_text(final=True)

    def _decide(self, state: VitaState, rest: list[int]) -> None:
        self.state = self.forced_state or state
        self._head = []
        self.token_ids.extend(rest)
        if self.on_state is not None:
            self.on_state(self.state)
        if self.state is VitaState.NOISY_AUDIO:
            self.stop.set()

    def _emit_text(self, final: bool) -> None:
        if self.state in (None, VitaState.NOISY_AUDIO) or not self.token_ids:
            return
        text = self.tokenizer.decode(self.token_ids, skip_special_tokens=True)
        if text.startswith(" "):
            text = text[1:]  # the separator after the state token
        if not final:
            text = text.rstrip("\ufffd")
        if len(text) > len(self.text) and text.startswith(self.text):
            delta, self.text = text[len(self.text) :], text
            if self.on_text is not None:
                self.on_text(delta)


def prepare_turn_inputs(
    processor: Any, messages: list[dict[str, Any]], model: Any, sampling_rate: int = 16_000
) -> dict[str, Any]:
    """The chat `messages` as model inputs: ids stay integers, media features take the model's device and dtype."""
    inputs = processor.apply_chat_template(
        messages,
        add_generation_prompt=True,
        tokenize=True,
        return_dict=True,
        return_tensors="pt",
        sampling_rate=sampling_rate,
    )
    return inputs_on_model(inputs, model)


def inputs_on_model(inputs: Mapping[str, Any], model: Any) -> dict[str, Any]:
    """Processor outputs on the model's device: ids stay integers, media features take the model's dtype."""
    device, dtype = getattr(model, "device", "cpu"), getattr(model, "dtype", None)
    return {
        key: value.to(device, dtype=dtype if value.is_floating_point() else None) if torch.is_tensor(value) else value
        for key, value in inputs.items()
    }


def run_turn(
    model: Any,
    inputs: dict[str, Any],
    streamer: VitaTurnStreamer,
    allowed_states: Sequence[VitaState] | None = None,
    generation_kwargs: dict[str, Any] | None = None,
) -> Any:
    """One `model.generate` for a turn: the answer opens with one of `allowed_states` (default all), `streamer`
    reads it, and setting `streamer.stop` ends it within one step. Returns what `generate` returns."""
    kwargs = dict(generation_kwargs or {})
    if "streamer" in kwargs:
        raise ValueError("generation_kwargs must not set 'streamer' (the turn owns it), found one")
    states = list(streamer.spellings) if allowed_states is None else [VitaState(state) for state in allowed_states]
    processors = LogitsProcessorList(kwargs.pop("logits_processor", None) or [])
    processors.insert(0, StateTokenLogitsProcessor([streamer.spellings[state] for state in states]))
    criteria = StoppingCriteriaList(kwargs.pop("stopping_criteria", None) or [])
    criteria.append(InterruptStoppingCriteria(streamer.stop))
    with torch.inference_mode():
        return model.generate(
            **inputs, logits_processor=processors, stopping_criteria=criteria, streamer=streamer, **kwargs
        )


__all__ = [
    "InterruptStoppingCriteria",
    "StateTokenLogitsProcessor",
    "VitaTurnStreamer",
    "checkpoint_state_tokens",
    "inputs_on_model",
    "prepare_turn_inputs",
    "run_turn",
    "state_token_sequences",
]
