"""Paper tables from saved result rows only (no retraining): main, ablation, efficiency, significance.

Every number is computed from the rows :func:`benchmarks.results.load_rows` reads: first the rows of one
(variant, dataset, protocol, task, bits, seed, metric, k, tie) are averaged (a cell rerun into another run
folder would otherwise count twice), then mean ± sample standard deviation (``ddof=1``) are taken over seeds.

Seeds are only averaged within one configuration. A row's configuration is :data:`CONFIG_FIELDS`
(``method_config`` and ``dataset_options`` as canonical JSON, ``label_scheme``, ``encoder``, ``dataset_seed``;
fields a row lacks count as ``null``) besides the table keys (variant, dataset, bits, protocol, task, tie, metric,
k). When one (dataset, variant, bits) holds rows of more than one configuration the report refuses with a
one-line :class:`ReportError` naming the fields that differ (the user reports a narrower folder) instead of
averaging different settings as if they were seeds.

``metric`` names a row's metric (``"map"``, ``"p@r2"``) or a metric at one cut-off: ``"map@50"`` matches rows
with metric ``"map@50"``, or ``"map"`` / ``"map@k"`` (any letter placeholder) with ``k == 50``. A name matching
several cut-offs (``"ndcg@k"``), or none, is a :class:`ReportError` listing the metrics found.
Tables render as Markdown (``tabulate``, pipe format) and as LaTeX (``booktabs``: ``\\toprule``,
``\\midrule``, ``\\bottomrule``; the best hashing result of each column in ``\\textbf``).

Significance: the headline method (default ``mcmfh``) is compared with each other hashing method on the
values matched by (seed, bits), each the mean over the tasks both methods have for that (seed, bits) (i2t and t2i
of one trained model are not independent samples), with the two-sided Wilcoxon signed-rank test
(:func:`scipy.stats.wilcoxon`, Wilcoxon 1945; exact null distribution for small n without ties) and the
paired t-test (:func:`scipy.stats.ttest_rel`); Holm's step-down correction (Holm 1979) adjusts the
Wilcoxon p-values over the comparisons of one table.
"""


from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

#: Methods that frame a table but never compete for bold: float features and random codes.
REFERENCE_METHODS = ("real-valued", "random")
#: Per-cell latency / memory metrics written by ``run`` beside the accuracy rows.
CELL_EFFICIENCY_METRICS = (
    "encode_ms_per_item",
    "search_ms_per_query",
    "search_ms_per_query_real",
    "bytes_per_item",
    "bytes_per_item_real",
)
#: Metrics of the ``efficiency`` command (protocol ``"efficiency"``).
ENGINE_METRICS = ("latency_ms_median", "latency_ms_p95", "batch_latency_ms_median", "throughput_qps", "bytes_per_item",
                  "index_bytes", "build_s", "recall@k")
TASK_ORDER = ("i2t", "t2i", "i2i", "t2t")
FLOAT_BITS = "float"
#: Row fields that, besides the table keys, make a configuration: seeds are averaged only within one.
CONFIG_FIELDS = ("method_config", "label_scheme", "encoder", "dataset_options", "dataset_seed")
#: Curve metrics (one row per point); not a table metric.
CURVE_METRICS = ("pr_radius_precision", "pr_radius_recall")
#: Smallest number of pairs for which a two-sided exact Wilcoxon test can reach p < 0.05 (2 / 2**6 = 0.031).
WILCOXON_MIN_N = 6


class ReportError(ValueError):
    """The rows cannot make the requested table (nothing matches the filters); the message says which filter."""


# ---- rows ----------------------------------------------------------------------------------------------------
def bits_label(bits: Any) -> str:
    """``"16"`` for 16 bits, ``"float"`` for a missing / NaN code length (real-valued reference)."""
    if bits is None or (isinstance(bits, float) and math.isnan(bits)):
        return FLOAT_BITS
    return str(int(bits))


def bits_sort_key(label: str) -> tuple[int, int]:
    return (1, 0) if label == FLOAT_BITS else (0, int(label))


