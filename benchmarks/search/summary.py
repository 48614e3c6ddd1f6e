"""Ratio tables, target checks, the latency figure and the written tables of an efficiency study."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the study module imports this one
    from benchmarks.search.study import EfficiencySpec


DEFAULT_ENGINES = ("popcount", "BFlat", "BHash4", "numpy-ip", "FlatIP")
DEFAULT_DB_SIZES = (1_000, 10_000, 100_000, 1_000_000)
#: Width of BiomedCLIP image/text embeddings, the real-valued reference dimension.
BIOMEDCLIP_DIM = 512
#: (query modality, database modality) per task, as in the runner.
TASK_SIDES = {"i2t": ("image", "text"), "t2i": ("text", "image"), "i2i": ("image", "image"), "t2t": ("text", "text")}
_DRAW_CHUNK = 1 << 16
#: Timers selectable with ``--clock``: wall-clock latency, or the CPU time of this process.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}



def figure_title(spec: EfficiencySpec) -> str:
    src = "uniform random codes" if spec.random else f"{spec.method} on {spec.dataset} ({spec.task})"
    clock = "wall-clock" if spec.clock == "wall" else "CPU time"
    return f"Top-{spec.k} search latency ({clock}), {src}, {spec.threads} thread(s)"


# ================================================================================================
# Ratio table, targets, figure
# ================================================================================================
def _search_frame(rows: Sequence[dict[str, Any]]):
    import pandas as pd

    df = pd.DataFrame([r for r in rows if r.get("engine") and r["metric"] != "encode_ms_per_item"])
    if df.empty:
        return df
    wide = df.pivot_table(index=["engine", "bits", "feature_dim", "db_size"], columns="metric", values="value",
                          aggfunc="first", dropna=False).reset_index()
    return wide.dropna(subset=["latency_ms_median"])


def ratio_table(rows: Sequence[dict[str, Any]]):
    """Hash engine vs real-valued engine at the same database size.

    One line per (bits, db_size, hash engine), with its per-query latency (batch size 1), throughput and
    bytes per item, and for each float engine and dimension: ``speedup`` = float latency / hash latency
    (batch size 1; > 1 means hashing is faster), and ``memory`` = float bytes per item / hash bytes per item.

    Returns
    -------
    pandas.DataFrame
        Empty when the rows lack either binary or float engines.
    """
    import pandas as pd

    wide = _search_frame(rows)
    if wide.empty:
        return pd.DataFrame()
    hashes = wide[wide["bits"].notna()]
    floats = wide[wide["feature_dim"].notna()]
    out = []
    for _, h in hashes.sort_values(["bits", "db_size", "engine"]).iterrows():
        line: dict[str, Any] = {
            "bits": int(h["bits"]), "db_size": int(h["db_size"]), "engine": h["engine"],
            "ms/query": h["latency_ms_median"], "q/s (batch)": h["throughput_qps"],
            "B/item": h["bytes_per_item"],
        }
        if "recall@k" in h and not pd.isna(h.get("recall@k")):
            line["recall@k"] = h["recall@k"]
        for _, f in floats[floats["db_size"] == h["db_size"]].sort_values(["feature_dim", "engine"]).iterrows():
            tag = f"{f['engine']} d={int(f['feature_dim'])}"
            line[f"speedup vs {tag}"] = f["latency_ms_median"] / h["latency_ms_median"]
            line[f"batch speedup vs {tag}"] = h["throughput_qps"] / f["throughput_qps"]
            line[f"memory vs {tag}"] = f["bytes_per_item"] / h["bytes_per_item"]
        out.append(line)
    if not floats.empty and not out:
        return pd.DataFrame()
    return pd.DataFrame(out)


def _lookup(wide, engine: str, db_size: int, metric: str, *, bits: int | None = None, dim: int | None = None):
    sel = (wide["engine"] == engine) & (wide["db_size"] == db_size)
    sel &= (wide["bits"] == bits) if bits is not None else wide["bits"].isna()
    sel &= (wide["feature_dim"] == dim) if dim is not None else True
    hit = wide[sel]
    if hit.empty or metric not in hit:
        return None
    value = hit[metric].iloc[0]
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def target_checks(rows: Sequence[dict[str, Any]], *, db_size: int = 1_000_000) -> list[dict[str, Any]]:
    """The issue's three efficiency targets, evaluated on measured rows (``status`` = pass/fail/not measured).

    1. 16-bit exact top-k (``popcount``) over ``db_size`` codes >= 10x faster per query (batch size 1) than
       float32 512-d exact search (the faster of ``numpy-ip`` and ``FlatIP``), same process.
    2. ``popcount`` no slower than 1.5x faiss ``BFlat`` at 64 bits, per query (batch size 1) and per batch.
    3. ``db_size`` 16-bit codes occupy ``2 * db_size`` bytes (ids are implicit row positions), measured as
       the popcount engine's ``index_bytes``.
    """
    wide = _search_frame(rows)
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, threshold: str, ok: bool | None, detail: str) -> None:
        status = "not measured" if ok is None else ("pass" if ok else "FAIL")
        checks.append({"target": name, "value": value, "threshold": threshold, "status": status, "detail": detail})

    if wide.empty:
        wide = None
    hash16 = _lookup(wide, "popcount", db_size, "latency_ms_median", bits=16) if wide is not None else None
    floats = [(e, _lookup(wide, e, db_size, "latency_ms_median", dim=BIOMEDCLIP_DIM)) for e in ("numpy-ip", "FlatIP")] \
        if wide is not None else []
    floats = [(e, v) for e, v in floats if v is not None]
    if hash16 is not None and floats:
        best_e, best_v = min(floats, key=lambda ev: ev[1])
        ratio = best_v / hash16
        add("16-bit popcount vs float32 512-d exact (speedup per query)", ratio, ">= 10", ratio >= 10,
            f"popcount {hash16:.3f} ms vs {best_e} {best_v:.3f} ms at N={db_size:,}")
    else:
        add("16-bit popcount vs float32 512-d exact (speedup per query)", None, ">= 10", None, "cells missing")
    for metric, label in (("latency_ms_median", "per query"), ("batch_latency_ms_median", "per batch")):
        p = _lookup(wide, "popcount", db_size, metric, bits=64) if wide is not None else None
        f = _lookup(wide, "BFlat", db_size, metric, bits=64) if wide is not None else None
        if p is not None and f is not None:
            add(f"64-bit popcount / BFlat time ({label})", p / f, "<= 1.5", p / f <= 1.5,
                f"popcount {p:.3f} ms vs BFlat {f:.3f} ms at N={db_size:,}")
        else:
            add(f"64-bit popcount / BFlat time ({label})", None, "<= 1.5", None, "cells missing")
    mem = _lookup(wide, "popcount", db_size, "index_bytes", bits=16) if wide is not None else None
    want = db_size * 2
    if mem is not None:
        add("memory of 16-bit codes (bytes, ids implicit)", mem, f"== {want:,}", mem == want,
            f"popcount index {int(mem):,} bytes for {db_size:,} codes")
    else:
        add("memory of 16-bit codes (bytes, ids implicit)", None, f"== {want:,}", None, "cells missing")
    return checks


def plot_latency(rows: Sequence[dict[str, Any]], out_dir: Path, *, title: str = "") -> list[Path]:
    """Log-log figure of latency against database size, one line per engine and code length/dimension.

    Left panel: median time per query at batch size 1; right panel: time per query inside a batch
    (``batch_latency_ms_median / batch_size``). Saved as ``latency_vs_db_size.png`` (150 dpi) and ``.pdf``.

    Returns
    -------
    list[Path]
        The two files written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = _search_frame(rows)
    batch_sizes = {r["engine"]: r.get("batch_size") for r in rows if r.get("engine")}
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    markers = {"popcount": "o", "BFlat": "s", "numpy-ip": "D", "FlatIP": "v"}
    bits_list = sorted({int(b) for b in wide["bits"].dropna()}) if not wide.empty else []
    cmap = plt.get_cmap("viridis")
    colors = {b: cmap(i / max(1, len(bits_list) - 1) * 0.85) for i, b in enumerate(bits_list)}
    for (engine, bits, dim), g in wide.groupby(["engine", "bits", "feature_dim"], dropna=False):
        g = g.sort_values("db_size")
        if not (isinstance(bits, float) and math.isnan(bits)):
            approx = "recall@k" in g and g["recall@k"].notna().any()
            label = f"{engine}, {int(bits)} bits" + (" (approximate)" if approx else "")
            style = {"color": colors[int(bits)],
                     "linestyle": "-" if engine == "popcount" else ("-." if approx else "--")}
        else:
            label = f"{engine}, float32 d={int(dim)}"
            style = {"color": "tab:red" if engine == "numpy-ip" else "tab:orange",
                     "linestyle": ":" if int(dim) == BIOMEDCLIP_DIM else "-."}
        marker = markers.get(engine, "^")
        bs = batch_sizes.get(engine) or 1
        axes[0].plot(g["db_size"], g["latency_ms_median"], marker=marker, label=label, **style)
        axes[1].plot(g["db_size"], g["batch_latency_ms_median"] / bs, marker=marker, label=label, **style)
    bs_any = next(iter(batch_sizes.values()), None)
    for ax, sub in zip(axes, ("one query per call (median)", f"per query in batches of {bs_any} (median)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("database size N (items)")
        ax.set_title(sub, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("latency per query (ms)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=8, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0, 0.8, 0.95))
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "latency_vs_db_size.png", out_dir / "latency_vs_db_size.pdf"]
    fig.savefig(paths[0], dpi=150)
    fig.savefig(paths[1])
    plt.close(fig)
    return paths


def format_ratio_table(table) -> str:
    """The ratio table as GitHub markdown (tabulate via pandas), numbers to 3 significant digits."""
    if table is None or len(table) == 0:
        return "(no ratio table: needs at least one binary and one float engine)"
    return table.to_markdown(index=False, floatfmt=".3g")


def format_targets(targets: Sequence[dict[str, Any]]) -> str:
    """The target checks as a markdown table."""
    import pandas as pd

    return pd.DataFrame(targets).to_markdown(index=False, floatfmt=".3g")


def write_tables(out_dir: Path, spec: EfficiencySpec, table, targets: Sequence[dict[str, Any]]) -> None:
    from medhash_datasets.cache_io import atomic_write_text

    if table is not None and len(table):
        atomic_write_text(out_dir / "ratios.csv", table.to_csv(index=False))
    text = [
        "# Efficiency summary",
        "",
        f"Command: `{spec.command or ' '.join(sys.argv)}`",
        f"Threads: {spec.threads}; clock: {spec.clock}; k = {spec.k}; batch size {spec.batch_size}; "
        f"{spec.n_queries} single-query samples; {spec.repeats} batch repeats.",
        "",
        "## Hash engine vs real-valued search (speedup = float time / hash time, memory = float B / hash B)",
        "",
        format_ratio_table(table),
        "",
        "## Targets",
        "",
        format_targets(targets),
        "",
    ]
    atomic_write_text(out_dir / "summary.md", "\n".join(text))
    atomic_write_text(out_dir / "ratios.md", format_ratio_table(table) + "\n")
