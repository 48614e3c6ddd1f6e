"""The end-to-end latency table: rows of :mod:`benchmarks.search.end_to_end` → one line per (task, N, method,
engine) with each stage, the total and the speed-up over real-valued; written as Markdown and CSV, plus the
database sizes where the seed paper's kind of speed-up appears and where the encoder dominates."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.search.summary import fmt_int, fmt_ratio, fmt_sig, markdown
from benchmarks.search.trained import REAL_VALUED

if TYPE_CHECKING:
    from benchmarks.search.end_to_end import EndToEndSpec

#: The seed paper's claimed speed-up of hashing over real-valued retrieval (MCMFH).
SEED_SPEEDUP = 1.73
COLUMNS = {
    "e2e_encoder_ms": "encoder_ms", "e2e_encoder_batched_ms": "encoder_batched_ms", "e2e_encode_ms": "encode_ms",
    "e2e_search_ms": "search_ms", "e2e_total_ms": "total_ms", "e2e_speedup_vs_real_valued": "speedup",
    "e2e_speedup_vs_real_valued_without_encoder": "speedup_no_encoder",
}


def end_to_end_frame(rows: Sequence[dict[str, Any]]):
    """One line per (task, db_size, method, bits, engine) with the stage times (ms per query), the total, the
    speed-ups, ``n_real_items``, a plot order (hashing methods first, real-valued last) and a short label.

    Returns
    -------
    pandas.DataFrame
        Columns ``task, db_size, method, bits, engine, encoder_ms, encoder_batched_ms, encode_ms, search_ms,
        total_ms, speedup, speedup_no_encoder, n_real_items, display, short, order``; empty without rows.
    """
    import pandas as pd

    from methods import display_name

    df = pd.DataFrame([r for r in rows if r.get("kind") == "end-to-end"])
    if df.empty:
        return df
    df["bits"] = df["bits"].fillna(0).astype(int)
    keys = ["task", "db_size", "method", "bits", "engine"]
    wide = df.pivot_table(index=keys, columns="metric", values="value", aggfunc="first").reset_index()
    wide = wide.rename(columns=COLUMNS)
    real = df.groupby(keys)["n_real_items"].first().reset_index()
    wide = wide.merge(real, on=keys)
    wide["display"] = [display_name(m) for m in wide["method"]]
    wide["short"] = [f"{d} {b}b {e}" if b else f"{d} {e}" for d, b, e in zip(wide["display"], wide["bits"], wide["engine"])]
    methods = list(dict.fromkeys(r["method"] for r in rows if r.get("kind") == "end-to-end"))
    wide["order"] = [methods.index(m) for m in wide["method"]]
    return wide.sort_values(["task", "db_size", "order", "bits", "engine"]).reset_index(drop=True)


def format_end_to_end(frame) -> str:
    """The end-to-end table as Markdown (cells formatted, written verbatim)."""
    if frame is None or len(frame) == 0:
        return "(no end-to-end rows)"
    headers = ["task", "N (real items × copies)", "method", "engine", "encoder ms (batch 1)", "encoder ms/item (batched)",
               "encode ms", "search ms", "total ms", "speed-up vs real-valued", "speed-up w/o encoder"]
    body = []
    for _, r in frame.iterrows():
        copies = r["db_size"] / r["n_real_items"] if r["n_real_items"] else float("nan")
        size = fmt_int(r["db_size"]) + (f" ({fmt_int(r['n_real_items'])} × {copies:,.0f})" if copies > 1 else "")
        name = r["display"] + (f", {int(r['bits'])} bits" if r["bits"] else "")
        reference = r["method"] == REAL_VALUED
        body.append([r["task"], size, name, r["engine"], fmt_sig(r["encoder_ms"]), fmt_sig(r["encoder_batched_ms"]),
                     fmt_sig(r["encode_ms"]), fmt_sig(r["search_ms"]), fmt_sig(r["total_ms"]),
                     "reference" if reference else fmt_ratio(r.get("speedup")),
                     "reference" if reference else fmt_ratio(r.get("speedup_no_encoder"))])
    return markdown(headers, body)


def crossing(sizes: Sequence[float], values: Sequence[float], target: float) -> float | None:
    """The database size where ``values`` first reach ``target``, by linear interpolation in N between the two
    measured sizes around it (the real-valued search time, hence the speed-up, grows about linearly in N);
    ``None`` if never reached, the first size if already reached there."""
    pairs = list(zip(sizes, values))
    for i, (n, v) in enumerate(pairs):
        if v >= target:
            if i == 0:
                return float(n)
            n0, v0 = pairs[i - 1]
            return float(n0 + (target - v0) / (v - v0) * (n - n0))
    return None


def findings(frame, target: float = SEED_SPEEDUP) -> list[str]:
    """Sentences, per task and hashing method (its fastest engine at each N): the database sizes where the
    end-to-end speed-up reaches ``target`` and where it crosses it (interpolated), where the speed-up without
    the encoder does, and where the encoder is more than half of the query's time; and per task, where the
    encoder is more than half of the real-valued query's time."""
    if frame is None or len(frame) == 0:
        return []

    def sizes(best, mask) -> str:
        picked = best.loc[mask, "db_size"].tolist()
        return ", ".join(f"{int(n):,}" for n in picked) if picked else "none"

    out = []
    hashing = frame[frame["method"] != REAL_VALUED]
    for (task, _method, bits), g in hashing.groupby(["task", "method", "bits"], sort=False):
        best = g.loc[g.groupby("db_size")["total_ms"].idxmin()].sort_values("db_size")
        share = best["encoder_ms"] / best["total_ms"]
        cross = crossing(best["db_size"].tolist(), best["speedup"].tolist(), target)
        where = "never within the sizes measured" if cross is None else f"at N ≈ {cross:,.0f}"
        out.append(
            f"{task}, {g['display'].iloc[0]} ({int(bits)} bits): end-to-end speed-up >= {target}× at N = "
            f"{sizes(best, best['speedup'] >= target)}, crossing {target}× {where} (largest "
            f"{best['speedup'].max():.2f}× at N = {int(best.loc[best['speedup'].idxmax(), 'db_size']):,}); without the "
            f"encoder >= {target}× at N = {sizes(best, best['speedup_no_encoder'] >= target)}; encoder > 50 % of "
            f"the total at N = {sizes(best, share > 0.5)}.")
    for task, g in frame[frame["method"] == REAL_VALUED].groupby("task", sort=False):
        best = g.loc[g.groupby("db_size")["total_ms"].idxmin()].sort_values("db_size")
        share = best["encoder_ms"] / best["total_ms"]
        out.append(f"{task}, {g['display'].iloc[0]}: encoder > 50 % of its total at N = {sizes(best, share > 0.5)} "
                   f"(share {share.min():.0%} at N = {int(best.loc[share.idxmin(), 'db_size']):,}).")
    return out


def write_end_to_end(out_dir: Path, spec: EndToEndSpec, frame, encoder: str) -> None:
    """Write ``end_to_end.md`` (table + findings) and ``end_to_end.csv`` atomically under ``out_dir``."""
    from medhash_datasets.cache_io import atomic_write_text

    if frame is not None and len(frame):
        atomic_write_text(out_dir / "end_to_end.csv", frame.to_csv(index=False))
    text = [
        f"# End-to-end query latency: {spec.dataset}",
        "",
        f"Command: `{spec.command or ' '.join(sys.argv)}`",
        f"Encoder: {encoder}. Threads: {spec.threads}; clock: {spec.clock}; top-{spec.k}; medians over "
        f"{spec.n_queries} single queries per stage; batched encoder figure: batches of {spec.encoder_batch}. "
        "Databases beyond the dataset's own are its real items replicated with fresh ids (N (real × copies)). "
        "Total = encoder (batch 1) + encode + search; speed-up = fastest real-valued total at the same task and N "
        "/ total.",
        "",
        format_end_to_end(frame),
        "",
        *[f"- {line}" for line in findings(frame)],
        "",
    ]
    atomic_write_text(out_dir / "end_to_end.md", "\n".join(text))
