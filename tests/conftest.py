"""Shared fixtures: the real-data root (skips with a reason when absent) and CPU determinism settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _data_root() -> Path | None:
    value = os.environ.get("MEDHASH_DATA_ROOT")
    if value:
        return Path(value)
    default = PROJECT_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding the real datasets (``MEDHASH_DATA_ROOT``, else ``../shared/data``)."""
    root = _data_root()
    if root is None or not root.is_dir():
        pytest.skip("real data root absent: set MEDHASH_DATA_ROOT to the folder holding medpix-2.0/, roco/, ...")
    return root


def require_dataset(root: Path, sub: str) -> Path:
    """``root / sub``, or skip the test naming the missing folder."""
    path = root / sub
    if not path.is_dir():
        pytest.skip(f"dataset folder {path} absent")
    return path


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    except ImportError:
        pass
    yield
