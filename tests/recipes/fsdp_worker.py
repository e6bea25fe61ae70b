"""Worker of test_fsdp_cpu.py: stage-3 training steps of the tiny VITA sharded with FSDP2 over gloo, or the same
steps in one process. Prints one JSON line with the per-step losses (averaged over ranks)."""

import gc
import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard

from modeling_vita import VitaForConditionalGeneration
from modeling_vita.testing_utils import tiny_vita_config
from recipes.sft import set_trainable
from tests.modeling_vita.inputs import build_inputs

# Rank 0's half lacks audio and video, rank 1's lacks images: without idle towers the ranks would hang.
HALVES = [
    [[1, 20, ("image", 2), 21, 22], [1, 23, 24, 25, 26, 27]],
    [[1, 28, ("audio", 150), 29], [1, 30, ("video", 2), 31, ("audio", 120), 32]],
]
STEPS = 3


def batch(index: int) -> dict:
    config = tiny_vita_config()
    inputs = build_inputs(config, HALVES[index], torch.Generator().manual_seed(10 + index))
    inputs["labels"] = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    return inputs


def build_model() -> VitaForConditionalGeneration:
    torch.manual_seed(0)
    # Dropout off so both layouts draw no random numbers that could differ.
    model = VitaForConditionalGeneration(tiny_vita_config(audio_config={"dropout": 0.0})).train()
    set_trainable(model, "multimodal_sft")
    return model


def main() -> None:
    sharded = sys.argv[1] == "fsdp"
    model = build_model()
    if sharded:
        dist.init_process_group("gloo")
        rank = dist.get_rank()
        model.model.run_idle_towers = True
        for module in model.modules():
            if type(module).__name__ in model._no_split_modules:
                fully_shard(module)
        fully_shard(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    losses = []
    for _ in range(STEPS):
        optimizer.zero_grad()
        if sharded:
            loss = model(**batch(rank)).loss
            loss.backward()  # FSDP averages the gradients over the two ranks
            mean = loss.detach().clone()
            dist.all_reduce(mean)
            losses.append(mean.item() / dist.get_world_size())
        else:
            per_half = [model(**batch(index)).loss for index in range(2)]
            loss = sum(per_half) / 2
            loss.backward()
            losses.append(loss.item())
        optimizer.step()
    if not sharded or dist.get_rank() == 0:
        print(json.dumps({"losses": losses}), flush=True)
    if sharded:
        # Drop FSDP's state (it keeps gloo work objects that hold tensors) and meet the other rank before tearing
        # the group down: a rank that exits while its peer still talks to it can abort inside gloo's threads.
        del model, optimizer
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
