"""Tables of an efficiency study: engines (latency, memory, recall, bandwidth limit), hash vs real-valued
ratios, speed-up over the exhaustive popcount engine, the 16- vs 64-bit memory ratio, target checks, and the
written ``summary.md`` / ``ratios.md`` / ``ratios.csv``.

Every number is formatted here into a string (no scientific notation: bytes and queries/s as whole numbers
with thousands separators, times to three significant digits) and the strings are passed to ``tabulate``
with ``disable_numparse=True``, so the cells are written verbatim; a value that does not apply (the recall
of an exact engine) is ``–``.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.search.frames import is_missing as _missing
from benchmarks.search.frames import metric_of as _get
from benchmarks.search.frames import search_frame
from benchmarks.search.workload import BIOMEDCLIP_DIM

if TYPE_CHECKING:  # the study module imports this one
    from benchmarks.search.study import EfficiencySpec

DASH = "–"


# ================================================================================================
# number formatting (no scientific notation)
# ================================================================================================
def fmt_sig(value: Any, digits: int = 3) -> str:
    """``value`` to ``digits`` significant digits in fixed notation (``1,234``, ``0.0123``); ``–`` if missing."""
    if _missing(value):
        return DASH
    x = float(value)
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
    return f"{x:,.{decimals}f}"


def fmt_int(value: Any) -> str:
    """A whole number with thousands separators (bytes, queries/s, sizes); ``–`` if missing."""
    return DASH if _missing(value) else f"{round(float(value)):,}"


def fmt_ratio(value: Any) -> str:
    """A ratio to three significant digits followed by ``×``; ``–`` if missing."""
    return DASH if _missing(value) else fmt_sig(value) + "×"


def markdown(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """A GitHub markdown table of pre-formatted cells, written verbatim (``disable_numparse=True``)."""
    from tabulate import tabulate

    if not body:
        return "(no rows)"
    return tabulate([list(r) for r in body], headers=list(headers), tablefmt="github", disable_numparse=True)


# ================================================================================================
# tables
# ================================================================================================
def ratio_table(rows: Sequence[dict[str, Any]]):
    """Hash engine vs real-valued engine at the same database size (numbers, for CSV and tests).

    One line per (bits, db_size, hash engine): its per-query latency (batch size 1), throughput, bytes per
    item and (approximate engines) recall@k, and for each float series: ``speedup`` = float latency / hash
    latency (batch size 1; > 1: hashing is faster), ``batch speedup`` (throughputs) and ``memory`` = float
    bytes per item / hash bytes per item.

    Returns
    -------
    pandas.DataFrame
        Empty when the rows lack either binary or float engines.
    """
    import pandas as pd

    wide = search_frame(rows)
    if wide.empty:
        return pd.DataFrame()
    hashes = wide[wide["bits"].notna()]
    floats = wide[wide["feature_dim"].notna()]
    if hashes.empty or floats.empty:
        return pd.DataFrame()
    out = []
    for _, h in hashes.sort_values(["bits", "db_size", "engine"]).iterrows():
        line: dict[str, Any] = {"bits": int(h["bits"]), "db_size": int(h["db_size"]), "engine": h["engine"],
                                "ms/query": h["latency_ms_median"], "q/s (batch)": h["throughput_qps"],
                                "B/item": h["bytes_per_item"], "recall@k": _get(h, "recall@k")}
        for _, f in floats[floats["db_size"] == h["db_size"]].sort_values(["feature_dim", "engine"]).iterrows():
            tag = f["series"]
            line[f"speedup vs {tag}"] = f["latency_ms_median"] / h["latency_ms_median"]
            line[f"batch speedup vs {tag}"] = h["throughput_qps"] / f["throughput_qps"]
            line[f"memory vs {tag}"] = f["bytes_per_item"] / h["bytes_per_item"]
        out.append(line)
    return pd.DataFrame(out)


def format_ratio_table(table) -> str:
    """The ratio table as markdown: latencies to 3 significant digits, q/s whole, ratios with ``×``, ``–`` recall
    for exact engines."""
    if table is None or len(table) == 0:
        return "(no ratio table: needs at least one binary and one float engine)"
    headers = list(table.columns)
    body = []
    for _, r in table.iterrows():
        cells = []
        for col in headers:
            v = r[col]
            if col in ("bits",):
                cells.append(str(int(v)))
            elif col in ("db_size", "q/s (batch)"):
                cells.append(fmt_int(v))
            elif col == "engine":
                cells.append(str(v))
            elif col == "recall@k":
                cells.append(DASH if _missing(v) else f"{float(v):.3f}")
            elif "speedup" in col or col.startswith("memory vs"):
                cells.append(fmt_ratio(v))
            else:
                cells.append(fmt_sig(v))
        body.append(cells)
    return markdown(headers, body)


ENGINE_HEADERS = ("codes / features", "N", "engine", "ms/query", "p95 ms", "q/s (batch)", "build s", "index bytes",
                  "B/item", "recall@k", "same ids", "limit ms", "× limit")


def engine_table(rows: Sequence[dict[str, Any]]) -> str:
    """Every engine at every size: latency, throughput, build time, measured index memory (codes + ids +
    tables), recall of approximate engines (``–`` for exact ones), whether exact engines returned the
    reference's ids, and for exhaustive engines the bandwidth limit and measured / limit."""
    wide = search_frame(rows)
    if wide.empty:
        return "(no search rows)"
    wide = wide.assign(_b=wide["bits"].fillna(1e9), _d=wide["feature_dim"].fillna(0))
    body = []
    for _, r in wide.sort_values(["_b", "_d", "feature_space", "db_size", "engine"]).iterrows():
        what = f"{int(r['bits'])} bits" if not _missing(r["bits"]) else f"d={int(r['feature_dim'])}" + (
            f" {r['feature_space']}" if r["feature_space"] else "")
        limit = _get(r, "scan_limit_ms")
        same = _get(r, "same_ids")
        body.append([what, fmt_int(r["db_size"]), r["engine"], fmt_sig(r["latency_ms_median"]),
                     fmt_sig(_get(r, "latency_ms_p95")), fmt_int(_get(r, "throughput_qps")), fmt_sig(_get(r, "build_s")),
                     fmt_int(_get(r, "index_bytes")), fmt_sig(_get(r, "bytes_per_item")),
                     DASH if r["exact"] or _get(r, "recall@k") is None else f"{_get(r, 'recall@k'):.3f}",
                     DASH if same is None else ("yes" if same == 1.0 else "NO"),
                     fmt_sig(limit), fmt_ratio(r["latency_ms_median"] / limit if limit else None)])
    return markdown(ENGINE_HEADERS, body)


