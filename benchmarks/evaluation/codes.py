"""Binary codes: pack bits (faiss layout) and compute Hamming distances.

Conventions (``../shared/spec/evaluation.md``, "Codes and distances"):

- a bit is ``h >= 0`` for a relaxed code ``h`` in [-1, 1] (turning ±1, 0/1 or relaxed codes into bits is
  :mod:`benchmarks.evaluation.convention`);
- bits are packed little-endian within each byte: bit ``t`` of a code lives in byte ``t // 8`` at position
  ``t % 8`` (``np.packbits(..., bitorder="little")``, the layout of faiss binary indexes);
- the Hamming distance is ``popcount(a XOR b)``; for ±1 codes it equals ``(K - a . b) / 2``.

The distance kernel XORs whole 64-bit words (packed rows zero-padded to a multiple of 8 bytes) and counts bits
with :func:`numpy.bitwise_count` (a byte lookup table on NumPy < 2), so any ``K >= 1`` works, not only multiples
of 8 or ``K <= 64``.
"""

from __future__ import annotations

import numpy as np

from benchmarks.evaluation.convention import binarize

__all__ = [
    "code_bytes",
    "distance_dtype",
    "hamming_distances",
    "pack_bits",
    "packed_words",
    "unpack_bits",
]

#: popcount of every byte value (fallback kernel when ``np.bitwise_count`` is missing).
_POPCOUNT8 = np.array([bin(v).count("1") for v in range(256)], dtype=np.uint8)

#: rows of the ``(rows, n_database)`` uint64 XOR temporary processed at once (bounds kernel memory).
_KERNEL_PAIRS = 1 << 22


def code_bytes(bits: int) -> int:
    """Bytes per packed code of ``bits`` bits: ``ceil(bits / 8)``."""
    return (int(bits) + 7) // 8


def distance_dtype(bits: int) -> np.dtype:
    """Smallest unsigned dtype holding distances ``0..bits`` (uint8 up to 255 bits, else uint16/uint32)."""
    if bits <= np.iinfo(np.uint8).max:
        return np.dtype(np.uint8)
    if bits <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    return np.dtype(np.uint32)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack boolean codes into bytes, little-endian within each byte (faiss layout).

    Parameters
    ----------
    bits : np.ndarray, shape (n, K), dtype bool (or anything
        :func:`~benchmarks.evaluation.convention.binarize` accepts with ``convention="auto"``)

    Returns
    -------
    np.ndarray, shape (n, ceil(K / 8)), dtype uint8
        Bit ``t`` of row ``i`` is ``(out[i, t // 8] >> (t % 8)) & 1``; padding bits are zero.
    """
    return np.packbits(binarize(bits, "bits"), axis=1, bitorder="little")


def unpack_bits(packed: np.ndarray, bits: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``(n, ceil(bits/8))`` uint8 -> ``(n, bits)`` bool."""
    packed = _check_packed(packed, bits, "packed")
    return np.unpackbits(packed, axis=1, count=bits, bitorder="little").astype(bool)


def _check_packed(packed: np.ndarray, bits: int | None, name: str) -> np.ndarray:
    packed = np.asarray(packed)
    if packed.ndim != 2 or packed.dtype != np.uint8:
        raise ValueError(f"{name}: expected packed codes as a 2-D uint8 array, got {packed.dtype} shape {packed.shape}")
    if bits is not None and code_bytes(bits) != packed.shape[1]:
        raise ValueError(f"{name}: {bits} bits need {code_bytes(bits)} bytes per code, got shape {packed.shape}")
    return packed


def packed_words(packed: np.ndarray, bits: int | None = None) -> np.ndarray:
    """View packed codes as 64-bit words (zero-padded; padding bits beyond ``bits`` cleared).

    Parameters
    ----------
    packed : np.ndarray, shape (n, B), dtype uint8
    bits : int, optional
        Code length K (``B == ceil(K/8)``); bits at positions >= K are masked to zero. Default ``8 * B``.

    Returns
    -------
    np.ndarray, shape (n, ceil(B / 8)), dtype uint64
        Each row is the code as little-endian 64-bit words, so XOR + popcount gives Hamming distances.
    """
    packed = _check_packed(packed, bits, "packed")
    n, nbytes = packed.shape
    n_words = max(1, (nbytes + 7) // 8)
    buf = np.zeros((n, n_words * 8), dtype=np.uint8)
    buf[:, :nbytes] = packed
    if bits is not None and bits % 8:
        buf[:, nbytes - 1] &= np.uint8((1 << (bits % 8)) - 1)
    return buf.view("<u8")


def _popcount_u64(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _POPCOUNT8[x.view(np.uint8)].reshape(*x.shape, 8).sum(axis=-1, dtype=np.uint8)


def hamming_distances(q_packed: np.ndarray, db_packed: np.ndarray, bits: int | None = None) -> np.ndarray:
    """All pairwise Hamming distances between packed query and database codes.

    Parameters
    ----------
    q_packed : np.ndarray, shape (nq, B), dtype uint8
        Packed query codes (:func:`pack_bits`), or 64-bit words from :func:`packed_words` (dtype uint64).
    db_packed : np.ndarray, shape (nd, B), dtype uint8 (or uint64 words, like ``q_packed``)
    bits : int, optional
        Code length K; ``B`` must equal ``ceil(K/8)`` and padding bits are ignored. Default ``8 * B``.

    Returns
    -------
    np.ndarray, shape (nq, nd), dtype :func:`distance_dtype` (uint8 for K <= 255)
        ``popcount(q XOR db)`` per pair, in 0..K.

    Raises
    ------
    ValueError
        If the arrays are not 2-D packed codes of the same width (message gives both shapes).

    Notes
    -----
    Work is done row block by row block so the uint64 temporary stays under ~32 MiB; callers wanting
    bounded *output* memory pass query chunks (as :mod:`benchmarks.evaluation.ranking` does).
    """
    if np.asarray(q_packed).dtype == np.uint64 and np.asarray(db_packed).dtype == np.uint64:
        qw, dw = np.asarray(q_packed), np.asarray(db_packed)
        k_max = 64 * qw.shape[1] if bits is None else bits
    else:
        q_packed = _check_packed(q_packed, bits, "query codes")
        db_packed = _check_packed(db_packed, bits, "database codes")
        if q_packed.shape[1] != db_packed.shape[1]:
            raise ValueError(
                f"query codes {q_packed.shape} and database codes {db_packed.shape} have different widths"
            )
        qw, dw = packed_words(q_packed, bits), packed_words(db_packed, bits)
        k_max = 8 * q_packed.shape[1] if bits is None else bits
    if qw.ndim != 2 or dw.ndim != 2 or qw.shape[1] != dw.shape[1]:
        raise ValueError(f"query words {qw.shape} and database words {dw.shape} must be 2-D with equal widths")
    nq, nd = qw.shape[0], dw.shape[0]
    out = np.empty((nq, nd), dtype=distance_dtype(k_max))
    step = max(1, _KERNEL_PAIRS // max(nd, 1))
    for s in range(0, nq, step):
        e = min(nq, s + step)
        acc = _popcount_u64(qw[s:e, None, 0] ^ dw[None, :, 0])
        if qw.shape[1] == 1:
            out[s:e] = acc
            continue
        acc = acc.astype(out.dtype)
        for w in range(1, qw.shape[1]):
            acc += _popcount_u64(qw[s:e, None, w] ^ dw[None, :, w])
        out[s:e] = acc
    return out
