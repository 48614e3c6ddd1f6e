"""Paper figures from saved result rows (matplotlib, Agg backend), each written as PNG and PDF at page width
(7 in) and at column width (3.5 in, ``*_col``) with text of at least 7 pt (:mod:`benchmarks.report.style`).

Figures: mAP against code length (error bars = std over seeds, none where a point has one seed),
precision–recall by Hamming radius (from the first non-empty Hamming ball on: a radius holding no item has no
precision and is not drawn as 0), precision@N (log N axis), search latency against database size
(``efficiency`` command rows; approximate engines marked with their recall), MCMFH expert load, and an Optuna
study's optimisation history and parameter importances. Every method keeps one colour and marker in every
figure and is named by its display name; the chance level is a black dotted line drawn on top; titles state the
number of seeds (``n = 1`` for one seed, never "± std" then).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.report.rows import (
    FLOAT_BITS,
    TASK_ORDER,
    bits_sort_key,
    is_ablation,
    seeds_phrase,
    select,
    summarise,
)
from benchmarks.report.style import (
    CHANCE_STYLE,
    display,
    legend_below,
    method_style,
    panel_figure,
    plt,
    save_figure,
    sizes,
    wrap,
)
from benchmarks.report.tables import approximate_engines, engine_labels, metric_label, order_variants

TASK_TITLES = {"i2t": "image → text", "t2i": "text → image", "i2i": "image → image", "t2t": "text → text"}


def _tasks(df: pd.DataFrame) -> list[str]:
    present = set(df["task"])
    return [t for t in TASK_ORDER if t in present]


def _main_variants(df: pd.DataFrame) -> pd.DataFrame:
    return df[np.array([not is_ablation(e, m) for e, m in zip(df["entry"], df["method"])], dtype=bool)]


def _line_kw(variant: str, headline: str) -> dict:
    style = method_style(variant)
    return {**style, "linewidth": 2.0 if variant == headline else 1.3, "label": display(variant)}


def plot_map_vs_bits(
    df: pd.DataFrame, out_dir: Path, *, dataset: str, protocol: str, metric: str = "map", tie: str = "aware",
    headline: str = "mcmfh",
) -> list[Path]:
    """One panel per task: mean over seeds against code length, error bars = std over seeds where a point has
    more than one seed; real-valued reference as a dashed line, chance as the dotted black line on top.
    ``df`` comes from ``normalise_rows``."""
    sel = _main_variants(select(df[df["dataset"] == dataset], metric=metric, tie=tie, protocol=protocol))
    if sel.empty:
        return []
    summary = summarise(sel, ["variant", "task", "bits_label"])
    tasks = _tasks(summary)
    bits = sorted({b for b in summary["bits_label"] if b != FLOAT_BITS}, key=bits_sort_key)
    if not bits or not tasks:
        return []
    variants = order_variants(list(dict.fromkeys(summary["variant"])), headline)
    title = f"{dataset}, {protocol} protocol: {metric_label(metric, tie)}; {seeds_phrase(summary['n_seeds'])}"
    paths: list[Path] = []
    for size in sizes():
        fig, axes = panel_figure(len(tasks), size)
        for ax, task in zip(axes, tasks):
            part = summary[summary["task"] == task]
            for variant in variants:
                v = part[part["variant"] == variant]
                if v.empty:
                    continue
                kw = _line_kw(variant, headline)
                if set(v["bits_label"]) == {FLOAT_BITS}:
                    ax.axhline(float(v["mean"].iloc[0]), color=kw["color"], linestyle="--", linewidth=1.2,
                               label=f"{kw['label']} (float32)")
                    continue
                v = v[v["bits_label"] != FLOAT_BITS].sort_values("bits_label", key=lambda s: s.map(bits_sort_key))
                x = v["bits_label"].astype(int).to_numpy()
                ax.plot(x, v["mean"], **kw)
                spread = (v["n_seeds"] > 1).to_numpy() & v["std"].notna().to_numpy()
                if spread.any():  # no zero-length bar for a one-seed point
                    ax.errorbar(x[spread], v["mean"].to_numpy()[spread], yerr=v["std"].to_numpy()[spread], fmt="none",
                                ecolor=kw["color"], elinewidth=1.0)
            chance = part.groupby("bits_label")["chance"].mean()
            chance = chance[[b for b in bits if b in chance.index]]
            if chance.notna().any():
                ax.plot([int(b) for b in chance.index], chance.to_numpy(), **CHANCE_STYLE)
            ax.set_xscale("log", base=2)
            ax.set_xticks([int(b) for b in bits], [str(b) for b in bits])
            ax.minorticks_off()
            ax.set_xlabel("code length K (bits)")
            ax.set_ylabel(metric_label(metric, tie))
            ax.set_title(TASK_TITLES.get(task, task))
            ax.grid(alpha=0.3)
        fig.suptitle(wrap(title, size))
        legend_below(fig, axes, size)
        paths += save_figure(fig, out_dir / f"map_vs_bits_{dataset}_{protocol}{size.suffix}")
    return paths


def pr_points(data: pd.DataFrame) -> pd.DataFrame:
    """Precision and recall by Hamming radius per (variant, task, k = r), averaged over seeds over the
    **non-empty** balls only.

    A ball of radius r is empty for a seed when no (query, item) pair lies within r: its recall row's ``chance``
    (the fraction of pairs within r) is 0, or, for rows without chance, precision and recall are both 0. Its
    precision is undefined (the evaluator writes 0), so the point is dropped instead of drawn at precision 0.

    Parameters
    ----------
    data : pd.DataFrame
        Normalised rows of metrics ``pr_radius_precision`` and ``pr_radius_recall``.

    Returns
    -------
    pd.DataFrame
        Columns ``variant``, ``task``, ``k``, ``precision``, ``recall``, ``n_seeds`` (seeds with a non-empty ball);
        radii with no non-empty ball in any seed are absent.
    """
    keys = ["variant", "task", "seed", "k"]
    prec = data[data["metric"] == "pr_radius_precision"].groupby(keys)[["value", "chance"]].mean()
    rec = data[data["metric"] == "pr_radius_recall"].groupby(keys)[["value", "chance"]].mean()
    both = prec.add_suffix("_p").join(rec.add_suffix("_r"), how="inner").reset_index()
    pairs_within = both["chance_r"]
    empty = (pairs_within == 0) | (pairs_within.isna() & (both["value_p"] == 0) & (both["value_r"] == 0))
    kept = both[~empty.to_numpy()]
    out = kept.groupby(["variant", "task", "k"]).agg(precision=("value_p", "mean"), recall=("value_r", "mean"),
                                                     n_seeds=("seed", "nunique"))
    return out.reset_index()


def _curve_figure(
    df: pd.DataFrame, out_dir: Path, *, dataset: str, protocol: str, tie: str, headline: str, kind: str
) -> list[Path]:
    data = _main_variants(df[(df["dataset"] == dataset) & (df["protocol"] == protocol)])
    metrics = ("pr_radius_precision", "pr_radius_recall") if kind == "pr" else ("p@n",)
    data = data[data["metric"].isin(metrics)]
    if data.empty:
        return []
    if tie in set(data["tie"]):
        data = data[data["tie"] == tie]
    paths: list[Path] = []
    for b in sorted(set(data["bits_label"]) - {FLOAT_BITS}, key=bits_sort_key):
        part = data[data["bits_label"].isin([b, FLOAT_BITS])]
        if kind == "pr":
            curve = pr_points(part).rename(columns={"precision": "y", "recall": "x"})
            chance_rows = part[part["metric"] == "pr_radius_precision"]
        else:
            curve = part.groupby(["variant", "task", "k"]).agg(y=("value", "mean"), n_seeds=("seed", "nunique"))
            curve = curve.reset_index().assign(x=lambda c: c["k"])
            chance_rows = part
        tasks = _tasks(curve)
        if not tasks:
            continue
        chance = chance_rows.groupby("task")["chance"].mean()
        variants = order_variants(list(dict.fromkeys(curve["variant"])), headline)
        n_seeds = part.groupby(["variant", "task"])["seed"].nunique()
        what = "precision–recall by Hamming radius" if kind == "pr" else "precision@N"
        title = f"{dataset}, {protocol} protocol, {b} bits: {what}; {_mean_phrase(n_seeds)}"
        stem = f"{'pr_radius' if kind == 'pr' else 'precision_at_n'}_{dataset}_{protocol}_{b}bits"
        for size in sizes():
            fig, axes = panel_figure(len(tasks), size)
            for ax, task in zip(axes, tasks):
                for variant in variants:
                    c = curve[(curve["task"] == task) & (curve["variant"] == variant)].sort_values("k")
                    if not c.empty:
                        ax.plot(c["x"], c["y"], **_line_kw(variant, headline))
                if math.isfinite(chance.get(task, float("nan"))):
                    ax.axhline(float(chance[task]), **CHANCE_STYLE)
                if kind == "pr":
                    ax.set_xlabel("recall within radius r")
                    ax.set_ylabel("precision within radius r")
                    ax.set_xlim(-0.02, 1.02)
                else:
                    ax.set_xscale("log")
                    ax.xaxis.set_major_formatter(_plain_ticks())
                    ax.set_xlabel("N (top-N items, log scale)")
                    ax.set_ylabel("precision@N")
                ax.set_ylim(bottom=0)
                ax.set_title(TASK_TITLES.get(task, task))
                ax.grid(alpha=0.3, which="both")
            fig.suptitle(wrap(title, size))
            legend_below(fig, axes, size)
            paths += save_figure(fig, out_dir / f"{stem}{size.suffix}")
    return paths


def _plain_ticks() -> object:
    """Tick labels 1, 10, 100 (not 10^0, 10^1) on a log axis."""
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda x, _: f"{x:,.0f}" if x >= 1 else f"{x:g}")


def _mean_phrase(n_seeds: pd.Series) -> str:
    """``"mean over 3 seeds"``, ``"one seed (n = 1)"``, ``"mean over 1–3 seeds"`` for curve titles."""
    ns = sorted({int(n) for n in n_seeds})
    if ns == [1]:
        return "one seed (n = 1)"
    return f"mean over {ns[0]} seeds" if len(ns) == 1 else f"mean over {ns[0]}–{ns[-1]} seeds"


def plot_pr_curves(df: pd.DataFrame, out_dir: Path, *, dataset: str, protocol: str, tie: str = "aware",
                   headline: str = "mcmfh") -> list[Path]:
    """Precision against recall of the items within Hamming radius r (one point per non-empty r, see
    :func:`pr_points`), one figure per code length, one panel per task."""
    return _curve_figure(df, out_dir, dataset=dataset, protocol=protocol, tie=tie, headline=headline, kind="pr")


def plot_precision_at_n(df: pd.DataFrame, out_dir: Path, *, dataset: str, protocol: str, tie: str = "aware",
                        headline: str = "mcmfh") -> list[Path]:
    """Precision of the top N against N on a log axis (rows ``p@n``, k = N), one figure per code length."""
    return _curve_figure(df, out_dir, dataset=dataset, protocol=protocol, tie=tie, headline=headline, kind="pn")


LINESTYLES = ("-", "--", "-.", ":")
ENGINE_MARKERS = ("o", "s", "^", "D", "v", "P")


def latency_styles(groups: Sequence[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """Line style per (engine, bits label): one colour per engine (``tab10``, ``tab20`` beyond ten engines), one
    line style and marker per code length (float features solid with circles), so that engines are told apart
    by colour and code lengths by dash pattern."""
    pyplot = plt()
    engines = sorted({e for e, _ in groups})
    cmap = pyplot.get_cmap("tab10" if len(engines) <= 10 else "tab20")
    bits = sorted({b for _, b in groups if b != FLOAT_BITS}, key=bits_sort_key)
    styles: dict[tuple[str, str], dict] = {}
    for engine, b in groups:
        j = 0 if b == FLOAT_BITS else bits.index(b)
        styles[(engine, b)] = {"color": cmap(engines.index(engine) % cmap.N),
                               "linestyle": LINESTYLES[j % len(LINESTYLES)],
                               "marker": ENGINE_MARKERS[j % len(ENGINE_MARKERS)]}
    return styles


def plot_latency_vs_db_size(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Median query latency (ms, log scale) against database size (items, log scale), one line per
    (engine, bits), from the ``efficiency`` command's rows; p95 as a shaded band when present. Colour = engine,
    line style and marker = code length (:func:`latency_styles`). Approximate engines (those with ``recall@k``
    rows) are drawn with hollow markers and labelled ``approx., recall@k <lowest>``: a fast line that finds
    few of the true neighbours must not read as the fastest exact search."""
    data = df[(df["protocol"] == "efficiency") & df["metric"].isin(["latency_ms_median", "latency_ms_p95"])]
    if data.empty:
        return []
    approx = approximate_engines(df)
    recall = df[(df["protocol"] == "efficiency") & (df["metric"] == "recall@k")]
    recall = recall.assign(engine=engine_labels(recall)).groupby(["engine", "bits_label"])["value"].min()
    data = data.assign(engine=engine_labels(data), db_size=pd.to_numeric(data["db_size"], errors="coerce"))
    table = data.groupby(["engine", "bits_label", "db_size", "metric"])["value"].mean().unstack("metric").reset_index()
    groups = list(table.groupby(["engine", "bits_label"], sort=True))
    styles = latency_styles([key for key, _ in groups])
    paths: list[Path] = []
    for size in sizes():
        fig, axes = panel_figure(1, size, panel_height=2.8, extra_height=1.2)
        ax = axes[0]
        for (engine, b), g in groups:
            g = g.sort_values("db_size")
            label = engine if b == FLOAT_BITS else f"{engine}, {b} bits"
            style = dict(styles[(engine, b)])
            if engine in approx:
                r = recall.get((engine, b), float("nan"))
                label += f" (approx., recall@k ≥ {r:.3g})" if math.isfinite(r) else " (approx.)"
                style.update(markerfacecolor="none", linewidth=1.0)
            ax.plot(g["db_size"], g["latency_ms_median"], label=label, **style)
            if "latency_ms_p95" in g:
                ax.fill_between(g["db_size"], g["latency_ms_median"], g["latency_ms_p95"], color=style["color"],
                                alpha=0.12)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("database size N (items)")
        ax.set_ylabel("latency per query (ms; band to p95)")
        ax.grid(alpha=0.3, which="both")
        fig.suptitle(wrap("Top-100 search latency against database size (median)", size))
        legend_below(fig, axes, size)
        paths += save_figure(fig, out_dir / f"latency_vs_db_size{size.suffix}")
    return paths


