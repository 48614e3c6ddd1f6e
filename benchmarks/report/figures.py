"""Paper figures from saved result rows (matplotlib, Agg backend), each written as PNG (150 dpi) and PDF.

Figures: mAP against code length with error bars (std over seeds), precision–recall by Hamming radius,
precision@N, search latency against database size (``efficiency`` command rows), MCMFH expert load, and an
Optuna study's optimisation history and parameter importances. Legends sit outside the axes so no text
overlaps the data; every axis names its quantity and unit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.report.rows import (
    FLOAT_BITS,
    REFERENCE_METHODS,
    TASK_ORDER,
    bits_sort_key,
    is_ablation,
    select,
    summarise,
)
from benchmarks.report.tables import engine_labels, metric_label, order_variants

TASK_TITLES = {"i2t": "image → text", "t2i": "text → image", "i2i": "image → image", "t2t": "text → text"}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, stem: Path) -> list[Path]:
    """Write ``stem.png`` (150 dpi) and ``stem.pdf``, close the figure, return both paths."""
    plt = _plt()
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


def _tasks(df: pd.DataFrame) -> list[str]:
    present = set(df["task"])
    return [t for t in TASK_ORDER if t in present]


def _subplots(n: int, *, width: float = 4.6, height: float = 3.6) -> tuple[Any, list[Any]]:
    plt = _plt()
    fig, axes = plt.subplots(1, n, figsize=(width * n + 1.8, height), squeeze=False)
    return fig, list(axes[0])


def _legend_right(fig: Any, axes: list[Any]) -> None:
    handles, labels = axes[0].get_legend_handles_labels()
    seen: dict[str, Any] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()


def _main_variants(df: pd.DataFrame) -> pd.DataFrame:
    return df[[not is_ablation(v, m) for v, m in zip(df["variant"], df["method"])]]


def plot_map_vs_bits(
    df: pd.DataFrame, out_dir: Path, *, dataset: str, protocol: str, metric: str = "map", tie: str = "aware",
    headline: str = "mcmfh",
) -> list[Path]:
    """One panel per task: mean over seeds against code length, error bars = std over seeds; real-valued
    reference as a dashed line, chance as a dotted grey line. ``df`` comes from ``normalise_rows``."""
    plt = _plt()
    sel = _main_variants(select(df[df["dataset"] == dataset], metric=metric, tie=tie, protocol=protocol))
    if sel.empty:
        return []
    summary = summarise(sel, ["variant", "task", "bits_label"])
    tasks = _tasks(summary)
    bits = sorted({b for b in summary["bits_label"] if b != FLOAT_BITS}, key=bits_sort_key)
    if not bits:
        return []
    fig, axes = _subplots(len(tasks))
    variants = order_variants(list(dict.fromkeys(summary["variant"])), headline)
    colors = plt.get_cmap("tab10")
    for ax, task in zip(axes, tasks):
        part = summary[summary["task"] == task]
        for i, variant in enumerate(variants):
            v = part[part["variant"] == variant]
            if v.empty:
                continue
            if set(v["bits_label"]) == {FLOAT_BITS}:
                ax.axhline(float(v["mean"].iloc[0]), color="black", linestyle="--", linewidth=1.2,
                           label=f"{variant} (float32)")
                continue
            v = v[v["bits_label"] != FLOAT_BITS].sort_values("bits_label", key=lambda s: s.map(bits_sort_key))
            x = v["bits_label"].astype(int).to_numpy()
            ax.errorbar(x, v["mean"], yerr=v["std"].fillna(0.0), marker="o", capsize=3, color=colors(i % 10),
                        linewidth=2.2 if variant == headline else 1.4, label=variant)
        chance = part.groupby("bits_label")["chance"].mean()
        chance = chance[[b for b in bits if b in chance.index]]
        if chance.notna().any():
            ax.plot([int(b) for b in chance.index], chance.to_numpy(), linestyle=":", color="grey", label="chance")
        ax.set_xscale("log", base=2)
        ax.set_xticks([int(b) for b in bits], [str(b) for b in bits])
        ax.minorticks_off()
        ax.set_xlabel("code length K (bits)")
        ax.set_ylabel(metric_label(metric, tie))
        ax.set_title(TASK_TITLES.get(task, task))
        ax.grid(alpha=0.3)
    fig.suptitle(f"{dataset} ({protocol} protocol): {metric_label(metric, tie)} vs code length, mean ± std over seeds")
    _legend_right(fig, axes)
    return save_figure(fig, out_dir / f"map_vs_bits_{dataset}_{protocol}")


def _curve_figure(
    df: pd.DataFrame, out_dir: Path, *, dataset: str, protocol: str, tie: str, headline: str, kind: str
) -> list[Path]:
    plt = _plt()
    data = df[(df["dataset"] == dataset) & (df["protocol"] == protocol)]
    data = _main_variants(data)
    if kind == "pr":
        metrics = ("pr_radius_precision", "pr_radius_recall")
    else:
        metrics = ("p@n",)
    data = data[data["metric"].isin(metrics)]
    if data.empty:
        return []
    if tie in set(data["tie"]):
        data = data[data["tie"] == tie]
    paths: list[Path] = []
    for b in sorted(set(data["bits_label"]) - {FLOAT_BITS}, key=bits_sort_key):
        part = data[data["bits_label"].isin([b, FLOAT_BITS])]
        curve = part.groupby(["variant", "task", "metric", "k"])["value"].mean().unstack("metric").reset_index()
        tasks = _tasks(curve)
        fig, axes = _subplots(len(tasks))
        variants = order_variants(list(dict.fromkeys(curve["variant"])), headline)
        for ax, task in zip(axes, tasks):
            for i, variant in enumerate(variants):
                c = curve[(curve["task"] == task) & (curve["variant"] == variant)].sort_values("k")
                if c.empty or any(m not in c.columns for m in metrics):
                    continue
                style = {"color": plt.get_cmap("tab10")(i % 10), "linewidth": 2.2 if variant == headline else 1.3}
                if variant in REFERENCE_METHODS:
                    style["linestyle"] = "--"
                if kind == "pr":
                    ax.plot(c["pr_radius_recall"], c["pr_radius_precision"], marker=".", label=variant, **style)
                else:
                    ax.plot(c["k"], c["p@n"], marker=".", label=variant, **style)
            if kind == "pr":
                ax.set_xlabel("recall within Hamming radius r")
                ax.set_ylabel("precision within Hamming radius r")
                ax.set_xlim(-0.02, 1.02)
            else:
                ax.set_xlabel("N (top-N retrieved items)")
                ax.set_ylabel("precision@N")
            ax.set_ylim(bottom=0)
            ax.set_title(TASK_TITLES.get(task, task))
            ax.grid(alpha=0.3)
        what = "precision–recall by Hamming radius r = 0..K" if kind == "pr" else "precision@N"
        fig.suptitle(f"{dataset} ({protocol} protocol), {b} bits: {what}, mean over seeds")
        _legend_right(fig, axes)
        paths += save_figure(fig, out_dir / f"{'pr_radius' if kind == 'pr' else 'precision_at_n'}_{dataset}_{protocol}_{b}bits")
    return paths


def plot_pr_curves(df: pd.DataFrame, out_dir: Path, *, dataset: str, protocol: str, tie: str = "aware",
                   headline: str = "mcmfh") -> list[Path]:
    """Precision against recall of the items within Hamming radius r (one point per r), one figure per code
    length, one panel per task (rows ``pr_radius_precision`` / ``pr_radius_recall``, k = r)."""
    return _curve_figure(df, out_dir, dataset=dataset, protocol=protocol, tie=tie, headline=headline, kind="pr")


def plot_precision_at_n(df: pd.DataFrame, out_dir: Path, *, dataset: str, protocol: str, tie: str = "aware",
                        headline: str = "mcmfh") -> list[Path]:
    """Precision of the top N against N (rows ``p@n``, k = N), one figure per code length."""
    return _curve_figure(df, out_dir, dataset=dataset, protocol=protocol, tie=tie, headline=headline, kind="pn")


LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P")


def latency_styles(groups: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Line style per (engine, bits label): one colour per engine (``tab10``, ``tab20`` beyond ten engines), one
    line style and marker per code length (float features solid with circles), so that engines are told apart
    by colour and code lengths by dash pattern."""
    plt = _plt()
    engines = sorted({e for e, _ in groups})
    cmap = plt.get_cmap("tab10" if len(engines) <= 10 else "tab20")
    bits = sorted({b for _, b in groups if b != FLOAT_BITS}, key=bits_sort_key)
    styles: dict[tuple[str, str], dict[str, Any]] = {}
    for engine, b in groups:
        j = 0 if b == FLOAT_BITS else bits.index(b)
        styles[(engine, b)] = {"color": cmap(engines.index(engine) % cmap.N),
                               "linestyle": LINESTYLES[j % len(LINESTYLES)], "marker": MARKERS[j % len(MARKERS)]}
    return styles


