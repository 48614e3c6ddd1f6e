"""Hand-made result rows for the report tests (shaped like the rows ``run`` and ``efficiency`` write)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks.results import ROW_FIELDS, write_cell


def row(**fields: Any) -> dict[str, Any]:
    """One accuracy row (``map``, tie-aware, unimodal, i2t, 16 bits, seed 0 unless given)."""
    out = dict.fromkeys(ROW_FIELDS)
    out.update(run_id="r1", dataset="medpix", label_scheme="topic", encoder="offline", protocol="unimodal",
               task="i2t", metric="map", k=None, tie="aware", chance=0.2, bits=16, seed=0,
               method_config={"reg": 1e-4}, timestamp="2025-01-01T00:00:00")
    out.update(fields)
    out.setdefault("method", None)
    if out.get("variant") is None:
        out["variant"] = out["method"]
    if out.get("cell_id") is None:
        blob = json.dumps([out["variant"], out["bits"], out["seed"], out["method_config"], out.get("tuning"),
                           out["run_id"]], sort_keys=True, default=str)
        out["cell_id"] = "c" + hashlib.sha256(blob.encode()).hexdigest()[:12]
    return out


def accuracy_rows(values: dict[tuple[str, int | None, int], float], **fields: Any) -> list[dict[str, Any]]:
    """``{(method, bits, seed): value}`` → one ``map`` row each (task i2t) plus the same value for t2i."""
    rows = []
    for (method, bits, seed), value in values.items():
        for task in ("i2t", "t2i"):
            rows.append(row(method=method, bits=bits, seed=seed, task=task, value=value, **fields))
    return rows


def efficiency_rows(method: str, bits: int | None, seed: int = 0, **fields: Any) -> list[dict[str, Any]]:
    """The per-cell efficiency rows of one cell (task ``-``)."""
    values = {"encode_ms_per_item": 0.0123, "search_ms_per_query": 0.05, "search_ms_per_query_real": 2.5,
              "bytes_per_item": (bits or 1280 * 32) / 8, "bytes_per_item_real": 5120.0}
    return [row(method=method, bits=bits, seed=seed, task="-", tie=None, chance=None, metric=m, value=v, **fields)
            for m, v in values.items()]


def write_run(run_dir: Path, rows: Iterable[dict[str, Any]], dataset: str = "medpix") -> Path:
    """One cell file per ``cell_id`` under ``run_dir/cells/<dataset>/<variant>/``; returns ``run_dir``."""
    cells: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        cells.setdefault(str(r["cell_id"]), []).append(r)
    for cid, part in cells.items():
        variant = str(part[0]["variant"] or part[0]["engine"] or "engine")
        write_cell(run_dir / "cells" / (part[0]["dataset"] or dataset) / variant / f"{cid}.jsonl", part)
    return run_dir


def tabulars(tex: str) -> list[tuple[int, list[str]]]:
    """Every ``tabular`` of a LaTeX text: (number of columns in its spec, the rows ending in ``\\\\``)."""
    out = []
    for spec, body in re.findall(r"\\begin\{tabular\}\{([^}]*)\}(.*?)\\end\{tabular\}", tex, flags=re.S):
        n_cols = len(re.findall(r"[lcr]", spec))
        lines = [ln.strip() for ln in body.splitlines() if ln.strip().endswith("\\\\")]
        out.append((n_cols, lines))
    return out


def cell_count(line: str) -> int:
    """Columns a tabular row covers: cells split on unescaped ``&`` outside braces, a ``\\multicolumn{n}`` cell
    counting ``n``."""
    line = line.strip()
    assert line.endswith("\\\\")
    line = line[:-2]
    cells, depth, current, i = [], 0, "", 0
    while i < len(line):
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            current += line[i:i + 2]
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "&" and depth == 0:
            cells.append(current)
            current = ""
        else:
            current += ch
        i += 1
    cells.append(current)
    total = 0
    for cell in cells:
        m = re.match(r"\s*\\multicolumn\{(\d+)\}", cell)
        total += int(m.group(1)) if m else 1
    return total
