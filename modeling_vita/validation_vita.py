"""The input checks of `VitaModel.forward`: bad inputs fail at the door with a `ValueError` that names the input, the
value found, the value expected and the fix, instead of an `IndexError` deep in an embedding, a shape error inside
a tower, or (worse) a silently wrong answer: a mask of another length, features of another batch, NaN media.
Placeholder ids given without media are embedded as ordinary tokens, as transformers' Llava and InternVL do (their
common tests rely on it); media given with the wrong number of placeholders is refused by the model.

Checks that read tensor values (id range, finiteness) cost one small reduction each.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

logger = logging.getLogger(__name__)

_FIX = "Build the inputs with VitaProcessor."


def _tensor(name: str, value: Any, ndim: int, floating: bool | None) -> torch.Tensor:
    """`value` if it is an `ndim`-D tensor of the right kind: floating (True), integer (False) or any real (None)."""
    kind = {True: "floating-point", False: "integer", None: "real"}[floating]
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"`{name}` is a {type(value).__name__}; expected a {ndim}-D {kind} torch tensor. {_FIX}")
    if floating is None:
        dtype_ok = not value.is_complex()
    elif floating:
        dtype_ok = value.is_floating_point()
    else:
        dtype_ok = not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    if value.ndim != ndim or not dtype_ok:
        raise ValueError(
            f"`{name}` has shape {tuple(value.shape)} and dtype {value.dtype}; expected a {ndim}-D {kind} tensor. "
            f"{_FIX}"
        )
    return value


def _check_finite(name: str, value: torch.Tensor) -> None:
    if not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(f"`{name}` holds {bad} NaN/inf values; expected finite features. Check the media and dtype.")


def _check_ids(input_ids: Any, vocab_size: int) -> torch.Tensor:
    input_ids = _tensor("input_ids", input_ids, 2, floating=False)
    if input_ids.numel():
        low, high = (int(v) for v in torch.aminmax(input_ids))
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise ValueError(
                f"`input_ids` holds the id {bad}; expected ids in [0, {vocab_size - 1}] (the vocabulary has "
                f"{vocab_size} rows). Encode with this checkpoint's tokenizer, or resize the embeddings after adding "
                "tokens."
            )
    return input_ids


def _check_attention_mask(attention_mask: Any, batch: int, length: int, past: int) -> None:
    if isinstance(attention_mask, dict):
        return  # generate's {layer type: mask} of static caches, built for the model's layout
    if attention_mask is None or (isinstance(attention_mask, torch.Tensor) and attention_mask.ndim != 2):
        return  # 4-D masks are built by the caller for its own layout
    mask = _tensor("attention_mask", attention_mask, 2, floating=None)
    expected = (batch, past + length)
    if tuple(mask.shape) != expected:
        where = f" ({past} cached + {length} new)" if past else ""
        raise ValueError(
            f"`attention_mask` has shape {tuple(mask.shape)}; expected {expected}: one row per sequence and one "
            f"column per token{where}. Pass the mask that came with the input_ids."
        )


def _check_media(config: Any, name: str, pixels: Any, counts: Any, count_name: str) -> None:
    pixels = _tensor(name, pixels, 4, floating=True)
    vision = config.vision_config
    size = vision.image_size if isinstance(vision.image_size, (list, tuple)) else (vision.image_size,) * 2
    expected = (vision.num_channels, int(size[0]), int(size[1]))
    if tuple(pixels.shape[1:]) != expected:
        raise ValueError(
            f"`{name}` has shape {tuple(pixels.shape)}; expected (tiles, {expected[0]}, {expected[1]}, {expected[2]}),"
            f" the vision tower's tile size. Use the checkpoint's processor (its image_size)."
        )
    _check_finite(name, pixels)
    if counts is not None:
        total = int(torch.as_tensor(counts).sum())
        if total != pixels.shape[0]:
            raise ValueError(
                f"`{count_name}` sums to {total} but {pixels.shape[0]} tiles/frames were given; expected them to "
                f"agree (one count per item, as the processor returns them with `{name}`)."
            )


def _check_audio(features: Any, mask: Any) -> None:
    features = _tensor("input_features", features, 3, floating=True)
    _check_finite("input_features", features)
    if mask is None:
        return
    mask = _tensor("input_features_mask", mask, 2, floating=None)
    if tuple(mask.shape) != tuple(features.shape[:2]):
        raise ValueError(
            f"`input_features_mask` has shape {tuple(mask.shape)}; expected {tuple(features.shape[:2])}, one row per "
            f"clip of `input_features` {tuple(features.shape)} and one column per frame. Pass the mask that came "
            "with the features."
        )


def check_model_inputs(
    model: Any,
    input_ids: Any = None,
    inputs_embeds: Any = None,
    attention_mask: Any = None,
    cache: Any = None,
    pixel_values: Any = None,
    pixel_values_videos: Any = None,
    image_num_patches: Any = None,
    video_num_frames: Any = None,
    input_features: Any = None,
    input_features_mask: Any = None,
) -> None:
    """Raise a `ValueError` naming the first bad input of `VitaModel.forward` (see the module doc)."""
    if (input_ids is None) ^ (inputs_embeds is not None):
        raise ValueError("Pass exactly one of `input_ids` or `inputs_embeds`.")
    config = model.config
    if input_ids is not None:
        embeddings = model.get_input_embeddings()
        vocab_size = getattr(embeddings, "num_embeddings", None) or config.text_config.vocab_size
        input_ids = _check_ids(input_ids, vocab_size)
        batch, length = input_ids.shape
    else:
        inputs_embeds = _tensor("inputs_embeds", inputs_embeds, 3, floating=True)
        batch, length = inputs_embeds.shape[:2]
    past = int(cache.get_seq_length()) if cache is not None and hasattr(cache, "get_seq_length") else 0
    _check_attention_mask(attention_mask, batch, length, past)
    if pixel_values is not None:
        _check_media(config, "pixel_values", pixel_values, image_num_patches, "image_num_patches")
    if pixel_values_videos is not None:
        _check_media(config, "pixel_values_videos", pixel_values_videos, video_num_frames, "video_num_frames")
    if input_features is not None:
        _check_audio(input_features, input_features_mask)


__all__ = ["check_model_inputs"]
