"""VITA's special tokens, state tokens and vocabulary-extension tools.

The released VITA-1.0 writes its state tokens `<1>`, `<2>`, `<3>` as literal strings, so by default they are not added
as special tokens; `add_vita_special_tokens(..., state_tokens_as_special=True)` registers them for new trainings. The
media placeholders `<image>`, `<video>`, `<audio>` are real added special tokens here (the original used
out-of-vocabulary ids such as -200), so the processor can expand them and the model can find them by id.

Stage 1 of VITA extends the vocabulary with Chinese pieces: `train_extension_tokenizer` learns candidate pieces from a
corpus with `tokenizers`, `extend_tokenizer_vocabulary` appends them to a tokenizer without moving any existing id,
and `resize_embeddings_with_mean_init` grows a model's input and output embeddings with new rows set to the mean of
the old rows (a neutral start that keeps the initial output distribution close to the old one).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from transformers import AddedToken

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
AUDIO_TOKEN = "<audio>"
MEDIA_TOKENS = (IMAGE_TOKEN, VIDEO_TOKEN, AUDIO_TOKEN)


class VitaState(str, enum.Enum):
    """What the input of a turn was, as the state token that opens the answer says.

    The values are the state names used everywhere (events, pipeline outputs, history, evaluation); the strings the
    model writes for them are a checkpoint's own (`VitaConfig.state_tokens`, `VitaProcessor.state_tokens`): `<1>`,
    `<2>`, `<3>` for the released VITA-1.0.
    """

    QUERY_AUDIO = "query_audio"  # the audio was a real spoken query: answer it
    NOISY_AUDIO = "noisy_audio"  # background speech or noise not meant for the assistant: stay silent
    QUERY_TEXT = "query_text"  # the query was typed text

    def __str__(self) -> str:
        return self.value

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


# The strings VITA-1.0 was trained to open its answers with, keyed by state name.
DEFAULT_STATE_TOKENS = {VitaState.QUERY_AUDIO.value: "<1>", VitaState.NOISY_AUDIO.value: "<2>",
                        VitaState.QUERY_TEXT.value: "<3>"}  # fmt: skip


def checked_state_tokens(state_tokens: Mapping[str, str] | Sequence[str] | None) -> dict[str, str]:
    """`state_tokens` as `{state name: token string}` for the three states (default VITA-1.0's `<1>`, `<2>`, `<3>`).

    A sequence gives the tokens in `VitaState` order (spoken query, noisy audio, typed query), as older configs
    stored them. Raises `ValueError` naming what is wrong: a missing or unknown state, an empty or repeated token,
    or a token that starts another one (the answer's first characters must decide the state).
    """
    if state_tokens is None:
        return dict(DEFAULT_STATE_TOKENS)
    if isinstance(state_tokens, Mapping):
        tokens = {str(getattr(key, "value", key)): value for key, value in state_tokens.items()}
    else:
        tokens = dict(zip([state.value for state in VitaState], state_tokens))
        if len(state_tokens) != len(VitaState):
            raise ValueError(
                f"state_tokens holds {len(state_tokens)} strings; expected {len(VitaState)} (spoken query, noisy "
                "audio, typed query)"
            )
    names = [state.value for state in VitaState]
    if sorted(tokens) != sorted(names):
        raise ValueError(f"state_tokens has the states {sorted(tokens)}; expected exactly {names}")
    values = list(tokens.values())
    if not all(isinstance(token, str) and token for token in values) or len(set(values)) != len(values):
        raise ValueError(f"state_tokens must map each state to its own non-empty string, found {tokens}")
    for token in values:
        for other in values:
            if token != other and other.startswith(token):
                raise ValueError(f"state token {token!r} starts {other!r}; expected none to be a prefix of another")
    return {name: tokens[name] for name in names}


def parse_state(text: str, state_tokens: Mapping[str, str] | None = None) -> tuple[VitaState | None, str]:
    """The state an answer opens with and the answer after it: `(state or None, rest)`.

    Leading whitespace is ignored and one space after the state token is dropped; without a state token the text is
    returned unchanged. `state_tokens` are the checkpoint's (`checked_state_tokens`; default VITA-1.0's).
    """
    tokens = DEFAULT_STATE_TOKENS if state_tokens is None else state_tokens
    stripped = text.lstrip()
    for name, token in tokens.items():
        if stripped.startswith(token):
            rest = stripped[len(token) :]
            return VitaState(name), rest[1:] if rest.startswith(" ") else rest
    return None, text


def special_token_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The ids the tokenizer's post-processor puts before and after a text (`([bos], [])` for Llama-style ones)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start]), list(full[start + len(plain) :])
    return [], []


def encode_marked_texts(tokenizer: Any, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
    """Token ids of chats rendered from conversations whose strings transformers marked
    (`apply_chat_template(..., sanitize_control_tokens=True)`, which `VitaProcessor` does by default).

    A control or placeholder token typed in a message (`<image>`, `</s>`, `<|im_end|>`, a special state token) is
    encoded as the plain text it is, never as its special id; the tokens the template writes itself (and the media
    placeholders the processor expands from content blocks) keep their ids. Unmarked text encodes exactly as
    `tokenizer(text)`. `add_special_tokens` adds what the tokenizer's post-processor adds (BOS).
    """
    ids = tokenizer(
        list(texts), sanitize_control_tokens=True, add_special_tokens=False, padding=False, truncation=False
    )["input_ids"]
    if not add_special_tokens:
        return [list(x) for x in ids]
    prefix, suffix = special_token_affixes(tokenizer)
    return [prefix + list(x) + suffix for x in ids]


def add_vita_special_tokens(
    tokenizer: Any, state_tokens_as_special: bool = False, state_tokens: Mapping[str, str] | None = None
) -> dict[str, int]:
    """Add the media placeholders (and optionally the state tokens) as special tokens; returns token -> id.

    Existing ids never change: tokens already in the vocabulary keep their id, new ones are appended. The model's
    embeddings must then be resized to `len(tokenizer)` (see `resize_embeddings_with_mean_init`).
    """
    states = list(checked_state_tokens(state_tokens).values()) if state_tokens_as_special else []
    wanted = list(MEDIA_TOKENS) + states
    current = tokenizer.get_vocab()
    new = [AddedToken(t, special=True, normalized=False) for t in wanted if t not in current]
    if new:
        tokenizer.add_tokens(new, special_tokens=True)
    # Named attributes (tokenizer.image_token / image_token_id) are what transformers processors look for.
    for attr, tok in (("image_token", IMAGE_TOKEN), ("video_token", VIDEO_TOKEN), ("audio_token", AUDIO_TOKEN)):
        try:
            setattr(tokenizer, attr, tok)
        except (AttributeError, ValueError):
            pass
    return {t: tokenizer.convert_tokens_to_ids(t) for t in wanted}


def train_extension_tokenizer(
    corpus: Iterable[str],
    vocab_size: int,
    min_frequency: int = 2,
    non_ascii_only: bool = True,
    max_piece_length: int = 8,
) -> list[str]:
    """Learn candidate vocabulary pieces (BPE with `tokenizers`) from `corpus`, most useful first.

    `vocab_size` bounds the trained BPE (alphabet included). With `non_ascii_only` (the VITA use: Chinese pieces for
    an English-centric vocabulary), pieces made only of ASCII are dropped, because appending English sub-words as
    added tokens would split words in new places. Pieces are plain strings; whitespace-containing ones are dropped.
    """
    if vocab_size <= 0:
        raise ValueError(f"vocab_size is {vocab_size}; expected a positive number of pieces to learn.")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # Split on whitespace and punctuation only: Chinese runs stay whole so BPE can learn multi-character words.
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.BPEDecoder()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False, max_token_length=max_piece_length
    )
    tok.train_from_iterator(corpus, trainer)
    pieces = [p for p, _ in sorted(tok.get_vocab().items(), key=lambda kv: kv[1])]
    out = []
    for piece in pieces:
        if not piece or any(c.isspace() for c in piece):
            continue
        if non_ascii_only and piece.isascii():
            continue
        out.append(piece)
    return out


def extend_tokenizer_vocabulary(base_tokenizer: Any, new_tokens: Iterable[str]) -> list[int]:
    """Append `new_tokens` to `base_tokenizer` without changing any existing id; returns the ids of the added ones.

    Pieces already in the vocabulary, or already encoded as a single token, are skipped. They are added as ordinary
    (non-special) tokens, so they decode as text and are matched before the base model splits the text.
    """
    vocab = base_tokenizer.get_vocab()
    to_add: list[str] = []
    seen: set[str] = set()
    for piece in new_tokens:
        if piece in vocab or piece in seen or not piece:
            continue
        if len(base_tokenizer.encode(piece, add_special_tokens=False)) == 1:
            continue
        seen.add(piece)
        to_add.append(piece)
    if not to_add:
        return []
    base_tokenizer.add_tokens([AddedToken(p, special=False, normalized=False) for p in to_add])
    return [base_tokenizer.convert_tokens_to_ids(p) for p in to_add]


@torch.no_grad()
def resize_embeddings_with_mean_init(model: Any, new_num_tokens: int) -> torch.nn.Module:
    """Resize input and output embeddings of a transformers model to `new_num_tokens`, new rows = mean of old rows.

    Works for tied and untied heads. Shrinking is refused: it would silently drop trained rows.
    """
    inp = model.get_input_embeddings()
    old_num = int(inp.weight.shape[0])
    if new_num_tokens < old_num:
        raise ValueError(
            f"new_num_tokens is {new_num_tokens} but the model has {old_num} rows; expected >= {old_num}. "
            "Shrinking would drop trained embeddings."
        )
    in_mean = inp.weight.float().mean(dim=0)
    out = model.get_output_embeddings()
    out_mean = out.weight.float().mean(dim=0) if out is not None else None
    out_bias_mean = out.bias.float().mean() if out is not None and getattr(out, "bias", None) is not None else None
    model.resize_token_embeddings(new_num_tokens, mean_resizing=False)
    if new_num_tokens == old_num:
        return model.get_input_embeddings()
    new_in = model.get_input_embeddings()
    new_in.weight[old_num:] = in_mean.to(new_in.weight.dtype)
    new_out = model.get_output_embeddings()
    if new_out is not None and new_out.weight is not new_in.weight:
        new_out.weight[old_num:] = out_mean.to(new_out.weight.dtype)
        if out_bias_mean is not None:
            new_out.bias[old_num:] = out_bias_mean.to(new_out.bias.dtype)
    return new_in


__all__ = [
    "IMAGE_TOKEN",
    "VIDEO_TOKEN",
    "AUDIO_TOKEN",
    "MEDIA_TOKENS",
    "DEFAULT_STATE_TOKENS",
    "VitaState",
    "checked_state_tokens",
    "parse_state",
    "special_token_affixes",
    "encode_marked_texts",
    "add_vita_special_tokens",
    "train_extension_tokenizer",
    "extend_tokenizer_vocabulary",
    "resize_embeddings_with_mean_init",
]
