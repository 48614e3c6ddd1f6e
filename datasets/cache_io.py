"""Atomic file writes shared by the feature cache, model saving and result files.

A file is written to a temporary sibling, flushed and fsynced, then renamed over the target
(``os.replace`` is atomic on POSIX), so a killed process never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (parents created).

    Raises
    ------
    OSError
        If the folder cannot be created or written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented strict JSON (RFC 8259: never ``NaN``/``Infinity``) atomically.

    Raises
    ------
    ValueError
        If ``obj`` holds a NaN or infinite float (the message names ``path``); nothing is written.
    """
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False)
    except ValueError as err:
        raise ValueError(f"{path}: not written: {err} (strict JSON has no NaN/Infinity; store null)") from None
    atomic_write_text(path, text + "\n")


def atomic_save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write arrays to an ``.npz`` file atomically."""
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())
