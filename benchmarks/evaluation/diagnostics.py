"""Code diagnostics: distinct codes, per-bit balance, constant bits, and a flag for degenerate codes.

Degenerate codes produce metric values that look like results: if every database code is the same, every
item sits in one distance bucket, tie-aware mAP equals the chance level and ``tie="index"`` mAP measures only
the database shuffle (it can be 1.0). Every evaluation therefore records, for its query codes and its
database codes:

- ``n_codes`` and ``n_distinct_codes`` (distinct rows);
- ``bit_balance``: fraction of ones per bit, in [0, 1] (0.5 is a balanced bit);
- ``constant_bits``: positions whose bit is the same in every code (a wasted bit);
- ``degenerate``: True when a set of at least two codes has one distinct code or at least one constant bit,
  with a one-line ``reason``.

With fewer than two codes nothing can be judged (one code is trivially constant), so such a set is never
flagged.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.evaluation.codes import code_bytes, packed_words
from benchmarks.evaluation.convention import binarize

__all__ = ["DIAGNOSTIC_FIELDS", "code_diagnostics", "diagnostic_fields", "packed_diagnostics"]

#: bit ``b`` (little-endian) of every byte value: ``_BYTE_BITS[v, b]``, shape (256, 8), int64
_BYTE_BITS = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little").astype(np.int64)

#: flat fields :func:`diagnostic_fields` adds to every result row (None for real-valued evaluations)
DIAGNOSTIC_FIELDS: tuple[str, ...] = (
    "n_distinct_codes_query",
    "n_distinct_codes_database",
    "n_constant_bits_query",
    "n_constant_bits_database",
    "bit_balance_query",
    "bit_balance_database",
    "degenerate_codes",
    "degenerate_reason",
)


def _count_distinct_rows(words: np.ndarray) -> int:
    """Distinct rows of ``(n, W)`` uint64 words, by sorting and counting changes (``np.unique`` is slower)."""
    if words.shape[0] == 0:
        return 0
    if words.shape[1] == 1:
        s = np.sort(words[:, 0])
        return 1 + int(np.count_nonzero(s[1:] != s[:-1]))
    s = words[np.lexsort(words.T[::-1])]
    return 1 + int(np.count_nonzero((s[1:] != s[:-1]).any(axis=1)))


def packed_diagnostics(packed: np.ndarray, n_bits: int) -> dict[str, Any]:
    """Diagnostics of packed codes (little-endian bit layout of :func:`~benchmarks.evaluation.codes.pack_bits`).

    Parameters
    ----------
    packed : np.ndarray, shape (n, ceil(n_bits / 8)), dtype uint8
    n_bits : int
        Code length K.

    Returns
    -------
    dict
        ``n_codes`` (int), ``n_distinct_codes`` (int), ``bit_balance`` (list of K floats, fraction of ones per
        bit), ``constant_bits`` (list of int bit positions, empty when n < 2), ``degenerate`` (bool),
        ``reason`` (str or None); see the module docstring.

    Raises
    ------
    ValueError
        If ``packed`` is not a 2-D uint8 array of ``ceil(n_bits / 8)`` columns.
    """
    packed = np.asarray(packed)
    if packed.ndim != 2 or packed.dtype != np.uint8 or packed.shape[1] != code_bytes(n_bits):
        raise ValueError(f"packed codes: expected uint8 of shape (n, {code_bytes(n_bits)}) for {n_bits} bits, "
                         f"got {packed.dtype} {packed.shape}")
    n = int(packed.shape[0])
    words = packed_words(packed, n_bits)
    n_distinct = _count_distinct_rows(words)
    # ones per bit: a histogram of each byte column, times the bits of every byte value (O(n) per byte)
    ones = np.concatenate([np.bincount(packed[:, j], minlength=256) @ _BYTE_BITS for j in range(packed.shape[1])])
    ones = ones[:n_bits]
    balance = ones / n if n else np.full(n_bits, np.nan)
    constant = np.flatnonzero((ones == 0) | (ones == n)).tolist() if n >= 2 else []
    reasons = []
    if n >= 2 and n_distinct == 1:
        reasons.append(f"1 distinct code among {n}")
    if len(constant) == n_bits:
        reasons.append(f"all {n_bits} bits constant")
    elif constant:
        shown = ", ".join(map(str, constant[:8])) + (", ..." if len(constant) > 8 else "")
        reasons.append(f"{len(constant)} of {n_bits} bits constant (bit {shown})")
    return {
        "n_codes": n,
        "n_distinct_codes": n_distinct,
        "bit_balance": [None if np.isnan(b) else float(b) for b in balance],
        "constant_bits": constant,
        "degenerate": bool(reasons),
        "reason": "; ".join(reasons) or None,
    }


def code_diagnostics(bits: np.ndarray, convention: str = "auto") -> dict[str, Any]:
    """Diagnostics of one set of codes: distinct codes, per-bit balance, constant bits, degenerate flag.

    Parameters
    ----------
    bits : np.ndarray, shape (n, K)
        Bool bits, or codes :func:`~benchmarks.evaluation.convention.binarize` turns into bits under
        ``convention`` (relaxed method outputs: ``convention="relaxed"``).
    convention : {"auto", "pm1", "01", "relaxed"}

    Returns
    -------
    dict
        As :func:`packed_diagnostics`.

    Raises
    ------
    ValueError
        As :func:`~benchmarks.evaluation.convention.binarize`.

    Examples
    --------
    >>> d = code_diagnostics(np.ones((4, 16), dtype=bool))
    >>> d["n_distinct_codes"], len(d["constant_bits"]), d["degenerate"]
    (1, 16, True)
    """
    b = binarize(bits, "codes", convention)
    return packed_diagnostics(np.packbits(b, axis=1, bitorder="little"), b.shape[1])


def diagnostic_fields(query: dict[str, Any] | None, database: dict[str, Any] | None) -> dict[str, Any]:
    """Flat result-row fields (:data:`DIAGNOSTIC_FIELDS`) from the query and database diagnostics.

    Parameters
    ----------
    query, database : dict or None
        Outputs of :func:`code_diagnostics` / :func:`packed_diagnostics`; None for real-valued features (every
        field is then None).

    Returns
    -------
    dict
        ``n_distinct_codes_query``, ``n_distinct_codes_database``, ``n_constant_bits_query``,
        ``n_constant_bits_database`` (int), ``bit_balance_query``, ``bit_balance_database`` (list of K floats,
        rounded to 6 decimals), ``degenerate_codes`` (bool: either side degenerate) and ``degenerate_reason``
        (str naming the side(s), or None).
    """
    if query is None or database is None:
        return dict.fromkeys(DIAGNOSTIC_FIELDS)
    sides = (("query", query), ("database", database))
    reasons = [f"{side} codes: {d['reason']}" for side, d in sides if d["degenerate"]]
    out: dict[str, Any] = {}
    for side, d in sides:
        out[f"n_distinct_codes_{side}"] = d["n_distinct_codes"]
        out[f"n_constant_bits_{side}"] = len(d["constant_bits"])
        out[f"bit_balance_{side}"] = [None if b is None else round(b, 6) for b in d["bit_balance"]]
    out["degenerate_codes"] = bool(reasons)
    out["degenerate_reason"] = "; ".join(reasons) or None
    return out
