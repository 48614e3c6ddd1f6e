"""Main, ablation, efficiency and engine tables built from result rows."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from benchmarks.report.rows import (
    CELL_EFFICIENCY_METRICS,
    ENGINE_METRICS,
    FLOAT_BITS,
    REFERENCE_METHODS,
    TASK_ORDER,
    ReportError,
    bits_sort_key,
    check_one_configuration,
    is_ablation,
    normalise_rows,
    select,
    summarise,
)
from benchmarks.report.table import Stat, Table


def metric_label(metric: str, tie: str | None) -> str:
    name = {"map": "mAP@all"}.get(metric, metric)
    if tie == "aware":
        return f"{name} (tie-aware)"
    return f"{name} ({tie} ties)" if tie and tie != "-" else name


def order_variants(variants: Sequence[str], headline: str) -> list[str]:
    refs = [v for v in REFERENCE_METHODS if v in variants]
    rest = sorted(v for v in variants if v not in refs and v != headline)
    return ([headline] if headline in variants else []) + rest + refs


def _grid_table(
    summary: pd.DataFrame, *, variants: list[str], name: str, title: str, metric_notes: list[str], with_chance: bool
) -> Table:
    """Rows = variants, columns = task × bits; floats (bits ``float``) repeated in every bits column with †."""
    tasks = [t for t in TASK_ORDER if t in set(summary["task"])] + sorted(set(summary["task"]) - set(TASK_ORDER))
    bits = sorted({b for b in summary["bits_label"] if b != FLOAT_BITS}, key=bits_sort_key)
    if not bits:
        bits = [FLOAT_BITS]
    columns = [("", "method")] + [(task, f"{b} bits" if b != FLOAT_BITS else b) for task in tasks for b in bits]
    lookup = {(r.variant, r.task, r.bits_label): r for r in summary.itertuples(index=False)}
    floats = set(summary.loc[summary["bits_label"] == FLOAT_BITS, "variant"])
    best: dict[tuple[str, str], float] = {}
    for (variant, task, b), r in lookup.items():
        if variant in REFERENCE_METHODS or b == FLOAT_BITS or not math.isfinite(r.mean):
            continue
        best[(task, b)] = max(best.get((task, b), -math.inf), r.mean)
    rows: list[list[Any]] = []
    for variant in variants:
        line: list[Any] = [variant]
        for task in tasks:
            for b in bits:
                r = lookup.get((variant, task, b)) or (lookup.get((variant, task, FLOAT_BITS)) if variant in floats else None)
                if r is None:
                    line.append("–")
                    continue
                marker = "†" if r.bits_label == FLOAT_BITS and b != FLOAT_BITS else ""
                bold = (variant not in REFERENCE_METHODS and r.bits_label != FLOAT_BITS
                        and math.isfinite(r.mean) and r.mean == best.get((task, b)))
                line.append(Stat(r.mean, r.std, int(r.n_seeds), bold=bold, marker=marker))
        rows.append(line)
    rules: set[int] = set()
    notes = list(metric_notes)
    if with_chance and summary["chance"].notna().any():
        chance = summary.groupby(["task", "bits_label"])["chance"].mean()
        line = ["chance"]
        for task in tasks:
            for b in bits:
                value = chance.get((task, b), float("nan"))
                line.append(Stat(float(value), digits=3))
        rules.add(len(rows))
        rows.append(line)
        notes.append("chance: the metric's value for a random ranking (mean over rows).")
    if floats:
        notes.append("† real-valued reference (float32 features, cosine): one value for every code length; never bold.")
    return Table(name=name, title=title, columns=columns, rows=rows, notes=notes, data=summary, rules_before=rules)


def main_table(
    rows: pd.DataFrame, *, dataset: str, protocol: str = "unimodal", metric: str = "map", tie: str = "aware",
    headline: str = "mcmfh",
) -> Table:
    """Method × bits × task table of mean ± std over seeds, best hashing result bold, chance row last.

    Ablation variants (registry tag ``"ablation"``, or ``variant != method`` for unknown names) are left out.

    Raises
    ------
    ReportError
        If no row matches (dataset, protocol, metric, tie), or one (variant, bits) holds several configurations
        (:func:`check_one_configuration`).
    """
    df = normalise_rows(rows)
    sel = select(df[df["dataset"] == dataset], metric=metric, tie=tie, protocol=protocol)
    sel = sel[[not is_ablation(v, m) for v, m in zip(sel["variant"], sel["method"])]]
    if sel.empty:
        raise ReportError(f"no {metric!r} rows with tie={tie!r}, protocol={protocol!r} for dataset {dataset!r}")
    check_one_configuration(sel)
    summary = summarise(sel, ["variant", "method", "task", "bits_label"])
    variants = order_variants(list(dict.fromkeys(summary["variant"])), headline)
    n_seeds = sorted(set(summary["n_seeds"].astype(int)))
    title = (f"{dataset}: {metric_label(metric, tie)}, {protocol} protocol, mean ± std over "
             f"{'/'.join(map(str, n_seeds))} seeds")
    notes = ["Bold: best hashing method per column (mean)."]
    return _grid_table(summary, variants=variants, name=f"main_{dataset}_{protocol}", title=title,
                       metric_notes=notes, with_chance=True)


def ablation_table(
    rows: pd.DataFrame, *, dataset: str, protocol: str = "unimodal", metric: str = "map", tie: str = "aware",
    headline: str = "mcmfh",
) -> Table | None:
    """The headline method and its ablation variants (rows with ``method == headline``); ``None`` when the
    rows hold no variant other than the full method.

    Raises
    ------
    ReportError
        If one (variant, bits) holds several configurations (:func:`check_one_configuration`).
    """
    df = normalise_rows(rows)
    sel = select(df[(df["dataset"] == dataset) & (df["method"] == headline)], metric=metric, tie=tie, protocol=protocol)
    if sel.empty or set(sel["variant"]) <= {headline}:
        return None
    check_one_configuration(sel)
    summary = summarise(sel, ["variant", "method", "task", "bits_label"])
    variants = order_variants(list(dict.fromkeys(summary["variant"])), headline)
    title = f"{dataset}: ablations of {headline}, {metric_label(metric, tie)}, {protocol} protocol, mean ± std over seeds"
    return _grid_table(summary, variants=variants, name=f"ablation_{dataset}_{protocol}", title=title,
                       metric_notes=["Bold: best variant per column (mean)."], with_chance=False)


def efficiency_table(
    rows: pd.DataFrame, *, dataset: str, protocol: str = "unimodal", metric: str = "map", tie: str = "aware",
) -> Table:
    """How accurate, how fast, how small: per (variant, bits) the mean ± std accuracy (over seeds, averaged over
    tasks first) beside the medians over seeds and tasks of encode time, search time (codes and float
    features), bytes per item, and the float / code search-time ratio.

    A (variant, bits) with efficiency rows but no accuracy rows of ``metric`` (e.g. ``p@r2`` of the real-valued
    reference) shows ``–`` as accuracy.

    Raises
    ------
    ReportError
        If the dataset has neither accuracy nor per-cell efficiency rows, or one (variant, bits) holds several
        configurations (:func:`check_one_configuration`).
    """
    df = normalise_rows(rows)
    df = df[df["dataset"] == dataset]
    acc = select(df, metric=metric, tie=tie, protocol=protocol)
    eff = df[df["metric"].isin(CELL_EFFICIENCY_METRICS) & (df["protocol"] != "efficiency")]
    if acc.empty and eff.empty:
        raise ReportError(f"no accuracy or efficiency rows for dataset {dataset!r}")
    check_one_configuration(pd.concat([acc, eff]))
    keys = ["variant", "bits_label"]
    # accuracy: mean over tasks within a seed, then mean ± std over seeds
    acc_seed = acc.groupby([*keys, "seed"], sort=False)["value"].mean().reset_index()
    acc_sum = acc_seed.groupby(keys, sort=False)["value"].agg(
        mean="mean", std=lambda v: v.std(ddof=1) if len(v) > 1 else float("nan"), n_seeds="count")
    eff_med = eff.groupby([*keys, "metric"], sort=False)["value"].median().unstack("metric")
    data = acc_sum.join(eff_med, how="outer").reset_index()
    for m in CELL_EFFICIENCY_METRICS:
        if m not in data.columns:
            data[m] = float("nan")
    data["speedup"] = data["search_ms_per_query_real"] / data["search_ms_per_query"]
    data = data.sort_values(["variant", "bits_label"], key=lambda s: s.map(bits_sort_key) if s.name == "bits_label" else s)
    columns = [("", "method"), ("", "bits"), ("", metric_label(metric, tie)), ("ms", "encode / item"),
               ("ms", "search / query"), ("ms", "float search / query"), ("", "speed-up"),
               ("bytes", "code / item"), ("bytes", "float / item")]

    def g(x: float) -> str:
        return "–" if not math.isfinite(x) else f"{x:.3g}"

    table_rows = []
    for r in data.itertuples(index=False):
        mean = float(getattr(r, "mean", float("nan")))
        n_seeds = float(getattr(r, "n_seeds", float("nan")))  # NaN: efficiency rows without accuracy rows
        table_rows.append([
            r.variant, r.bits_label,
            Stat(mean, float(getattr(r, "std", float("nan"))), int(n_seeds) if math.isfinite(n_seeds) else 0),
            g(r.encode_ms_per_item), g(r.search_ms_per_query), g(r.search_ms_per_query_real),
            "–" if not math.isfinite(r.speedup) else f"{r.speedup:.1f}×",
            g(r.bytes_per_item), g(r.bytes_per_item_real),
        ])
    notes = [f"Accuracy: mean ± std over seeds of the task mean ({protocol} protocol). Times: median over seeds "
             "and tasks, exact search of the top 100; speed-up = float search time / code search time."]
    return Table(name=f"efficiency_{dataset}", title=f"{dataset}: accuracy, search latency and memory",
                 columns=columns, rows=table_rows, notes=notes, data=data)


def engine_labels(df: pd.DataFrame) -> pd.Series:
    """Engine name per row, with ``" d=512"`` appended for float engines when a ``feature_dim`` is recorded."""
    engine = df["engine"].fillna("-").astype(str)
    if "feature_dim" in df.columns:
        dim = pd.to_numeric(df["feature_dim"], errors="coerce")
        floats = dim.notna() & (df["bits_label"] == FLOAT_BITS)
        engine = engine.where(~floats, engine + " d=" + dim.fillna(0).astype(int).astype(str))
    return engine


def engine_table(rows: pd.DataFrame) -> Table | None:
    """The ``efficiency`` command's rows (protocol ``"efficiency"``): mean per (engine, bits, database size) of
    median latency, p95 latency, throughput, bytes per item, index size and build time; ``None`` if absent."""
    df = normalise_rows(rows)
    df = df[(df["protocol"] == "efficiency") & df["metric"].isin(ENGINE_METRICS)]
    if df.empty:
        return None
    df = df.assign(engine=engine_labels(df), db_size=pd.to_numeric(df["db_size"], errors="coerce"))
    for col in ("threads", "clock"):  # several measurement settings in one folder stay apart too
        if col in df.columns and df[col].nunique(dropna=True) > 1:
            df = df.assign(engine=df["engine"] + " [" + col + "=" + df[col].astype(str) + "]")
    keys = ["engine", "bits_label", "db_size"]
    several = df["dataset"].nunique(dropna=False) > 1  # random codes and trained codes in one folder
    if several:
        df = df.assign(dataset=df["dataset"].fillna("-").astype(str))
        keys = ["dataset", *keys]
    data = df.groupby([*keys, "metric"], sort=False)["value"].mean().unstack("metric").reset_index()
    data = data.sort_values(keys, key=lambda s: s.map(bits_sort_key) if s.name == "bits_label" else s)
    metrics = [m for m in ENGINE_METRICS if m in data.columns]
    labels = {"latency_ms_median": ("ms", "median"), "latency_ms_p95": ("ms", "p95"),
              "batch_latency_ms_median": ("ms", "per batch"), "throughput_qps": ("", "queries/s"),
              "bytes_per_item": ("bytes", "per item"), "index_bytes": ("bytes", "index"), "build_s": ("", "build s"),
              "recall@k": ("", "recall@k")}
    columns = ([("", "codes from")] if several else []) + [("", "engine"), ("", "bits"), ("", "database size")]
    columns += [labels[m] for m in metrics]
    body = [([r["dataset"]] if several else [])
            + [r["engine"], r["bits_label"], f"{int(r['db_size']):,}" if math.isfinite(r["db_size"]) else "–"]
            + [("–" if not math.isfinite(r[m]) else f"{r[m]:.3g}") for m in metrics] for _, r in data.iterrows()]
    return Table(name="engines", title="Search engines: latency and memory against database size (top-100 queries)",
                 columns=columns, rows=body, notes=["Mean over repeats/seeds of each row's statistic."], data=data)
