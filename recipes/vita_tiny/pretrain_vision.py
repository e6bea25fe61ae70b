"""Supervised pretraining of vita-tiny's vision tower on the training pictures: its stand-in for InternViT.

Design: VITA starts from InternViT-300M-448px, a pretrained encoder whose patch features already tell shapes apart,
and its alignment stage trains only the projector. vita-tiny's tower starts from random weights; learning outlines
through the projector and the LLM's answer loss alone is fragile: two runs of the same recipe named held-out shapes
right 83% and 40% of the time (colour and count right in both), and the second one was as poor on its training
pictures. As `pretrain_audio.py` gives the audio encoder the dense signal of an ASR encoder, this step gives the
vision tower the signal of a classifier: one linear head per attribute the data generator drew (colour, shape,
count, position) over the flattened patch features the projector reads (flattened, so where a shape sits stays
visible), on the training pictures and on the frames VITA's video sampler takes from the training videos (colour
and shape; those frames went through the video codec). The heads are a training device and are not saved.

    python -m recipes.vita_tiny.pretrain_vision data/vita-tiny runs/vita-tiny/audio_pretrain \
        runs/vita-tiny/vision_pretrain

Reads the rows of the training splits that carry a picture or a video (and their `meta`), and the held-out split for
the report; writes the model of the input folder with the pretrained vision tower (and its processor) to the output
folder, with `vision_pretrain.json` (held-out accuracy per attribute, loss history).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from recipes.vita_tiny.pretrain_audio import pretraining_main, warmup_cosine_schedule
from recipes.vita_tiny.world import COLOURS, POSITIONS, SHAPES

# Classes of each attribute; -100 (ignored) where a picture has no such attribute (a position for several shapes,
# a count or position for a moving shape's frame).
ATTRIBUTES = {"colour": list(COLOURS), "shape": list(SHAPES), "count": [1, 2, 3, 4], "position": list(POSITIONS)}
TRAIN_SPLITS = ("vision_train", "sft_train")


def attribute_labels(meta: dict[str, Any], video_frame: bool) -> list[int]:
    """Class index of every attribute in `ATTRIBUTES` order (-100 where it does not apply)."""
    labels = []
    for name, classes in ATTRIBUTES.items():
        value = meta.get(name)
        if video_frame and name in ("count", "position"):
            value = None
        labels.append(classes.index(value) if value in classes else -100)
    return labels


class AttributeHeads(nn.Module):
    """Flattened patch features -> one set of logits per attribute."""

    def __init__(self, num_patches: int, hidden_size: int) -> None:
        super().__init__()
        self.dropout = nn.Dropout(0.1)
        self.heads = nn.ModuleList(nn.Linear(num_patches * hidden_size, len(c)) for c in ATTRIBUTES.values())

    def forward(self, patch_features: torch.Tensor) -> list[torch.Tensor]:
        flat = self.dropout(patch_features.flatten(1))  # (tiles, patches * hidden)
        return [head(flat) for head in self.heads]


def _media_rows(split_dir: Path) -> list[tuple[str, str, dict[str, Any]]]:
    """(kind, relative path, meta) of every distinct picture and video of a split."""
    from datasets import load_from_disk

    rows = load_from_disk(str(split_dir))
    seen: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for images, videos, meta in zip(rows["images"], rows["videos"], rows["meta"]):
        if not meta:
            continue
        for kind, paths in (("image", images), ("video", videos)):
            for path in paths or []:
                seen.setdefault(path, (kind, path, json.loads(meta)))
    return list(seen.values())


def load_tiles(
    processor: Any, media: Path, items: list[tuple[str, str, dict[str, Any]]]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel tiles as the model sees them ((tiles, 3, size, size)) and their labels ((tiles, attributes))."""
    from processing_vita.image_processing_vita import load_image

    tiles, labels = [], []
    for kind, path, meta in items:
        if kind == "image":
            pixel_values = processor.image_processor([load_image(str(media / path))])["pixel_values"]
        else:
            pixel_values = processor.video_processor([str(media / path)])["pixel_values_videos"]
        tiles.append(pixel_values)
        labels += [attribute_labels(meta, kind == "video")] * pixel_values.shape[0]
    return torch.cat(tiles), torch.tensor(labels)


