"""A physical reference for exhaustive search: this machine's sequential read bandwidth, and the time the bytes
an exhaustive engine scans per query would take at that bandwidth (the limit no exhaustive engine beats).

An exhaustive engine (``popcount``, ``BFlat``, ``numpy-ip``, ``FlatIP``) reads every database item once per
query: ``N · B`` bytes of codes or ``N · 4d`` bytes of float32 features. At a sequential read bandwidth of
``β`` bytes/s that takes at least ``N · B / β`` seconds ("roofline" reasoning, Williams, Waterman and
Patterson, "Roofline: an insightful visual performance model", CACM 2009, with the memory roof alone). The
ratio measured / limit says how far an engine is from the memory roof. Databases that fit in the CPU
caches are read faster than from DRAM, so below a few MiB the limit is not a lower bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Array read by :func:`measure_read_bandwidth` (bytes): far beyond any L3 cache, so it streams from DRAM.
DEFAULT_BANDWIDTH_BYTES = 256 << 20


@dataclass(frozen=True)
class Bandwidth:
    """A measured sequential read bandwidth.

    Attributes
    ----------
    bytes_per_s : float
        Median over repeats of ``n_bytes / time`` of one full read.
    n_bytes : int
        Size of the array read.
    repeats : int
    samples_s : tuple[float, ...]
        Seconds of each timed read.
    """

    bytes_per_s: float
    n_bytes: int
    repeats: int
    samples_s: tuple[float, ...]

    @property
    def gb_per_s(self) -> float:
        """Bandwidth in GB/s (10⁹ bytes per second)."""
        return self.bytes_per_s / 1e9

    def limit_ms(self, n_bytes: float) -> float:
        """Milliseconds to read ``n_bytes`` at this bandwidth."""
        return float(n_bytes) / self.bytes_per_s * 1e3


def measure_read_bandwidth(n_bytes: int = DEFAULT_BANDWIDTH_BYTES, repeats: int = 7, *,
                           clock: Callable[[], float] = time.perf_counter) -> Bandwidth:
    """Sequential read bandwidth of this process: ``np.add.reduce`` over a ``uint64`` array of ``n_bytes``.

    A sum reads each word once and does one add per 8 bytes (vectorised), so it is bound by memory, not by
    arithmetic. The array is written first (pages mapped), read once untimed, then ``repeats`` times timed with
    ``clock``; the median is kept (one thread: the engines are timed on one thread too). Time it with the clock
    the engines are timed with: on a shared machine the wall clock also counts the time the process waits.

    Parameters
    ----------
    n_bytes : int
        Bytes read per repeat (>= 8; rounded down to whole 8-byte words).
    repeats : int
        Timed reads (>= 1).
    clock : callable
        Seconds counter (``time.perf_counter`` or ``time.process_time``).

    Returns
    -------
    Bandwidth

    Raises
    ------
    ValueError
        If ``n_bytes < 8`` or ``repeats < 1``.
    """
    if n_bytes < 8 or repeats < 1:
        raise ValueError(f"measure_read_bandwidth: need n_bytes >= 8 and repeats >= 1, got {n_bytes}, {repeats}")
    words = np.ones(n_bytes // 8, dtype=np.uint64)
    np.add.reduce(words)  # warm-up: pages resident, code paths loaded
    samples = []
    for _ in range(repeats):
        t0 = clock()
        np.add.reduce(words)
        samples.append(clock() - t0)
    return Bandwidth(words.nbytes / float(np.median(samples)), int(words.nbytes), repeats, tuple(samples))


def scanned_bytes_per_query(engine_family: str, n_items: int, width: int) -> int | None:
    """Bytes an exhaustive engine reads per query, ``None`` for engines that do not scan the whole database.

    Parameters
    ----------
    engine_family : str
        The engine's ``family`` (``popcount``, ``BFlat``: ``width`` = code bytes ``B``; ``numpy-ip``, ``FlatIP``:
        ``width`` = feature dimension ``d``, 4 bytes each).
    n_items : int
        Database size ``N``.
    width : int
        ``B`` or ``d``.
    """
    if engine_family in ("popcount", "BFlat"):
        return int(n_items) * int(width)
    if engine_family in ("numpy-ip", "FlatIP"):
        return int(n_items) * int(width) * 4
    return None
