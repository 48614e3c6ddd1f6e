"""Paper tables from saved result rows only (no retraining): main, ablation, efficiency, significance.

Every number is computed from the rows :func:`benchmarks.results.load_rows` reads: first the rows of one
(variant, dataset, protocol, task, bits, seed, metric, k, tie) are averaged (a cell rerun into another run
folder would otherwise count twice), then mean ± sample standard deviation (``ddof=1``) are taken over seeds.

Seeds are only averaged within one configuration. A row's configuration is :data:`CONFIG_FIELDS`
(``method_config`` and ``dataset_options`` as canonical JSON, ``label_scheme``, ``encoder``, ``dataset_seed``;
fields a row lacks count as ``null``) besides the table keys (variant, dataset, bits, protocol, task, tie, metric,
k). A row of a cell whose model was selected under the protocol it evaluates (``select_per_protocol``: UCMFH,
MCMFH, one cell per protocol) counts its ``method_config.select_protocol`` as ``"evaluated"``, so the two cells
of one (method, bits, seed) are one configuration; a user-pinned ``select_protocol`` stays a setting.
When one (dataset, variant, bits) holds rows of more than one configuration the report refuses with a
one-line :class:`ReportError` naming the fields that differ (the user reports a narrower folder) instead of
averaging different settings as if they were seeds. The message names every key that differs with its values
(``method_config.lr: 0.001 vs 0.01``). :func:`split_configurations` instead reports each configuration as its
own row: ``"ddbh (tuned)"`` for rows carrying a ``tuning`` record, ``"ddbh (config 2)"`` otherwise.

``metric`` names a row's metric (``"map"``, ``"p@r2"``) or a metric at one cut-off: ``"map@50"`` matches rows
with metric ``"map@50"``, or ``"map"`` / ``"map@k"`` (any letter placeholder) with ``k == 50``. A name matching
several cut-offs (``"ndcg@k"``), or none, is a :class:`ReportError` listing the metrics found.
Tables render as Markdown (``tabulate``, pipe format) and as LaTeX (``booktabs``: ``\\toprule``,
``\\midrule``, ``\\bottomrule``; the best hashing result of each column, at printed precision, in ``\\textbf``).
Metric names are shown one way everywhere (:func:`metric_name`: ``mAP@all``, ``mAP@50``, ``P@10``, ``NDCG@10``).

Significance: the headline method (default ``mcmfh``) is compared with each other hashing method on the
values matched by (seed, bits), each the mean over the tasks both methods have for that (seed, bits) (i2t and t2i
of one trained model are not independent samples), with the two-sided Wilcoxon signed-rank test
(:func:`scipy.stats.wilcoxon`, Wilcoxon 1945; differences within :data:`TIE_TOLERANCE` are ties, removed before
the count and the test; exact null distribution for small n without tied ranks, else the normal approximation)
and the paired t-test (:func:`scipy.stats.ttest_rel`); Holm's step-down correction (Holm 1979) adjusts the
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
#: Paired differences with ``|d| <= TIE_TOLERANCE`` are ties (``0.1 + 0.2`` vs ``0.3`` differ by 5.6e-17): counted
#: as ties in wins/ties/losses and removed before the Wilcoxon test. Metric values are means of at most ~1e6
#: terms in [0, 1], so float rounding stays far below 1e-12 while real differences are far above it.
TIE_TOLERANCE = 1e-12


class ReportError(ValueError):
    """The rows cannot make the requested table (nothing matches the filters); the message says which filter."""


class NoTable(Exception):
    """A table kind does not apply to these rows (e.g. significance with one seed); the message says why."""


# ---- rows ----------------------------------------------------------------------------------------------------
def bits_label(bits: Any) -> str:
    """``"16"`` for 16 bits, ``"float"`` for a missing / NaN code length (real-valued reference)."""
    if bits is None or (isinstance(bits, float) and math.isnan(bits)):
        return FLOAT_BITS
    return str(int(bits))


def bits_sort_key(label: str) -> tuple[int, int]:
    return (1, 0) if label == FLOAT_BITS else (0, int(label))


def normalise_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``rows`` with the columns the report needs: ``variant`` filled from ``method``, ``entry`` (the
    registry name the row was run as; stays when :func:`split_configurations` relabels ``variant``),
    ``bits_label`` (``"16"``, ``"float"``), float ``value`` / ``chance``, ``k`` as float (NaN when absent),
    ``tuning`` (the row's tuning record as a dict, or ``None``) and ``config_key`` (:func:`config_key`). Rows whose
    ``value`` is missing or not a number (:func:`invalid_values`) are left out. Normalised rows are returned as
    they are (the function is idempotent).

    Raises
    ------
    ReportError
        If a required column (``method``, ``dataset``, ``metric``, ``value``) is missing.
    """
    if {"entry", "config_key", "bits_label"} <= set(rows.columns):
        return rows
    missing = [c for c in ("method", "dataset", "metric", "value") if c not in rows.columns]
    if missing:
        raise ReportError(f"result rows lack columns {missing}")
    df = rows[~invalid_values(rows).to_numpy()].copy()  # counted and reported by build_report
    for col in ("variant", "protocol", "task", "tie", "k", "chance", "seed", "bits", "engine", "db_size", "tuning"):
        if col not in df.columns:
            df[col] = None
    df["variant"] = df["variant"].where(df["variant"].notna(), df["method"])
    df["entry"] = df["variant"]
    df["tuning"] = [t if isinstance(t, dict) else None for t in df["tuning"]]
    df["bits_label"] = [bits_label(b) for b in df["bits"]]
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
    df["chance"] = pd.to_numeric(df["chance"], errors="coerce").astype(float)
    df["k"] = pd.to_numeric(df["k"], errors="coerce").astype(float)
    df["seed"] = df["seed"].fillna(-1)
    for col in ("protocol", "task", "tie"):
        df[col] = df[col].fillna("-")
    columns = [df[c] if c in df.columns else [None] * len(df) for c in CONFIG_FIELDS]
    if "select_per_protocol" in df.columns:  # one model per evaluated protocol: one configuration, not two
        at = CONFIG_FIELDS.index("method_config")
        columns[at] = [_without_selection(c) if flag is True else c
                       for c, flag in zip(columns[at], df["select_per_protocol"])]
    df["config_key"] = [config_key(values) for values in zip(*columns)] if len(df) else []
    return df


