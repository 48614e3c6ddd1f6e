"""Test-only method ``test-stall`` for the parallel-run tests (imported by subprocess drivers and, through
``DASK_DISTRIBUTED__WORKER__PRELOAD``, by their Dask workers; never by the pytest process, so the real
registry stays as ``tests/test_catalog.py`` expects).

It produces the ``random`` baseline's codes (cheap, deterministic) and reads three environment variables,
which are not part of the cell's identity, so a re-run without them computes the same cells:

``MEDHASH_TEST_DIR``
    Folder of marker files: each fit writes ``<pid>-<seed>`` when it starts.
``MEDHASH_TEST_BARRIER``
    A fit waits (up to 120 s) until markers of this many distinct processes exist: proof that two ``run``
    processes run cells at the same time.
``MEDHASH_TEST_STALL_SEED``
    The fit of this seed writes ``stall-<pid>`` (holding ``"<pid> <seed>"``) and sleeps until killed (a slow,
    killable cell).
``MEDHASH_TEST_STALL_AFTER``
    The same for whatever fit comes after this many fits of the process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from methods import METHODS, register_method
from methods.baselines import RandomCodes

_FITS = [0]  # fits started in this process


def _markers(folder: Path) -> set[str]:
    return {p.name.split("-")[0] for p in folder.glob("*-*") if not p.name.startswith("stall-")}


if "test-stall" not in METHODS:

    @register_method("test-stall", tags=("test",), description="test only: random codes; stalls on request")
    class StallCodes(RandomCodes):
        """Random codes whose fit can wait for a second process or stall until killed (see the module)."""

        def fit(self, train, validation, bits, seed):  # type: ignore[no-untyped-def]
            folder = Path(os.environ.get("MEDHASH_TEST_DIR", ""))
            if os.environ.get("MEDHASH_TEST_DIR"):
                (folder / f"{os.getpid()}-{seed}").write_text("started")
                need = int(os.environ.get("MEDHASH_TEST_BARRIER", "0"))
                deadline = time.monotonic() + 120
                while len(_markers(folder)) < need and time.monotonic() < deadline:
                    time.sleep(0.05)
                _FITS[0] += 1
                after = os.environ.get("MEDHASH_TEST_STALL_AFTER")
                if os.environ.get("MEDHASH_TEST_STALL_SEED") == str(seed) or (after and _FITS[0] > int(after)):
                    (folder / f"stall-{os.getpid()}").write_text(f"{os.getpid()} {seed}")
                    time.sleep(3600)
            return super().fit(train, validation, bits, seed)