def plot_expert_load(df: pd.DataFrame, out_dir: Path, *, dataset: str) -> list[Path]:
    """MCMFH expert load: fraction of token-to-expert assignments per expert (sums to 1 over experts; rows
    ``expert_load``, k = expert index), grouped bars per (variant, bits), error bars = std over seeds where there
    is more than one seed, dashed line at the uniform load 1/E. With one model per protocol (rows tagged with the
    protocol their model was selected under) the unimodal-selected models are shown, else the only ones there are."""
    data = df[(df["dataset"] == dataset) & (df["metric"] == "expert_load")]
    if data.empty:
        return []
    if data["protocol"].isin(["-", "unimodal"]).any():
        data = data[data["protocol"].isin(["-", "unimodal"])]
    summary = summarise(data, ["variant", "bits_label", "k"])
    series = sorted({(v, b) for v, b in zip(summary["variant"], summary["bits_label"])},
                    key=lambda vb: (vb[0], bits_sort_key(vb[1])))
    experts = sorted(int(k) for k in set(summary["k"]) if math.isfinite(k))
    width = 0.8 / max(1, len(series))
    title = f"{dataset}: MoE expert load; {seeds_phrase(summary['n_seeds'])}"
    paths: list[Path] = []
    for size in sizes():
        fig, axes = panel_figure(1, size, panel_height=2.6, extra_height=1.0)
        ax = axes[0]
        for i, (variant, b) in enumerate(series):
            s = summary[(summary["variant"] == variant) & (summary["bits_label"] == b)].sort_values("k")
            x = np.asarray(s["k"], dtype=float) + (i - (len(series) - 1) / 2) * width
            err = np.where(s["n_seeds"].to_numpy() > 1, s["std"].fillna(0.0).to_numpy(), np.nan)
            ax.bar(x, s["mean"], width=width, yerr=None if np.isnan(err).all() else err, capsize=2,
                   label=f"{display(variant)}, {b} bits")
        if experts:
            ax.axhline(1.0 / len(experts), color="black", linestyle="--", linewidth=1,
                       label=f"uniform (1/{len(experts)})")
        ax.set_xticks(experts, [str(e) for e in experts])
        ax.set_xlabel("expert")
        ax.set_ylabel("load (fraction of assignments)")
        ax.grid(alpha=0.3, axis="y")
        fig.suptitle(wrap(title, size))
        legend_below(fig, axes, size)
        paths += save_figure(fig, out_dir / f"expert_load_{dataset}{size.suffix}")
    return paths


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

    pyplot = plt()
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
        paths += save_figure(ax.figure, out_dir / f"optuna_history_{safe}", tight=True)
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
            paths += save_figure(ax.figure, out_dir / f"optuna_importances_{safe}", tight=True)
        except (ValueError, RuntimeError) as err:
            pyplot.close("all")
            skipped.append(f"study {study_name}: no parameter importances ({err})")
    return paths, skipped


def all_figures(
    df: pd.DataFrame, out_dir: Path, *, headline: str = "mcmfh", metric: str = "map", tie: str = "aware",
    protocols: Sequence[str] | None = None,
) -> tuple[list[Path], list[str]]:
    """Every figure the normalised rows allow (both sizes); also the reasons a figure kind was not drawn."""
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
