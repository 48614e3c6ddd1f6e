"""Figures of the efficiency studies: search latency against database size (approximate engines marked, with
their recall) and the end-to-end stacked bars of where a query's time goes.

Figures are column-width friendly: at most 7 in wide with 8 pt text, so they stay legible (>= 7 pt) when
scaled to a two-column page; each is saved as PNG (150 dpi) and PDF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.search.frames import search_frame

if TYPE_CHECKING:
    from benchmarks.search.study import EfficiencySpec

#: Font size (pt) of every text element of these figures.
FONT_PT = 8
#: Stages of the end-to-end figure, bottom to top, with their colours.
STAGE_COLOURS = {"encoder": "#4c72b0", "encode": "#dd8452", "search": "#55a868"}


def figure_title(spec: EfficiencySpec) -> str:
    src = "uniform random codes" if spec.random else f"{spec.method} on {spec.dataset} ({spec.task})"
    clock = "wall-clock" if spec.clock == "wall" else "CPU time"
    return f"Top-{spec.k} search latency ({clock}), {src}, {spec.threads} thread(s)"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": FONT_PT, "axes.titlesize": FONT_PT, "axes.labelsize": FONT_PT,
                         "legend.fontsize": FONT_PT - 1, "xtick.labelsize": FONT_PT, "ytick.labelsize": FONT_PT})
    return plt


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.pdf"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def plot_latency(rows: Sequence[dict[str, Any]], out_dir: Path, *, title: str = "") -> list[Path]:
    """Log-log latency against database size, one line per engine and code length / feature set.

    Left panel: median time per query at batch size 1; right panel: time per query inside a batch
    (``batch_latency_ms_median / batch_size``). Exact engines are solid lines with filled markers;
    approximate engines dash-dotted with hollow markers, labelled "approximate, recall@k a–b" with the range
    of their measured recall, so a fast approximate engine is never read as an exact one. Saved as
    ``latency_vs_db_size.png`` / ``.pdf``.

    Returns
    -------
    list[Path]
        The two files written.
    """
    plt = _pyplot()
    wide = search_frame(rows)
    batch_sizes = [r.get("batch_size") for r in rows if r.get("engine") and r.get("batch_size")]
    bs = batch_sizes[0] if batch_sizes else 1
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 3.0), sharey=True)
    markers = {"popcount": "o", "BFlat": "s", "hash-ball": "*", "numpy-ip": "D", "FlatIP": "v", "BHashTable": "P"}
    bits_list = sorted({int(b) for b in wide["bits"].dropna()}) if not wide.empty else []
    cmap = plt.get_cmap("viridis")
    colours = {b: cmap(i / max(1, len(bits_list) - 1) * 0.85) for i, b in enumerate(bits_list)}
    if not wide.empty:
        for series, g in wide.groupby("series", sort=True):
            g = g.sort_values("db_size")
            first = g.iloc[0]
            binary = not (isinstance(first["bits"], float) and math.isnan(first["bits"]))
            label, style = series, {"marker": markers.get(first["engine"], "^"), "markersize": 4, "linewidth": 1.2}
            if binary:
                style["color"] = colours[int(first["bits"])]
            else:
                style["color"] = "tab:red" if first["engine"] == "numpy-ip" else "tab:orange"
                style["linestyle"] = ":" if first["feature_space"] else "--"
            if not first["exact"]:
                rec = g["recall@k"].dropna() if "recall@k" in g else []
                span = "not measured" if not len(rec) else (
                    f"{rec.min():.2f}" if round(rec.min(), 2) == round(rec.max(), 2) else f"{rec.min():.2f}–{rec.max():.2f}")
                label += f" (approximate, recall@k {span})"
                style.update(linestyle="-.", markerfacecolor="none")
            axes[0].plot(g["db_size"], g["latency_ms_median"], label=label, **style)
            axes[1].plot(g["db_size"], g["batch_latency_ms_median"] / bs, **style)
    for ax, sub in zip(axes, ("one query per call (median)", f"per query, batches of {bs} (median)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("database size N (items)")
        ax.set_title(sub)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency per query (ms)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    paths = _save(fig, out_dir, "latency_vs_db_size")
    plt.close(fig)
    return paths


def plot_end_to_end(table, out_dir: Path, *, title: str = "") -> list[Path]:
    """Stacked bars of where one query's time goes (encoder, method encode, search), per task and database size.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`benchmarks.search.e2e_table.end_to_end_frame` output: one line per (task, db_size, method, bits,
        engine) with ``encoder_ms``, ``encode_ms``, ``search_ms``, ``total_ms``, ``short`` and ``order``. Each
        method is drawn with its fastest engine at each size; the speed-up over real-valued is written above
        each hashing bar.
    out_dir : Path
    title : str

    Returns
    -------
    list[Path]
        ``end_to_end_latency.png`` / ``.pdf``.
    """
    plt = _pyplot()
    from matplotlib.transforms import blended_transform_factory

    table = table.loc[table.groupby(["task", "db_size", "method", "bits"])["total_ms"].idxmin()]
    tasks = sorted(table["task"].unique())
    fig, axes = plt.subplots(len(tasks), 1, figsize=(7.0, 2.8 * len(tasks)), squeeze=False)
    for ax, task in zip(axes[:, 0], tasks):
        t = table[table["task"] == task].sort_values(["db_size", "order"])
        x, ticks, names, groups = 0.0, [], [], []
        for n, g in t.groupby("db_size", sort=True):
            start = x
            for _, r in g.iterrows():
                bottom = 0.0
                for stage, colour in STAGE_COLOURS.items():
                    ax.bar(x, r[f"{stage}_ms"], bottom=bottom, color=colour, width=0.8,
                           label=stage if not ticks else None)
                    bottom += r[f"{stage}_ms"]
                speedup = r.get("speedup")
                if r["method"] != "real-valued" and speedup is not None and math.isfinite(speedup):
                    ax.text(x, bottom, f"{speedup:.1f}×", ha="center", va="bottom", fontsize=FONT_PT - 1)
                ticks.append(x)
                names.append(r["display"])
                x += 1.0
            groups.append(((start + x - 1.0) / 2.0, n))
            x += 0.8
        ax.set_xticks(ticks)
        ax.set_xticklabels(names, rotation=35, ha="right")
        below = blended_transform_factory(ax.transData, ax.transAxes)
        for centre, n in groups:
            ax.text(centre, 1.02, f"N = {int(n):,}", transform=below, ha="center", va="bottom")
        ax.set_ylabel(f"{task}: ms per query")
        ax.margins(y=0.12)
        ax.grid(True, axis="y", alpha=0.3)
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, ["frozen encoder", "method encode", "top-k search"][: len(handles)], loc="upper center",
               bbox_to_anchor=(0.5, 0.0), ncol=3, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    paths = _save(fig, out_dir, "end_to_end_latency")
    plt.close(fig)
    return paths
