"""VITA's special tokens, state tokens and vocabulary-extension tools.

Design: shared/design.md sections 1 and 4 and reference/vita_original.md sections 5.1 and 5.3. The released
VITA-1.0 writes its state tokens `<1>`, `<2>`, `<3>` as literal strings, so by default they are not added as special
tokens; `add_vita_special_tokens(..., state_tokens_as_special=True)` registers them for new trainings. The media
placeholders `<image>`, `<video>`, `<audio>` are real added special tokens here (the original used out-of-vocabulary
ids such as -200), so the processor can expand them and the model can find them by id.

Stage 1 of VITA extends the vocabulary with Chinese pieces: `train_extension_tokenizer` learns candidate pieces from a
corpus with `tokenizers`, `extend_tokenizer_vocabulary` appends them to a tokenizer without moving any existing id,
and `resize_embeddings_with_mean_init` grows a model's input and output embeddings with new rows set to the mean of
the old rows (a neutral start that keeps the initial output distribution close to the old one).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import torch
from transformers import AddedToken

IMAGE_TOKEN = "<image>"
VIDEO_TOKEN = "<video>"
AUDIO_TOKEN = "<audio>"
MEDIA_TOKENS = (IMAGE_TOKEN, VIDEO_TOKEN, AUDIO_TOKEN)


class VitaState(str, enum.Enum):
    """State token that opens every VITA answer."""

    QUERY_AUDIO = "<1>"  # the audio was a real spoken query: answer it
    NOISY_AUDIO = "<2>"  # background speech or noise not meant for the assistant: stay silent
    QUERY_TEXT = "<3>"  # the query was typed text

    @classmethod
    def from_text(cls, text: str) -> VitaState | None:
        """The state token at the start of `text` (leading whitespace ignored), or None."""
        stripped = text.lstrip()
        for state in cls:
            if stripped.startswith(state.value):
                return state
        return None


STATE_TOKENS = tuple(s.value for s in VitaState)


def add_vita_special_tokens(tokenizer: Any, state_tokens_as_special: bool = False) -> dict[str, int]:
    """Add the media placeholders (and optionally the state tokens) as special tokens; returns token -> id.

    Existing ids never change: tokens already in the vocabulary keep their id, new ones are appended. The model's
    embeddings must then be resized to `len(tokenizer)` (see `resize_embeddings_with_mean_init`).
    """
    wanted = list(MEDIA_TOKENS) + (list(STATE_TOKENS) if state_tokens_as_special else [])
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
    "STATE_TOKENS",
    "VitaState",
    "add_vita_special_tokens",
    "train_extension_tokenizer",
    "extend_tokenizer_vocabulary",
    "resize_embeddings_with_mean_init",
]
