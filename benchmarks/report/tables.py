"""Main, ablation, efficiency, engine and tuning tables built from result rows."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.report.rows import (
    CELL_EFFICIENCY_METRICS,
    ENGINE_METRICS,
    FLOAT_BITS,
    REFERENCE_METHODS,
    TASK_ORDER,
    NoTable,
    ReportError,
    bits_sort_key,
    check_one_configuration,
    is_ablation,
    metric_name,
    normalise_rows,
    seeds_phrase,
    select,
    summarise,
)
from benchmarks.report.table import MISSING, Stat, Table, bold_best, plain_number


def metric_label(metric: str, tie: str | None) -> str:
    """``"mAP@all (tie-aware)"``, ``"mAP@50 (index ties)"``: :func:`~benchmarks.report.rows.metric_name` + tie."""
    name = metric_name(metric)
    if tie == "aware":
        return f"{name} (tie-aware)"
    return f"{name} ({tie} ties)" if tie and tie != "-" else name


def order_variants(variants: Sequence[str], headline: str) -> list[str]:
    """Headline first (and its relabelled configurations), then the others sorted, references last."""
    refs = [v for v in variants if v in REFERENCE_METHODS or v.split(" (")[0] in REFERENCE_METHODS]
    heads = sorted(v for v in variants if v not in refs and (v == headline or v.startswith(f"{headline} (")))
    rest = sorted(v for v in variants if v not in refs and v not in heads)
    return heads + rest + sorted(refs, key=lambda v: (REFERENCE_METHODS.index(v.split(" (")[0]), v))


def _is_reference(variant: str) -> bool:
    return variant.split(" (")[0] in REFERENCE_METHODS


def _main_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of non-ablation entries (judged on the registry name ``entry``, not a relabelled ``variant``)."""
    return df[np.array([not is_ablation(e, m) for e, m in zip(df["entry"], df["method"])], dtype=bool)]


def _grid_table(
    summary: pd.DataFrame, *, variants: list[str], name: str, title: str, notes: list[str], with_chance: bool
) -> Table:
    """Rows = variants, columns = task × bits; floats (bits ``float``) repeated in every bits column with †.

    Bold: the best non-reference binary result of each column at the printed precision (ties all bold).
    A cell whose seed count differs from the table's largest shows ``(n = k)``.
    """
    tasks = [t for t in TASK_ORDER if t in set(summary["task"])] + sorted(set(summary["task"]) - set(TASK_ORDER))
    bits = sorted({b for b in summary["bits_label"] if b != FLOAT_BITS}, key=bits_sort_key) or [FLOAT_BITS]
    columns = [("", "method")] + [(task, f"{b} bits" if b != FLOAT_BITS else b) for task in tasks for b in bits]
    lookup = {(r.variant, r.task, r.bits_label): r for r in summary.itertuples(index=False)}
    floats = set(summary.loc[summary["bits_label"] == FLOAT_BITS, "variant"])
    n_max = int(summary["n_seeds"].max()) if len(summary) else 1
    grid: dict[tuple[str, str, str], Any] = {}
    for variant in variants:
        for task in tasks:
            for b in bits:
                r = lookup.get((variant, task, b)) or (lookup.get((variant, task, FLOAT_BITS)) if variant in floats else None)
                grid[(variant, task, b)] = r
    bold: set[tuple[str, str, str]] = set()
    for task in tasks:
        for b in bits:
            cands = [(v, grid[(v, task, b)]) for v in variants if grid[(v, task, b)] is not None
                     and not _is_reference(v) and grid[(v, task, b)].bits_label != FLOAT_BITS]
            marks = bold_best([float(r.mean) for _, r in cands], 3)
            bold |= {(v, task, b) for (v, _), m in zip(cands, marks) if m}
    rows: list[list[Any]] = []
    for variant in variants:
        line: list[Any] = [variant]
        for task in tasks:
            for b in bits:
                r = grid[(variant, task, b)]
                if r is None:
                    line.append(MISSING)
                    continue
                marker = "†" if r.bits_label == FLOAT_BITS and b != FLOAT_BITS else ""
                n = int(r.n_seeds)
                line.append(Stat(r.mean, r.std, n, bold=(variant, task, b) in bold, marker=marker, show_n=n != n_max))
        rows.append(line)
    rules: set[int] = set()
    notes = list(notes)
    if with_chance and summary["chance"].notna().any():
        chance = summary.groupby(["task", "bits_label"])["chance"].mean()
        line = ["chance"]
        for task in tasks:
            for b in bits:
                line.append(Stat(float(chance.get((task, b), float("nan")))))
        rules.add(len(rows))
        rows.append(line)
        notes.append("chance: the metric's value for a random ranking (mean over rows).")
    if floats:
        notes.append("† real-valued reference (float32 features, cosine): one value for every code length; never bold.")
    return Table(name=name, title=title, columns=columns, rows=rows, notes=notes, data=summary, rules_before=rules)