def speedup_over_reference(rows: Sequence[dict[str, Any]], reference: str = "popcount") -> str:
    """Per (bits, N): ``reference`` latency / each other binary engine's latency (batch size 1); > 1 means the
    engine is faster than the exhaustive scan. Approximate engines are marked ``(approx.)``."""
    wide = search_frame(rows)
    if wide.empty:
        return "(no search rows)"
    binary = wide[wide["bits"].notna()]
    ref = binary[binary["engine"] == reference].set_index(["bits", "db_size"])["latency_ms_median"]
    others = sorted(set(binary["engine"]) - {reference})
    if ref.empty or not others:
        return f"(needs {reference} and another binary engine)"
    exact = dict(zip(binary["engine"], binary["exact"]))
    headers = ["bits", "N", *[e if exact[e] else f"{e} (approx.)" for e in others]]
    body = []
    for (bits, n), ref_ms in ref.sort_index().items():
        line = [str(int(bits)), fmt_int(n)]
        for e in others:
            hit = binary[(binary["engine"] == e) & (binary["bits"] == bits) & (binary["db_size"] == n)]
            line.append(fmt_ratio(ref_ms / hit["latency_ms_median"].iloc[0]) if len(hit) else DASH)
        body.append(line)
    return markdown(headers, body)


def memory_ratio_table(rows: Sequence[dict[str, Any]], low: int = 16, high: int = 64) -> str:
    """Per engine and database size measured at both ``low`` and ``high`` bits: the index bytes and their
    ratio ``high / low`` (4 for bare codes; less where ids and tables are stored)."""
    wide = search_frame(rows)
    if wide.empty:
        return "(no search rows)"
    binary = wide[wide["bits"].isin([low, high])]
    body = []
    for (engine, n), g in binary.groupby(["engine", "db_size"]):
        by_bits = dict(zip(g["bits"].astype(int), g["index_bytes"]))
        if low in by_bits and high in by_bits:
            body.append([engine, fmt_int(n), fmt_int(by_bits[low]), fmt_int(by_bits[high]),
                         fmt_ratio(by_bits[high] / by_bits[low])])
    if not body:
        return f"(needs the same engines measured at {low} and {high} bits)"
    return markdown(["engine", "N", f"{low}-bit index bytes", f"{high}-bit index bytes", f"{high}/{low}"], body)


