"""The ``run`` loop: for each (dataset, method, bits, seed) cell, fit, encode, evaluate, time, write rows.

A cell's rows are written at once, atomically, to a file named by the hash of the cell's full config
(:mod:`benchmarks.results`); a finished cell is skipped on a re-run (``force=False``), so a killed run
resumes without losing or duplicating rows.
"""

from __future__ import annotations

import datetime as _dt
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.cell import PROTOCOLS, TASKS, TIES, RunSpec, cell_config, describe_inputs, prepare_features, run_cell
from benchmarks.results import cell_path, config_hash, write_cell
from methods import METHODS, method_config


@dataclass
class CellOutcome:
    """One cell's fate in this invocation."""

    cell_id: str
    path: Path
    status: str  # "done" (ran now) or "skipped" (already finished)
    seconds: float = 0.0


def damaged_cell(path: Path) -> str | None:
    """Why the cell file at ``path`` cannot be trusted as finished (empty, not JSON lines, rows lacking
    fields or a numeric value), or ``None`` when every line is a complete row."""
    import json

    from benchmarks.results import ROW_FIELDS

    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        return f"unreadable: {err}"
    if not lines:
        return "empty file"
    for lineno, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return f"line {lineno} is not JSON"
        if not isinstance(row, dict):
            return f"line {lineno} is not a JSON object"
        missing = [f for f in ROW_FIELDS if f not in row]
        if missing:
            return f"line {lineno} lacks {missing[:3]}"
        if not isinstance(row["value"], (int, float)) or isinstance(row["value"], bool):
            return f"line {lineno} has a non-numeric value"
    return None


def run(spec: RunSpec, *, echo: Callable[[str], None] = print) -> list[CellOutcome]:
    """Run every cell of ``spec`` (skipping finished ones unless ``spec.force``); returns their outcomes.

    Raises
    ------
    RegistryError, DatasetError, ConfigError
        For unknown names, missing data or bad parameters — before any training starts.
    """
    from tqdm import tqdm

    from medhash_datasets.cache_io import atomic_write_json

    for m in spec.methods:  # validate every method config up front
        method_config(m, spec.params.get(m))
    run_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    outcomes: list[CellOutcome] = []
    manifest = {"run_id": run_id, "spec": {k: str(v) if isinstance(v, Path) else v for k, v in vars(spec).items()}, "cells": []}
    for dataset_name in spec.datasets:
        dataset, features = prepare_features(
            dataset_name, data_root=spec.data_root, encoder=spec.encoder, device=spec.device,
            dataset_options=spec.dataset_options, cache_dir=spec.cache_dir, label_scheme=spec.label_scheme,
            dataset_seed=spec.dataset_seed, progress=spec.progress, encoder_options=spec.encoder_options,
        )
        for line in describe_inputs(dataset, features, spec.encoder, spec.encoder_options):
            echo(line)
        cells = [
            (m, b, s)
            for m in spec.methods
            for b in (spec.bits if METHODS.get(m).cls.binary else [None])
            for s in spec.seeds
        ]
        bar = tqdm(cells, desc=f"{dataset_name}", unit="cell", disable=not spec.progress)
        for m, b, s in bar:
            bar.set_postfix_str(f"{m} {b or 'float'}b seed {s}")
            cid = config_hash(cell_config(spec, dataset, features, m, b, s))
            path = cell_path(spec.out, dataset.name, m, cid)
            if path.exists() and not spec.force:
                problem = damaged_cell(path)
                if problem is None:
                    outcomes.append(CellOutcome(cid, path, "skipped"))
                    continue
                echo(f"warning: {path} is damaged ({problem}); running the cell again")
            t0 = time.perf_counter()
            rows = run_cell(spec, dataset, features, m, b, s, run_id=run_id)
            write_cell(path, rows)
            outcomes.append(CellOutcome(cid, path, "done", time.perf_counter() - t0))
        manifest["cells"] = [{"cell_id": o.cell_id, "path": str(o.path), "status": o.status, "seconds": round(o.seconds, 3)} for o in outcomes]
        atomic_write_json(Path(spec.out) / "runs" / f"{run_id}.json", manifest)
    return outcomes


# ---- summary ----------------------------------------------------------------------------------------
def summary_tables(rows: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """Summary tables (title, text) per (dataset, protocol): mAP mean ± std over seeds per method and bits,
    for i2t and t2i under both tie policies, beside search latency and bytes per item; chance row last."""
    import pandas as pd
    from tabulate import tabulate

    df = pd.DataFrame(list(rows))
    if df.empty:
        return []
    df["bits_label"] = df["bits"].map(lambda b: "float" if b is None or (isinstance(b, float) and np.isnan(b)) else str(int(b)))
    out = []

    def fmt(values: pd.Series) -> str:
        v = values.astype(float)
        return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if len(v) > 1 else f"{v.mean():.3f}"

    acc = df[(df["metric"] == "map") & df["protocol"].isin(PROTOCOLS)]
    eff = df[df["metric"].isin(["search_ms_per_query", "search_ms_per_query_real", "bytes_per_item"])]
    for (dataset, protocol), part in acc.groupby(["dataset", "protocol"], sort=False):
        table = []
        keys = part[["variant", "bits_label"]].drop_duplicates().itertuples(index=False)
        for variant, bits_label in keys:
            sel = part[(part["variant"] == variant) & (part["bits_label"] == bits_label)]
            line = {"method": variant, "bits": bits_label}
            for task in [t for t in TASKS if t in set(sel["task"])]:
                for tie in [t for t in TIES if t in set(sel["tie"])]:
                    cell = sel[(sel["task"] == task) & (sel["tie"] == tie)]
                    line[f"{task} mAP ({tie})"] = fmt(cell["value"])
            e = eff[(eff["dataset"] == dataset) & (eff["variant"] == variant) & (eff["bits_label"] == bits_label)]
            for metric, label in (("search_ms_per_query", "search ms/q"), ("search_ms_per_query_real", "float search ms/q"), ("bytes_per_item", "bytes/item")):
                vals = e.loc[e["metric"] == metric, "value"].astype(float)
                line[label] = f"{vals.median():.3g}" if len(vals) else "-"
            line["seeds"] = str(sel["seed"].nunique())
            table.append(line)
        chance = part.groupby("task")["chance"].mean()
        table.append({"method": "(chance)", "bits": "-", **{f"{t} mAP (aware)": f"{chance[t]:.3f}" for t in chance.index if chance[t] == chance[t]}})
        text = tabulate(pd.DataFrame(table).fillna(""), headers="keys", tablefmt="github", showindex=False)
        out.append((f"{dataset} — protocol {protocol} — mAP@all mean ± std over seeds (tie-aware and index ties)", text))
    return out
