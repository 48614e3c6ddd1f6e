"""Reference baselines that frame every table: ``random``, ``cca-itq`` and ``real-valued``.

- ``random``: K random bits per item, a deterministic function of the item's feature bytes and the seed,
  so every metric sits at its chance level.
- ``cca-itq``: CCA between the two modalities to K dimensions, then an ITQ rotation (Gong & Lazebnik,
  "Iterative Quantization", CVPR 2011 / TPAMI 2013, cross-modal CCA-ITQ as in their Sec. 5).
- ``real-valued``: no hashing; cosine similarity in a shared space (the raw encoder space when the two
  modalities share it, else the CCA space) — the accuracy and latency reference for "hashing vs float".

Model selection (methods spec, "Reference baselines"). Unless fixed in the config, the CCA ridge of both
CCA baselines (and the CCA dimension of ``real-valued``) is chosen on the validation split: every candidate of
:data:`methods.cca.RIDGE_GRID` (relative ridges 1e-4 … 1e3, half-decade steps) × :data:`methods.cca.DIM_GRID`
is fitted on the training split and scored by :func:`methods.selection.validation_score` (tie-aware mAP,
validation queries against the training database, mean of i2t and t2i); the best one is kept (ties: the
larger ridge, then the smaller dimension). The choice, the grid and the validation mAP are in ``info()``, so
they land in every result row. The query split is never seen. CCA directions beyond the training views'
numerical rank raise :class:`methods.cca.CCARankError` (``cca-itq``) or cap the dimension, recorded
(``real-valued``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from medhash_datasets.base import FeatureSplit
from methods import register_method
from methods.base import ConfigError, EncodedBatch, HashingMethod, MethodConfig, check_bits, check_range
from methods.cca import (
    DIM_GRID,
    FALLBACK_DIM,
    FALLBACK_RIDGE,
    RIDGE_GRID,
    CCAProjection,
    CCARankError,
    CCAStatistics,
    fit_cca,
)
from methods.selection import ValidationScore, validation_score

#: How the grid is written in ``info()`` (the full grid is :data:`methods.cca.RIDGE_GRID`).
RIDGE_GRID_NOTE = f"relative ridge {RIDGE_GRID[0]:g}..{RIDGE_GRID[-1]:g}, {len(RIDGE_GRID)} half-decade steps"


# ---- ITQ ---------------------------------------------------------------------------------------------
def itq_rotation(v: np.ndarray, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """ITQ (Gong & Lazebnik 2011): alternate ``B = sign(V R)`` and the orthogonal Procrustes step.

    Parameters
    ----------
    v : np.ndarray, shape (n, k)
        Zero-centred projected data.
    iterations : int
        Alternations (the paper uses 50).
    rng : np.random.Generator
        For the random orthogonal initialisation.

    Returns
    -------
    np.ndarray, shape (k, k)
        Orthogonal rotation ``R`` minimising ``||B - V R||_F``.
    """
    k = v.shape[1]
    r, _ = np.linalg.qr(rng.standard_normal((k, k)))
    for _ in range(iterations):
        b = np.where(v @ r >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(v.T @ b)
        r = u @ wt
    return r


# ---- random ------------------------------------------------------------------------------------------
@dataclass
class RandomConfig(MethodConfig):
    """``random`` has no hyper-parameters."""


@register_method("random", tags=("baseline",), description="random codes: the chance level of every metric")
class RandomCodes(HashingMethod):
    """Random K-bit codes, a deterministic function of (seed, modality, the item's feature bytes).

    Codes carry no information about the item's content, so every metric sits at its chance level;
    hashing the bytes (BLAKE2b) keeps them reproducible and identical for repeated encodes.
    """

    config_class = RandomConfig

    def fit(self, train: FeatureSplit, validation: FeatureSplit, bits: int, seed: int) -> RandomCodes:
        check_bits(bits)
        self.bits, self.seed = int(bits), int(seed)
        return self

    def _codes(self, x: np.ndarray, modality: str) -> np.ndarray:
        assert self.bits is not None
        n_bytes = (self.bits + 7) // 8
        key = f"{self.seed}:{modality}".encode()
        rows = np.ascontiguousarray(x, dtype=np.float32)
        raw = b"".join(
            hashlib.blake2b(row.tobytes(), key=key, digest_size=min(64, max(n_bytes, 1))).digest()
            if n_bytes <= 64
            else np.random.default_rng(int.from_bytes(hashlib.blake2b(row.tobytes(), key=key).digest()[:8], "little")).bytes(n_bytes)
            for row in rows
        )
        packed = np.frombuffer(raw, dtype=np.uint8).reshape(len(rows), -1)[:, :n_bytes]
        bits = np.unpackbits(packed, axis=1, bitorder="little")[:, : self.bits]
        return np.where(bits == 1, 1.0, -1.0).astype(np.float32)

    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        self._check_fitted()
        self._check_inputs(image, text)
        return EncodedBatch(
            None if image is None else self._codes(image, "image"),
            None if text is None else self._codes(text, "text"),
        )

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        return None


# ---- shared selection --------------------------------------------------------------------------------
def _candidates(fixed: float | None, grid: Iterable[float], fallback: float, validation: FeatureSplit | None) -> tuple[list[float], str]:
    """Candidate values of one selected hyper-parameter and how the choice is made (recorded in ``info()``).

    ``fixed`` (not None) wins ("fixed (config)"); else the ``grid`` is searched on the validation split
    ("validation"), or ``fallback`` is used when the validation split is empty.
    """
    if fixed is not None:
        return [fixed], "fixed (config)"
    if validation is None or len(validation) == 0:
        return [fallback], "fallback (empty validation split)"
    return list(grid), "validation"


def _rank_info(stats: CCAStatistics) -> dict[str, int]:
    return {"cca_rank_image": stats.rank_x, "cca_rank_text": stats.rank_y, "cca_train_pairs": stats.n}


def _check_reg(cfg: MethodConfig) -> None:
    reg = cfg.reg  # type: ignore[attr-defined]
    if reg is not None and not 0.0 <= reg <= 1e6:
        raise ConfigError(f"{type(cfg).__name__}.reg = {reg!r} is outside [0, 1e6] (null = choose on validation)")


# ---- CCA-ITQ -----------------------------------------------------------------------------------------
@dataclass
class CCAITQConfig(MethodConfig):
    """Hyper-parameters of ``cca-itq``.

    Attributes
    ----------
    itq_iterations : int
        ITQ alternations (50 in Gong & Lazebnik).
    reg : float or None
        CCA covariance ridge, relative to the mean eigenvalue. ``None`` (default; ``--param reg=null``):
        chosen on the validation split from :data:`methods.cca.RIDGE_GRID`.
    eig_power : float
        Scale canonical direction j by ``corr_j ** eig_power`` before ITQ (Gong & Lazebnik weight CCA
        directions by their eigenvalues; 0 disables).
    """

    itq_iterations: int = 50
    reg: float | None = None
    eig_power: float = 1.0

    def validate(self) -> None:
        check_range(self, "itq_iterations", 0, 10_000)
        _check_reg(self)
        check_range(self, "eig_power", 0.0, 8.0)


@dataclass
class _ITQModel:
    """One fitted CCA-ITQ candidate: CCA maps, per-direction scale and the ITQ rotation (k, k)."""

    cca: CCAProjection
    scale: np.ndarray
    rotation: np.ndarray

    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        def relaxed(v: np.ndarray) -> np.ndarray:
            return np.tanh(v * self.scale @ self.rotation).astype(np.float32)

        return EncodedBatch(
            None if image is None else relaxed(self.cca.project_x(image)),
            None if text is None else relaxed(self.cca.project_y(text)),
        )


@register_method("cca-itq", tags=("baseline",), description="CCA to K dims + ITQ rotation (Gong & Lazebnik 2011), ridge chosen on validation")
class CCAITQ(HashingMethod):
    """Cross-modal CCA-ITQ: one rotation learned on both modalities' CCA projections, bits = ``V R >= 0``.

    The CCA ridge is chosen on the validation split unless fixed (module docstring). ``fit`` raises
    :class:`methods.cca.CCARankError` when K exceeds the numerical rank of either centred training view
    (such directions would give constant bits).
    """

    config_class = CCAITQConfig

    def fit(self, train: FeatureSplit, validation: FeatureSplit, bits: int, seed: int) -> CCAITQ:
        check_bits(bits)
        cfg = self.config
        assert isinstance(cfg, CCAITQConfig)
        stats = CCAStatistics(train.image, train.text)
        stats.check_directions(int(bits), f"cca-itq at {bits} bits")
        ridges, how = _candidates(cfg.reg, sorted(RIDGE_GRID, reverse=True), FALLBACK_RIDGE, validation)
        best: tuple[float, float, _ITQModel, ValidationScore | None] | None = None
        for reg in ridges:
            cca = stats.projection(int(bits), reg)
            scale = np.power(np.maximum(cca.corr, 1e-12), cfg.eig_power)
            v = np.concatenate([cca.project_x(train.image), cca.project_y(train.text)]) * scale
            model = _ITQModel(cca, scale, itq_rotation(v, cfg.itq_iterations, np.random.default_rng(seed)))
            score = validation_score(model.encode, train, validation, binary=True) if how == "validation" else None
            value = score.mean if score is not None else 0.0
            if best is None or value > best[1] + 1e-12:
                best = (reg, value, model, score)
        assert best is not None
        self.model = best[2]
        self.selection_ = {"reg": best[0], "reg_selection": how, **_rank_info(stats)}
        if best[3] is not None:
            self.selection_.update({"reg_grid": RIDGE_GRID_NOTE, "val_map": round(best[3].mean, 6),
                                    "val_relevance": best[3].relevance})
        self.bits, self.seed = int(bits), int(seed)
        return self

    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        self._check_fitted()
        self._check_inputs(image, text)
        return self.model.encode(image, text)

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Direction weighting before ITQ and ITQ iterations (the ridge is chosen on validation inside ``fit``)."""
        return {
            "eig_power": trial.suggest_float("eig_power", 0.0, 2.0),
            "itq_iterations": trial.suggest_int("itq_iterations", 10, 100, step=10),
        }

    def info(self) -> dict[str, Any]:
        """Chosen ridge, how it was chosen, grid, validation mAP and the training views' numerical ranks."""
        return dict(getattr(self, "selection_", {}))

    def get_state(self) -> dict[str, Any]:
        c = self.model.cca
        return {"mean_x": c.mean_x, "mean_y": c.mean_y, "wx": c.wx, "wy": c.wy, "corr": c.corr,
                "scale": self.model.scale, "rotation": self.model.rotation, "selection": self.info()}

    def set_state(self, state: dict[str, Any]) -> None:
        cca = CCAProjection(state["mean_x"], state["mean_y"], state["wx"], state["wy"], state["corr"])
        self.model = _ITQModel(cca, state["scale"], state["rotation"])
        self.selection_ = dict(state.get("selection", {}))


# ---- real-valued -------------------------------------------------------------------------------------
@dataclass
class RealValuedConfig(MethodConfig):
    """Hyper-parameters of ``real-valued``.

    Attributes
    ----------
    space : str
        ``"auto"`` (raw encoder space when image and text dims are equal — a shared space such as
        BiomedCLIP's — else CCA), ``"raw"`` or ``"cca"``.
    cca_dim : int or None
        CCA dimension; ``None`` (default): chosen on the validation split from :data:`methods.cca.DIM_GRID`.
        Always capped at the training views' numerical rank (recorded in ``info()``).
    reg : float or None
        CCA ridge relative to the mean eigenvalue; ``None`` (default): chosen on the validation split.
    eig_power : float
        In CCA space, scale direction j by ``corr_j ** eig_power`` (as ``cca-itq``) so weakly correlated
        directions do not dominate the cosine; 0 disables.
    """

    space: str = "auto"
    cca_dim: int | None = None
    reg: float | None = None
    eig_power: float = 1.0

    def validate(self) -> None:
        if self.space not in ("auto", "raw", "cca"):
            raise ConfigError(f"RealValuedConfig.space = {self.space!r}; valid: auto, raw, cca")
        if self.cca_dim is not None:
            check_range(self, "cca_dim", 1, 100_000)
        _check_reg(self)
        check_range(self, "eig_power", 0.0, 8.0)


@dataclass
class _CCAEmbedding:
    """Scaled CCA projections as float32 embeddings (n, k)."""

    cca: CCAProjection
    scale: np.ndarray

    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        return EncodedBatch(
            None if image is None else (self.cca.project_x(image) * self.scale).astype(np.float32),
            None if text is None else (self.cca.project_y(text) * self.scale).astype(np.float32),
        )


@register_method("real-valued", tags=("baseline",), description="no hashing: cosine similarity of float features (CCA space chosen on validation)")
class RealValued(HashingMethod):
    """Float32 embeddings compared by cosine similarity; ``bits`` is ignored (``binary = False``).

    In CCA space the ridge and the dimension are chosen on the validation split unless fixed (module
    docstring); the dimension is capped at the numerical rank of the training views, and the cap recorded.
    """

    config_class = RealValuedConfig
    binary = False

    def fit(self, train: FeatureSplit, validation: FeatureSplit, bits: int, seed: int) -> RealValued:
        cfg = self.config
        assert isinstance(cfg, RealValuedConfig)
        same_dim = train.image.shape[1] == train.text.shape[1]
        if cfg.space == "raw" and not same_dim:
            raise ConfigError(
                f"real-valued space='raw' needs equal dims, got d_img={train.image.shape[1]}, d_txt={train.text.shape[1]}"
            )
        self.use_cca = cfg.space == "cca" or (cfg.space == "auto" and not same_dim)
        self.selection_: dict[str, Any] = {"space": "cca" if self.use_cca else "raw"}
        if self.use_cca:
            self._fit_cca(train, validation, cfg)
        self.bits, self.seed = int(bits), int(seed)
        return self

    def _fit_cca(self, train: FeatureSplit, validation: FeatureSplit, cfg: RealValuedConfig) -> None:
        stats = CCAStatistics(train.image, train.text)
        stats.check_directions(1, "real-valued (CCA space)")
        # Ties go to the larger ridge, then the smaller dimension (iteration order, strict improvement).
        ridges, reg_how = _candidates(cfg.reg, sorted(RIDGE_GRID, reverse=True), FALLBACK_RIDGE, validation)
        asked, dim_how = _candidates(cfg.cca_dim, DIM_GRID, FALLBACK_DIM, validation)
        dims = sorted({min(int(k), stats.rank) for k in asked})
        full_rank = min(train.image.shape[1], train.text.shape[1])
        capped = sorted(int(k) for k in asked if k > stats.rank)
        select = len(ridges) * len(dims) > 1
        best: tuple[float, int, float, _CCAEmbedding, ValidationScore | None] | None = None
        for reg in ridges:
            full = stats.projection(max(dims), reg)
            for k in dims:
                cca = full.truncate(k)
                model = _CCAEmbedding(cca, np.power(np.maximum(cca.corr, 1e-12), cfg.eig_power))
                score = validation_score(model.encode, train, validation, binary=False) if select else None
                value = score.mean if score is not None else 0.0
                if best is None or value > best[2] + 1e-12:
                    best = (reg, k, value, model, score)
        assert best is not None
        self.model = best[3]
        self.selection_.update({"reg": best[0], "reg_selection": reg_how, "cca_dim": best[1],
                                "cca_dim_selection": dim_how, **_rank_info(stats)})
        if reg_how == "validation":
            self.selection_["reg_grid"] = RIDGE_GRID_NOTE
        if dim_how == "validation":
            self.selection_["dim_grid"] = dims
        if capped and (stats.rank < full_rank or dim_how == "fixed (config)"):
            self.selection_["warning"] = (
                f"CCA dimension capped at the training views' numerical rank {stats.rank} "
                f"(min feature dim {full_rank}; asked {capped})"
            )
        if best[4] is not None:
            self.selection_.update({"val_map": round(best[4].mean, 6), "val_relevance": best[4].relevance})

    @property
    def dim(self) -> int | None:
        """Embedding dimension (``None`` in raw space before encoding)."""
        return int(self.model.cca.wx.shape[1]) if getattr(self, "use_cca", False) else None

    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        """Float32 embeddings: (n, d) raw features or (n, cca_dim) CCA projections."""
        self._check_fitted()
        self._check_inputs(image, text)
        if self.use_cca:
            return self.model.encode(image, text)
        return EncodedBatch(
            None if image is None else np.asarray(image, dtype=np.float32),
            None if text is None else np.asarray(text, dtype=np.float32),
        )

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Direction weighting of the CCA space (ridge and dimension are chosen on validation inside ``fit``)."""
        return {"eig_power": trial.suggest_float("eig_power", 0.0, 2.0)}

    def info(self) -> dict[str, Any]:
        """Space used; in CCA space the chosen ridge and dimension, how they were chosen, caps and ranks."""
        return dict(getattr(self, "selection_", {}))

    def get_state(self) -> dict[str, Any]:
        if not self.use_cca:
            return {"use_cca": False, "selection": self.info()}
        c = self.model.cca
        return {"use_cca": True, "mean_x": c.mean_x, "mean_y": c.mean_y, "wx": c.wx, "wy": c.wy, "corr": c.corr,
                "scale": self.model.scale, "selection": self.info()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.use_cca = bool(state["use_cca"])
        self.selection_ = dict(state.get("selection", {"space": "cca" if self.use_cca else "raw"}))
        if self.use_cca:
            cca = CCAProjection(state["mean_x"], state["mean_y"], state["wx"], state["wy"], state["corr"])
            self.model = _CCAEmbedding(cca, state["scale"])


__all__ = [
    "CCAITQ",
    "CCAITQConfig",
    "CCAProjection",
    "CCARankError",
    "RandomCodes",
    "RealValued",
    "RealValuedConfig",
    "fit_cca",
    "itq_rotation",
]
