"""Databases and queries for the efficiency study: packed codes drawn uniformly, trained codes replicated with
fresh ids (or extended with draws from their bit frequencies), float features replicated or drawn from the
real features' statistics; the study's shared constants."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_ENGINES = ("popcount", "BFlat", "hash-ball", "BHash4", "numpy-ip", "FlatIP")
DEFAULT_DB_SIZES = (1_000, 10_000, 100_000, 1_000_000)
#: Width of BiomedCLIP image/text embeddings, the real-valued reference dimension.
BIOMEDCLIP_DIM = 512
#: (query modality, database modality) per task, as in the runner.
TASK_SIDES = {"i2t": ("image", "text"), "t2i": ("text", "image"), "i2i": ("image", "image"), "t2t": ("text", "text")}
_DRAW_CHUNK = 1 << 16
#: Timers selectable with ``--clock``: wall-clock latency, or the CPU time of this process.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}
#: How a trained database is grown to the largest size: ``replicate`` repeats the real codes (and features)
#: cyclically, each copy a new item with a fresh id (row index); ``bit-frequencies`` keeps the real codes once and
#: draws the rest bit by bit with the real codes' per-bit frequencies (Gaussian draws for features).
GROWTH = ("replicate", "bit-frequencies")


def pack_codes(bits: np.ndarray) -> np.ndarray:
    """Pack 0/1 (or bool) bits ``(n, K)`` into ``(n, ceil(K/8))`` uint8, little-endian within each byte
    (evaluation spec, "Codes and distances"; the faiss binary layout)."""
    return np.packbits(np.asarray(bits, dtype=bool), axis=1, bitorder="little")


def bit_frequencies(packed: np.ndarray, bits: int) -> np.ndarray:
    """Fraction of ones of every bit position.

    Parameters
    ----------
    packed : np.ndarray, shape (n, ceil(bits/8)), uint8
    bits : int

    Returns
    -------
    np.ndarray, shape (bits,), float64 in [0, 1]
    """
    unpacked = np.unpackbits(packed, axis=1, count=bits, bitorder="little")
    return unpacked.mean(axis=0, dtype=np.float64)


def draw_codes(n: int, bits: int, rng: np.random.Generator, p_one: np.ndarray | None = None) -> np.ndarray:
    """Draw ``n`` packed ``bits``-bit codes, each bit independently 1 with probability ``p_one[j]``.

    Parameters
    ----------
    n, bits : int
    rng : np.random.Generator
    p_one : np.ndarray | None, shape (bits,)
        Per-bit probability of a one; ``None`` draws uniform codes (every byte uniform).

    Returns
    -------
    np.ndarray, shape (n, ceil(bits/8)), uint8
        Packed little-endian; padding bits (beyond ``bits``) are zero.
    """
    n_bytes = (bits + 7) // 8
    out = np.empty((n, n_bytes), dtype=np.uint8)
    for start in range(0, n, _DRAW_CHUNK):
        stop = min(n, start + _DRAW_CHUNK)
        if p_one is None and bits % 8 == 0:
            out[start:stop] = rng.integers(0, 256, size=(stop - start, n_bytes), dtype=np.uint8)
        else:
            p = np.full(bits, 0.5) if p_one is None else np.asarray(p_one, dtype=np.float64)
            out[start:stop] = pack_codes(rng.random((stop - start, bits), dtype=np.float32) < p)
    return out


def extend_codes(real: np.ndarray, n: int, bits: int, rng: np.random.Generator) -> np.ndarray:
    """A database of ``n`` codes: the real codes first, then codes drawn with their per-bit frequencies.

    Parameters
    ----------
    real : np.ndarray, shape (n_real, ceil(bits/8)), uint8
        Packed trained database codes.
    n : int
        Wanted size; when ``n <= n_real`` the first ``n`` real codes are returned.

    Returns
    -------
    np.ndarray, shape (n, ceil(bits/8)), uint8
    """
    if n <= real.shape[0]:
        return np.ascontiguousarray(real[:n])
    drawn = draw_codes(n - real.shape[0], bits, rng, bit_frequencies(real, bits))
    return np.concatenate([real, drawn], axis=0)


def normalize_rows(x: np.ndarray) -> np.ndarray:
    """L2-normalise the rows of ``x`` in place (zero rows stay zero) and return it; float32 ``(n, d)``."""
    for start in range(0, x.shape[0], _DRAW_CHUNK):
        block = x[start : start + _DRAW_CHUNK]
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        np.divide(block, np.maximum(norms, np.float32(1e-12)), out=block)
    return x


def draw_features(
    n: int, dim: int, rng: np.random.Generator, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> np.ndarray:
    """``n`` L2-normalised float32 features of dimension ``dim``: Gaussian with per-dimension ``mean`` and
    ``std`` (standard normal when ``None``), drawn in chunks. Returns shape ``(n, dim)`` float32."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, _DRAW_CHUNK):
        stop = min(n, start + _DRAW_CHUNK)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        if std is not None:
            block *= std.astype(np.float32)
        if mean is not None:
            block += mean.astype(np.float32)
        out[start:stop] = block
    return normalize_rows(out)


