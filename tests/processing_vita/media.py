"""Helpers for the processing_vita tests: locate the real media fixtures shared next to the repository."""

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = REPO_ROOT.parent / "shared" / "fixtures"


def fixture_path(name: str) -> Path:
    """Path of a real media fixture, or skip the test with the reason when the shared folder is absent."""
    path = FIXTURES / name
    if not path.is_file():
        pytest.skip(f"real media fixture {path} is absent (it lives in the shared folder next to the repository)")
    return path
