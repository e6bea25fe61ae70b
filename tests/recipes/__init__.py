"""Tests of the training recipes (recipes/): shared helpers to build tiny data and parsed script arguments."""

from pathlib import Path
from typing import Any

import recipes.vita_tiny

REPO_ROOT = Path(__file__).resolve().parents[2]
# Package data of recipes.vita_tiny, found where the package is installed.
SMOKE_YAML = Path(recipes.vita_tiny.__file__).with_name("smoke.yaml")


def smoke_cli_args(dataset: str, media: str, output_dir: str, **overrides: Any) -> list[str]:
    """Command-line arguments for `python -m recipes.sft`: the smoke YAML, pointed at `dataset`, plus `overrides`."""
    args = ["--config", str(SMOKE_YAML), "--dataset_name", dataset, "--media_root", media, "--output_dir", output_dir]
    for key, value in overrides.items():
        args += [f"--{key}", str(value)]
    return args
