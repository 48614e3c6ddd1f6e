"""The console summary ``run`` prints at the end: per (dataset, protocol), mAP per method and code length
beside search latency and bytes per item, with flags for degenerate codes and MCMFH router collapse.

Cells are formatted once and kept verbatim (:func:`benchmarks.report.table.format_table`); a single seed is
shown without ``±`` and the title says how many seeds there are (:func:`benchmarks.report.rows.seeds_phrase`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.report.rows import seeds_phrase
from benchmarks.report.table import MISSING, format_table, plain_number

PROTOCOLS = ("unimodal", "paired")
TASKS = ("i2t", "t2i", "i2i", "t2t")
TIES = ("aware", "index")
EFFICIENCY = (("search_ms_per_query", "search ms/q"), ("search_ms_per_query_real", "float search ms/q"),
              ("bytes_per_item", "bytes/item"))


def _mean_std(values: pd.Series) -> str:
    v = values.astype(float)
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"


def _flags(sel: pd.DataFrame) -> str:
    """``degenerate codes`` (any seed's codes had one distinct code or constant bits) and ``router collapse``."""
    flags = []
    if "degenerate_codes" in sel and sel["degenerate_codes"].fillna(False).astype(bool).any():
        flags.append("degenerate codes")
    if "router_collapse" in sel and sel["router_collapse"].fillna(False).astype(bool).any():
        flags.append("router collapse")
    if "tuning" in sel and sel["tuning"].map(lambda t: isinstance(t, dict)).any():
        flags.append("tuned")
    return ", ".join(flags) or MISSING


def summary_tables(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """Summary tables ``(title, text)`` per (dataset, protocol), chance row last.

    Parameters
    ----------
    rows : sequence of dict
        Result rows of a run (:mod:`benchmarks.results`).
    """
    df = pd.DataFrame(list(rows))
    if df.empty:
        return []
    df["bits_label"] = df["bits"].map(
        lambda b: "float" if b is None or (isinstance(b, float) and np.isnan(b)) else str(int(b)))
    out = []
    acc = df[(df["metric"] == "map") & df["protocol"].isin(PROTOCOLS)]
    eff = df[df["metric"].isin([m for m, _ in EFFICIENCY])]
    for (dataset, protocol), part in acc.groupby(["dataset", "protocol"], sort=False):
        table: list[dict[str, str]] = []
        seed_counts = []
        for variant, bits_label in part[["variant", "bits_label"]].drop_duplicates().itertuples(index=False):
            sel = part[(part["variant"] == variant) & (part["bits_label"] == bits_label)]
            line = {"method": variant, "bits": bits_label}
            for task in [t for t in TASKS if t in set(sel["task"])]:
                for tie in [t for t in TIES if t in set(sel["tie"])]:
                    line[f"{task} mAP ({tie})"] = _mean_std(sel[(sel["task"] == task) & (sel["tie"] == tie)]["value"])
            e = eff[(eff["dataset"] == dataset) & (eff["variant"] == variant) & (eff["bits_label"] == bits_label)]
            for metric, label in EFFICIENCY:
                vals = e.loc[e["metric"] == metric, "value"].astype(float)
                line[label] = plain_number(vals.median()) if len(vals) else MISSING
            n_seeds = int(sel["seed"].nunique())
            seed_counts.append(n_seeds)
            line["seeds"] = str(n_seeds)
            line["flags"] = _flags(sel)
            table.append(line)
        chance = part.groupby("task")["chance"].mean()
        table.append({"method": "(chance)", "bits": MISSING,
                      **{f"{t} mAP (aware)": f"{chance[t]:.3f}" for t in chance.index if chance[t] == chance[t]}})
        frame = pd.DataFrame(table)
        text = format_table(frame.astype(object).where(frame.notna(), None).values.tolist(), list(frame.columns))
        title = f"{dataset} — protocol {protocol} — mAP@all, {seeds_phrase(seed_counts)} (tie-aware and index ties)"
        out.append((title, text))
    return out