def budget_note(sel: pd.DataFrame) -> str:
    """The tuning budget behind a table's rows, one sentence (issue 14 item 4).

    ``"Each method tuned with 20 Optuna trials per (method, bits) on the validation split."`` when every
    variant but ``random`` (nothing to tune) carries the same budget ("per method (one study per method, shared
    across code lengths)" when every tuned variant's study is shared across code lengths); ``"Untuned: hand-set defaults (no Optuna study)."`` when none
    does; otherwise the budget per tuned variant and the untuned ones (and, when budgets differ, that the
    comparison is not at an equal budget). Studies shared across code lengths are named.
    """
    budgets: dict[str, set[Any]] = {}
    shared: set[str] = set()
    untuned: set[str] = set()
    inherited: dict[str, str] = {}
    for variant, tuning in zip(sel["variant"], sel["tuning"]):
        if variant.split(" (")[0] == "random":  # no search space: random codes are never tuned
            continue
        if isinstance(tuning, dict) and tuning.get("inherited_from"):
            inherited[variant] = str(tuning["inherited_from"])
        elif isinstance(tuning, dict):
            budgets.setdefault(variant, set()).add(tuning.get("budget"))
            if tuning.get("shared_across_bits"):
                shared.add(variant)
        else:
            untuned.add(variant)
    untuned -= set(budgets) | set(inherited)  # a variant tuned at some code lengths is listed under its budgets
    for variant in set(inherited) & set(budgets):
        del inherited[variant]
    heirs = "".join(f" Not tuned themselves (each runs {base}'s best parameters minus its own setting): "
                    f"{', '.join(sorted(v for v, b in inherited.items() if b == base))}."
                    for base in sorted(set(inherited.values())))
    if not budgets:
        return "Untuned: hand-set defaults (no Optuna study)." + heirs
    values = {b for bs in budgets.values() for b in bs}
    all_shared = shared == set(budgets)
    unit = "per method (one study per method, shared across code lengths)" if all_shared else "per (method, bits)"
    share = (f" One study shared across code lengths: {', '.join(sorted(shared))}." if shared and not all_shared else "")
    if not untuned and len(values) == 1:
        return f"Each method tuned with {next(iter(values))} Optuna trials {unit} on the validation split.{share}{heirs}"
    parts = "; ".join(f"{v}: {'/'.join(str(b) for b in sorted(bs, key=str))}" for v, bs in sorted(budgets.items()))
    text = f"Optuna trials {unit} on the validation split: {parts}."
    if untuned:
        text += f" Untuned (hand-set defaults): {', '.join(sorted(untuned))}."
    if len(values) > 1 or untuned:
        text += " Budgets differ: differences between methods may reflect tuning effort."
    return text + share + heirs