def patch_features(tower: nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    return tower(pixel_values=pixel_values).last_hidden_state[:, 1:]  # drop CLS, as `get_image_features`


def evaluate_tower(tower: nn.Module, heads: AttributeHeads, tiles: torch.Tensor, labels: torch.Tensor) -> dict:
    """Accuracy per attribute over the tiles where it applies."""
    tower.eval()
    heads.eval()
    with torch.inference_mode():
        logits = [torch.cat(parts) for parts in zip(*(heads(patch_features(tower, tiles[i : i + 256]))
                                                        for i in range(0, len(tiles), 256)))]  # fmt: skip
    out = {}
    for index, name in enumerate(ATTRIBUTES):
        keep = labels[:, index] != -100
        correct = (logits[index][keep].argmax(-1) == labels[keep, index]).float()
        out[name] = round(correct.mean().item(), 4) if keep.any() else None
    return out


def pretrain_vision_tower(
    data_dir: str | Path,
    model_dir: str | Path,
    output_dir: str | Path,
    epochs: int = 6,
    learning_rate: float = 2e-3,
    batch_size: int = 64,
    seed: int = 0,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Train the vision tower of the model in `model_dir` on the attribute heads; save model + processor."""
    from transformers import AutoProcessor

    from modeling_vita import VitaForConditionalGeneration

    start = time.time()
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    missing = [s for s in (*TRAIN_SPLITS, "heldout") if not (data_dir / s).is_dir()]
    if missing:
        raise ValueError(
            f"{data_dir} lacks the splits {missing}; expected the data of `python -m recipes.vita_tiny.data`."
        )
    torch.manual_seed(seed)
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    model = VitaForConditionalGeneration.from_pretrained(model_dir)
    tower = model.model.vision_tower
    media = data_dir / "media"
    train_items = [item for split in TRAIN_SPLITS for item in _media_rows(data_dir / split)]
    train_tiles, train_labels = load_tiles(processor, media, train_items)
    heldout_tiles, heldout_labels = load_tiles(processor, media, _media_rows(data_dir / "heldout"))
    load_seconds = time.time() - start

    with torch.no_grad():
        num_patches, hidden = patch_features(tower, train_tiles[:1]).shape[1:]
    heads = AttributeHeads(num_patches, hidden)
    params = list(tower.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train_tiles) / batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    scheduler = warmup_cosine_schedule(optimizer, total)
    generator = torch.Generator().manual_seed(seed)
    history, step = [], 0
    for epoch in range(epochs):
        if step >= total:
            break
        if epoch:
            accuracy = evaluate_tower(tower, heads, heldout_tiles, heldout_labels)
            history.append({"step": step, **{f"heldout_{k}": v for k, v in accuracy.items()}})
            print(f"[vision pretrain] epoch {epoch}: held-out accuracy {accuracy}", flush=True)
        tower.train()
        heads.train()
        for batch in torch.randperm(len(train_tiles), generator=generator).split(batch_size):
            if step >= total:
                break
            logits = heads(patch_features(tower, train_tiles[batch]))
            labels = train_labels[batch]
            losses = [F.cross_entropy(lg, labels[:, i], ignore_index=-100) for i, lg in enumerate(logits)
                      if (labels[:, i] != -100).any()]  # fmt: skip
            loss = torch.stack(losses).sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            if step % max(1, total // 50) == 0 or step == total:
                history.append({"step": step, "loss": round(loss.item(), 4)})
    accuracy = evaluate_tower(tower, heads, heldout_tiles, heldout_labels)
    print(f"[vision pretrain] done: held-out accuracy {accuracy} ({time.time() - start:.0f} s)", flush=True)
    summary = {
        "train_tiles": len(train_tiles), "heldout_tiles": len(heldout_tiles), "steps": step,
        "heldout_accuracy": accuracy, "load_seconds": round(load_seconds, 1),
        "seconds": round(time.time() - start, 1), "log_history": history,
    }  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    (output_dir / "vision_pretrain.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> None:
    pretraining_main(argv, __doc__.split("\n\n")[0], pretrain_vision_tower, "vision tower", 6, 2e-3)


if __name__ == "__main__":
    main()
