"""Binary code conventions: turn ±1, 0/1 or relaxed real codes into bits, one convention for a whole set.

Codes reach the evaluator in three conventions (evaluation spec, "Codes and distances"):

- ``"pm1"``: values in {-1, +1}, bit = ``h > 0`` (DCMH/DJSRH/UCMFH release scripts);
- ``"01"``: values in {0, 1}, bit = ``h > 0``;
- ``"relaxed"``: any real values, bit = ``h >= 0`` (the spec's rule for relaxed codes; a 0 is a 1-bit).

Boolean arrays are bits already and are used as they are under every convention.

A 0 means bit 0 under ``"01"`` and bit 1 under ``"relaxed"`` (``sign(0) = 0`` of a relaxed output), so the
convention must be decided once for **all** matrices that are compared with each other (every code key of a
file, or the query and database codes of one evaluation), never per matrix. ``"auto"`` decides it from the
values of all matrices together:

- every non-boolean matrix holds only values in {-1, 0, 1}:
  no 0 anywhere -> ``"pm1"``; no -1 anywhere -> ``"01"``; a 0 in one matrix and a -1 in any (the same or
  another) -> refused, since the 0 cannot be read unambiguously;
- some floating-point matrix holds other values (relaxed outputs) -> ``"relaxed"``, but a matrix holding
  only values in {-1, 0, 1} with a 0 among them is refused (its 0s could be 0-bits or relaxed zeros);
- an integer matrix with values outside {-1, 0, 1} is refused.

Stating the convention (``"pm1"``, ``"01"`` or ``"relaxed"``) removes the guess; under ``"pm1"``/``"01"`` a
matrix with any other value is refused. Every refusal names the matrix and the values it holds.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["CONVENTIONS", "binarize", "binarize_together"]

#: accepted values of ``convention`` ("auto" decides from the values of all matrices together)
CONVENTIONS = ("auto", "pm1", "01", "relaxed")

_HINT = "state the convention (pm1, 01, or relaxed: bit = h >= 0)"


def _values(a: np.ndarray, limit: int = 6) -> list:
    """The first ``limit`` distinct values of ``a`` (for error messages)."""
    return np.unique(a)[:limit].tolist()


def _check(name: str, h: np.ndarray) -> np.ndarray:
    h = np.asarray(h)
    if h.ndim != 2 or h.shape[1] == 0:
        raise ValueError(f"{name}: expected a 2-D (n, K) code array with K >= 1, got shape {h.shape}")
    if h.dtype != np.bool_ and not (np.issubdtype(h.dtype, np.integer) or np.issubdtype(h.dtype, np.floating)):
        raise ValueError(f"{name}: codes must be float, integer or bool, got dtype {h.dtype} (shape {h.shape})")
    if np.issubdtype(h.dtype, np.floating) and np.isnan(h).any():
        raise ValueError(f"{name}: codes contain NaN (shape {h.shape})")
    return h


def _decide(arrays: dict[str, np.ndarray]) -> str:
    """The convention ``"auto"`` picks for the non-boolean ``arrays`` (module docstring); raises if none fits."""
    zeros, minus, relaxed = [], [], []
    for name, a in arrays.items():
        is_zero, is_minus = a == 0, a == -1
        if not (is_zero | is_minus | (a == 1)).all():
            if not np.issubdtype(a.dtype, np.floating):
                raise ValueError(f"{name}: integer codes must be ±1 or 0/1, found values {_values(a)} (shape {a.shape})")
            relaxed.append(name)
            continue
        if is_zero.any():
            zeros.append(name)
        if is_minus.any():
            minus.append(name)
    if relaxed:
        if zeros:
            z = zeros[0]
            raise ValueError(
                f"{z}: codes hold only values {_values(arrays[z])} while {relaxed[0]} holds relaxed real values; "
                f"its 0s are 0-bits under the 0/1 convention but 1-bits under relaxed codes (bit = h >= 0); {_HINT}"
            )
        return "relaxed"
    if zeros and minus:
        z = zeros[0]
        why = "a 0 is a 1-bit if it came from sign() of a relaxed code, a 0-bit under 0/1"
        if z in minus:
            raise ValueError(f"{z}: codes must be ±1 or 0/1, found values {_values(arrays[z])} (shape "
                             f"{arrays[z].shape}) mixing -1 and 0; {why}; {_HINT}")
        m = minus[0]
        raise ValueError(
            f"{z}: codes hold values {_values(arrays[z])} (shape {arrays[z].shape}) while {m} holds values "
            f"{_values(arrays[m])}; one convention applies to all codes, and under ±1 {why}; {_HINT}"
        )
    return "01" if zeros else "pm1"


def binarize_together(arrays: Mapping[str, np.ndarray], convention: str = "auto") -> tuple[dict[str, np.ndarray], str]:
    """Turn several code matrices into bits under ONE convention, decided over all of them or stated.

    Parameters
    ----------
    arrays : mapping of str -> np.ndarray, each shape (n_i, K_i)
        Code matrices by name (a file key such as ``"q_img"``, or ``"query codes"``); the names appear in
        error messages. Bool arrays are bits already; others are numeric (integer or float).
    convention : {"auto", "pm1", "01", "relaxed"}
        See the module docstring.

    Returns
    -------
    bits : dict of str -> np.ndarray, shape (n_i, K_i), dtype bool
        Same keys and order as ``arrays``; a bool input is returned as is.
    used : str
        The convention applied: ``"pm1"``, ``"01"``, ``"relaxed"``, or ``"bits"`` when every array is bool.

    Raises
    ------
    ValueError
        Unknown convention; an array that is not 2-D with K >= 1, not numeric/bool, or holds NaN; values that
        do not fit the stated convention; or, under ``"auto"``, a set of matrices whose convention is ambiguous
        (module docstring). The message names the matrix, its values and shape.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown code convention {convention!r}; choose from {', '.join(CONVENTIONS)}")
    checked = {name: _check(name, h) for name, h in arrays.items()}
    numeric = {name: h for name, h in checked.items() if h.dtype != np.bool_}
    if not numeric:
        return checked, "bits"
    used = _decide(numeric) if convention == "auto" else convention
    allowed = {"pm1": (-1, 1), "01": (0, 1)}.get(used)
    out = {}
    for name, h in checked.items():
        if h.dtype == np.bool_:
            out[name] = h
        elif used == "relaxed":
            out[name] = h >= 0
        else:
            if not np.isin(h, allowed).all():
                label = "±1" if used == "pm1" else "0/1"
                raise ValueError(
                    f"{name}: codes must be {label} under the {used} convention, found values {_values(h)} "
                    f"(shape {h.shape}); {_HINT}"
                )
            out[name] = h > 0
    return out, used


def binarize(h: np.ndarray, name: str = "codes", convention: str = "auto") -> np.ndarray:
    """Turn one code matrix into bits (:func:`binarize_together` with a single matrix).

    Matrices that are compared with each other (query and database codes) must be binarised together, with
    :func:`binarize_together` or a stated ``convention``, so that one convention applies to both.

    Parameters
    ----------
    h : np.ndarray, shape (n, K)
        Bool bits (returned unchanged), ±1 or 0/1 codes, or relaxed real codes (bit = ``h >= 0``).
    name : str
        Name used in error messages (an array key, a file field).
    convention : {"auto", "pm1", "01", "relaxed"}
        Module docstring; ``"relaxed"`` is the method contract (``HashingMethod.encode`` outputs).

    Returns
    -------
    np.ndarray, shape (n, K), dtype bool

    Raises
    ------
    ValueError
        As :func:`binarize_together` (e.g. an array mixing -1 and 0 under ``"auto"``).
    """
    return binarize_together({name: h}, convention)[0][name]