def selection_note(sel: pd.DataFrame, protocol: str) -> str | None:
    """Which protocol the models of a table's fusion variants were selected under (issue 14 item 3), or ``None``.

    A variant whose rows come from one model per protocol (``select_per_protocol``) is named as selected under
    ``protocol``; a variant with a ``method_config.select_protocol`` other than ``protocol`` (pinned with
    ``--param``, or rows of an earlier harness) is named with the protocol it was selected under.

    Parameters
    ----------
    sel : pd.DataFrame
        Normalised rows of one table (columns ``variant``, ``method_config``; ``select_per_protocol`` optional).
    protocol : str
        The table's protocol.
    """
    flags = sel["select_per_protocol"] if "select_per_protocol" in sel.columns else [None] * len(sel)
    per_protocol: set[str] = set()
    other: dict[str, set[str]] = {}
    for variant, config, flag in zip(sel["variant"], sel["method_config"], flags):
        if not isinstance(config, dict) or "select_protocol" not in config:
            continue
        if flag is True:
            per_protocol.add(variant)
        elif config["select_protocol"] != protocol:
            other.setdefault(variant, set()).add(str(config["select_protocol"]))
    parts = []
    if per_protocol:
        parts.append(f"Epochs selected by validation mAP under the {protocol} protocol (one model per protocol): "
                     f"{', '.join(sorted(per_protocol))}.")
    if other:
        parts.append("Models selected under another protocol than this table's: "
                     + "; ".join(f"{v} ({'/'.join(sorted(p))})" for v, p in sorted(other.items())) + ".")
    return " ".join(parts) or None


def main_table(
    rows: pd.DataFrame, *, dataset: str, protocol: str = "unimodal", metric: str = "map", tie: str = "aware",
    headline: str = "mcmfh",
) -> Table:
    """Method × bits × task table of mean ± std over seeds, best hashing result bold, chance row last, the
    tuning budget stated under it (:func:`budget_note`).

    Ablation variants (registry tag ``"ablation"``, or ``variant != method`` for unknown names) are left out.

    Raises
    ------
    ReportError
        If no row matches (dataset, protocol, metric, tie), or one (variant, bits) holds several configurations
        (:func:`check_one_configuration`).
    """
    df = normalise_rows(rows)
    sel = _main_rows(select(df[df["dataset"] == dataset], metric=metric, tie=tie, protocol=protocol))
    if sel.empty:
        raise ReportError(f"no {metric!r} rows with tie={tie!r}, protocol={protocol!r} for dataset {dataset!r}")
    check_one_configuration(sel)
    summary = summarise(sel, ["variant", "method", "task", "bits_label"])
    variants = order_variants(list(dict.fromkeys(summary["variant"])), headline)
    title = f"{dataset}: {metric_label(metric, tie)}, {protocol} protocol, {seeds_phrase(summary['n_seeds'])}"
    notes = ["Bold: best hashing method per column at the printed precision (equal printed values all bold).",
             budget_note(sel), *filter(None, [selection_note(sel, protocol)])]
    return _grid_table(summary, variants=variants, name=f"main_{dataset}_{protocol}", title=title, notes=notes,
                       with_chance=True)


def ablation_table(
    rows: pd.DataFrame, *, dataset: str, protocol: str = "unimodal", metric: str = "map", tie: str = "aware",
    headline: str = "mcmfh",
) -> Table:
    """The headline method and its ablation variants (rows with ``method == headline``).

    Raises
    ------
    NoTable
        If the rows hold no variant of the headline other than the full method.
    ReportError
        If one (variant, bits) holds several configurations (:func:`check_one_configuration`).
    """
    df = normalise_rows(rows)
    sel = select(df[(df["dataset"] == dataset) & (df["method"] == headline)], metric=metric, tie=tie, protocol=protocol)
    if sel.empty or set(sel["entry"]) <= {headline}:
        raise NoTable(f"ablation table {dataset}/{protocol}: no variants of {headline!r} in the rows")
    check_one_configuration(sel)
    summary = summarise(sel, ["variant", "method", "task", "bits_label"])
    variants = order_variants(list(dict.fromkeys(summary["variant"])), headline)
    title = (f"{dataset}: ablations of {headline}, {metric_label(metric, tie)}, {protocol} protocol, "
             f"{seeds_phrase(summary['n_seeds'])}")
    notes = ["Bold: best variant per column at the printed precision (equal printed values all bold).", budget_note(sel),
             *filter(None, [selection_note(sel, protocol)])]
    return _grid_table(summary, variants=variants, name=f"ablation_{dataset}_{protocol}", title=title, notes=notes,
                       with_chance=False)


