"""Efficiency rows as frames: one line per engine, code length or feature set and database size, and the
label each such series carries in tables and figures."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def is_missing(value: Any) -> bool:
    """Whether ``value`` is absent: ``None`` or a non-finite float (NaN from a pivot)."""
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def series_label(engine: str, bits: Any, dim: Any, space: Any = "") -> str:
    """``"popcount, 16 bits"`` for codes; ``"FlatIP d=512"`` (Gaussian) or ``"FlatIP d=128 (real-valued)"``."""
    if not is_missing(bits):
        return f"{engine}, {int(bits)} bits"
    label = f"{engine} d={int(dim)}"
    return label + (f" ({space})" if space else "")


def search_frame(rows: Sequence[dict[str, Any]]):
    """Search rows as one line per (engine, bits, feature_dim, feature_space, db_size), metrics as columns,
    plus ``series`` (:func:`series_label`) and ``exact`` (from the engine registry; ``True`` for engines no longer
    registered).

    Returns
    -------
    pandas.DataFrame
        Empty when there are no search rows.
    """
    import pandas as pd

    from benchmarks.search.registry import create_engine

    df = pd.DataFrame([r for r in rows if r.get("engine") and r.get("kind", "search") == "search"])
    if df.empty:
        return df
    for col in ("feature_space", "bits", "feature_dim"):
        if col not in df:
            df[col] = None
    df["feature_space"] = df["feature_space"].fillna("")
    keys = ["engine", "bits", "feature_dim", "feature_space", "db_size"]
    wide = df.pivot_table(index=keys, columns="metric", values="value", aggfunc="first", dropna=False).reset_index()
    wide = wide.dropna(subset=["latency_ms_median"])
    wide["series"] = [series_label(r["engine"], r["bits"], r["feature_dim"], r["feature_space"]) for _, r in wide.iterrows()]
    wide["exact"] = [create_engine(e).exact if _known(e) else True for e in wide["engine"]]
    return wide


def _known(spec: str) -> bool:
    from benchmarks.search.registry import create_engine

    try:
        create_engine(spec)
    except Exception:  # noqa: BLE001 - rows written by another version may name engines no longer registered
        return False
    return True


def metric_of(line: Any, metric: str) -> float | None:
    """``line[metric]`` as a float, ``None`` when absent or not finite."""
    value = line.get(metric) if hasattr(line, "get") else None
    return None if is_missing(value) else float(value)
