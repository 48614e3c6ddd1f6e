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
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
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


def _bits_key(label: str) -> tuple[int, int]:
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


def _is_ablation(variant: str, method: str) -> bool:
    try:
        from methods import METHODS

        if variant in METHODS:
            return "ablation" in METHODS.tags(variant)
    except Exception:  # registry import problems must not stop a report built from saved rows
        pass
    return variant != method


# ---- table model ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Stat:
    """A mean ± std cell.

    Attributes
    ----------
    mean, std : float
        ``std`` NaN (not shown) for a single seed.
    n : int
        Number of seeds.
    bold : bool
        Best of its column.
    digits : int
        Decimal places.
    marker : str
        Appended mark (e.g. ``"†"`` for a reference row).
    """

    mean: float
    std: float = float("nan")
    n: int = 1
    bold: bool = False
    digits: int = 3
    marker: str = ""

    def plain(self) -> str:
        """``"0.512 ± 0.013"`` (or ``"0.512"`` for one seed, ``"–"`` for NaN)."""
        if not math.isfinite(self.mean):
            return "–"
        text = f"{self.mean:.{self.digits}f}"
        if self.n > 1 and math.isfinite(self.std):
            text += f" ± {self.std:.{self.digits}f}"
        return text + self.marker

    def markdown(self) -> str:
        return f"**{self.plain()}**" if self.bold and math.isfinite(self.mean) else self.plain()

    def latex(self) -> str:
        if not math.isfinite(self.mean):
            return "--"
        text = f"{self.mean:.{self.digits}f}"
        if self.n > 1 and math.isfinite(self.std):
            text += f" $\\pm$ {self.std:.{self.digits}f}"
        text = f"\\textbf{{{text}}}" if self.bold else text
        return text + ("$^\\dagger$" if self.marker == "†" else latex_escape(self.marker))


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "†": r"$^\dagger$", "×": r"$\times$", "≥": r"$\geq$", "Δ": r"$\Delta$",
                  "–": "--", "—": "---", "−": "$-$", "<": r"$<$", ">": r"$>$", "→": r"$\rightarrow$",
                  "·": r"$\cdot$", "…": r"\ldots{}"}


def latex_escape(text: str) -> str:
    """Escape LaTeX special characters (``_``, ``%``, ``&``, ...; ``±`` → ``$\\pm$``)."""
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


@dataclass
class Table:
    """A rendered-on-demand table.

    Attributes
    ----------
    name : str
        File stem (``main_medpix_unimodal``) and LaTeX label suffix.
    title : str
        Caption.
    columns : list[tuple[str, str]]
        ``(group, label)`` per column; consecutive equal groups share a spanning header in LaTeX; group ``""``
        for none. The first column holds row labels.
    rows : list[list[str | Stat]]
    notes : list[str]
        Lines printed under the table (test names, chance level, markers).
    data : pd.DataFrame
        The tidy numbers behind the table.
    rules_before : set[int]
        Row indices preceded by a ``\\midrule`` (e.g. the chance row).
    """

    name: str
    title: str
    columns: list[tuple[str, str]]
    rows: list[list[Any]]
    notes: list[str] = field(default_factory=list)
    data: pd.DataFrame = field(default_factory=pd.DataFrame)
    rules_before: set[int] = field(default_factory=set)

    def header_labels(self) -> list[str]:
        """One-line column names (``"i2t 16"``) for Markdown."""
        return [f"{g} {lab}".strip() for g, lab in self.columns]

    def to_markdown(self) -> str:
        """Pipe-format Markdown: the title as a bold line, the table, then the notes."""
        from tabulate import tabulate

        body = [[c.markdown() if isinstance(c, Stat) else str(c) for c in row] for row in self.rows]
        align = ["left"] + ["right"] * (len(self.columns) - 1)
        table = tabulate(body, headers=self.header_labels(), tablefmt="pipe", colalign=align, disable_numparse=True)
        notes = "".join(f"\n{n}  " for n in self.notes)
        return f"**{self.title}**\n\n{table}\n{notes}\n"

    def to_latex(self) -> str:
        """A ``table`` environment with a booktabs ``tabular`` (needs ``\\usepackage{booktabs}``)."""
        n = len(self.columns)
        lines = [r"\begin{table}[t]", r"\centering", r"\small",
                 f"\\caption{{{latex_escape(self.title)}}}", f"\\label{{tab:{self.name}}}",
                 f"\\begin{{tabular}}{{l{'r' * (n - 1)}}}", r"\toprule"]
        groups = [g for g, _ in self.columns]
        if any(groups):
            spans: list[tuple[str, int, int]] = []  # (group, first col, last col), 1-based
            for i, g in enumerate(groups, 1):
                if spans and spans[-1][0] == g:
                    spans[-1] = (g, spans[-1][1], i)
                else:
                    spans.append((g, i, i))
            cells = [f"\\multicolumn{{{b - a + 1}}}{{c}}{{{latex_escape(g)}}}" if g else "" for g, a, b in spans]
            lines.append(" & ".join(cells) + r" \\")
            lines.append(" ".join(f"\\cmidrule(lr){{{a}-{b}}}" for g, a, b in spans if g))
        lines.append(" & ".join(latex_escape(lab) for _, lab in self.columns) + r" \\")
        lines.append(r"\midrule")
        for i, row in enumerate(self.rows):
            if i in self.rules_before:
                lines.append(r"\midrule")
            lines.append(" & ".join(c.latex() if isinstance(c, Stat) else latex_escape(c) for c in row) + r" \\")
        lines.append(r"\bottomrule")
        lines.append(r"\end{tabular}")
        if self.notes:
            lines.append(r"\par\smallskip\footnotesize " + r" \\ ".join(latex_escape(n) for n in self.notes))
        lines.append(r"\end{table}")
        return "\n".join(lines) + "\n"


