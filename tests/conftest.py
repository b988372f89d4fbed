"""Fixtures shared by every test package."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
# Public captures and datasets live beside the repository, never inside it (licences differ).
SHARED_DIR = Path(os.environ.get("PCAPVISION_SHARED", REPO_ROOT.parent / "shared"))

# Keep TensorFlow quiet and deterministic in tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared``; tests that use it are skipped with a reason when it is absent."""
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared data directory {SHARED_DIR} is absent")
    return SHARED_DIR


@pytest.fixture(scope="session")
def shared_captures(shared_dir: Path) -> Path:
    captures = shared_dir / "captures"
    if not (captures / "MANIFEST.csv").is_file():
        pytest.skip(f"{captures}/MANIFEST.csv is absent")
    return captures


@pytest.fixture(scope="session")
def shared_mnist(shared_dir: Path) -> Path:
    path = shared_dir / "datasets" / "mnist-10k.npz"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path
