"""Reference baselines that frame every table: ``random``, ``cca-itq`` and ``real-valued``.

- ``random``: K random bits per item, a deterministic function of the item's feature bytes and the seed,
  so every metric sits at its chance level.
- ``cca-itq``: CCA between the two modalities to K dimensions, then an ITQ rotation (Gong & Lazebnik,
  "Iterative Quantization", CVPR 2011 / TPAMI 2013, cross-modal CCA-ITQ as in their Sec. 5).
- ``real-valued``: no hashing; cosine similarity in a shared space (the raw encoder space when the two
  modalities share it, else the CCA space) — the accuracy and latency reference for "hashing vs float".

Model selection (methods spec, "Reference baselines"). Unless fixed in the config, both CCA baselines choose
the CCA ridge (:data:`methods.cca.RIDGE_GRID`: relative ridges 1e-4 … 1e3, decade steps) and the power p of
the direction weights ``corr_j ** p`` (:data:`methods.cca.EIG_POWER_GRID`: 1, 2, 4) jointly on the validation
split; ``real-valued`` then its CCA dimension (:data:`methods.cca.DIM_GRID`, capped at the rank) at the
chosen pair, then its squash (:data:`methods.cca.SQUASH_GRID`: none, or tanh of the ITQ-rotated projection, the
continuous relaxation of CCA-ITQ codes, so the float reference contains its own hashed version). Each candidate is fitted on the training split and scored by
:func:`methods.selection.validation_score` (tie-aware mAP, validation queries against the training database,
mean of i2t and t2i); the best is kept (ties: larger ridge, then smaller power, then smaller dimension). The
choices, how each was made and the final model's validation mAP are in ``info()``, so they land in every result row. The
query split is never seen. CCA directions beyond the training views' numerical rank raise
:class:`methods.cca.CCARankError` (``cca-itq``) or cap the dimension, recorded (``real-valued``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from medhash_datasets.base import FeatureSplit
from methods import register_method
from methods.base import ConfigError, EncodedBatch, HashingMethod, MethodConfig, check_bits, check_range
from methods.cca import (
    DIM_GRID,
    EIG_POWER_GRID,
    FALLBACK_DIM,
    FALLBACK_EIG_POWER,
    FALLBACK_RIDGE,
    ITQ_ITERATIONS,
    RIDGE_GRID,
    SQUASH_GRID,
    CCAProjection,
    CCARankError,
    CCAStatistics,
    fit_cca,
)
from methods.selection import ValidationScore, validation_score


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
class _Encodable(Protocol):
    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch: ...


def _candidates(fixed: Any, grid: Iterable[Any], fallback: Any, validation: FeatureSplit | None) -> tuple[list[Any], str]:
    """Candidate values of one hyper-parameter and how it is chosen (recorded in ``info()``).

    ``fixed`` (not None) wins ("fixed (config)"); else the ``grid`` is searched on the validation split
    ("validation"), or ``fallback`` is used when the validation split is empty.
    """
    if fixed is not None:
        return [fixed], "fixed (config)"
    if validation is None or len(validation) == 0:
        return [fallback], "fallback (empty validation split)"
    return list(grid), "validation"


def _select(
    candidates: Sequence[tuple[Any, ...]],
    build: Callable[..., _Encodable],
    train: FeatureSplit,
    validation: FeatureSplit,
    *,
    binary: bool,
) -> tuple[tuple[Any, ...], _Encodable, ValidationScore | None]:
    """Build every candidate and keep the one with the best validation mAP (the first among ties).

    A single candidate is built without scoring (nothing to choose; its score is ``None``).
    """
    if len(candidates) == 1:
        return candidates[0], build(*candidates[0]), None
    best: tuple[tuple[Any, ...], _Encodable, ValidationScore] | None = None
    for cand in candidates:
        model = build(*cand)
        score = validation_score(model.encode, train, validation, binary=binary)
        if best is None or score.mean > best[2].mean + 1e-12:
            best = (cand, model, score)
    assert best is not None
    return best


def _selection_record(
    stats: CCAStatistics,
    chosen: dict[str, tuple[Any, str]],
    score: ValidationScore | None,
    model: _Encodable,
    train: FeatureSplit,
    validation: FeatureSplit,
    *,
    binary: bool,
) -> dict[str, Any]:
    """``info()`` entries: each chosen value and how it was chosen, ranks, and the final model's validation mAP
    (``score`` if the last selection step computed it, else scored here; absent for an empty validation split)."""
    if score is None and validation is not None and len(validation) > 0:
        score = validation_score(model.encode, train, validation, binary=binary)
    out: dict[str, Any] = {}
    for name, (value, how) in chosen.items():
        out[name] = value
        out[f"{name}_selection"] = how
    out.update({"cca_rank_image": stats.rank_x, "cca_rank_text": stats.rank_y, "cca_train_pairs": stats.n})
    if score is not None:
        out.update({"val_map": round(score.mean, 6), "val_relevance": score.relevance})
    return out


def _weights(cca: CCAProjection, power: float) -> np.ndarray:
    """Direction weights ``corr_j ** power`` (k,), floored at 1e-12 before the power."""
    return np.power(np.maximum(cca.corr, 1e-12), power)


def _check_optional(cfg: MethodConfig, name: str, low: float, high: float) -> None:
    value = getattr(cfg, name)
    if value is not None and not low <= value <= high:
        raise ConfigError(f"{type(cfg).__name__}.{name} = {value!r} is outside [{low}, {high}] (null = choose on validation)")


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
    eig_power : float or None
        Scale canonical direction j by ``corr_j ** eig_power`` before ITQ (Gong & Lazebnik weight CCA
        directions by their eigenvalues; 0 disables). ``None`` (default): chosen on the validation split from
        :data:`methods.cca.EIG_POWER_GRID`.
    """

    itq_iterations: int = ITQ_ITERATIONS
    reg: float | None = None
    eig_power: float | None = None

    def validate(self) -> None:
        check_range(self, "itq_iterations", 0, 10_000)
        _check_optional(self, "reg", 0.0, 1e6)
        _check_optional(self, "eig_power", 0.0, 8.0)


