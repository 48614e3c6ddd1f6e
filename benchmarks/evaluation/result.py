"""Result types of an evaluation: which metrics to compute (:class:`MetricSpec`) and what came out
(:class:`MetricValue`, :class:`RetrievalResult`, with the code diagnostics of
:mod:`benchmarks.evaluation.diagnostics`). Metric definitions: :mod:`benchmarks.evaluation.metrics`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from benchmarks.evaluation.diagnostics import diagnostic_fields

__all__ = ["DEFAULT_P_AT_N", "TIES", "MetricSpec", "MetricValue", "RetrievalResult"]

TIES = ("index", "aware")
DEFAULT_P_AT_N = (1, 5, 10, 20, 50, 100, 500, 1000)


@dataclass(frozen=True)
class MetricSpec:
    """Which metrics to compute (names fixed by the evaluation spec).

    Attributes
    ----------
    map : bool
        ``map`` (mAP@all).
    map_at_k : tuple of int
        Cut-offs of ``map@k`` (default 50, UCMFH).
    map_first_k_relevant : tuple of int
        ``k`` of ``map_first_k_relevant@k`` (default 5000, DScPH/DDBH).
    p_at_n : tuple of int
        Points of the ``p@n`` curve (values above ``N_d`` become ``N_d``; duplicates dropped).
    pr_radius : bool
        ``pr_radius_precision``/``pr_radius_recall`` for r = 0..K (Hamming only).
    p_at_r2 : bool
        ``p@r2`` (Hamming only).
    ndcg_at_k : tuple of int
        Cut-offs of ``ndcg@k``.
    """

    map: bool = True
    map_at_k: tuple[int, ...] = (50,)
    map_first_k_relevant: tuple[int, ...] = (5000,)
    p_at_n: tuple[int, ...] = DEFAULT_P_AT_N
    pr_radius: bool = True
    p_at_r2: bool = True
    ndcg_at_k: tuple[int, ...] = (10, 50)

    def __post_init__(self) -> None:
        for name in ("map_at_k", "map_first_k_relevant", "p_at_n", "ndcg_at_k"):
            values = tuple(int(v) for v in getattr(self, name))
            if any(v < 1 for v in values):
                raise ValueError(f"MetricSpec.{name}: cut-offs must be >= 1, got {values}")
            object.__setattr__(self, name, values)

    @classmethod
    def map_only(cls) -> MetricSpec:
        """Only ``map`` (for speed comparisons)."""
        return cls(map=True, map_at_k=(), map_first_k_relevant=(), p_at_n=(), pr_radius=False, p_at_r2=False, ndcg_at_k=())


class MetricValue(NamedTuple):
    """One metric value: ``metric`` name, cut-off/point ``k`` (None if none), ``value``, ``chance`` level."""

    metric: str
    k: int | None
    value: float
    chance: float | None


@dataclass
class RetrievalResult:
    """All metric values of one evaluation.

    Attributes
    ----------
    values : list of MetricValue
        Curves give one value per point (``p@n``: k = n; ``pr_radius_*``: k = radius r).
    tie : str
        ``"index"`` or ``"aware"``.
    n_queries, n_database, n_queries_without_relevant : int
    shuffle_seed : int or None
        Seed of the database permutation (``tie="index"``); None for ``"aware"`` (no permutation needed).
    per_query : dict
        ``(metric, k) -> (n_queries,)`` float64 values for every per-query metric (not the micro-averaged
        radius curves).
    query_codes, database_codes : dict or None
        :func:`~benchmarks.evaluation.diagnostics.code_diagnostics` of the query and database codes (distinct
        codes, per-bit balance, constant bits, degenerate flag); None for real-valued features.
    """

    values: list[MetricValue]
    tie: str
    n_queries: int
    n_database: int
    n_queries_without_relevant: int
    shuffle_seed: int | None
    per_query: dict[tuple[str, int | None], np.ndarray] = field(default_factory=dict, repr=False)
    query_codes: dict[str, Any] | None = field(default=None, repr=False)
    database_codes: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def degenerate(self) -> bool:
        """True when the query or the database codes are degenerate (one distinct code, or constant bits)."""
        return bool(self.diagnostic_fields()["degenerate_codes"])

    @property
    def degenerate_reason(self) -> str | None:
        """Why the codes are degenerate (naming query/database), or None."""
        return self.diagnostic_fields()["degenerate_reason"]

    def diagnostic_fields(self) -> dict[str, Any]:
        """Flat code-diagnostic row fields (:data:`~benchmarks.evaluation.diagnostics.DIAGNOSTIC_FIELDS`)."""
        return diagnostic_fields(self.query_codes, self.database_codes)

    def get(self, metric: str, k: int | None = None) -> float:
        """Value of ``metric`` at ``k``.

        Raises
        ------
        KeyError
            If that (metric, k) was not computed (the message lists what was).
        """
        for v in self.values:
            if v.metric == metric and v.k == k:
                return v.value
        have = sorted({(v.metric, v.k) for v in self.values}, key=str)
        raise KeyError(f"metric {metric!r} at k={k} not computed; available: {have}")

    def chance(self, metric: str, k: int | None = None) -> float | None:
        """Chance level of ``metric`` at ``k`` (KeyError like :meth:`get`)."""
        for v in self.values:
            if v.metric == metric and v.k == k:
                return v.chance
        raise KeyError(f"metric {metric!r} at k={k} not computed")

    def as_dicts(self) -> list[dict]:
        """One plain dict per value (metric, k, value, chance, tie, counts, shuffle_seed, code diagnostics)."""
        common = {
            "tie": self.tie,
            "n_queries": self.n_queries,
            "n_database": self.n_database,
            "n_queries_without_relevant": self.n_queries_without_relevant,
            "shuffle_seed": self.shuffle_seed,
            **self.diagnostic_fields(),
        }
        return [{"metric": v.metric, "k": v.k, "value": v.value, "chance": v.chance, **common} for v in self.values]

