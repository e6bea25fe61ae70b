"""`VitaDataCollator`: rows of the converted VITA format -> a right-padded training batch with answer-only labels.

As the released training does: the prompt `system:{SYS}</s>\\nuser:{Q}</s>\\nbot:{A}</s>`, the loss on the answers only
(the state token and the closing `</s>` included), image/text samples packed into long rows and video samples never.
TRL leaves the collator of a model with audio and video to us. The row format is documented in `recipes/data.py`.

Labels are built without searching: each sample is rendered as a list of segments, each flagged trained or not,
the processor tokenizes the segments separately (expanding media placeholders across them in order), and the ids
are concatenated. Every segment boundary sits next to a special token (`</s>` or the state token), so for tokenizers
that split on special tokens first the ids equal those of the whole rendered conversation (tests check this).

Packing (`pack_to_length`): samples are concatenated into rows of at most that many tokens and the batch carries
`position_ids` restarting at 0 for every sample and no `attention_mask`; transformers' mask builder then finds the
sample boundaries from the position ids (`find_packed_sequence_indices`) and keeps attention inside each sample, with
sdpa and eager alike, as long as the forward runs without a KV cache (`use_cache=False`, which TRL's training step
passes; with a cache transformers skips the detection). Padding at the end of a row forms a segment of its own.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from processing_vita import SYSTEM_PROMPTS

IGNORE_INDEX = -100
_MEDIA_TEXT = {"image": "<image>\n", "video": "<video>\n", "audio": "<audio>"}


def render_segments(
    row: dict[str, Any], eos: str = "</s>", system_prompts: dict[str, str] | None = None
) -> list[tuple[str, bool]]:
    """The conversation of `row` as (text, trained) segments in the released model's `mixtral_two` format.

    The system prompt follows the modality (video, image, else text/audio; from `system_prompts`, default the
    released ones, as the processor's chat template does) unless a system message is given;
    user media blocks render as the chat template does (`<image>\\n`, `<video>\\n`, `<audio>`) in their order.
    """
    messages = row["messages"]
    system = next((m for m in messages if m["role"] == "system"), None)
    prompts = system_prompts or SYSTEM_PROMPTS
    if system is not None:
        system_text = "".join(b["text"] for b in system["content"] if b["type"] == "text")
    elif row.get("videos"):
        system_text = prompts["video"]
    elif row.get("images"):
        system_text = prompts["image"]
    else:
        system_text = prompts["lang"]
    turns = [m for m in messages if m["role"] != "system"]
    last_assistant = max((i for i, m in enumerate(turns) if m["role"] == "assistant"), default=None)
    if last_assistant is None:
        raise ValueError(
            f"Row {row.get('id', '?')!r} has no assistant turn; expected at least one answer to train on."
        )

    segments: list[tuple[str, bool]] = []
    prompt = "system:" + system_text + eos
    for index, message in enumerate(turns):
        if message["role"] == "user":
            body = "".join(_MEDIA_TEXT[b["type"]] for b in message["content"] if b["type"] != "text")
            body += "".join(b["text"] for b in message["content"] if b["type"] == "text")
            prompt += "\nuser:" + body + eos
        elif message["role"] == "assistant":
            answer = "".join(b["text"] for b in message["content"] if b["type"] == "text")
            # `end_tag=False` (original field): the last answer is cut before its `</s>`, so no EOS is learned there.
            if index != last_assistant or row.get("end_tag", True):
                answer += eos
            segments += [(prompt + "\nbot:", False), (answer, True)]
            prompt = ""
        else:
            raise ValueError(
                f"Row {row.get('id', '?')!r} has a message with role {message['role']!r}; expected 'system', "
                "'user' or 'assistant'."
            )
    if prompt:
        segments.append((prompt, False))
    return segments


class VitaDataCollator:
    """Turns converted rows into `input_ids`, `labels`, `attention_mask` (or `position_ids` when packing) and the
    media tensors of `VitaProcessor` (`pixel_values`, `image_num_patches`, `pixel_values_videos`, `video_num_frames`,
    `input_features`, `input_features_mask`), ordered as the placeholders appear in the flattened batch."""

    def __init__(
        self, processor: Any, media_root: str | os.PathLike | None = None, pack_to_length: int | None = None
    ) -> None:
        if pack_to_length is not None and pack_to_length <= 0:
            raise ValueError(f"pack_to_length={pack_to_length}; expected a positive token count or None (no packing).")
        self.processor = processor
        self.media_root = Path(media_root) if media_root is not None else None
        self.pack_to_length = pack_to_length
        self.system_prompts = getattr(processor, "system_prompts", None)
        tokenizer = processor.tokenizer
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos = tokenizer.eos_token or "</s>"
        # The tokenizer would add BOS to every segment; add it once, at the start, when it normally adds one.
        probe = tokenizer("a")["input_ids"]
        self.bos_ids = [probe[0]] if tokenizer.bos_token_id is not None and probe[0] == tokenizer.bos_token_id else []

    def _media(self, paths: list[Any] | None) -> list[Any]:
        if not paths:
            return []
        if self.media_root is None:
            return list(paths)
        return [str(self.media_root / p) if isinstance(p, str) else p for p in paths]

    def encode(self, row: dict[str, Any]) -> dict[str, Any]:
        """One row -> 1-D `input_ids` and `labels` plus its media tensors (no padding)."""
        segments = render_segments(row, self.eos, self.system_prompts)
        audios = self._media(row.get("audios"))
        encoded = self.processor(
            text=[text for text, _ in segments],
            images=self._media(row.get("images")) or None,
            videos=self._media(row.get("videos")) or None,
            audio=audios or None,
            padding=False,
            add_special_tokens=False,
        )
        input_ids, labels = list(self.bos_ids), [IGNORE_INDEX] * len(self.bos_ids)
        for ids, (_, trained) in zip(encoded["input_ids"], segments):
            input_ids += ids
            labels += ids if trained else [IGNORE_INDEX] * len(ids)
        sample = {
            "input_ids": torch.tensor(input_ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
            "has_video": bool(row.get("videos")),
        }
        for key in ("pixel_values", "image_num_patches", "pixel_values_videos", "video_num_frames"):
            if key in encoded:
                sample[key] = torch.as_tensor(encoded[key])
        if "input_features" in encoded:
            sample["input_features"] = torch.as_tensor(encoded["input_features"])
            sample["input_features_mask"] = torch.as_tensor(encoded["input_features_mask"])
        return sample

    def pack(self, samples: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Greedy, order-preserving packing into rows of at most `pack_to_length` tokens; video samples (long,
        and never packed in the original) and over-long samples get a row of their own."""
        if self.pack_to_length is None:
            return [[s] for s in samples]
        rows: list[list[dict[str, Any]]] = []
        current: list[dict[str, Any]] = []
        length = 0
        for sample in samples:
            n = len(sample["input_ids"])
            if current and (sample["has_video"] or length + n > self.pack_to_length):
                rows.append(current)
                current, length = [], 0
            if sample["has_video"]:
                rows.append([sample])
                continue
            current.append(sample)
            length += n
        if current:
            rows.append(current)
        return rows

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        groups = self.pack([self.encode(row) for row in rows])
        ordered = [s for group in groups for s in group]
        width = max(sum(len(s["input_ids"]) for s in group) for group in groups)
        input_ids = torch.full((len(groups), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(groups), width), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(groups), width), dtype=torch.long)
        position_ids = torch.zeros((len(groups), width), dtype=torch.long)
        for r, group in enumerate(groups):
            start = 0
            for sample in group:
                n = len(sample["input_ids"])
                input_ids[r, start : start + n] = sample["input_ids"]
                labels[r, start : start + n] = sample["labels"]
                position_ids[r, start : start + n] = torch.arange(n)
                start += n
            attention_mask[r, :start] = 1
            position_ids[r, start:] = torch.arange(width - start)
        batch: dict[str, torch.Tensor] = {"input_ids": input_ids, "labels": labels}
        if self.pack_to_length is None:
            batch["attention_mask"] = attention_mask
        else:
            batch["position_ids"] = position_ids

        for key in ("pixel_values", "image_num_patches", "pixel_values_videos", "video_num_frames"):
            parts = [s[key] for s in ordered if key in s]
            if parts:
                batch[key] = torch.cat(parts)
        clips = [s for s in ordered if "input_features" in s]
        if clips:
            frames = max(s["input_features"].shape[1] for s in clips)
            features, masks = [], []
            for s in clips:
                pad = frames - s["input_features"].shape[1]
                features.append(torch.nn.functional.pad(s["input_features"], (0, 0, 0, pad)))
                masks.append(torch.nn.functional.pad(s["input_features_mask"], (0, pad)))
            batch["input_features"] = torch.cat(features)
            batch["input_features_mask"] = torch.cat(masks)
        return batch


__all__ = ["IGNORE_INDEX", "VitaDataCollator", "render_segments"]
