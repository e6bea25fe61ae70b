"""Stage-3 training under FSDP2 on two CPU processes (gloo) matches one process on the same batches.

accelerate enables FSDP only with accelerators, so the recipe's FSDP config cannot run on this CPU machine; this
test shards the model with torch's `fully_shard` directly (the FSDP2 that accelerate's fsdp_version 2 uses), on the
model's `_no_split_modules`, with batches where one rank lacks audio/video and the other images.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("fsdp_worker.py")


def _run(*args: str) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"stdout: {result.stdout[-1000:]}\nstderr: {result.stderr[-3000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])["losses"]


@pytest.mark.slow
def test_fsdp_two_cpu_processes_match_one_process():
    single = _run(str(WORKER), "single")
    sharded = _run("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(WORKER), "fsdp")
    assert len(single) == len(sharded) == 3
    assert single[0] != single[-1]  # the steps did train
    for expected, got in zip(single, sharded):
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-5)
