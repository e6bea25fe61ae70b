"""Tests of vita-tiny's supervised pretraining of the vision tower (`recipes/vita_tiny/pretrain_vision.py`): the
attribute labels drawn from the data's `meta`, the heads reading where a shape sits, and a short run on the small data
build that trains the vision tower only and leaves the rest of the model as it was."""

import torch

from recipes.vita_tiny.pretrain_vision import ATTRIBUTES, AttributeHeads, attribute_labels, pretrain_vision_tower
from tests.utils import requires_espeak_and_piper


def test_attribute_labels_ignore_what_a_picture_or_a_video_frame_does_not_show():
    names = list(ATTRIBUTES)
    one = attribute_labels({"colour": "blue", "shape": "square", "count": 1, "position": "left"}, video_frame=False)
    assert one == [ATTRIBUTES[n].index(v) for n, v in zip(names, ("blue", "square", 1, "left"))]
    several = attribute_labels({"colour": "red", "shape": "circle", "count": 3, "position": None}, video_frame=False)
    assert several[names.index("count")] == ATTRIBUTES["count"].index(3)
    assert several[names.index("position")] == -100
    frame = attribute_labels({"colour": "green", "shape": "diamond", "direction": "up"}, video_frame=True)
    assert frame[names.index("shape")] == ATTRIBUTES["shape"].index("diamond")
    assert frame[names.index("count")] == frame[names.index("position")] == -100


def test_attribute_heads_see_which_patch_holds_the_shape():
    # Flattened (not pooled) patch features: the same feature in another patch must be able to score differently.
    torch.manual_seed(0)
    heads = AttributeHeads(num_patches=4, hidden_size=3).eval()
    left, right = torch.zeros(1, 4, 3), torch.zeros(1, 4, 3)
    left[0, 0, 0], right[0, 3, 0] = 1.0, 1.0
    position = list(ATTRIBUTES).index("position")
    assert not torch.allclose(heads(left)[position], heads(right)[position])
    assert [logits.shape[-1] for logits in heads(left)] == [len(c) for c in ATTRIBUTES.values()]


@requires_espeak_and_piper
def test_vision_pretraining_trains_the_vision_tower_only(tmp_path):
    from modeling_vita import VitaForConditionalGeneration
    from recipes.vita_tiny.data import build_vita_tiny_data
    from recipes.vita_tiny.initialize import initialize

    data, init, out = tmp_path / "data", tmp_path / "init", tmp_path / "out"
    build_vita_tiny_data(data, seed=0, small=True)
    initialize(data, init)
    summary = pretrain_vision_tower(data, init, out, epochs=3, batch_size=8)
    losses = [h["loss"] for h in summary["log_history"] if "loss" in h]
    # Per-step losses are noisy (batches of 8, the warmup's first large steps): compare thirds, not two steps.
    third = len(losses) // 3
    assert summary["steps"] >= 3 and sum(losses[-third:]) < sum(losses[:third]), losses
    assert summary["train_tiles"] > 0 and summary["heldout_tiles"] > 0
    assert set(summary["heldout_accuracy"]) == set(ATTRIBUTES)
    assert all(v is None or 0.0 <= v <= 1.0 for v in summary["heldout_accuracy"].values())

    before = VitaForConditionalGeneration.from_pretrained(init).state_dict()
    after = VitaForConditionalGeneration.from_pretrained(out).state_dict()
    changed = {name.split(".")[1] for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"vision_tower"}
    assert (out / "vision_pretrain.json").is_file() and (out / "processor_config.json").is_file()