def _lookup(wide, engine: str, db_size: int, metric: str, *, bits: int | None = None, dim: int | None = None):
    if wide is None or wide.empty or metric not in wide:
        return None
    sel = (wide["engine"] == engine) & (wide["db_size"] == db_size) & (wide["feature_space"] == "")
    sel &= (wide["bits"] == bits) if bits is not None else wide["bits"].isna()
    sel &= (wide["feature_dim"] == dim) if dim is not None else True
    hit = wide[sel]
    return None if hit.empty else _get(hit.iloc[0], metric)


def target_checks(rows: Sequence[dict[str, Any]], *, db_size: int = 1_000_000) -> list[dict[str, Any]]:
    """The efficiency targets (issues 7 and 12), evaluated on measured rows (``status`` = pass/FAIL/not measured).

    1. 16-bit exact top-k (``popcount``) over ``db_size`` codes >= 10x faster per query (batch size 1) than
       float32 512-d exact search (the faster of ``numpy-ip`` and ``FlatIP``, Gaussian features), same process.
    2. ``popcount`` no slower than 1.5x faiss ``BFlat`` at 64 bits, per query (batch size 1) and per batch.
    3. ``db_size`` 16-bit codes occupy ``2 * db_size`` bytes in ``popcount`` (ids are implicit row positions).
    4. 16-bit ``hash-ball`` >= 10x faster per query than ``popcount`` at ``db_size``, with identical ids.
    """
    wide = search_frame(rows)
    checks: list[dict[str, Any]] = []

    def add(name: str, value: float | None, threshold: str, ok: bool | None, detail: str) -> None:
        status = "not measured" if ok is None else ("pass" if ok else "FAIL")
        checks.append({"target": name, "value": value, "threshold": threshold, "status": status, "detail": detail})

    name = "16-bit popcount vs float32 512-d exact (speedup per query)"
    hash16 = _lookup(wide, "popcount", db_size, "latency_ms_median", bits=16)
    floats = [(e, _lookup(wide, e, db_size, "latency_ms_median", dim=BIOMEDCLIP_DIM)) for e in ("numpy-ip", "FlatIP")]
    floats = [(e, v) for e, v in floats if v is not None]
    if hash16 is not None and floats:
        best_e, best_v = min(floats, key=lambda ev: ev[1])
        add(name, best_v / hash16, ">= 10", best_v / hash16 >= 10,
            f"popcount {hash16:.3f} ms vs {best_e} {best_v:.3f} ms at N={db_size:,}")
    else:
        add(name, None, ">= 10", None, "cells missing")
    for metric, label in (("latency_ms_median", "per query"), ("batch_latency_ms_median", "per batch")):
        p = _lookup(wide, "popcount", db_size, metric, bits=64)
        f = _lookup(wide, "BFlat", db_size, metric, bits=64)
        if p is not None and f is not None:
            add(f"64-bit popcount / BFlat time ({label})", p / f, "<= 1.5", p / f <= 1.5,
                f"popcount {p:.3f} ms vs BFlat {f:.3f} ms at N={db_size:,}")
        else:
            add(f"64-bit popcount / BFlat time ({label})", None, "<= 1.5", None, "cells missing")
    mem = _lookup(wide, "popcount", db_size, "index_bytes", bits=16)
    want = db_size * 2
    if mem is not None:
        add("memory of 16-bit codes (bytes, ids implicit)", mem, f"== {want:,}", mem == want,
            f"popcount index {int(mem):,} bytes for {db_size:,} codes")
    else:
        add("memory of 16-bit codes (bytes, ids implicit)", None, f"== {want:,}", None, "cells missing")
    ball = _lookup(wide, "hash-ball", db_size, "latency_ms_median", bits=16)
    same = _lookup(wide, "hash-ball", db_size, "same_ids", bits=16)
    if ball is not None and hash16 is not None:
        ok = hash16 / ball >= 10 and same == 1.0
        add("16-bit hash-ball vs popcount (speedup per query, same ids)", hash16 / ball, ">= 10, same ids", ok,
            f"hash-ball {ball:.4f} ms vs popcount {hash16:.3f} ms at N={db_size:,}; ids "
            + ("identical" if same == 1.0 else "DIFFER" if same == 0.0 else "not compared"))
    else:
        add("16-bit hash-ball vs popcount (speedup per query, same ids)", None, ">= 10, same ids", None, "cells missing")
    return checks


