"""Paired significance of the headline method against the others: Wilcoxon signed-rank and paired t-test,
Holm-corrected (see :mod:`benchmarks.report.rows` for how values are paired)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmarks.report.rows import (
    FLOAT_BITS,
    WILCOXON_MIN_N,
    bits_sort_key,
    check_one_configuration,
    is_ablation,
    normalise_rows,
    per_seed,
    select,
)
from benchmarks.report.table import Table
from benchmarks.report.tables import metric_label, order_variants


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
    main = np.array([not is_ablation(v, m) for v, m in zip(sel["variant"], sel["method"])], dtype=bool)
    sel = sel[main & (sel["bits_label"] != FLOAT_BITS).to_numpy()]
    check_one_configuration(sel)
    keys = ["seed", "bits_label"]
    seeds = per_seed(sel, ["variant", "task", "bits_label"])
    head = seeds[seeds["variant"] == headline]
    if head.empty:
        return None
    tests: list[PairedTest] = []
    for other in order_variants(list(dict.fromkeys(seeds["variant"])), headline):
        if other == headline:
            continue
        matched = head.merge(seeds[seeds["variant"] == other], on=[*keys, "task"], suffixes=("_h", "_o"))
        pairs = matched.groupby(keys, sort=False)[["value_h", "value_o"]].mean().reset_index()
        pairs = pairs.sort_values(keys, key=lambda s: s.map(bits_sort_key) if s.name == "bits_label" else s)
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
             f"{metric_label(metric, tie)}, {protocol} protocol; "
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