def plot_latency_vs_db_size(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Median query latency (ms, log scale) against database size (items, log scale), one line per
    (engine, bits), from the ``efficiency`` command's rows; p95 as a shaded band when present. Colour = engine,
    line style and marker = code length (:func:`latency_styles`)."""
    plt = _plt()
    data = df[(df["protocol"] == "efficiency") & df["metric"].isin(["latency_ms_median", "latency_ms_p95"])]
    if data.empty:
        return []
    data = data.assign(engine=engine_labels(data), db_size=pd.to_numeric(data["db_size"], errors="coerce"))
    table = data.groupby(["engine", "bits_label", "db_size", "metric"])["value"].mean().unstack("metric").reset_index()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    groups = list(table.groupby(["engine", "bits_label"], sort=True))
    styles = latency_styles([key for key, _ in groups])
    for (engine, b), g in groups:
        g = g.sort_values("db_size")
        label = engine if b == FLOAT_BITS else f"{engine}, {b} bits"
        style = styles[(engine, b)]
        color = style["color"]
        ax.plot(g["db_size"], g["latency_ms_median"], label=label, **style)
        if "latency_ms_p95" in g:
            ax.fill_between(g["db_size"], g["latency_ms_median"], g["latency_ms_p95"], color=color, alpha=0.12)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("database size N (items)")
    ax.set_ylabel("latency per query (ms, median; band to p95)")
    ax.set_title("Top-100 search latency against database size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return save_figure(fig, out_dir / "latency_vs_db_size")


def plot_expert_load(df: pd.DataFrame, out_dir: Path, *, dataset: str) -> list[Path]:
    """MCMFH expert load: fraction of token-to-expert assignments per expert (sums to 1 over experts) (rows ``expert_load``, k = expert index),
    grouped bars per (variant, bits), error bars = std over seeds, dashed line at the uniform load 1/E."""
    plt = _plt()
    data = df[(df["dataset"] == dataset) & (df["metric"] == "expert_load")]
    if data.empty:
        return []
    summary = summarise(data, ["variant", "bits_label", "k"])
    series = sorted({(v, b) for v, b in zip(summary["variant"], summary["bits_label"])},
                    key=lambda vb: (vb[0], bits_sort_key(vb[1])))
    experts = sorted(int(k) for k in set(summary["k"]) if math.isfinite(k))
    width = 0.8 / max(1, len(series))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(experts) + 3), 4.2))
    for i, (variant, b) in enumerate(series):
        s = summary[(summary["variant"] == variant) & (summary["bits_label"] == b)].sort_values("k")
        x = np.asarray(s["k"], dtype=float) + (i - (len(series) - 1) / 2) * width
        ax.bar(x, s["mean"], width=width, yerr=s["std"].fillna(0.0), capsize=3, label=f"{variant}, {b} bits")
    if experts:
        ax.axhline(1.0 / len(experts), color="black", linestyle="--", linewidth=1, label=f"uniform (1/{len(experts)})")
    ax.set_xticks(experts, [f"expert {e}" for e in experts])
    ax.set_xlabel("expert")
    ax.set_ylabel("load (fraction of token→expert assignments)")
    ax.set_title(f"{dataset}: MoE expert load, mean ± std over seeds")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return save_figure(fig, out_dir / f"expert_load_{dataset}")


def study_figures(study_name: str, storage: str | None, out_dir: Path) -> tuple[list[Path], list[str]]:
    """Optimisation history and parameter importances of an Optuna study (``optuna.visualization.matplotlib``).

    Returns
    -------
    (paths, skipped)
        Figures written, and why one was not (e.g. importances need two completed trials with varying
        parameters).

    Raises
    ------
    UsageError
        If the study does not exist.
    """
    import warnings

    import optuna
    from matplotlib.ticker import MaxNLocator
    from optuna.visualization import matplotlib as ovm

    from benchmarks.tuning import load_study

    plt = _plt()
    study = load_study(study_name, storage)
    paths: list[Path] = []
    skipped: list[str] = []
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in study_name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if not complete:
            return [], [f"study {study_name}: no completed trial to plot"]
        ax = ovm.plot_optimization_history(study, target_name="validation mAP")
        ax.set_xlabel("trial number")
        ax.set_ylabel("validation mAP (tie-aware)")
        for loc in ("left", "center", "right"):
            ax.set_title("", loc=loc)
        n_pruned = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.PRUNED,)))
        ax.set_title(f"Optuna history: {study_name} ({len(complete)} complete, {n_pruned} pruned trials)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
        ax.figure.set_size_inches(9.0, 4.5)
        ax.figure.tight_layout()
        paths += save_figure(ax.figure, out_dir / f"optuna_history_{safe}")
        try:
            ax = ovm.plot_param_importances(study, target_name="validation mAP")
            for loc in ("left", "center", "right"):  # optuna titles on the left; keep one title only
                ax.set_title("", loc=loc)
            ax.set_title(f"Parameter importances: {study_name}")
            ax.set_xlabel("importance for validation mAP (PED-ANOVA, normalised)")
            ax.set_ylabel("parameter")
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            ax.set_xlim(0, 1.15 * max(1e-9, max((p.get_width() for p in ax.patches), default=1.0)))
            ax.figure.set_size_inches(7.5, max(3.0, 0.5 * len(complete[0].params) + 2))
            ax.figure.tight_layout()
            paths += save_figure(ax.figure, out_dir / f"optuna_importances_{safe}")
        except (ValueError, RuntimeError) as err:
            plt.close("all")
            skipped.append(f"study {study_name}: no parameter importances ({err})")
    return paths, skipped


def all_figures(
    df: pd.DataFrame, out_dir: Path, *, headline: str = "mcmfh", metric: str = "map", tie: str = "aware",
    protocols: Sequence[str] | None = None,
) -> tuple[list[Path], list[str]]:
    """Every figure the normalised rows allow; also the reasons a figure kind was not drawn."""
    paths: list[Path] = []
    skipped: list[str] = []
    acc = df[df["protocol"].isin(("unimodal", "paired"))]
    protocols = list(protocols) if protocols else [p for p in ("unimodal", "paired") if p in set(acc["protocol"])]
    for dataset in sorted(set(df.loc[df["protocol"] != "efficiency", "dataset"].dropna())):
        for protocol in protocols:
            kw = {"dataset": dataset, "protocol": protocol, "tie": tie, "headline": headline}
            for kind, fn, extra in (("mAP vs bits", plot_map_vs_bits, {"metric": metric}),
                                    ("PR curves", plot_pr_curves, {}),
                                    ("precision@N", plot_precision_at_n, {})):
                made = fn(df, out_dir, **kw, **extra)
                paths += made
                if not made:
                    skipped.append(f"{kind} figure {dataset}/{protocol}: no matching rows")
        made = plot_expert_load(df, out_dir, dataset=dataset)
        paths += made
        if not made:
            skipped.append(f"expert load figure {dataset}: no expert_load rows")
    made = plot_latency_vs_db_size(df, out_dir)
    paths += made
    if not made:
        skipped.append("latency figure: no rows of the efficiency command")
    return paths, skipped