def normalise_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``rows`` with the columns the report needs: ``variant`` filled from ``method``, ``bits_label``
    (``"16"``, ``"float"``), float ``value`` / ``chance``, ``k`` as float (NaN when absent) and ``config_key``
    (:func:`config_key`). Rows whose ``value`` is missing or not a number (:func:`invalid_values`) are left out.

    Raises
    ------
    ReportError
        If a required column (``method``, ``dataset``, ``metric``, ``value``) is missing.
    """
    missing = [c for c in ("method", "dataset", "metric", "value") if c not in rows.columns]
    if missing:
        raise ReportError(f"result rows lack columns {missing}")
    df = rows[~invalid_values(rows).to_numpy()].copy()  # counted and reported by build_report
    for col in ("variant", "protocol", "task", "tie", "k", "chance", "seed", "bits", "engine", "db_size"):
        if col not in df.columns:
            df[col] = None
    df["variant"] = df["variant"].where(df["variant"].notna(), df["method"])
    df["bits_label"] = [bits_label(b) for b in df["bits"]]
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    df["chance"] = pd.to_numeric(df["chance"], errors="coerce").astype(float)
    df["k"] = pd.to_numeric(df["k"], errors="coerce").astype(float)
    df["seed"] = df["seed"].fillna(-1)
    for col in ("protocol", "task", "tie"):
        df[col] = df[col].fillna("-")
    df["config_key"] = [config_key(values) for values in zip(*(
        df[c] if c in df.columns else [None] * len(df) for c in CONFIG_FIELDS))] if len(df) else []
    return df


def _canonical(value: Any) -> Any:
    """JSON-ready value with missing → ``None`` and integral floats → int (pandas turns ints with NaN to float)."""
    if value is None:
        return None
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if value.is_integer():
            return int(value)
    return value


def config_key(values: Sequence[Any]) -> str:
    """Canonical JSON (sorted keys) of one row's :data:`CONFIG_FIELDS` values, in that order."""
    return json.dumps(dict(zip(CONFIG_FIELDS, map(_canonical, values))), sort_keys=True, default=str)