def format_targets(targets: Sequence[dict[str, Any]]) -> str:
    """The target checks as a markdown table (values to 3 significant digits, bytes whole)."""
    body = [[t["target"], fmt_int(t["value"]) if "bytes" in t["target"] else fmt_sig(t["value"]), t["threshold"],
             t["status"], t["detail"]] for t in targets]
    return markdown(["target", "value", "threshold", "status", "detail"], body)


def bandwidth_line(rows: Sequence[dict[str, Any]]) -> str:
    """One sentence naming the measured read bandwidth, or that it was not measured."""
    bw = [r for r in rows if r.get("metric") == "read_bandwidth_bytes_per_s"]
    if not bw:
        return "Sequential read bandwidth: not measured (no limit column)."
    size = bw[0].get("bandwidth_bytes")
    over = f"a {int(size) >> 20} MiB array" if size else "a large array"
    return (f"Sequential read bandwidth of this machine: {bw[0]['value'] / 1e9:.2f} GB/s (numpy sum over {over}, "
            "median of repeats, one thread, same clock as the engines); `limit ms` = bytes an exhaustive engine scans per query / that "
            "bandwidth, `× limit` = measured / limit. "
            "Databases that fit in the CPU caches are read faster, so there the limit is not a lower bound.")


def write_tables(out_dir: Path, spec: EfficiencySpec, rows: Sequence[dict[str, Any]], table,
                 targets: Sequence[dict[str, Any]]) -> None:
    """Write ``summary.md`` (all tables), ``ratios.md`` and ``ratios.csv`` (hash vs real-valued) atomically."""
    from medhash_datasets.cache_io import atomic_write_text

    if table is not None and len(table):
        atomic_write_text(out_dir / "ratios.csv", table.to_csv(index=False))
    src = "uniform random codes" if spec.random else (
        f"{spec.method} codes on {spec.dataset} ({spec.task}), database grown by "
        + ("replication with fresh ids" if spec.growth == "replicate" else "draws from the codes' bit frequencies"))
    text = [
        "# Efficiency summary",
        "",
        f"Command: `{spec.command or ' '.join(sys.argv)}`",
        f"Codes: {src}. Threads: {spec.threads}; clock: {spec.clock}; k = {spec.k}; batch size {spec.batch_size}; "
        f"{spec.n_queries} single-query samples; {spec.repeats} batch repeats.",
        "",
        bandwidth_line(rows),
        "",
        "## Engines (index bytes = codes + ids + tables, measured)",
        "",
        engine_table(rows),
        "",
        "## Speed-up over the exhaustive popcount engine (per query, batch size 1)",
        "",
        speedup_over_reference(rows),
        "",
        "## Index memory, 64 vs 16 bits",
        "",
        memory_ratio_table(rows),
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
