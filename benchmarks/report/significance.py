"""Paired significance of the headline method against the others: Wilcoxon signed-rank and paired t-test,
Holm-corrected (see :mod:`benchmarks.report.rows` for how values are paired)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.report.rows import (
    FLOAT_BITS,
    TIE_TOLERANCE,
    WILCOXON_MIN_N,
    NoTable,
    bits_sort_key,
    check_one_configuration,
    is_ablation,
    normalise_rows,
    per_seed,
    select,
)
from benchmarks.report.table import MISSING, Table
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


#: How :func:`paired_test` names the Wilcoxon p-value computations (in its ``wilcoxon_method`` field).
WILCOXON_METHODS = {
    "exact": "exact null distribution (no zero differences left, no tied ranks)",
    "permutation": "exact permutation distribution over all sign flips (tied ranks present; n <= 13)",
    "asymptotic": "normal approximation with tie correction (tied ranks present and n > 13, or n > 50)",
}
#: Up to this many non-zero differences, tied ranks are tested by enumerating every sign flip (as scipy's own
#: ``method="auto"`` does from SciPy 1.15 on).
PERMUTATION_MAX_N = 13


@dataclass(frozen=True)
class PairedTest:
    """Paired comparison of the headline method with one other method.

    Attributes
    ----------
    method : str
    n : int
        Matched pairs (in :func:`significance_table`: (seed, bits), each the mean over tasks).
    n_effective : int
        Pairs whose difference is not a tie (``|d| > TIE_TOLERANCE``): the ones that inform the Wilcoxon test.
    mean_diff : float
        Mean of headline − other over all ``n`` pairs.
    wins, ties, losses : int
        Pairs where the headline is higher / equal within :data:`TIE_TOLERANCE` / lower.
    wilcoxon_stat, wilcoxon_p : float
        :func:`scipy.stats.wilcoxon` on the non-tied differences (two-sided); NaN when none is left.
    wilcoxon_method : str
        Key of :data:`WILCOXON_METHODS` naming how the p-value was computed (``""`` when not computed).
    t_stat, t_p : float
        :func:`scipy.stats.ttest_rel` over all ``n`` pairs (two-sided); NaN for n < 2 or differences that are all
        equal within :data:`TIE_TOLERANCE`.
    headline_values, other_values : tuple[float, ...]
        The matched vectors (same order).
    """

    method: str
    n: int
    n_effective: int
    mean_diff: float
    wins: int
    ties: int
    losses: int
    wilcoxon_stat: float
    wilcoxon_p: float
    wilcoxon_method: str
    t_stat: float
    t_p: float
    headline_values: tuple[float, ...]
    other_values: tuple[float, ...]


def wilcoxon_nonzero(d: np.ndarray) -> tuple[float, float, str]:
    """Two-sided Wilcoxon signed-rank test of differences that are all non-zero; ``(W, p, method)``.

    ``d`` is rounded to 12 decimals first, so absolute differences that agree to within float noise are tied
    ranks. The p-value computation is chosen explicitly (and returned as a :data:`WILCOXON_METHODS` key):
    ``"exact"`` without tied ranks and n <= 50; with tied ranks, where the exact distribution no longer holds,
    ``"permutation"`` (all 2**n sign flips, :class:`scipy.stats.PermutationMethod`) for n <= 13, else
    ``"asymptotic"``; ``"asymptotic"`` for n > 50. ``zero_method="wilcox"`` (no zeros are passed anyway).

    Parameters
    ----------
    d : np.ndarray
        Shape (n,), float, no element within :data:`TIE_TOLERANCE` of 0, n >= 1.
    """
    from scipy import stats

    d = np.round(np.asarray(d, dtype=float), 12)
    n = len(d)
    tied = len(np.unique(np.abs(d))) < n
    if not tied and n <= 50:
        method: Any = "exact"
        name = "exact"
    elif tied and n <= PERMUTATION_MAX_N:
        method = stats.PermutationMethod(n_resamples=2 ** n) if hasattr(stats, "PermutationMethod") else None
        name = "permutation" if method is not None else "asymptotic"
    else:
        method, name = None, "asymptotic"
    try:
        res = stats.wilcoxon(d, zero_method="wilcox", method=method or "asymptotic")
    except (TypeError, ValueError):  # SciPy < 1.12 calls the normal approximation "approx"; no permutations
        name = "exact" if name == "exact" else "asymptotic"
        res = stats.wilcoxon(d, zero_method="wilcox", method="exact" if name == "exact" else "approx")
    return float(res.statistic), float(res.pvalue), name


def paired_test(method: str, x: np.ndarray, y: np.ndarray) -> PairedTest:
    """Wilcoxon signed-rank and paired t-test of ``x`` (headline) against ``y`` (other), both shape (n,).

    Differences ``d = x - y`` with ``|d| <= TIE_TOLERANCE`` are ties: counted as such in wins/ties/losses and
    removed before the Wilcoxon test (:func:`wilcoxon_nonzero`), so ``n_effective`` is the number of pairs that
    inform it. Example: ``d = [0, .01, .02, .03, .04, .05]`` → 5/1/0, ``n_effective = 5``, exact p = 2/2**5.

    Raises
    ------
    ValueError
        If ``x`` and ``y`` are not 1-D of equal length.
    """
    from scipy import stats

    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"paired_test: vectors must be 1-D of equal length, got {x.shape} and {y.shape}")
    d = x - y
    tie = np.abs(d) <= TIE_TOLERANCE
    w_stat = w_p = t_stat = t_p = float("nan")
    w_method = ""
    if (~tie).any():
        w_stat, w_p, w_method = wilcoxon_nonzero(d[~tie])
    if len(d) >= 2 and np.ptp(d) > TIE_TOLERANCE:
        res = stats.ttest_rel(x, y)
        t_stat, t_p = float(res.statistic), float(res.pvalue)
    return PairedTest(method, len(d), int((~tie).sum()), float(d.mean()) if len(d) else float("nan"),
                      int((d > TIE_TOLERANCE).sum()), int(tie.sum()), int((d < -TIE_TOLERANCE).sum()),
                      w_stat, w_p, w_method, t_stat, t_p, tuple(x), tuple(y))


def significance_table(
    rows: pd.DataFrame, *, dataset: str, protocol: str = "unimodal", metric: str = "map", tie: str = "aware",
    headline: str = "mcmfh", ablations: bool = False,
) -> Table:
    """Headline method against each other (non-ablation, binary) method, paired over (seed, bits); with
    ``ablations``, the full headline method against each of its ablation variants instead (table
    ``significance_ablation_<dataset>_<protocol>``).

    The pairing unit is one trained model: (seed, bits). Its value is the mean over the tasks (i2t, t2i, ...)
    that both methods have for that (seed, bits); the tasks of one model are not independent samples.
    Real-valued (bits ``float``) methods are left out: they have no per-bits value to pair with.

    The table shows the pairs, the effective n of the Wilcoxon test (ties removed, :func:`paired_test`) flagged
    "(n too small)" below :data:`WILCOXON_MIN_N`, and a note naming how scipy computed each p-value.

    Raises
    ------
    NoTable
        If the headline method has no rows, there is no other method, or every method has one seed per code
        length (n = 1: no repeated runs to test; the message says so).
    ReportError
        If one (variant, bits) holds several configurations (:func:`check_one_configuration`).
    """
    df = normalise_rows(rows)
    sel = select(df[df["dataset"] == dataset], metric=metric, tie=tie, protocol=protocol)
    ablated = np.array([is_ablation(e, m) for e, m in zip(sel["entry"], sel["method"])], dtype=bool)
    if ablations:
        keep = ablated & (sel["method"] == headline).to_numpy() | (sel["variant"] == headline).to_numpy()
    else:
        keep = ~ablated
    sel = sel[keep & (sel["bits_label"] != FLOAT_BITS).to_numpy()]
    check_one_configuration(sel)
    kind = "significance_ablation" if ablations else "significance"
    where = f"{kind.replace('_', ' ')} {dataset}/{protocol}"
    keys = ["seed", "bits_label"]
    seeds = per_seed(sel, ["variant", "task", "bits_label"])
    head = seeds[seeds["variant"] == headline]
    if head.empty:
        raise NoTable(f"{where}: no rows of headline method {headline!r}")
    others = [v for v in order_variants(list(dict.fromkeys(seeds["variant"])), headline) if v != headline]
    if not others:
        raise NoTable(f"{where}: no {'ablation of' if ablations else 'method other than'} {headline!r} to compare with")
    per_bits = seeds.groupby(["variant", "bits_label"])["seed"].nunique()
    if per_bits.max() <= 1:
        raise NoTable(f"{where}: not computed, one seed per (method, bits) (n = 1); paired tests need repeated "
                      "runs (run with several --seeds)")
    tests: list[PairedTest] = []
    for other in others:
        matched = head.merge(seeds[seeds["variant"] == other], on=[*keys, "task"], suffixes=("_h", "_o"))
        pairs = matched.groupby(keys, sort=False)[["value_h", "value_o"]].mean().reset_index()
        pairs = pairs.sort_values(keys, key=lambda s: s.map(bits_sort_key) if s.name == "bits_label" else s)
        tests.append(paired_test(other, pairs["value_h"].to_numpy(), pairs["value_o"].to_numpy()))
    adjusted = holm([t.wilcoxon_p for t in tests])

    def p(x: float) -> str:
        return MISSING if not math.isfinite(x) else ("<0.001" if x < 1e-3 else f"{x:.3f}")

    body = []
    for t, adj in zip(tests, adjusted):
        small = " (n too small)" if t.n_effective < WILCOXON_MIN_N else ""
        body.append([f"{headline} vs {t.method}", str(t.n), f"{t.n_effective}{small}",
                     MISSING if not math.isfinite(t.mean_diff) else f"{t.mean_diff:+.4f}",
                     f"{t.wins}/{t.ties}/{t.losses}",
                     MISSING if not math.isfinite(t.wilcoxon_stat) else f"{t.wilcoxon_stat:g}", p(t.wilcoxon_p),
                     p(adj), MISSING if not math.isfinite(t.t_stat) else f"{t.t_stat:.2f}", p(t.t_p)])
    data = pd.DataFrame([{**{k: v for k, v in vars(t).items() if not k.endswith("_values")}, "wilcoxon_p_holm": a}
                         for t, a in zip(tests, adjusted)])
    columns = [("", "comparison"), ("", "n pairs"), ("", "n effective"), ("", "mean Δ"), ("", "wins/ties/losses"),
               ("Wilcoxon signed-rank", "W"), ("Wilcoxon signed-rank", "p"), ("Wilcoxon signed-rank", "p (Holm)"),
               ("paired t-test", "t"), ("paired t-test", "p")]
    notes = [f"Pairs matched by (seed, bits), one per trained model, each the mean over its tasks of "
             f"{metric_label(metric, tie)}, {protocol} protocol; Δ = {headline} − other. Ties: |Δ| ≤ {TIE_TOLERANCE:g} "
             "(counted in wins/ties/losses and removed before the Wilcoxon test, scipy.stats.wilcoxon "
             "zero_method='wilcox'); n effective = pairs left. Two-sided tests; paired t-test (scipy.stats.ttest_rel) "
             "over all pairs; Holm step-down adjustment of the Wilcoxon p over the rows."]
    used: dict[str, list[str]] = {}
    for t in tests:
        if t.wilcoxon_method:
            used.setdefault(t.wilcoxon_method, []).append(t.method)
    if used:
        notes.append("Wilcoxon p computed by scipy with method " + "; ".join(
            f"'{name}' ({WILCOXON_METHODS[name]}): {', '.join(who) if len(used) > 1 else 'every row'}"
            for name, who in used.items()) + ".")
    if any(t.n_effective < WILCOXON_MIN_N for t in tests):
        notes.append(f"n too small: with fewer than {WILCOXON_MIN_N} non-tied pairs the two-sided Wilcoxon p cannot "
                     "fall below 0.05.")
    return Table(name=f"{kind}_{dataset}_{protocol}",
                 title=f"{dataset}: paired significance tests, {headline} against each "
                       + ("of its ablations" if ablations else "method"),
                 columns=columns, rows=body, notes=notes, data=data)
