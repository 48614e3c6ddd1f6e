"""Regularised CCA with a numerical-rank check and a validation-selected ridge (for ``cca-itq`` and ``real-valued``).

CCA (Hotelling 1936) between paired views ``x`` (n, d_x) and ``y`` (n, d_y): the canonical directions are the
singular vectors of ``Cxx^-1/2 Cxy Cyy^-1/2``. Each covariance gets a ridge ``reg · mean eigenvalue``
(``reg`` is *relative*, so it means the same for features of any scale). With ``Cxx = Vx diag(ex) Vxᵀ``,
``Cxx + λI`` has the same eigenvectors, so :class:`CCAStatistics` decomposes each covariance once and every
ridge of a grid costs one SVD of the rotated cross-covariance (no new eigen-decomposition).

Why the ridge is chosen on validation data: with 1,280-d image features and 1,653 training pairs (MedPix,
offline encoder) a ridge of 1e-4 fits canonical directions to noise and the codes sit near chance, while a
ridge of about 10 (relative) gives the strongest unsupervised numbers measured (methods spec, "Reference
baselines"). :data:`RIDGE_GRID` (with :data:`EIG_POWER_GRID` for the direction weights) is the documented grid; the caller scores each candidate with
:func:`methods.selection.validation_score` (validation queries against the training database).

Numerical rank. A view whose centred training data has rank ``r`` (``r <= n − 1``) supports at most ``r``
canonical directions; a direction beyond ``min(rank_x, rank_y)`` projects every training item of the
deficient view to the same value, i.e. a constant bit. :meth:`CCAStatistics.check_directions` raises
:class:`CCARankError` naming both ranks instead of returning such directions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from methods.base import ConfigError

__all__ = [
    "DIM_GRID",
    "EIG_POWER_GRID",
    "FALLBACK_DIM",
    "FALLBACK_EIG_POWER",
    "FALLBACK_RIDGE",
    "ITQ_ITERATIONS",
    "RIDGE_GRID",
    "SQUASH_GRID",
    "CCAProjection",
    "CCARankError",
    "CCAStatistics",
    "fit_cca",
]

#: Relative ridges tried on the validation split: 1e-4 … 1e3, decade steps (8 values).
RIDGE_GRID: tuple[float, ...] = tuple(10.0**e for e in range(-4, 4))

#: Powers p of the direction weights ``corr_j ** p`` tried on the validation split. Gong & Lazebnik weight
#: CCA directions by their eigenvalues (p = 1); Gong, Ke, Isard & Lazebnik ("A multi-view embedding space
#: for modeling internet images, tags, and their semantics", IJCV 2014) found p = 4 best.
EIG_POWER_GRID: tuple[float, ...] = (1.0, 2.0, 4.0)

#: CCA dimensions tried by ``real-valued`` (each capped at the numerical rank).
DIM_GRID: tuple[int, ...] = (16, 32, 64, 128, 256, 512)

#: Squash factors c tried by ``real-valued`` (0: plain weighted CCA; c > 0: tanh(c z / σ) of the ITQ-rotated
#: projection, the continuous relaxation of CCA-ITQ codes).
SQUASH_GRID: tuple[float, ...] = (0.0, 1.0, 3.0, 10.0)

#: ITQ alternations (Gong & Lazebnik use 50).
ITQ_ITERATIONS = 50

#: Values used when there is nothing to select on (empty validation split); recorded in ``info()``.
FALLBACK_RIDGE = 1.0
FALLBACK_EIG_POWER = 1.0
FALLBACK_DIM = 128


class CCARankError(ConfigError):
    """More canonical directions requested than the training views' numerical rank supports."""


@dataclass
class CCAProjection:
    """Linear CCA maps fitted on paired data.

    Attributes
    ----------
    mean_x, mean_y : np.ndarray, shapes (d_x,), (d_y,), float64
    wx, wy : np.ndarray, shapes (d_x, k), (d_y, k), float64
        Projections; ``(x - mean_x) @ wx`` and ``(y - mean_y) @ wy`` have (ridge-regularised) identity
        covariance and maximal, ordered correlations.
    corr : np.ndarray, shape (k,)
        Canonical correlations of the regularised problem, descending.
    """

    mean_x: np.ndarray
    mean_y: np.ndarray
    wx: np.ndarray
    wy: np.ndarray
    corr: np.ndarray

    def project_x(self, x: np.ndarray) -> np.ndarray:
        """(n, d_x) → (n, k), float64."""
        return (np.asarray(x, dtype=np.float64) - self.mean_x) @ self.wx

    def project_y(self, y: np.ndarray) -> np.ndarray:
        """(n, d_y) → (n, k), float64."""
        return (np.asarray(y, dtype=np.float64) - self.mean_y) @ self.wy

    def truncate(self, k: int) -> CCAProjection:
        """The first ``k`` directions (CCA directions are nested: truncating = fitting to ``k``)."""
        return CCAProjection(self.mean_x, self.mean_y, self.wx[:, :k], self.wy[:, :k], self.corr[:k])


def _numerical_rank(eigvals: np.ndarray, n: int) -> int:
    """Rank of a covariance from its eigenvalues: ``e > e_max · max(n, d) · eps`` (numpy ``matrix_rank``'s
    default tolerance, with the sample count in the size factor); 0 for an all-zero covariance."""
    top = float(eigvals.max(initial=0.0))
    if top <= 0:
        return 0
    return int((eigvals > top * max(n, eigvals.size) * np.finfo(np.float64).eps).sum())


