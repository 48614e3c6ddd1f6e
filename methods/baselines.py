"""Reference baselines that frame every table: ``random``, ``cca-itq`` and ``real-valued``.

- ``random``: K random bits per item, a deterministic function of the item's feature bytes and the seed,
  so every metric sits at its chance level.
- ``cca-itq``: CCA between the two modalities to K dimensions, then an ITQ rotation (Gong & Lazebnik,
  "Iterative Quantization", CVPR 2011 / TPAMI 2013, cross-modal CCA-ITQ as in their Sec. 5).
- ``real-valued``: no hashing; cosine similarity in a shared space (the raw encoder space when the two
  modalities share it, else the CCA space) — the accuracy and latency reference for "hashing vs float".
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from medhash_datasets.base import FeatureSplit
from methods import register_method
from methods.base import ConfigError, EncodedBatch, HashingMethod, MethodConfig, check_bits, check_range


# ---- CCA ---------------------------------------------------------------------------------------------
@dataclass
class CCAProjection:
    """Linear CCA maps fitted on paired data.

    Attributes
    ----------
    mean_x, mean_y : np.ndarray, shapes (d_x,), (d_y,), float64
    wx, wy : np.ndarray, shapes (d_x, k), (d_y, k), float64
        Projections; ``(x - mean_x) @ wx`` and ``(y - mean_y) @ wy`` have identity covariance and maximal,
        ordered correlations.
    corr : np.ndarray, shape (k,)
        Canonical correlations, descending.
    """

    mean_x: np.ndarray
    mean_y: np.ndarray
    wx: np.ndarray
    wy: np.ndarray
    corr: np.ndarray

    def project_x(self, x: np.ndarray) -> np.ndarray:
        """(n, d_x) → (n, k)."""
        return (np.asarray(x, dtype=np.float64) - self.mean_x) @ self.wx

    def project_y(self, y: np.ndarray) -> np.ndarray:
        """(n, d_y) → (n, k)."""
        return (np.asarray(y, dtype=np.float64) - self.mean_y) @ self.wy


def _inv_sqrt(c: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(c)
    return (vecs / np.sqrt(np.maximum(vals, 1e-12))) @ vecs.T


def fit_cca(x: np.ndarray, y: np.ndarray, k: int, reg: float = 1e-4) -> CCAProjection:
    """Regularised CCA (Hotelling 1936) via the SVD of ``Cxx^-1/2 Cxy Cyy^-1/2``.

    Parameters
    ----------
    x : np.ndarray, shape (n, d_x); y : np.ndarray, shape (n, d_y)
        Paired views.
    k : int
        Number of canonical directions, ``1 <= k <= min(d_x, d_y)``.
    reg : float
        Ridge added to each covariance, relative to its mean eigenvalue (trace / d).

    Raises
    ------
    ConfigError
        If ``k`` exceeds ``min(d_x, d_y)`` or the sample count is below 2.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    n = x.shape[0]
    if n < 2:
        raise ConfigError(f"CCA needs at least 2 training pairs, got {n}")
    if not 1 <= k <= min(x.shape[1], y.shape[1]):
        raise ConfigError(f"CCA to {k} dims needs k <= min(d_img={x.shape[1]}, d_txt={y.shape[1]})")
    mx, my = x.mean(0), y.mean(0)
    xc, yc = x - mx, y - my
    cxx = xc.T @ xc / (n - 1)
    cyy = yc.T @ yc / (n - 1)
    cxy = xc.T @ yc / (n - 1)
    cxx += reg * np.trace(cxx) / cxx.shape[0] * np.eye(cxx.shape[0])
    cyy += reg * np.trace(cyy) / cyy.shape[0] * np.eye(cyy.shape[0])
    ix, iy = _inv_sqrt(cxx), _inv_sqrt(cyy)
    u, s, vt = np.linalg.svd(ix @ cxy @ iy)
    return CCAProjection(mx, my, ix @ u[:, :k], iy @ vt.T[:, :k], s[:k])


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


# ---- CCA-ITQ -----------------------------------------------------------------------------------------
@dataclass
class CCAITQConfig(MethodConfig):
    """Hyper-parameters of ``cca-itq``.

    Attributes
    ----------
    itq_iterations : int
        ITQ alternations (50 in Gong & Lazebnik).
    reg : float
        CCA covariance ridge, relative to the mean eigenvalue.
    eig_power : float
        Scale canonical direction j by ``corr_j ** eig_power`` before ITQ (Gong & Lazebnik weight CCA
        directions by their eigenvalues; 0 disables).
    """

    itq_iterations: int = 50
    reg: float = 1e-4
    eig_power: float = 1.0

    def validate(self) -> None:
        check_range(self, "itq_iterations", 0, 10_000)
        check_range(self, "reg", 0.0, 10.0)
        check_range(self, "eig_power", 0.0, 8.0)


