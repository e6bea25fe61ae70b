"""Prefix KV reuse across the turns of one conversation, and the conversation's bounded context.

Every duplex turn's prompt is the whole conversation: system prompt, past exchanges (with their audio and the frames
first shown with them), the new input. Prefilling it all again makes turns slower as the conversation grows. A
`PromptCache` keeps, for the last few turns, the KV cache of the prompt up to the end of that turn's own user message
and the rendered text it stands for; a new prompt whose text (and media objects) starts with one of those is
prefilled only from there: the answer of the previous exchange and the new input. An interrupted turn's cache is
trimmed the same way, so the next turn re-reads the part of the answer that was heard from the history.

Correctness does not rest on assumptions about the tokenizer: the reused prefix is taken only when tokenizing the
prompt's text as a whole gives the prefix's tokens followed by the rest's (placeholders unexpanded; it catches a BPE
merge or a prefix space across the cut), and the media before the cut must be the same objects. Otherwise the turn
is processed whole, as without the cache. Greedy answers equal those of a full prefill (tests).

Bounded context (`ContextBudget`): when a prompt would exceed `max_tokens`, the audio of the older half of the
exchanges in the prompt is dropped first (their answers stay), then the older half of the exchanges; the frames of
dropped exchanges move to the first exchange kept, so the image stays. The cut only moves forward, so the prefix stays
stable between cuts and a cut costs one full prefill.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import torch

from .duplex_events import StartTurn, Turn
from .generation_vita import inputs_on_model, prepare_turn_inputs

logger = logging.getLogger(__name__)

_MEDIA_KINDS = ("image", "video", "audio")
T = TypeVar("T")


@dataclass(frozen=True)
class _Entry:
    text: str  # rendered (control tokens marked) text of the prompt up to the end of its last user message
    media: tuple[Any, ...]  # the media objects in `text`, in order
    ids: torch.Tensor  # (1, L) the tokens of `text`, placeholders expanded
    cache: Any  # KV of `ids` (cropped to L); never mutated once stored


@dataclass
class PreparedTurn:
    """What `PromptCache.prepare` gives a turn: the `generate` inputs, and what `keep` needs afterwards."""

    inputs: dict[str, Any]
    reused_tokens: int = 0
    prompt_tokens: int = 0
    # For `keep`, which works out where the turn's own prefix ends after `generate`, off the turn's latency.
    _marked: list[dict[str, Any]] | None = None
    _text: str = ""
    _whole: list[int] = field(default_factory=list)
    _media: tuple[Any, ...] = ()


@dataclass
class ContextBudget:
    """Which history the prompt shows: exchanges from turn `first_turn` on, audio from turn `audio_from_turn` on.

    Args:
        max_tokens: the longest prompt allowed (the model's context less the answer's room).
        keep_ratio: after a cut the prompt is at most this share of `max_tokens` (room for many turns per cut).
        max_moved_frames: how many frames of the dropped exchanges move to the first exchange kept (the latest).
    """

    max_tokens: int
    keep_ratio: float = 0.5
    first_turn: int = 0
    audio_from_turn: int = 0
    max_moved_frames: int = 4  # the frames of dropped exchanges kept (the session's default `max_frames`)
    cuts: int = field(default=0, init=False)
    # Turns build their prompts on their own threads; one cut at a time, seen whole by the next prompt.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False, compare=False)

    def fit(
        self,
        action: StartTurn,
        build: Callable[[list[dict[str, Any]]], T],
        tokens: Callable[[T], int],
        within: Callable[[T], bool] = lambda built: True,
    ) -> T:
        """The turn's prompt, `build` of its messages as the budget shows the history. A prompt over `max_tokens`
        (or outside `within`, e.g. an engine's media limits) moves the cut until it is within `keep_ratio` of the
        budget (and `within`): one full prefill now, then many turns of reuse. Still over only if the new input
        alone is; the model reports it."""
        with self._lock:
            built = build(self.messages(action))
            count = tokens(built)
            if count <= self.max_tokens and within(built):
                return built
            while (count > self.keep_ratio * self.max_tokens or not within(built)) and self.cut(action.history):
                built = build(self.messages(action))
                count = tokens(built)
            logger.info("history cut to %d tokens (cut %d): over %d", count, self.cuts, self.max_tokens)
            return built

    def messages(self, action: StartTurn) -> list[dict[str, Any]]:
        """The chat messages of `action` with the history as the budget shows it."""
        return replace(action, history=self.select(action.history)).messages()

    def select(self, history: Sequence[Turn]) -> tuple[Turn, ...]:
        shown = [turn for turn in history if turn.in_prompt]
        kept = [turn for turn in shown if turn.turn_id >= self.first_turn]
        moved = [image for turn in shown if turn.turn_id < self.first_turn for image in turn.images]
        out = []
        for turn in kept:
            if turn.role == "user" and turn.audio is not None and turn.turn_id < self.audio_from_turn:
                turn = replace(turn, audio=None)
            if moved and turn.role == "user":
                turn, moved = replace(turn, images=(*moved[-self.max_moved_frames :], *turn.images)), []
            out.append(turn)
        return tuple(out)

    def cut(self, history: Sequence[Turn]) -> bool:
        """Move the cut forward once (audio of the older half first, then the older half); False if nothing left."""
        users = [t.turn_id for t in history if t.in_prompt and t.role == "user" and t.turn_id >= self.first_turn]
        if len(users) < 2:
            return False
        middle = users[len(users) // 2]
        with_audio = [
            t.turn_id
            for t in history
            if t.role == "user" and t.audio is not None and self.audio_from_turn <= t.turn_id < middle
        ]
        if with_audio:
            self.audio_from_turn = middle
        else:
            self.first_turn = max(self.first_turn, middle)
        self.cuts += 1
        return True


class PromptCache:
    """Builds each turn's `generate` inputs, reusing the KV cache of an earlier turn's prompt prefix.

    Thread-safe: turns run on their own threads. Stored caches are never mutated; a turn works on a copy.

    Args:
        model: the VITA model (`config`, `generate`).
        processor: its processor (chat template, tokenizer).
        max_entries: how many turns' prefixes are kept (the latest ones).
        enabled: False processes every prompt whole (the behaviour without a cache).
        budget: the bounded context of `prepare_turn` (None: the whole history).
    """

    def __init__(
        self,
        model: Any,
        processor: Any,
        max_entries: int = 4,
        enabled: bool = True,
        budget: ContextBudget | None = None,
    ) -> None:
        self.model, self.processor = model, processor
        self.budget = budget
        self.max_entries = max_entries
        self.enabled = enabled and _supports_reuse(model, processor)
        self._entries: list[_Entry] = []
        self._lock = threading.Lock()

    def prepare_turn(self, action: StartTurn, sampling_rate: int = 16_000) -> PreparedTurn:
        """`prepare` for a duplex turn, its history within the budget (`ContextBudget.fit`)."""
        if self.budget is None:
            return self.prepare(action.messages(), sampling_rate)
        return self.budget.fit(action, lambda messages: self.prepare(messages, sampling_rate), _prompt_tokens)

    def prepare(self, messages: list[dict[str, Any]], sampling_rate: int = 16_000) -> PreparedTurn:
        """The inputs of `generate` for `messages` (the new user message last), with a `cache` when reusable."""
        if not self.enabled:
            inputs = prepare_turn_inputs(self.processor, messages, self.model, sampling_rate)
            return PreparedTurn(inputs, 0, inputs["input_ids"].shape[1])
        marked = self._marked(messages)
        text = self.processor.apply_chat_template(marked, add_generation_prompt=True, tokenize=False)
        whole = self._encode(text, special=True)
        media = _media_of(marked)
        entry = self._best_entry(text, whole, media)
        if entry is None:
            inputs = prepare_turn_inputs(self.processor, messages, self.model, sampling_rate)
            inputs["cache"] = _new_cache(self.model)
            prepared = PreparedTurn(inputs, 0, inputs["input_ids"].shape[1])
        else:
            suffix = self.processor(
                text=text[len(entry.text) :],
                **_media_by_kind(media[len(entry.media) :], marked),
                sampling_rate=sampling_rate,
                add_special_tokens=False,
                sanitize_control_tokens=True,
                return_tensors="pt",
            )
            inputs = inputs_on_model(suffix, self.model)
            ids = torch.cat([entry.ids, inputs["input_ids"]], dim=1)
            inputs["input_ids"], inputs["attention_mask"] = ids, torch.ones_like(ids)
            inputs["cache"] = copy.deepcopy(entry.cache)
            prepared = PreparedTurn(inputs, entry.ids.shape[1], ids.shape[1])
        prepared._marked, prepared._text, prepared._whole, prepared._media = marked, text, whole, media
        return prepared

    def keep(self, prepared: PreparedTurn) -> None:
        """After the turn's `generate`: keep its prompt prefix (up to the end of its user message) for later turns."""
        cache = prepared.inputs.get("cache")
        if not self.enabled or prepared._marked is None or cache is None:
            return
        # The prefix ends before the generation prompt; usable only where the tokenizer does not merge across it.
        text = prepared._text
        prefix = self.processor.apply_chat_template(prepared._marked, add_generation_prompt=False, tokenize=False)
        if not text.startswith(prefix) or not self._splits_cleanly(text, prepared._whole, prefix):
            return
        length = prepared.prompt_tokens - len(self._encode(text[len(prefix) :], special=False))
        if length <= 0 or cache.get_seq_length() < length or not getattr(cache, "is_croppable", True):
            return
        extra = cache.get_seq_length() - length
        if extra:
            cache.crop(-extra)  # transformers 5 crops by the number of tokens to remove
        entry = _Entry(prefix, prepared._media, prepared.inputs["input_ids"][:, :length], cache)
        with self._lock:
            self._entries = [e for e in self._entries if e.text != entry.text][-(self.max_entries - 1) :] + [entry]

    def clear(self) -> None:
        with self._lock:
            self._entries = []

    # -- helpers ----------------------------------------------------------------------------------------------------

    def _best_entry(self, text: str, whole: list[int], media: tuple[Any, ...]) -> _Entry | None:
        with self._lock:
            entries = list(self._entries)
        best = None
        for entry in entries:
            if not text.startswith(entry.text) or len(entry.media) > len(media):
                continue
            if any(a is not b for a, b in zip(entry.media, media)):
                continue
            if best is None or entry.ids.shape[1] > best.ids.shape[1]:
                best = entry
        if best is not None and not self._splits_cleanly(text, whole, best.text):
            logger.debug("prompt prefix not reused: the tokenizer merges across the cut")
            return None
        return best

    def _splits_cleanly(self, text: str, whole: list[int], prefix: str) -> bool:
        head = self._encode(prefix, special=True)
        return whole == head + self._encode(text[len(prefix) :], special=False)

    def _encode(self, text: str, special: bool) -> list[int]:
        tokenizer = self.processor.tokenizer
        bos = getattr(tokenizer, "bos_token", None)
        add = special and not (bos is not None and text.startswith(bos))  # as apply_chat_template decides
        return tokenizer.encode(text, add_special_tokens=add)

    def _marked(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        tokenizer = self.processor.tokenizer
        (marked,), *_ = tokenizer._mark_chat_inputs(
            self.processor.chat_template, [messages], None, None, {}, True, False
        )
        return marked


def _prompt_tokens(prepared: PreparedTurn) -> int:
    return prepared.prompt_tokens


def context_budget(model: Any, processor: Any, max_new_tokens: int, max_frames: int = 4) -> ContextBudget | None:
    """The budget of a model's context: its positions (and the tokenizer's limit) less the answer's room."""
    config = getattr(model, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else None
    limits = (
        getattr(text_config, "max_position_embeddings", None),
        getattr(getattr(processor, "tokenizer", None), "model_max_length", None),
    )
    known = [value for value in limits if isinstance(value, int) and value < 10**12]  # unset limits are ~1e30
    return ContextBudget(min(known) - max_new_tokens - 8, max_moved_frames=max_frames) if known else None


def _supports_reuse(model: Any, processor: Any) -> bool:
    config = getattr(model, "config", None)
    tokenizer = getattr(processor, "tokenizer", None)
    if config is None or not hasattr(tokenizer, "_mark_chat_inputs") or not isinstance(model, torch.nn.Module):
        return False
    return True


def _new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config.get_text_config())


def _media_of(messages: list[dict[str, Any]]) -> tuple[Any, ...]:
    return tuple(
        block[block["type"]]
        for message in messages
        if isinstance(message.get("content"), list)
        for block in message["content"]
        if isinstance(block, dict) and block.get("type") in _MEDIA_KINDS
    )


def _media_by_kind(items: tuple[Any, ...], messages: list[dict[str, Any]]) -> dict[str, list[Any]]:
    kinds = {}
    for message in messages:
        for block in message.get("content") if isinstance(message.get("content"), list) else ():
            if isinstance(block, dict) and block.get("type") in _MEDIA_KINDS:
                kinds[id(block[block["type"]])] = block["type"]
    out: dict[str, list[Any]] = {}
    for item in items:
        kind = kinds[id(item)]
        out.setdefault({"image": "images", "video": "videos", "audio": "audio"}[kind], []).append(item)
    return out


__all__ = ["ContextBudget", "PreparedTurn", "PromptCache", "context_budget"]