class CCAStatistics:
    """Everything a ridge grid needs from one training set, computed once.

    Parameters
    ----------
    x : np.ndarray, shape (n, d_x)
    y : np.ndarray, shape (n, d_y)
        Paired training views (any float dtype; computed in float64).
    names : tuple of str
        Names of the views in error messages (default ``("image", "text")``).

    Attributes
    ----------
    n : int
        Training pairs.
    rank_x, rank_y : int
        Numerical ranks of the centred views (``<= n − 1``).

    Raises
    ------
    ConfigError
        Fewer than 2 pairs, different row counts, or non-finite features (message names the view and shape).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, names: tuple[str, str] = ("image", "text")) -> None:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        self.names = names
        for name, arr in zip(names, (x, y)):
            if arr.ndim != 2:
                raise ConfigError(f"CCA: {name} features must be 2-D (n, d), got shape {arr.shape}")
            if not np.isfinite(arr).all():
                raise ConfigError(f"CCA: {name} features contain NaN or inf (shape {arr.shape})")
        if x.shape[0] != y.shape[0]:
            raise ConfigError(f"CCA: {names[0]} has {x.shape[0]} rows, {names[1]} has {y.shape[0]}")
        self.n = int(x.shape[0])
        if self.n < 2:
            raise ConfigError(f"CCA needs at least 2 training pairs, got {self.n}")
        self.mean_x, self.mean_y = x.mean(0), y.mean(0)
        xc, yc = x - self.mean_x, y - self.mean_y
        self.ex, self.vx = np.linalg.eigh(xc.T @ xc / (self.n - 1))
        self.ey, self.vy = np.linalg.eigh(yc.T @ yc / (self.n - 1))
        self.ex, self.ey = np.maximum(self.ex, 0.0), np.maximum(self.ey, 0.0)
        # Cross-covariance in the two eigenbases: Vxᵀ Cxy Vy = (Xc Vx)ᵀ (Yc Vy) / (n − 1).
        self.cxy = (xc @ self.vx).T @ (yc @ self.vy) / (self.n - 1)
        self.rank_x = _numerical_rank(self.ex, self.n)
        self.rank_y = _numerical_rank(self.ey, self.n)

    @property
    def rank(self) -> int:
        """Canonical directions the data supports: ``min(rank_x, rank_y)``."""
        return min(self.rank_x, self.rank_y)

    def check_directions(self, k: int, what: str) -> None:
        """Raise :class:`CCARankError` unless ``1 <= k <= rank`` (``what`` names the request in the message)."""
        if k < 1 or k > self.rank:
            raise CCARankError(
                f"{what} needs {k} canonical directions, but the centred training views have numerical rank "
                f"{self.rank_x} ({self.names[0]}, d={self.ex.size}) and {self.rank_y} ({self.names[1]}, "
                f"d={self.ey.size}) from {self.n} pairs; directions beyond rank {self.rank} would be constant"
            )

    def projection(self, k: int, reg: float) -> CCAProjection:
        """CCA to ``k`` dimensions with relative ridge ``reg``.

        Parameters
        ----------
        k : int
            ``1 <= k <= rank`` (:meth:`check_directions`).
        reg : float
            Ridge added to each covariance, relative to its mean eigenvalue (trace / d); >= 0.

        Returns
        -------
        CCAProjection

        Raises
        ------
        CCARankError
            If ``k`` exceeds the numerical rank.
        ConfigError
            If ``reg`` is negative.
        """
        self.check_directions(k, f"CCA to {k} dims")
        if reg < 0:
            raise ConfigError(f"CCA ridge must be >= 0, got {reg}")
        a = self._inv_sqrt_diag(self.ex, reg)
        b = self._inv_sqrt_diag(self.ey, reg)
        u, s, vt = np.linalg.svd(a[:, None] * self.cxy * b[None, :], full_matrices=False)
        wx = self.vx @ (a[:, None] * u[:, :k])
        wy = self.vy @ (b[:, None] * vt[:k].T)
        return CCAProjection(self.mean_x, self.mean_y, wx, wy, s[:k])

    @staticmethod
    def _inv_sqrt_diag(eigvals: np.ndarray, reg: float) -> np.ndarray:
        """``(e + reg · mean e)^-1/2``, floored at ``1e-12 · mean e`` (so ``reg = 0`` on a singular view stays finite)."""
        mean = max(float(eigvals.mean()), np.finfo(np.float64).tiny)
        return 1.0 / np.sqrt(np.maximum(eigvals + reg * mean, 1e-12 * mean))


def fit_cca(x: np.ndarray, y: np.ndarray, k: int, reg: float = 1e-4) -> CCAProjection:
    """Regularised CCA of ``x`` (n, d_x) and ``y`` (n, d_y) to ``k`` dims with relative ridge ``reg``.

    Shorthand for ``CCAStatistics(x, y).projection(k, reg)``; see there for the errors
    (:class:`CCARankError` when ``k`` exceeds the numerical rank, :class:`ConfigError` for fewer than 2
    pairs or non-finite features).
    """
    return CCAStatistics(x, y).projection(k, reg)
