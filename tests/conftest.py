"""Shared test fixtures: seeded tiny models and a builder of model inputs that mimics the processor's layout."""

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"

# Keep test runs off the network and away from a user's module cache.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES}")
    return FIXTURES


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