def efficiency_table(
    rows: pd.DataFrame, *, dataset: str, protocol: str = "unimodal", metric: str = "map", tie: str = "aware",
) -> Table:
    """How accurate, how fast, how small: per (variant, bits) the mean ± std accuracy (over seeds, averaged over
    tasks first) beside the medians over seeds and tasks of encode time, search time (codes and float
    features), bytes per item, and the float / code search-time ratio (not shown for the float rows themselves,
    whose "code search" is the float search).

    A (variant, bits) with efficiency rows but no accuracy rows of ``metric`` (e.g. ``p@r2`` of the real-valued
    reference) shows ``–`` as accuracy. Times and bytes are in plain notation (:func:`plain_number`).

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
    data.loc[data["bits_label"] == FLOAT_BITS, "speedup"] = float("nan")  # float search against itself
    data = data.sort_values(keys, key=lambda s: s.map(bits_sort_key) if s.name == "bits_label" else s)
    columns = [("", "method"), ("", "bits"), ("", metric_label(metric, tie)), ("ms", "encode / item"),
               ("ms", "search / query"), ("ms", "float search / query"), ("", "speed-up"),
               ("bytes", "code / item"), ("bytes", "float / item")]
    counts = [int(n) for n in data["n_seeds"] if isinstance(n, (int, float, np.integer)) and math.isfinite(n)]
    n_max = max(counts, default=1)
    table_rows = []
    for r in data.itertuples(index=False):
        mean = float(getattr(r, "mean", float("nan")))
        n_seeds = float(getattr(r, "n_seeds", float("nan")))  # NaN: efficiency rows without accuracy rows
        n = int(n_seeds) if math.isfinite(n_seeds) else 0
        table_rows.append([
            r.variant, r.bits_label,
            Stat(mean, float(getattr(r, "std", float("nan"))), n, show_n=0 < n != n_max),
            plain_number(r.encode_ms_per_item), plain_number(r.search_ms_per_query),
            plain_number(r.search_ms_per_query_real),
            MISSING if not math.isfinite(r.speedup) else f"{r.speedup:.1f}×",
            plain_number(r.bytes_per_item), plain_number(r.bytes_per_item_real),
        ])
    phrase = seeds_phrase(counts) or "no accuracy rows"
    notes = [f"Accuracy: mean over tasks, {phrase} ({protocol} protocol). Times: median over seeds and tasks, "
             "exact search of the top 100; speed-up = float search time / code search time (– for float rows)."]
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


def approximate_engines(df: pd.DataFrame) -> set[str]:
    """Engines (labels of :func:`engine_labels`) with ``recall@k`` rows: only approximate engines get them."""
    eff = df[(df["protocol"] == "efficiency") & (df["metric"] == "recall@k")]
    return set(engine_labels(eff)) if len(eff) else set()


def engine_table(rows: pd.DataFrame) -> Table | None:
    """The ``efficiency`` command's rows (protocol ``"efficiency"``): mean per (engine, bits, database size) of
    median latency, p95 latency, throughput, bytes per item, index size and build time; ``None`` if absent.

    Numbers in plain notation (``5,120``, ``12.3 k``); recall ``–`` for exact engines; approximate engines are
    marked ``(approx.)``."""
    df = normalise_rows(rows)
    df = df[(df["protocol"] == "efficiency") & df["metric"].isin(ENGINE_METRICS)]
    if df.empty:
        return None
    approx = approximate_engines(df)
    df = df.assign(engine=engine_labels(df), db_size=pd.to_numeric(df["db_size"], errors="coerce"))
    df = df.assign(engine=[f"{e} (approx.)" if e in approx else e for e in df["engine"]])
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
            + [r["engine"], r["bits_label"], plain_number(r["db_size"])]
            + [plain_number(r[m]) for m in metrics] for _, r in data.iterrows()]
    notes = ["Mean over repeats/seeds of each row's statistic."]
    if approx:
        notes.append("(approx.): approximate engine; its recall@k against exact search is shown (– for exact engines).")
    return Table(name="engines", title="Search engines: latency and memory against database size (top-100 queries)",
                 columns=columns, rows=body, notes=notes, data=data)


def _params_text(params: Any) -> str:
    if not isinstance(params, dict) or not params:
        return MISSING
    return ", ".join(f"{k}={_param_value(v)}" for k, v in sorted(params.items()))


def _param_value(v: Any) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.3g}"
    return json.dumps(v) if isinstance(v, (dict, list)) else str(v)


def tuning_table(rows: pd.DataFrame, *, dataset: str) -> Table:
    """Method × bits: the Optuna study behind each tuned configuration, from the rows' ``tuning`` records
    (``{"study", "trial", "budget", "n_complete", "n_pruned", "best_value", "defaults_value", "params",
    "shared_across_bits"}``).

    One line per (variant, bits, study); the record is the same on every row of a cell, so seeds agree.

    Raises
    ------
    NoTable
        If no row of ``dataset`` carries a tuning record.
    """
    df = normalise_rows(rows)
    df = df[(df["dataset"] == dataset) & np.array([isinstance(t, dict) for t in df["tuning"]], dtype=bool)]
    if df.empty:
        raise NoTable(f"tuning table {dataset}: no row carries a tuning record (untuned run)")
    records: dict[tuple[str, str, str], dict[str, Any]] = {}
    for variant, b, t in zip(df["variant"], df["bits_label"], df["tuning"]):
        records.setdefault((variant, b, json.dumps(t, sort_keys=True, default=str)), t)
    order = sorted(records, key=lambda key: (key[0], bits_sort_key(key[1]), key[2]))
    columns = [("", "method"), ("", "bits"), ("", "study"), ("trials", "budget"), ("trials", "complete"),
               ("trials", "pruned"), ("", "defaults validation mAP"), ("", "best validation mAP"), ("", "best trial"),
               ("", "chosen parameters"), ("", "shared across bits")]
    body = []
    data = []
    for key in order:
        t = records[key]
        study = str(t.get("study") or MISSING)
        if t.get("inherited_from"):
            study += f" (inherited from {t['inherited_from']})"
        body.append([key[0], key[1], study, plain_number(t.get("budget")),
                     plain_number(t.get("n_complete")), plain_number(t.get("n_pruned")),
                     MISSING if not _finite(t.get("defaults_value")) else f"{float(t['defaults_value']):.3f}",
                     MISSING if not _finite(t.get("best_value")) else f"{float(t['best_value']):.3f}",
                     plain_number(t.get("trial")), _params_text(t.get("params")),
                     "yes" if t.get("shared_across_bits") else "no"])
        data.append({"variant": key[0], "bits_label": key[1], **t})
    notes = ["Best validation mAP: tie-aware mAP@all of the best complete trial, validation queries against the "
             "training database. Defaults validation mAP: the same for the trial of the method's untuned defaults "
             "(one of the budget's trials in every study; – where the study has none). Chosen parameters: the best "
             "trial's settings, used for every seed of the test runs. Inherited: an ablation that is not tuned itself runs "
             "its base method's best trial minus the setting it removes; the study's numbers are the base method's.",
             budget_note(df)]
    return Table(name=f"tuning_{dataset}", title=f"{dataset}: hyper-parameter tuning (Optuna) behind the tuned rows",
                 columns=columns, rows=body, notes=notes, data=pd.DataFrame(data),
                 align=["left", "right", "left", "right", "right", "right", "right", "right", "right", "left", "left"])


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value))
