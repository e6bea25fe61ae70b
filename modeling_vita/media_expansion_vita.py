"""Expanding a batch's media for generation with several sequences per prompt (beam search, `num_return_sequences`).

`generate` repeats every tensor of its inputs `expand_size` times along the first dimension, row by row. That is right
for `input_ids` (one row per sample) and wrong for VITA's media, whose first dimension counts tiles, video frames or
audio clips, as soon as a sample has more than one: a sample's tiles [A, B] become [A, A, B, B] while each of its
expanded rows needs [A, B], so the features land on the wrong placeholders without any error. `expand_media` repeats
each sample's group of media instead: [A, B] -> [A, B, A, B]. It finds the groups from the placeholder count of each
row, as transformers' `_expand_multimodal_outputs` does for pre-encoded image and video features.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from .audio_encoder import get_audio_token_counts

logger = logging.getLogger(__name__)

MEDIA_KEYS = (
    "pixel_values",
    "image_num_patches",
    "pixel_values_videos",
    "video_num_frames",
    "input_features",
    "input_features_mask",
)


def placeholder_counts(
    input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, embeddings: torch.nn.Module, token_id: int
) -> list[int]:
    """Number of `token_id` placeholders in each row, from `input_ids` or else by embedding equality."""
    if input_ids is not None and input_ids.numel():
        return (input_ids == token_id).sum(-1).tolist()
    placeholder = embeddings(torch.tensor(token_id, device=inputs_embeds.device))
    return (inputs_embeds == placeholder).all(-1).sum(-1).tolist()


def group_bounds(tokens_per_row: list[int], tokens_per_item: list[int], what: str) -> list[tuple[int, int]]:
    """`[(start, end)]` of the items (tiles, frames, clips, images, videos) of each row, taken in order."""
    bounds, start = [], 0
    for row, needed in enumerate(tokens_per_row):
        end, found = start, 0
        while found < needed and end < len(tokens_per_item):
            found, end = found + tokens_per_item[end], end + 1
        if found != needed:
            raise ValueError(
                f"Sample {row} has {needed} {what} placeholder tokens but the {what} inputs left for it give {found}; "
                f"expected each sample's placeholders to match its own {what} inputs, in order. Build the inputs "
                "with VitaProcessor."
            )
        bounds.append((start, end))
        start = end
    return bounds


def repeat_groups(tensor: torch.Tensor, bounds: list[tuple[int, int]], expand_size: int) -> torch.Tensor:
    """Each group of rows of `tensor` repeated `expand_size` times in place: [A, B | C] -> [A, B, A, B | C, C]."""
    index = [i for start, end in bounds for _ in range(expand_size) for i in range(start, end)]
    return tensor.index_select(0, torch.tensor(index, dtype=torch.long, device=tensor.device))


def expand_media(
    config: Any, counts: dict[str, list[int]], media: dict[str, torch.Tensor], expand_size: int
) -> dict[str, torch.Tensor]:
    """`media` (keys of `MEDIA_KEYS`) with each sample's group repeated `expand_size` times.

    `counts` gives the placeholder tokens of each row for "image", "video" and "audio".
    """
    expanded = dict(media)
    per_tile = config.image_seq_length
    for modality, pixels_key, sizes_key in (
        ("image", "pixel_values", "image_num_patches"),
        ("video", "pixel_values_videos", "video_num_frames"),
    ):
        if media.get(pixels_key) is None:
            continue
        tiles_per_row = [count // per_tile for count in counts[modality]]
        bounds = group_bounds(tiles_per_row, [1] * media[pixels_key].shape[0], modality)
        expanded[pixels_key] = repeat_groups(media[pixels_key], bounds, expand_size)
        if media.get(sizes_key) is not None:
            sizes = [int(size) for size in media[sizes_key]]
            expanded[sizes_key] = repeat_groups(
                media[sizes_key], group_bounds(tiles_per_row, sizes, modality), expand_size
            )
    if media.get("input_features") is not None:
        features, mask = media["input_features"], media.get("input_features_mask")
        frames = (
            mask.to(torch.long).sum(-1) if mask is not None else torch.full((features.shape[0],), features.shape[1])
        )
        bounds = group_bounds(counts["audio"], get_audio_token_counts(frames).tolist(), "audio")
        expanded["input_features"] = repeat_groups(features, bounds, expand_size)
        if mask is not None:
            expanded["input_features_mask"] = repeat_groups(mask, bounds, expand_size)
    return expanded


def pop_expanded_media(
    model: Any, input_ids: torch.Tensor | None, model_kwargs: dict[str, Any], expand_size: int
) -> dict[str, torch.Tensor]:
    """Remove the media from `generate`'s `model_kwargs` and return them expanded for `expand_size` sequences a
    prompt (`input_ids` before expansion, or `model_kwargs["inputs_embeds"]` where it is empty)."""
    media = {key: model_kwargs.pop(key) for key in MEDIA_KEYS if model_kwargs.get(key) is not None}
    if not media or expand_size == 1:
        return media
    embeddings, embeds = model.get_input_embeddings(), model_kwargs.get("inputs_embeds")
    counts = {
        modality: placeholder_counts(input_ids, embeds, embeddings, getattr(model.config, f"{modality}_token_id"))
        for modality in ("image", "video", "audio")
    }
    return expand_media(model.config, counts, media, expand_size)


__all__ = ["MEDIA_KEYS", "expand_media", "group_bounds", "placeholder_counts", "pop_expanded_media", "repeat_groups"]
