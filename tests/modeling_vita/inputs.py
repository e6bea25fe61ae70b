"""Builds model inputs by hand, in the layout VitaProcessor produces, so model tests do not depend on it.

A sample is a list of parts: ints are text token ids, ("image", tiles), ("video", frames) and ("audio", frames)
insert media with the right number of placeholder tokens. Text is left padded with the pad id.
"""

import torch

from modeling_vita.audio_encoder import get_audio_token_count


def build_inputs(config, samples, generator: torch.Generator | None = None) -> dict:
    vision = config.vision_config
    size = vision.image_size[0]
    tokens_per_tile = config.image_seq_length
    mel_bins = config.audio_config.num_mel_bins
    rows, tiles, frames, clips, num_patches, num_frames = [], [], [], [], [], []
    for sample in samples:
        ids = []
        for part in sample:
            if isinstance(part, int):
                ids.append(part)
                continue
            kind, count = part
            if kind == "image":
                tiles.append(torch.randn(count, 3, size, size, generator=generator))
                num_patches.append(count)
                ids += [config.image_token_id] * (count * tokens_per_tile)
            elif kind == "video":
                frames.append(torch.randn(count, 3, size, size, generator=generator))
                num_frames.append(count)
                ids += [config.video_token_id] * (count * tokens_per_tile)
            elif kind == "audio":
                clips.append(torch.randn(count, mel_bins, generator=generator))
                ids += [config.audio_token_id] * get_audio_token_count(count)
            else:
                raise AssertionError(f"unknown part {part}")
        rows.append(ids)
    pad_id = config.text_config.pad_token_id
    length = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
    for index, row in enumerate(rows):
        input_ids[index, length - len(row) :] = torch.tensor(row)
        attention_mask[index, length - len(row) :] = 1
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
    if tiles:
        inputs["pixel_values"] = torch.cat(tiles)
        inputs["image_num_patches"] = torch.tensor(num_patches)
    if frames:
        inputs["pixel_values_videos"] = torch.cat(frames)
        inputs["video_num_frames"] = torch.tensor(num_frames)
    if clips:
        longest = max(clip.shape[0] for clip in clips)
        features = torch.zeros(len(clips), longest, mel_bins)
        mask = torch.zeros(len(clips), longest, dtype=torch.long)
        for index, clip in enumerate(clips):
            features[index, : clip.shape[0]] = clip
            mask[index, : clip.shape[0]] = 1
        inputs["input_features"] = features
        inputs["input_features_mask"] = mask
    return inputs


def select_sample(config, samples, index, generator_seed: int) -> dict:
    """Inputs of sample `index` alone, with the same random media as in the batch built with the same seed."""
    batch = build_inputs(config, samples, torch.Generator().manual_seed(generator_seed))
    alone = {"input_ids": None}
    rows = batch["attention_mask"][index].bool()
    alone["input_ids"] = batch["input_ids"][index][rows][None]
    alone["attention_mask"] = torch.ones_like(alone["input_ids"])

    def media(sample_list, kind, weight):
        return sum(
            part[1] if weight else 1
            for sample in sample_list
            for part in sample
            if isinstance(part, tuple) and part[0] == kind
        )

    before, own = samples[:index], [samples[index]]
    tile_start, frame_start, clip_start = (
        media(before, "image", True),
        media(before, "video", True),
        media(before, "audio", False),
    )
    n_tiles, n_frames, n_clips = media(own, "image", True), media(own, "video", True), media(own, "audio", False)
    if n_tiles:
        alone["pixel_values"] = batch["pixel_values"][tile_start : tile_start + n_tiles]
    if n_frames:
        alone["pixel_values_videos"] = batch["pixel_values_videos"][frame_start : frame_start + n_frames]
    if n_clips:
        features = batch["input_features"][clip_start : clip_start + n_clips]
        mask = batch["input_features_mask"][clip_start : clip_start + n_clips]
        longest = int(mask.sum(-1).max())
        alone["input_features"] = features[:, :longest]
        alone["input_features_mask"] = mask[:, :longest]
    return alone