def _without_selection(method_config: Any) -> Any:
    """``method_config`` with ``select_protocol`` set to ``"evaluated"``: a row of a cell selected under the
    protocol it evaluates (``select_per_protocol``) belongs to the same configuration as its sibling cell's."""
    if not isinstance(method_config, dict) or "select_protocol" not in method_config:
        return method_config
    return {**method_config, "select_protocol": "evaluated"}


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


def _flatten(value: Any, prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` under prefix ``p`` → ``{"p.a.b": 1}``; non-dicts map to themselves."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key in sorted(value):
            out.update(_flatten(value[key], f"{prefix}.{key}"))
        return out
    return {prefix: value}


def _short(value: Any, limit: int = 40) -> str:
    text = "(absent)" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


_ABSENT = object()


def config_differences(configs: Sequence[dict[str, Any]]) -> list[tuple[str, list[Any]]]:
    """The keys (dotted paths into :data:`CONFIG_FIELDS`, e.g. ``method_config.lr``) whose values differ between
    ``configs``, each with its value per configuration (``_ABSENT`` where a configuration lacks the key)."""
    flat = []
    for c in configs:
        f: dict[str, Any] = {}
        for name in CONFIG_FIELDS:
            f.update(_flatten(c.get(name), name))
        flat.append(f)
    keys = list(dict.fromkeys(k for f in flat for k in f))
    out = []
    for key in keys:
        values = [f.get(key, _ABSENT) for f in flat]
        if len({_short(v, 10**6) for v in values}) > 1:
            out.append((key, values))
    return out


def describe_differences(configs: Sequence[dict[str, Any]], *, limit: int = 6) -> str:
    """``"method_config.lr: 0.001 vs 0.01; method_config.epochs: 50 vs 100"`` (at most ``limit`` keys)."""
    diffs = config_differences(configs)
    parts = [f"{key}: {' vs '.join(_short(v) for v in values)}" for key, values in diffs[:limit]]
    if len(diffs) > limit:
        parts.append(f"and {len(diffs) - limit} more keys")
    return "; ".join(parts) or "no field differs"


def check_one_configuration(df: pd.DataFrame) -> None:
    """Refuse rows in which one (dataset, variant, bits) holds more than one configuration.

    Parameters
    ----------
    df : pd.DataFrame
        Normalised rows (:func:`normalise_rows`, column ``config_key``).

    Raises
    ------
    ReportError
        Naming the first such (dataset, variant, bits) and every key that differs with its values
        (:func:`describe_differences`), and how to separate them.
    """
    if df.empty:
        return
    counts = df.groupby(["dataset", "variant", "bits_label"], dropna=False, sort=True)["config_key"].nunique()
    bad = counts[counts > 1]
    if bad.empty:
        return
    dataset, variant, bits = bad.index[0]
    part = df[(df["dataset"] == dataset) & (df["variant"] == variant) & (df["bits_label"] == bits)]
    configs = [json.loads(k) for k in _configs_in_order(part)]
    more = f" ({len(bad)} (method, bits) groups affected)" if len(bad) > 1 else ""
    raise ReportError(
        f"rows of {variant!r} at {bits} bits on {dataset!r} come from {len(configs)} configurations "
        f"(differing in {describe_differences(configs)}){more}; seeds are only averaged within one "
        "configuration: report a narrower folder holding one configuration per method and code length, "
        "select a run (--run-id / --label) or report each configuration as its own row (--split-configs)")


def _configs_in_order(part: pd.DataFrame) -> list[str]:
    """The distinct ``config_key`` values of ``part``, oldest first (earliest ``timestamp``, then the key)."""
    stamps = part["timestamp"].astype(str) if "timestamp" in part.columns else pd.Series("", index=part.index)
    first = pd.DataFrame({"key": part["config_key"], "t": stamps}).groupby("key")["t"].min()
    return sorted(first.index, key=lambda k: (first[k], k))


def split_configurations(df: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Report each configuration of a method as its own row instead of refusing the mix.

    Rows carrying a ``tuning`` record are relabelled ``"<variant> (tuned)"``. Where a (dataset, variant) still
    holds several configurations at one code length, its configurations are numbered per code length, oldest
    first (earliest ``timestamp``): ``"<variant> (config 1)"``, ``"<variant> (config 2)"``; ``entry`` keeps the
    registry name.

    Parameters
    ----------
    df : pd.DataFrame
        Normalised rows.

    Returns
    -------
    (rows, notes)
        The relabelled rows, and one note per numbered variant naming what differs between its configurations.
    """
    df = df.copy()
    tuned = np.array([isinstance(t, dict) for t in df["tuning"]], dtype=bool)
    df.loc[tuned, "variant"] = df.loc[tuned, "variant"].astype(str) + " (tuned)"
    counts = df.groupby(["dataset", "variant", "bits_label"], dropna=False)["config_key"].nunique()
    multi = sorted({(d, v) for (d, v, _), n in counts.items() if n > 1})
    notes: list[str] = []
    for dataset, variant in multi:
        mask = (df["dataset"] == dataset) & (df["variant"] == variant)
        labels = pd.Series(variant, index=df.index[mask])
        described: list[str] = []
        for bits, part in df[mask].groupby("bits_label", sort=False):
            order = _configs_in_order(part)
            for i, key in enumerate(order, 1):
                labels[part.index[part["config_key"] == key]] = f"{variant} (config {i})"
            if len(order) > 1 and not described:
                described.append(f"{variant} (config 1..{len(order)}) on {dataset} differ in "
                                 f"{describe_differences([json.loads(k) for k in order])} (at {bits} bits)")
        df.loc[mask, "variant"] = labels
        notes.extend(described)
    return df, notes


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


_METRIC_NAMES = {"map": "mAP", "p": "P", "ndcg": "NDCG", "map_first_k_relevant": "mAP(first-k-relevant)"}


def metric_name(metric: str) -> str:
    """How a metric is written in every table and figure: ``"map"`` → ``"mAP@all"``, ``"map@50"`` /
    ``"map@k"`` with k = 50 → ``"mAP@50"``, ``"p@10"`` → ``"P@10"``, ``"ndcg@10"`` → ``"NDCG@10"``,
    ``"p@r2"`` → ``"P@r≤2"``, ``"map_first_k_relevant@50"`` → ``"mAP(first-k-relevant)@50"``; other names unchanged.
    """
    if metric == "map":
        return "mAP@all"
    if metric == "p@r2":
        return "P@r≤2"
    base, at, cut = metric.rpartition("@")
    if at and base in _METRIC_NAMES:
        return f"{_METRIC_NAMES[base]}@{cut.upper() if cut.isalpha() else cut}"
    return metric


def seeds_phrase(counts: Sequence[int]) -> str:
    """How a table or figure states its number of seeds ``n``, never "over 1 seeds".

    ``[3]`` → ``"mean ± std over 3 seeds"``; ``[1]`` → ``"one seed (n = 1), no std"``; ``[1, 3]`` →
    ``"mean ± std over 3 seeds (fewer where marked n)"``; ``[]`` → ``""``.
    """
    ns = sorted({int(n) for n in counts if n is not None and n == n})
    if not ns:
        return ""
    if ns == [1]:
        return "one seed (n = 1), no std"
    if len(ns) == 1:
        return f"mean ± std over {ns[0]} seeds"
    return f"mean ± std over {ns[-1]} seeds (fewer where marked n)"


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
    """Whether registry name ``variant`` is an ablation (registry tag ``"ablation"``; for a name the registry
    does not know, ``variant != method``). Pass the ``entry`` column, not a relabelled ``variant``."""
    try:
        from methods import METHODS

        if variant in METHODS:
            return "ablation" in METHODS.tags(variant)
    except Exception:  # registry import problems must not stop a report built from saved rows
        pass
    return variant != method