def _is_number(value: Any) -> bool:
    """``True`` for an int / float that is not NaN (bools and numeric strings are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return False
    return not math.isnan(float(value))


def invalid_values(rows: pd.DataFrame) -> pd.Series:
    """Boolean mask of rows whose ``value`` is missing, ``null``, ``NaN`` or not a number (e.g. a string).

    ``run`` never writes such a value; a hand-edited or damaged file may (pandas shows a missing key and
    ``null`` as NaN, so all three count alike).

    Parameters
    ----------
    rows : pd.DataFrame
        Raw rows (before :func:`normalise_rows`).
    """
    if "value" not in rows.columns:
        return pd.Series(True, index=rows.index)
    return ~rows["value"].map(_is_number).astype(bool)


def check_one_configuration(df: pd.DataFrame) -> None:
    """Refuse rows in which one (dataset, variant, bits) holds more than one configuration.

    Parameters
    ----------
    df : pd.DataFrame
        Normalised rows (:func:`normalise_rows`, column ``config_key``).

    Raises
    ------
    ReportError
        Naming the first such (dataset, variant, bits), the fields that differ and two of their values.
    """
    if df.empty:
        return
    counts = df.groupby(["dataset", "variant", "bits_label"], dropna=False, sort=True)["config_key"].nunique()
    bad = counts[counts > 1]
    if bad.empty:
        return
    dataset, variant, bits = bad.index[0]
    part = df[(df["dataset"] == dataset) & (df["variant"] == variant) & (df["bits_label"] == bits)]
    configs = [json.loads(k) for k in sorted(set(part["config_key"]))]
    differ = [f for f in CONFIG_FIELDS if len({json.dumps(c.get(f), sort_keys=True) for c in configs}) > 1]

    def short(v: Any) -> str:
        text = json.dumps(v, sort_keys=True, default=str)
        return text if len(text) <= 60 else text[:57] + "..."

    first = differ[0] if differ else "configuration"
    example = " vs ".join(short(c.get(first)) for c in configs[:2])
    more = f" ({len(bad)} (method, bits) groups affected)" if len(bad) > 1 else ""
    raise ReportError(
        f"rows of {variant!r} at {bits} bits on {dataset!r} come from {len(configs)} configurations "
        f"(differing in {', '.join(differ)}: {first} {example}){more}; seeds are only averaged within one "
        "configuration: report a narrower folder holding one configuration per method and code length")


def _display_metric(metric: str, k: float) -> str:
    """``"map@k"``, k = 50 → ``"map@50"``; ``"map"`` without k → ``"map"``."""
    if not math.isfinite(k):
        return metric
    base, at, suffix = metric.rpartition("@")
    cut = f"{k:g}"
    if at and suffix.isalpha():
        return f"{base}@{cut}"
    if at and suffix == cut:
        return metric
    return f"{metric}@{cut}"


def metric_choices(df: pd.DataFrame) -> list[str]:
    """Table metric names the normalised accuracy rows allow (``"map"``, ``"map@50"``, ``"p@10"``, ...)."""
    acc = df[df["protocol"].isin(("unimodal", "paired")) & ~df["metric"].isin(
        (*CELL_EFFICIENCY_METRICS, *CURVE_METRICS, "expert_load"))]
    pairs = acc[["metric", "k"]].drop_duplicates()
    return sorted({_display_metric(str(m), float(k)) for m, k in zip(pairs["metric"], pairs["k"])})


def select(
    df: pd.DataFrame, *, metric: str, tie: str | None = None, protocol: str | None = None, k: float | None = None
) -> pd.DataFrame:
    """Rows of one metric (and tie policy / protocol / k when given).

    ``metric`` is a row's metric name (``"map"``, ``"map@50"``, ``"p@r2"``); when no row carries that exact
    name, ``"NAME@K"`` also matches rows with metric ``NAME`` or ``NAME@<letters>`` (``"map@k"``, ``"p@n"``)
    and ``k == K``.

    Raises
    ------
    ReportError
        If the matching rows hold several cut-offs ``k`` (e.g. ``"ndcg@k"`` with k = 10 and 50): the message lists
        the names to use instead.
    """
    mask = df["metric"] == metric
    if not mask.any() and "@" in metric:
        base, _, cut = metric.rpartition("@")
        try:
            k_cut = float(cut)
        except ValueError:
            k_cut = None
        if k_cut is not None and math.isfinite(k_cut):
            placeholder = np.array([m.rpartition("@")[0] == base and m.rpartition("@")[2].isalpha()
                                    for m in df["metric"].astype(str)], dtype=bool)
            mask = ((df["metric"] == base) | placeholder) & (df["k"] == k_cut)
    if k is None and mask.any():
        cuts = set(df.loc[mask, "k"].fillna(-math.inf))
        if len(cuts) > 1:
            names = sorted({_display_metric(metric, c) for c in cuts if math.isfinite(c)})
            raise ReportError(f"metric {metric!r} has rows at several cut-offs k; choose one of {', '.join(names)}")
    if tie is not None:
        mask &= df["tie"] == tie
    if protocol is not None:
        mask &= df["protocol"] == protocol
    if k is not None:
        mask &= df["k"] == float(k)
    return df[mask]


def per_seed(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Mean ``value`` and ``chance`` per ``keys`` + seed (duplicates of one seed averaged once)."""
    return df.groupby([*keys, "seed"], dropna=False, sort=False)[["value", "chance"]].mean().reset_index()


def summarise(df: pd.DataFrame, keys: Sequence[str]) -> pd.DataFrame:
    """Mean, sample std (``ddof=1``, NaN for one seed), seed count and mean chance per ``keys``.

    Returns
    -------
    pd.DataFrame
        Columns ``keys`` + ``mean``, ``std``, ``n_seeds``, ``chance``.
    """
    seeds = per_seed(df, keys)
    grouped = seeds.groupby(list(keys), dropna=False, sort=False)
    out = grouped["value"].agg(mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else float("nan"),
                               n_seeds="count")
    out["chance"] = grouped["chance"].mean()
    return out.reset_index()


def is_ablation(variant: str, method: str) -> bool:
    try:
        from methods import METHODS

        if variant in METHODS:
            return "ablation" in METHODS.tags(variant)
    except Exception:  # registry import problems must not stop a report built from saved rows
        pass
    return variant != method


# ---- table model ---------------------------------------------------------------------------------------------