def latex_document(tables: Sequence[Table]) -> str:
    """A standalone LaTeX document holding ``tables`` (compiles with pdflatex; needs booktabs)."""
    body = "\n\\clearpage\n".join(t.to_latex() for t in tables)
    return ("\\documentclass{article}\n\\usepackage[utf8]{inputenc}\n\\usepackage[T1]{fontenc}\n"
            "\\usepackage{booktabs}\n\\usepackage[margin=1.5cm,landscape]{geometry}\n"
            f"\\begin{{document}}\n{body}\\end{{document}}\n")


# ---- tables --------------------------------------------------------------------------------------------------
def _metric_label(metric: str, tie: str | None) -> str:
    name = {"map": "mAP@all"}.get(metric, metric)
    if tie == "aware":
        return f"{name} (tie-aware)"
    return f"{name} ({tie} ties)" if tie and tie != "-" else name


def _order_variants(variants: Sequence[str], headline: str) -> list[str]:
    refs = [v for v in REFERENCE_METHODS if v in variants]
    rest = sorted(v for v in variants if v not in refs and v != headline)
    return ([headline] if headline in variants else []) + rest + refs


def _grid_table(
    summary: pd.DataFrame, *, variants: list[str], name: str, title: str, metric_notes: list[str], with_chance: bool
) -> Table:
    """Rows = variants, columns = task × bits; floats (bits ``float``) repeated in every bits column with †."""
    tasks = [t for t in TASK_ORDER if t in set(summary["task"])] + sorted(set(summary["task"]) - set(TASK_ORDER))
    bits = sorted({b for b in summary["bits_label"] if b != FLOAT_BITS}, key=_bits_key)
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
    sel = sel[[not _is_ablation(v, m) for v, m in zip(sel["variant"], sel["method"])]]
    if sel.empty:
        raise ReportError(f"no {metric!r} rows with tie={tie!r}, protocol={protocol!r} for dataset {dataset!r}")
    check_one_configuration(sel)
    summary = summarise(sel, ["variant", "method", "task", "bits_label"])
    variants = _order_variants(list(dict.fromkeys(summary["variant"])), headline)
    n_seeds = sorted(set(summary["n_seeds"].astype(int)))
    title = (f"{dataset}: {_metric_label(metric, tie)}, {protocol} protocol, mean ± std over "
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
    variants = _order_variants(list(dict.fromkeys(summary["variant"])), headline)
    title = f"{dataset}: ablations of {headline}, {_metric_label(metric, tie)}, {protocol} protocol, mean ± std over seeds"
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
    data = data.sort_values(["variant", "bits_label"], key=lambda s: s.map(_bits_key) if s.name == "bits_label" else s)
    columns = [("", "method"), ("", "bits"), ("", _metric_label(metric, tie)), ("ms", "encode / item"),
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
    data = data.sort_values(keys, key=lambda s: s.map(_bits_key) if s.name == "bits_label" else s)
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


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm (1979) step-down adjusted p-values (NaNs kept as NaN, not counted)."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    idx = [i for i in np.argsort(p, kind="stable") if math.isfinite(p[i])]
    m, running = len(idx), 0.0
    for rank, i in enumerate(idx):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of the headline method with one other method.

    Attributes
    ----------
    method : str
    n : int
        Matched pairs (in :func:`significance_table`: (seed, bits), each the mean over tasks).
    mean_diff : float
        Mean of headline − other.
    wins, ties, losses : int
        Pairs where the headline is higher / equal / lower.
    wilcoxon_stat, wilcoxon_p : float
        :func:`scipy.stats.wilcoxon` (two-sided, default zero handling); NaN when every difference is 0.
    t_stat, t_p : float
        :func:`scipy.stats.ttest_rel` (two-sided); NaN for n < 2 or zero variance of the differences.
    headline_values, other_values : tuple[float, ...]
        The matched vectors (same order).
    """

    method: str
    n: int
    mean_diff: float
    wins: int
    ties: int
    losses: int
    wilcoxon_stat: float
    wilcoxon_p: float
    t_stat: float
    t_p: float
    headline_values: tuple[float, ...]
    other_values: tuple[float, ...]


def paired_test(method: str, x: np.ndarray, y: np.ndarray) -> PairedTest:
    """Wilcoxon signed-rank and paired t-test of ``x`` (headline) against ``y`` (other), both shape (n,)."""
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired_test: vectors must be 1-D of equal length, got {x.shape} and {y.shape}")
    d = x - y
    w_stat = w_p = t_stat = t_p = float("nan")
    if len(d) and np.any(d != 0):
        res = stats.wilcoxon(x, y)
        w_stat, w_p = float(res.statistic), float(res.pvalue)
    if len(d) >= 2 and np.std(d) > 0:
        res = stats.ttest_rel(x, y)
        t_stat, t_p = float(res.statistic), float(res.pvalue)
    return PairedTest(method, len(d), float(d.mean()) if len(d) else float("nan"), int((d > 0).sum()),
                      int((d == 0).sum()), int((d < 0).sum()), w_stat, w_p, t_stat, t_p, tuple(x), tuple(y))


def significance_table(
    rows: pd.DataFrame, *, dataset: str, protocol: str = "unimodal", metric: str = "map", tie: str = "aware",
    headline: str = "mcmfh",
) -> Table | None:
    """Headline method against each other (non-ablation, binary) method, paired over (seed, bits).

    The pairing unit is one trained model: (seed, bits). Its value is the mean over the tasks (i2t, t2i, ...)
    that both methods have for that (seed, bits); the tasks of one model are not independent samples.

    Returns ``None`` when the headline method has no rows. Real-valued (bits ``float``) methods are left out:
    they have no per-bits value to pair with.

    Raises
    ------
    ReportError
        If one (variant, bits) holds several configurations (:func:`check_one_configuration`).
    """
    df = normalise_rows(rows)
    sel = select(df[df["dataset"] == dataset], metric=metric, tie=tie, protocol=protocol)
    main = np.array([not _is_ablation(v, m) for v, m in zip(sel["variant"], sel["method"])], dtype=bool)
    sel = sel[main & (sel["bits_label"] != FLOAT_BITS).to_numpy()]
    check_one_configuration(sel)
    keys = ["seed", "bits_label"]
    seeds = per_seed(sel, ["variant", "task", "bits_label"])
    head = seeds[seeds["variant"] == headline]
    if head.empty:
        return None
    tests: list[PairedTest] = []
    for other in _order_variants(list(dict.fromkeys(seeds["variant"])), headline):
        if other == headline:
            continue
        matched = head.merge(seeds[seeds["variant"] == other], on=[*keys, "task"], suffixes=("_h", "_o"))
        pairs = matched.groupby(keys, sort=False)[["value_h", "value_o"]].mean().reset_index()
        pairs = pairs.sort_values(keys, key=lambda s: s.map(_bits_key) if s.name == "bits_label" else s)
        tests.append(paired_test(other, pairs["value_h"].to_numpy(), pairs["value_o"].to_numpy()))
    if not tests:
        return None
    adjusted = holm([t.wilcoxon_p for t in tests])

    def p(x: float) -> str:
        return "–" if not math.isfinite(x) else ("<0.001" if x < 1e-3 else f"{x:.3f}")

    body = []
    for t, adj in zip(tests, adjusted):
        small = " (n too small)" if t.n < WILCOXON_MIN_N else ""
        body.append([f"{headline} vs {t.method}", str(t.n), f"{t.mean_diff:+.4f}", f"{t.wins}/{t.ties}/{t.losses}",
                     "–" if not math.isfinite(t.wilcoxon_stat) else f"{t.wilcoxon_stat:g}", p(t.wilcoxon_p) + small,
                     p(adj), "–" if not math.isfinite(t.t_stat) else f"{t.t_stat:.2f}", p(t.t_p)])
    data = pd.DataFrame([{**{k: v for k, v in vars(t).items() if not k.endswith("_values")}, "wilcoxon_p_holm": a}
                         for t, a in zip(tests, adjusted)])
    columns = [("", "comparison"), ("", "n pairs"), ("", "mean Δ"), ("", "wins/ties/losses"),
               ("Wilcoxon signed-rank", "W"), ("Wilcoxon signed-rank", "p"), ("Wilcoxon signed-rank", "p (Holm)"),
               ("paired t-test", "t"), ("paired t-test", "p")]
    notes = [f"Pairs matched by (seed, bits), one per trained model, each the mean over its tasks of "
             f"{_metric_label(metric, tie)}, {protocol} protocol; "
             f"Δ = {headline} − other. Two-sided scipy.stats.wilcoxon (exact for small n without ties) and "
             "scipy.stats.ttest_rel; Holm step-down adjustment over the rows.",
             ]
    if any(t.n < WILCOXON_MIN_N for t in tests):
        notes.append(f"n too small: with fewer than {WILCOXON_MIN_N} pairs the two-sided Wilcoxon p cannot fall "
                     "below 0.05.")
    return Table(name=f"significance_{dataset}_{protocol}",
                 title=f"{dataset}: paired significance tests, {headline} against each method",
                 columns=columns, rows=body, notes=notes, data=data)


# ---- whole report --------------------------------------------------------------------------------------------
@dataclass
class Report:
    """What :func:`build_report` wrote."""

    out: Path
    tables: list[Table]
    files: list[Path]
    skipped: list[str]
    #: One-line warnings (e.g. rows left out for a missing / non-numeric ``value``).
    warnings: list[str] = field(default_factory=list)


def check_request(df: pd.DataFrame, *, metric: str, tie: str, protocols: Sequence[str] | None) -> None:
    """Refuse a ``protocols`` / ``metric`` / ``tie`` request the normalised rows cannot answer.

    Raises
    ------
    ReportError
        Naming the protocols, metrics or tie policies present.
    """
    acc = df[df["protocol"].isin(("unimodal", "paired"))]
    present = [p for p in ("unimodal", "paired") if p in set(acc["protocol"])]
    missing = [p for p in (protocols or ()) if p not in present]
    if missing:
        raise ReportError(f"no rows of protocol {', '.join(map(repr, missing))} in the run folder; protocols present: "
                          + (", ".join(present) or "none (only efficiency rows)"))
    if acc.empty:
        return
    if protocols:
        acc = acc[acc["protocol"].isin(protocols)]
    found = select(acc, metric=metric)
    if found.empty:
        raise ReportError(f"no rows of metric {metric!r}; metrics found: {', '.join(metric_choices(acc))}")
    if not (found["tie"] == tie).any():
        raise ReportError(f"no rows of metric {metric!r} with tie policy {tie!r}; tie policies found: "
                          + ", ".join(sorted(set(found["tie"]))))


def build_tables(
    rows: pd.DataFrame, *, headline: str = "mcmfh", metric: str = "map", tie: str = "aware",
    protocols: Sequence[str] | None = None,
) -> tuple[list[Table], list[str]]:
    """Every table the rows allow, per dataset and protocol; also the reasons a table was left out.

    Raises
    ------
    ReportError
        If a requested protocol, the metric or the tie policy has no rows (:func:`check_request`), or one
        (dataset, variant, bits) holds several configurations (:func:`check_one_configuration`).
    """
    df = normalise_rows(rows)
    check_request(df, metric=metric, tie=tie, protocols=protocols)
    check_one_configuration(df[df["protocol"] != "efficiency"])
    acc = df[df["protocol"].isin(("unimodal", "paired"))]
    protocols = list(protocols) if protocols else [p for p in ("unimodal", "paired") if p in set(acc["protocol"])]
    tables: list[Table] = []
    skipped: list[str] = []
    for dataset in sorted(set(df.loc[df["protocol"] != "efficiency", "dataset"].dropna())):
        for protocol in protocols:
            try:
                tables.append(main_table(df, dataset=dataset, protocol=protocol, metric=metric, tie=tie, headline=headline))
            except ReportError as err:
                skipped.append(f"main table: {err}")
                continue
            abl = ablation_table(df, dataset=dataset, protocol=protocol, metric=metric, tie=tie, headline=headline)
            if abl is None:
                skipped.append(f"ablation table {dataset}/{protocol}: no variants of {headline!r} in the rows")
            else:
                tables.append(abl)
            sig = significance_table(df, dataset=dataset, protocol=protocol, metric=metric, tie=tie, headline=headline)
            if sig is None:
                skipped.append(f"significance {dataset}/{protocol}: no rows of headline method {headline!r}")
            else:
                tables.append(sig)
        try:
            tables.append(efficiency_table(df, dataset=dataset, protocol=protocols[0] if protocols else "unimodal",
                                           metric=metric, tie=tie))
        except ReportError as err:
            skipped.append(f"efficiency table: {err}")
    eng = engine_table(df)
    if eng is not None:
        tables.append(eng)
    return tables, skipped


def build_report(
    run_dir: str | Path,
    out: str | Path,
    *,
    formats: Sequence[str] = ("md", "latex"),
    headline: str = "mcmfh",
    metric: str = "map",
    tie: str = "aware",
    protocols: Sequence[str] | None = None,
    figures: bool = True,
    study: str | None = None,
    storage: str | None = None,
) -> Report:
    """Build tables (and figures) from the rows saved under ``run_dir``; nothing is retrained.

    Writes ``out/tables.md`` (all tables) and ``out/<table>.md`` when ``"md"`` is in ``formats``;
    ``out/<table>.tex`` fragments plus a standalone ``out/tables.tex`` when ``"latex"`` is; figures as PNG and
    PDF under ``out/figures/``; with ``study``, that Optuna study's history and parameter importances.

    Rows whose ``value`` is missing or not a number are left out and counted in :attr:`Report.warnings`.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` does not exist.
    ReportError
        If it holds no result rows, a line is not a JSON row, ``out`` (or a folder above it) is an existing file,
        a request cannot be answered (:func:`build_tables`), or no table can be built.
    """
    from benchmarks.results import load_rows
    from medhash_datasets.cache_io import atomic_write_text

    out = Path(out)
    blocker = next((q for q in (out, *out.parents) if q.exists() and not q.is_dir()), None)
    if blocker is not None:
        raise ReportError(f"output path {out} cannot be a folder: {blocker} is an existing file (choose another --out)")
    try:
        rows = load_rows(Path(run_dir))
    except ValueError as err:  # a damaged line: the message names file and line
        raise ReportError(str(err)) from None
    if rows.empty:
        raise ReportError(f"no result rows under {run_dir} (expected cells/**/*.jsonl written by `run`)")
    notes: list[str] = []
    n_bad = int(invalid_values(rows).sum())
    if n_bad:
        example = _file_with_invalid_value(Path(run_dir))
        notes.append(f"{n_bad} result row{'s' if n_bad != 1 else ''} without a numeric 'value' left out"
                     + (f" (e.g. in {example})" if example else ""))
    tables, skipped = build_tables(rows, headline=headline, metric=metric, tie=tie, protocols=protocols)
    if not tables:
        raise ReportError(f"no table could be built from {run_dir}: " + "; ".join(skipped))
    files: list[Path] = []
    if "md" in formats:
        for t in tables:
            files.append(out / f"{t.name}.md")
            atomic_write_text(files[-1], t.to_markdown())
        files.append(out / "tables.md")
        atomic_write_text(files[-1], f"# Report for {Path(run_dir)}\n\n" + "\n".join(t.to_markdown() for t in tables))
    if "latex" in formats:
        for t in tables:
            files.append(out / f"{t.name}.tex")
            atomic_write_text(files[-1], t.to_latex())
        files.append(out / "tables.tex")
        atomic_write_text(files[-1], latex_document(tables))
    if figures or study:
        from benchmarks import figures as figs

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if figures:
                made, why = figs.all_figures(normalise_rows(rows), out / "figures", headline=headline, metric=metric,
                                             tie=tie, protocols=protocols)
                files.extend(made)
                skipped.extend(why)
            if study:
                made, why = figs.study_figures(study, storage, out / "figures")
                files.extend(made)
                skipped.extend(why)
    return Report(out=out, tables=tables, files=files, skipped=skipped, warnings=notes)


def _file_with_invalid_value(run_dir: Path) -> Path | None:
    """The first ``*.jsonl`` file under ``run_dir`` holding a row without a numeric ``value`` (or ``None``)."""
    for path in sorted(run_dir.rglob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not _is_number(row.get("value") if isinstance(row, dict) else None):
                    return path
    return None


__all__ = [
    "REFERENCE_METHODS",
    "PairedTest",
    "Report",
    "ReportError",
    "Stat",
    "Table",
    "ablation_table",
    "bits_label",
    "build_report",
    "build_tables",
    "check_one_configuration",
    "check_request",
    "config_key",
    "efficiency_table",
    "engine_table",
    "holm",
    "latex_document",
    "latex_escape",
    "main_table",
    "metric_choices",
    "normalise_rows",
    "paired_test",
    "significance_table",
    "summarise",
]
