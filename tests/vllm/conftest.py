"""Fixtures of the vLLM tests (marker `vllm`): they run in `.venv-vllm` (`make test-vllm`), and skip elsewhere.

The reference folders come from `python -m tests.vllm.make_reference` run with the project's own environment
(transformers >= 5.24, which `modeling_vita` needs and vLLM's pinned 5.19 lacks); `make test-vllm` writes them to
`build/vllm_reference` and passes the path in `VITA_VLLM_REFERENCE`.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REFERENCE = Path(os.environ.get("VITA_VLLM_REFERENCE", REPO_ROOT / "build" / "vllm_reference"))
# Small enough for the shared CPU machine: 5% of RAM for the KV cache, eager mode (no compile), float32 so the
# numbers can be compared with transformers' float32 reference.
ENGINE_ARGS = {
    "max_model_len": 1024,
    "gpu_memory_utilization": 0.05,
    "enforce_eager": True,
    "dtype": "float32",
    "max_num_seqs": 4,
    "limit_mm_per_prompt": {"image": 1, "audio": 1, "video": 1},
}


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    reason = None
    if importlib.util.find_spec("vllm") is None:
        reason = "vLLM is not installed here; `make test-vllm` runs these tests in .venv-vllm"
    for item in items:
        if Path(item.fspath).parent == here:
            item.add_marker(pytest.mark.vllm)
            if reason:
                item.add_marker(pytest.mark.skip(reason=reason))


def reference_folder(backbone: str) -> Path:
    folder = REFERENCE / backbone
    if not (folder / "reference.json").is_file():
        pytest.skip(
            f"no reference at {folder}; build it with the project's environment: "
            f"python -m tests.vllm.make_reference {REFERENCE} (make test-vllm does)"
        )
    return folder


def load_reference(folder: Path) -> dict:
    return json.loads((folder / "reference.json").read_text())