@dataclass
class _ITQModel:
    """One fitted CCA-ITQ candidate: CCA maps, per-direction scale (k,) and the ITQ rotation (k, k)."""

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


@register_method("cca-itq", tags=("baseline",), description="CCA to K dims + ITQ rotation (Gong & Lazebnik 2011), ridge and weights chosen on validation")
class CCAITQ(HashingMethod):
    """Cross-modal CCA-ITQ: one rotation learned on both modalities' CCA projections, bits = ``V R >= 0``.

    The CCA ridge and direction weights are chosen on the validation split unless fixed (module docstring).
    ``fit`` raises :class:`methods.cca.CCARankError` when K exceeds the numerical rank of either centred
    training view (such directions would give constant bits).
    """

    config_class = CCAITQConfig

    def fit(self, train: FeatureSplit, validation: FeatureSplit, bits: int, seed: int) -> CCAITQ:
        check_bits(bits)
        cfg = self.config
        assert isinstance(cfg, CCAITQConfig)
        stats = CCAStatistics(train.image, train.text)
        stats.check_directions(int(bits), f"cca-itq at {bits} bits")
        ridges, reg_how = _candidates(cfg.reg, sorted(RIDGE_GRID, reverse=True), FALLBACK_RIDGE, validation)
        powers, pow_how = _candidates(cfg.eig_power, EIG_POWER_GRID, FALLBACK_EIG_POWER, validation)
        projections = {reg: stats.projection(int(bits), reg) for reg in ridges}

        def build(reg: float, power: float) -> _ITQModel:
            cca = projections[reg]
            scale = _weights(cca, power)
            v = np.concatenate([cca.project_x(train.image), cca.project_y(train.text)]) * scale
            return _ITQModel(cca, scale, itq_rotation(v, cfg.itq_iterations, np.random.default_rng(seed)))

        (reg, power), model, score = _select([(r, p) for r in ridges for p in powers], build, train, validation, binary=True)
        assert isinstance(model, _ITQModel)
        self.model = model
        chosen = {"reg": (reg, reg_how), "eig_power": (power, pow_how)}
        self.selection_ = _selection_record(stats, chosen, score, model, train, validation, binary=True)
        self.bits, self.seed = int(bits), int(seed)
        return self

    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        self._check_fitted()
        self._check_inputs(image, text)
        return self.model.encode(image, text)

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """ITQ iterations (the ridge and the direction weights are chosen on validation inside ``fit``)."""
        return {"itq_iterations": trial.suggest_int("itq_iterations", 10, 100, step=10)}

    def info(self) -> dict[str, Any]:
        """Chosen ridge and weight power, how each was chosen, validation mAP, the training views' ranks."""
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
    eig_power : float or None
        In CCA space, scale direction j by ``corr_j ** eig_power`` (as ``cca-itq``) so weakly correlated
        directions do not dominate the cosine; 0 disables. ``None`` (default): chosen on the validation split.
    squash : float or None
        0: the weighted CCA projection itself. c > 0: ``tanh(c · z / σ)`` with ``z`` the weighted projection
        after an ITQ rotation (fitted as in ``cca-itq``) and ``σ`` its per-dimension training std — the
        continuous relaxation of CCA-ITQ's codes, whose cosine ranks exactly as their Hamming distance when
        c → ∞, so the float reference contains its own hashed version. ``None`` (default): chosen on the
        validation split from :data:`methods.cca.SQUASH_GRID`.
    """

    space: str = "auto"
    cca_dim: int | None = None
    reg: float | None = None
    eig_power: float | None = None
    squash: float | None = None

    def validate(self) -> None:
        if self.space not in ("auto", "raw", "cca"):
            raise ConfigError(f"RealValuedConfig.space = {self.space!r}; valid: auto, raw, cca")
        _check_optional(self, "cca_dim", 1, 100_000)
        _check_optional(self, "reg", 0.0, 1e6)
        _check_optional(self, "eig_power", 0.0, 8.0)
        _check_optional(self, "squash", 0.0, 1e3)


@dataclass
class _CCAEmbedding:
    """Weighted CCA projections (n, k) as float32 embeddings, optionally rotated and squashed.

    ``squash > 0``: ``tanh(squash · (v · scale) R / sigma)`` (see :class:`RealValuedConfig`).
    """

    cca: CCAProjection
    scale: np.ndarray
    squash: float = 0.0
    rotation: np.ndarray | None = None  # (k, k), with squash > 0
    sigma: np.ndarray | None = None  # (k,), with squash > 0

    def _embed(self, v: np.ndarray) -> np.ndarray:
        v = v * self.scale
        if self.squash > 0:
            assert self.rotation is not None and self.sigma is not None
            v = np.tanh(self.squash * (v @ self.rotation) / self.sigma)
        return v.astype(np.float32)

    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        return EncodedBatch(
            None if image is None else self._embed(self.cca.project_x(image)),
            None if text is None else self._embed(self.cca.project_y(text)),
        )


@register_method("real-valued", tags=("baseline",), description="no hashing: cosine similarity of float features (CCA space chosen on validation)")
class RealValued(HashingMethod):
    """Float32 embeddings compared by cosine similarity; ``bits`` is ignored (``binary = False``).

    In CCA space the ridge, the direction weights, the dimension and the squash are chosen on the validation
    split unless fixed (module docstring); the dimension is capped at the numerical rank of the training views, and a cap
    below the feature dimension is recorded as a warning.
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
            self._fit_cca(train, validation, cfg, int(seed))
        self.bits, self.seed = int(bits), int(seed)
        return self

    def _fit_cca(self, train: FeatureSplit, validation: FeatureSplit, cfg: RealValuedConfig, seed: int) -> None:
        """Stage 1: (ridge, weight power) jointly at the largest candidate dimension; stage 2: the dimension;
        stage 3: the squash (0 = none) at the chosen triple."""
        stats = CCAStatistics(train.image, train.text)
        stats.check_directions(1, "real-valued (CCA space)")
        ridges, reg_how = _candidates(cfg.reg, sorted(RIDGE_GRID, reverse=True), FALLBACK_RIDGE, validation)
        powers, pow_how = _candidates(cfg.eig_power, EIG_POWER_GRID, FALLBACK_EIG_POWER, validation)
        asked, dim_how = _candidates(cfg.cca_dim, DIM_GRID, FALLBACK_DIM, validation)
        dims = sorted({min(int(k), stats.rank) for k in asked})
        projections = {reg: stats.projection(dims[-1], reg) for reg in ridges}

        rotations: dict[tuple[float, float, int], tuple[np.ndarray, np.ndarray]] = {}

        def build(reg: float, power: float, k: int, squash: float = 0.0) -> _CCAEmbedding:
            cca = projections[reg].truncate(k)
            scale = _weights(cca, power)
            if squash <= 0:
                return _CCAEmbedding(cca, scale)
            if (reg, power, k) not in rotations:
                v = np.concatenate([cca.project_x(train.image), cca.project_y(train.text)]) * scale
                rot = itq_rotation(v, ITQ_ITERATIONS, np.random.default_rng(seed))
                rotations[(reg, power, k)] = (rot, np.maximum((v @ rot).std(axis=0), 1e-12))
            rot, sigma = rotations[(reg, power, k)]
            return _CCAEmbedding(cca, scale, squash, rot, sigma)

        stage1 = [(r, p, dims[-1]) for r in ridges for p in powers]
        (reg, power, _), model, score = _select(stage1, build, train, validation, binary=False)
        dim = dims[0]
        if len(dims) > 1:
            (_, _, dim), model, score = _select([(reg, power, k) for k in dims], build, train, validation, binary=False)
        squashes, sq_how = _candidates(cfg.squash, SQUASH_GRID, 0.0, validation)
        squash = squashes[0]
        if squashes != [0.0]:
            (*_, squash), model, score = _select([(reg, power, dim, c) for c in squashes], build, train, validation, binary=False)
        assert isinstance(model, _CCAEmbedding)
        self.model = model
        chosen = {"reg": (reg, reg_how), "eig_power": (power, pow_how), "cca_dim": (dim, dim_how), "squash": (squash, sq_how)}
        self.selection_.update(_selection_record(stats, chosen, score, model, train, validation, binary=False))
        min_dim = min(train.image.shape[1], train.text.shape[1])
        capped = sorted(int(k) for k in asked if k > stats.rank)
        if capped and (stats.rank < min_dim or dim_how == "fixed (config)"):
            self.selection_["warning"] = (
                f"CCA dimension capped at the training views' numerical rank {stats.rank} "
                f"(min feature dim {min_dim}; asked {capped})"
            )

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
        """Raw encoder space (when the dims agree) or CCA space; everything inside the CCA space is chosen on
        validation inside ``fit``. With unequal dims both choices give the CCA space."""
        return {"space": trial.suggest_categorical("space", ["auto", "cca"])}

    def info(self) -> dict[str, Any]:
        """Space used; in CCA space the chosen ridge, weight power and dimension, how each was chosen, caps, ranks."""
        return dict(getattr(self, "selection_", {}))

    def get_state(self) -> dict[str, Any]:
        if not self.use_cca:
            return {"use_cca": False, "selection": self.info()}
        c = self.model.cca
        m = self.model
        return {"use_cca": True, "mean_x": c.mean_x, "mean_y": c.mean_y, "wx": c.wx, "wy": c.wy, "corr": c.corr,
                "scale": m.scale, "squash": m.squash, "rotation": m.rotation, "sigma": m.sigma, "selection": self.info()}

    def set_state(self, state: dict[str, Any]) -> None:
        self.use_cca = bool(state["use_cca"])
        self.selection_ = dict(state.get("selection", {"space": "cca" if self.use_cca else "raw"}))
        if self.use_cca:
            cca = CCAProjection(state["mean_x"], state["mean_y"], state["wx"], state["wy"], state["corr"])
            self.model = _CCAEmbedding(cca, state["scale"], float(state.get("squash", 0.0)), state.get("rotation"),
                                       state.get("sigma"))


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