@register_method("cca-itq", tags=("baseline",), description="CCA to K dims + ITQ rotation (Gong & Lazebnik 2011)")
class CCAITQ(HashingMethod):
    """Cross-modal CCA-ITQ: one rotation learned on both modalities' CCA projections, bits = ``V R >= 0``."""

    config_class = CCAITQConfig

    def fit(self, train: FeatureSplit, validation: FeatureSplit, bits: int, seed: int) -> CCAITQ:
        check_bits(bits)
        cfg = self.config
        assert isinstance(cfg, CCAITQConfig)
        self.cca = fit_cca(train.image, train.text, bits, cfg.reg)
        self.scale = np.power(np.maximum(self.cca.corr, 1e-12), cfg.eig_power)
        v = np.concatenate([self.cca.project_x(train.image), self.cca.project_y(train.text)]) * self.scale
        self.rotation = itq_rotation(v, cfg.itq_iterations, np.random.default_rng(seed))
        self.bits, self.seed = int(bits), int(seed)
        return self

    def _relaxed(self, v: np.ndarray) -> np.ndarray:
        return np.tanh(v * self.scale @ self.rotation).astype(np.float32)

    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        self._check_fitted()
        self._check_inputs(image, text)
        return EncodedBatch(
            None if image is None else self._relaxed(self.cca.project_x(image)),
            None if text is None else self._relaxed(self.cca.project_y(text)),
        )

    def get_state(self) -> dict[str, Any]:
        c = self.cca
        return {"mean_x": c.mean_x, "mean_y": c.mean_y, "wx": c.wx, "wy": c.wy, "corr": c.corr,
                "scale": self.scale, "rotation": self.rotation}

    def set_state(self, state: dict[str, Any]) -> None:
        self.cca = CCAProjection(state["mean_x"], state["mean_y"], state["wx"], state["wy"], state["corr"])
        self.scale, self.rotation = state["scale"], state["rotation"]


# ---- real-valued -------------------------------------------------------------------------------------
@dataclass
class RealValuedConfig(MethodConfig):
    """Hyper-parameters of ``real-valued``.

    Attributes
    ----------
    space : str
        ``"auto"`` (raw encoder space when image and text dims are equal — a shared space such as
        BiomedCLIP's — else CCA), ``"raw"`` or ``"cca"``.
    cca_dim : int
        CCA dimension (capped at ``min(d_img, d_txt)``).
    reg : float
        CCA ridge.
    eig_power : float
        In CCA space, scale direction j by ``corr_j ** eig_power`` (as ``cca-itq``) so weakly correlated
        directions do not dominate the cosine; 0 disables.
    """

    space: str = "auto"
    cca_dim: int = 128
    reg: float = 1e-4
    eig_power: float = 1.0

    def validate(self) -> None:
        if self.space not in ("auto", "raw", "cca"):
            raise ConfigError(f"RealValuedConfig.space = {self.space!r}; valid: auto, raw, cca")
        check_range(self, "cca_dim", 1, 100_000)
        check_range(self, "reg", 0.0, 10.0)
        check_range(self, "eig_power", 0.0, 8.0)


@register_method("real-valued", tags=("baseline",), description="no hashing: cosine similarity of float features")
class RealValued(HashingMethod):
    """Float32 embeddings compared by cosine similarity; ``bits`` is ignored (``binary = False``)."""

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
        if self.use_cca:
            k = min(cfg.cca_dim, train.image.shape[1], train.text.shape[1])
            self.cca = fit_cca(train.image, train.text, k, cfg.reg)
            self.scale = np.power(np.maximum(self.cca.corr, 1e-12), cfg.eig_power)
        self.bits, self.seed = int(bits), int(seed)
        return self

    @property
    def dim(self) -> int | None:
        """Embedding dimension (``None`` in raw space before encoding)."""
        return self.cca.wx.shape[1] if getattr(self, "use_cca", False) else None

    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        """Float32 embeddings: (n, d) raw features or (n, cca_dim) CCA projections."""
        self._check_fitted()
        self._check_inputs(image, text)
        if self.use_cca:
            fi = None if image is None else (self.cca.project_x(image) * self.scale).astype(np.float32)
            ft = None if text is None else (self.cca.project_y(text) * self.scale).astype(np.float32)
        else:
            fi = None if image is None else np.asarray(image, dtype=np.float32)
            ft = None if text is None else np.asarray(text, dtype=np.float32)
        return EncodedBatch(fi, ft)

    def info(self) -> dict[str, Any]:
        return {"space": "cca" if getattr(self, "use_cca", False) else "raw"}

    def get_state(self) -> dict[str, Any]:
        if not self.use_cca:
            return {"use_cca": False}
        c = self.cca
        return {"use_cca": True, "mean_x": c.mean_x, "mean_y": c.mean_y, "wx": c.wx, "wy": c.wy, "corr": c.corr,
                "scale": self.scale}

    def set_state(self, state: dict[str, Any]) -> None:
        self.use_cca = bool(state["use_cca"])
        if self.use_cca:
            self.cca = CCAProjection(state["mean_x"], state["mean_y"], state["wx"], state["wy"], state["corr"])
            self.scale = state["scale"]
