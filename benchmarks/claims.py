"""Claims on grid cells, so that several ``run`` processes (or machines) sharing one ``--out`` folder compute
each cell once.

A claim is a kernel file lock (:class:`filelock.FileLock`, ``flock(2)`` on Unix) on
``OUT/claims/<dataset>/<method>/<cell_id>.lock``, held by the ``run`` process that dispatches the cell for as
long as the cell runs. The kernel releases it when its holder exits for any reason, SIGKILL included, so a
claim never outlives its process: another ``run`` that found the cell claimed takes it over if the cell is
still unfinished (no result file) once the claim is gone. Beside the lock, the holder writes a small note
(``<cell_id>.owner``: host, pid, start time) that only serves messages; the lock alone decides.

Works wherever the folder's file system supports ``flock`` across its clients (local disks; NFSv4 and Lustre
mounted with ``flock``).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
from pathlib import Path
from typing import Any

from medhash_datasets.cache_io import atomic_write_json


def claim_path(out: Path, dataset: str, method: str, cell_id: str) -> Path:
    """Lock file of one cell: ``OUT/claims/<dataset>/<method>/<cell_id>.lock``."""
    return Path(out) / "claims" / dataset / method / f"{cell_id}.lock"


class CellClaim:
    """Exclusive claim on one cell of an output folder (one instance per attempt; not thread-safe).

    Parameters
    ----------
    path : Path
        The lock file (:func:`claim_path`); its folder is created on the first attempt.

    Examples
    --------
    >>> claim = CellClaim(claim_path(out, "synthetic", "mcmfh", cid))   # doctest: +SKIP
    >>> if claim.try_acquire():                                          # doctest: +SKIP
    ...     try: run_the_cell()
    ...     finally: claim.release()
    """

    def __init__(self, path: Path) -> None:
        from filelock import FileLock

        self.path = Path(path)
        self.owner_path = self.path.with_suffix(".owner")
        self._lock = FileLock(str(self.path))

    @property
    def held(self) -> bool:
        """Whether this instance holds the claim."""
        return bool(self._lock.is_locked)

    def try_acquire(self) -> bool:
        """Take the claim if nobody holds it (never waits); record the owner note. Returns whether taken.

        Raises
        ------
        OSError
            If the claims folder cannot be created or the lock file cannot be opened (e.g. read-only ``--out``).
        """
        from filelock import Timeout

        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return False
        with contextlib.suppress(OSError):
            atomic_write_json(self.owner_path, {
                "host": socket.gethostname(), "pid": os.getpid(),
                "since": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            })
        return True

    def release(self) -> None:
        """Give the claim up (the owner note is removed first); a no-op when not held."""
        if not self.held:
            return
        with contextlib.suppress(OSError):
            self.owner_path.unlink()
        self._lock.release()

    def holder(self) -> str:
        """Who holds the claim, for messages: ``"host:pid since TIME"`` from the owner note, else ``"another process"``."""
        try:
            note: dict[str, Any] = json.loads(self.owner_path.read_text(encoding="utf-8"))
            return f"{note['host']}:{note['pid']} since {note['since']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "another process"


__all__ = ["CellClaim", "claim_path"]