def extend_features(real: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """The L2-normalised real features first, then Gaussian draws matching their per-dimension mean and std.

    Returns shape ``(n, d)`` float32 (``d = real.shape[1]``)."""
    real = normalize_rows(np.array(real, dtype=np.float32))
    if n <= real.shape[0]:
        return np.ascontiguousarray(real[:n])
    mean, std = real.mean(axis=0), real.std(axis=0)
    return np.concatenate([real, draw_features(n - real.shape[0], real.shape[1], rng, mean, std)], axis=0)


def cycle_rows(x: np.ndarray, n: int) -> np.ndarray:
    """``n`` rows of ``x`` (repeated cyclically when ``x`` has fewer): row ``i`` is ``x[i % len(x)]``.

    Used to grow a database by replication: every copy is a new item whose id is its row index (a fresh id),
    so exact engines see ``ceil(n / len(x))`` items per real code, tied and ordered by id.

    Returns shape ``(n, x.shape[1])``, contiguous, same dtype as ``x``."""
    reps = -(-n // x.shape[0])
    return np.ascontiguousarray(np.concatenate([x] * reps, axis=0)[:n]) if reps > 1 else np.ascontiguousarray(x[:n])


def grow_codes(real: np.ndarray, n: int, bits: int, rng: np.random.Generator, growth: str) -> np.ndarray:
    """A database of ``n`` packed codes grown from the real ones by ``growth`` (see :data:`GROWTH`).

    Parameters
    ----------
    real : np.ndarray, shape (n_real, ceil(bits/8)), uint8
    growth : {"replicate", "bit-frequencies"}

    Returns
    -------
    np.ndarray, shape (n, ceil(bits/8)), uint8; its first ``min(n, n_real)`` rows are ``real``.

    Raises
    ------
    ValueError
        For an unknown ``growth``.
    """
    if growth == "replicate":
        return cycle_rows(real, n)
    if growth == "bit-frequencies":
        return extend_codes(real, n, bits, rng)
    raise ValueError(f"unknown database growth {growth!r}; valid: {', '.join(GROWTH)}")


def grow_features(real: np.ndarray, n: int, rng: np.random.Generator, growth: str) -> np.ndarray:
    """``n`` L2-normalised float32 rows grown from ``real`` (``(n_real, d)``): replicated cyclically, or the real
    rows then Gaussian draws with their per-dimension mean and std (``bit-frequencies``). Returns ``(n, d)``."""
    if growth == "replicate":
        return cycle_rows(normalize_rows(np.array(real, dtype=np.float32)), n)
    if growth == "bit-frequencies":
        return extend_features(real, n, rng)
    raise ValueError(f"unknown database growth {growth!r}; valid: {', '.join(GROWTH)}")


@dataclass
class CodeSet:
    """Packed query codes and the largest database of one code length (smaller databases are prefixes)."""

    bits: int
    queries: np.ndarray  # (nq, B) uint8
    database: np.ndarray  # (N_max, B) uint8
    db_source: str  # "uniform", "replicated" or "bit-frequencies" (real codes first in the last two)
    n_real: int = 0
    encode_ms: dict[str, float] = field(default_factory=dict)  # task -> ms per item
    method_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class FeatureSet:
    """Float32 L2-normalised query features and the largest database at one dimension."""

    dim: int
    queries: np.ndarray  # (nq, d) float32
    database: np.ndarray  # (N_max, d) float32
    db_source: str  # "gaussian", or "replicated"/"bit-frequencies" for a real-valued method's embeddings
    space: str = ""  # "" for Gaussian draws, else the real-valued method's name ("real-valued")
    n_real: int = 0

