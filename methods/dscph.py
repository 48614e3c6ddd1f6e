"""DScPH: Deep Semantic-consistent Penalizing Hashing, as a frozen-feature re-implementation.

Qin, Wu, Zhang, Huang, Nie, "Deep Semantic-consistent Penalizing Hashing for Cross-modal Retrieval", IEEE
Transactions on Multimedia 2025, doi 10.1109/TMM.2025.3535306. Authors' code: github.com/QinLab-WFU/DScPH
(``train/hash_train.py``, ``utils/CPF_loss.py``, ``AdaTriplet/``, ``FAST_HPP.py``), read for facts only.
The original fine-tunes CLIP ViT-B/32; here the encoder is frozen and the two hash heads (plus the class
proxies and the rotation) are trained on its features (``info()["reimplementation"]`` says so).

Loss (methods spec, DScPH section), for relaxed codes ``h_m`` (B×K) of modality m and labels Y (B×C):
``proxy(h_img) + proxy(h_txt) + Σ_m [triplet(h_m) + bitvar(rownorm(R h_m))]``.

Deviation from the authors' code (stated in every result row through ``info()``): the negative-pair hinge of
the triplet loss compares the **cosine** of the two codes with β by default. The authors use the raw inner
product ``h_a · h_n``, whose range [−K, K] swamps the other terms on frozen features: at 64 bits on MedPix
(offline encoder) it falls to chance (0.180 / 0.176 mAP i2t / t2i), while the cosine gives 0.437 / 0.471
(issue 14). The raw inner product stays selectable: ``neg_pair_similarity="dot"`` or the registered variant
``dscph-raw-ip``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods import register_method, register_variant
from methods.base import ConfigError, check_range
from methods.supervised import SupervisedConfig, SupervisedHashingMethod, suggest_common
from methods.supervised_blocks import label_similarity


# ---- (a) class-proxy loss ----------------------------------------------------------------------------------
def class_proxy_loss(
    h: Tensor,
    labels: Tensor,
    proxies: Tensor,
    *,
    tau: float = 0.3,
    psi: float = 0.3,
    s_p: float = 1.3,
    s_n: float = 1.3,
    mu: float = 1.0,
    b: float = 2.0,
) -> Tensor:
    """DScPH class-proxy loss with learnable proxies (authors' ``CPF`` module).

    With cosines ``c_ic = cos(h_i, w_c)`` and ``sg`` = stop-gradient, sums over the whole batch::

        T = 2 Σ_ic Y_ic · max(c_ic, 0) + b
        P = Σ_ic Y_ic (1 − c_ic) · sg[exp(s_p (1 − c_ic))]
        N = Σ_{(i,c): c_ic > τ} (1 − Y_ic)(c_ic − ψ) · sg[exp(s_n (c_ic − μ))]
        L = 1 − T / (T + P + N)

    Source: methods spec (DScPH (a)); authors' ``utils/CPF_loss.py`` (τ 0.3, ψ 0.3, s_p = s_n = 1.3, μ 1, b 2).

    Parameters
    ----------
    h : Tensor, shape (B, K), float
        Relaxed codes of one modality.
    labels : Tensor, shape (B, C)
        Multi-hot labels (float or integer, 0/1).
    proxies : Tensor, shape (C, K), float
        One learnable proxy per class.
    tau, psi, s_p, s_n, mu, b : float
        Loss constants (defaults: the authors').

    Returns
    -------
    Tensor, shape (); differentiable in ``h`` and ``proxies``.

    Raises
    ------
    ValueError
        If the shapes disagree.
    """
    if h.ndim != 2 or labels.shape != (h.shape[0], proxies.shape[0]) or proxies.shape[1] != h.shape[1]:
        raise ValueError(
            f"class_proxy_loss: need h (B, K), labels (B, C), proxies (C, K); got {tuple(h.shape)}, "
            f"{tuple(labels.shape)}, {tuple(proxies.shape)}"
        )
    y = labels.to(h.dtype)
    cos = F.normalize(h, dim=1) @ F.normalize(proxies, dim=1).T
    t = 2.0 * (y * cos.clamp_min(0.0)).sum() + b
    p = (y * (1.0 - cos) * torch.exp(s_p * (1.0 - cos)).detach()).sum()
    hard = cos > tau
    n = torch.where(hard, (1.0 - y) * (cos - psi) * torch.exp(s_n * (cos - mu)).detach(), torch.zeros_like(cos)).sum()
    return 1.0 - t / (t + p + n)


# ---- (b) adaptive triplet loss -----------------------------------------------------------------------------
def adaptive_triplet_loss(
    h: Tensor, sim: Tensor, *, k_margin: float = 2.0, k_beta: float = 2.0, neg_pair_similarity: str = "cosine"
) -> tuple[Tensor, dict[str, float]]:
    """Adaptive triplet loss with batch-adaptive margins (AdaTriplet-AM, as used by DScPH).

    Similarities are cosines ``s = cos(h_a, h_·)``. Triplets ``(a, p, n)``: ``a ≠ p`` share a label,
    ``a, n`` share none. Margins are recomputed from the current batch (detached)::

        ε = max(0, mean_{all triplets}(s_ap − s_an) / k_margin)          (AdaTriplet eq. 7, K_Δ = 2)
        β = 1 − (1 − mean_{negative pairs}(s_an)) / k_beta                (AdaTriplet eq. 8, K_an = 2)

    where the negative pairs are the unordered pairs {a, n} of the triplets (a sharing no label with n,
    and a having at least one positive). Loss::

        mean over semi-hard triplets (0 < s_ap − s_an ≤ ε) of max(0, s_an − s_ap + ε)
        + mean over negative pairs with s_an ≥ β of max(0, sim(h_a, h_n) − β)

    with ``sim`` the cosine ``s_an`` (default) or the raw inner product ``h_a · h_n`` of the authors'
    ``extract_regu_features`` (``neg_pair_similarity="dot"``; module docstring for why the default deviates);
    each term is 0 when its set is empty. Sources: methods spec (DScPH (b)); Nguyen et al.,
    "AdaTriplet", ECCV 2022; authors' ``AdaTriplet/miners/triplet_automargin_miner.py`` and
    ``AdaTriplet/methods.py``. The authors build a new miner every epoch, so their margins never leave
    their initial values (ε 0.25, β 0); the spec's per-batch update is used here.

    Parameters
    ----------
    h : Tensor, shape (B, K), float
        Relaxed codes of one modality.
    sim : Tensor, shape (B, B), bool
        Label similarity ``[y_a · y_b > 0]``.
    k_margin, k_beta : float
        ``K_Δ`` and ``K_an`` (2 and 2).
    neg_pair_similarity : {"cosine", "dot"}
        Similarity inside the negative-pair hinge: the cosine ``s_an`` (default) or the raw inner product
        ``h_a · h_n`` (authors' code).

    Returns
    -------
    loss : Tensor, shape ()
    info : dict
        ``margin`` (ε), ``beta`` (β; NaN without negative pairs), ``n_triplets``, ``n_semihard``,
        ``n_neg_pairs``, ``n_neg_selected`` (floats).

    Raises
    ------
    ValueError
        If ``sim`` is not (B, B).
    """
    bsz = h.shape[0]
    if h.ndim != 2 or sim.shape != (bsz, bsz):
        raise ValueError(f"adaptive_triplet_loss: need h (B, K) and sim (B, B), got {tuple(h.shape)}, {tuple(sim.shape)}")
    sim = sim.bool()
    eye = torch.eye(bsz, dtype=torch.bool, device=h.device)
    pos = sim & ~eye
    neg = ~sim
    cos = F.normalize(h, dim=1) @ F.normalize(h, dim=1).T
    zero = h.sum() * 0.0
    with torch.no_grad():
        c = cos.detach().double()
        n_p = pos.sum(dim=1).double()
        n_n = neg.sum(dim=1).double()
        s_p = torch.where(pos, c, torch.zeros_like(c)).sum(dim=1)
        s_n = torch.where(neg, c, torch.zeros_like(c)).sum(dim=1)
        n_trip = float((n_p * n_n).sum())
        # Σ_a Σ_p Σ_n (s_ap − s_an) = Σ_a (n_n,a · Σ_p s_ap − n_p,a · Σ_n s_an), without the B³ tensor
        margin = max(0.0, float((n_n * s_p - n_p * s_n).sum()) / n_trip / k_margin) if n_trip > 0 else 0.0
        has_pos = pos.any(dim=1)
        pairs = torch.triu(neg & (has_pos.unsqueeze(1) | has_pos.unsqueeze(0)), diagonal=1)
        n_pairs = int(pairs.sum())
        beta = 1.0 - (1.0 - float(c[pairs].mean())) / k_beta if n_pairs else math.nan

    # Semi-hard triplets (0 < s_ap − s_an ≤ ε) are counted per (a, p) and per (a, n) pair by binary search
    # over each row's sorted similarities (O(B² log B), no B³ tensor). On that set the hinge is active, so
    # Σ max(0, s_an − s_ap + ε) = n·ε − Σ_ap m_ap s_ap + Σ_an m_an s_an exactly, with m the counts.
    with torch.no_grad():
        cc = cos.detach()
        inf = torch.full_like(cc, math.inf)
        neg_sorted = torch.where(neg, cc, inf).sort(dim=1).values
        pos_sorted = torch.where(pos, cc, inf).sort(dim=1).values
        # m_ap = #{n: s_ap − ε ≤ s_an < s_ap}
        lo_hi = torch.searchsorted(neg_sorted, torch.cat([cc, cc - margin], dim=1), side="left")
        m_ap = torch.where(pos, lo_hi[:, :bsz] - lo_hi[:, bsz:], 0)
        # m_an = #{p: s_an < s_ap ≤ s_an + ε}
        lo_hi = torch.searchsorted(pos_sorted, torch.cat([cc + margin, cc], dim=1), side="right")
        m_an = torch.where(neg, lo_hi[:, :bsz] - lo_hi[:, bsz:], 0)
        n_semi = int(m_ap.sum())
    if n_semi:
        trip = (n_semi * margin - (m_ap.to(cos.dtype) * cos).sum() + (m_an.to(cos.dtype) * cos).sum()) / n_semi
    else:
        trip = zero

    neg_term, n_sel = zero, 0
    if n_pairs:
        selected = pairs & (cos.detach() >= beta)
        n_sel = int(selected.sum())
        if n_sel:
            pair_sim = h @ h.T if neg_pair_similarity == "dot" else cos
            neg_term = torch.relu(pair_sim[selected] - beta).mean()
    info = {
        "margin": margin,
        "beta": beta,
        "n_triplets": n_trip,
        "n_semihard": float(n_semi),
        "n_neg_pairs": float(n_pairs),
        "n_neg_selected": float(n_sel),
    }
    return trip + neg_term, info


# ---- (c) bit-variance quantization on rotated codes --------------------------------------------------------
class HouseholderRotation(nn.Module):
    """Learnable orthogonal K×K rotation ``R = H_1 H_2 ⋯ H_K``, ``H_j = I − 2 v_j v_jᵀ / ‖v_j‖²``.

    The vectors ``v_j`` are the columns of a learnable K×K matrix initialised to the identity, as in the
    authors' ``FAST_HPP.HouseHolder`` (an adaptation of Mathiasen et al., "Faster Orthogonal
    Parameterization with Householder Matrices", ICML-W 2020): at the start every ``H_j`` flips one axis,
    so ``R = −I`` ("identity-like"; the bit-variance loss is even in z, so the sign is immaterial).
    A product of reflections is orthogonal for any parameter values, so ``R Rᵀ = I`` holds throughout
    training up to rounding.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)
        self.vectors = nn.Parameter(torch.eye(self.dim))

    def matrix(self) -> Tensor:
        """The rotation ``R = H_1 H_2 ⋯ H_K``, shape (K, K), dtype of the parameters.

        Uses the compact WY form ``R = I − V T Vᵀ`` with V the unit vectors as columns and T the upper
        triangular matrix with ``T⁻¹ = triu(VᵀV, 1) + ½ I`` (Joffrain, Low, Quintana-Ortí, van de Geijn,
        Van Zee, "Accumulating Householder transformations, revisited", ACM TOMS 32(2), 2006): one
        triangular solve instead of K sequential reflections, so forward and backward stay cheap.
        """
        v = F.normalize(self.vectors, dim=0)
        eye = torch.eye(self.dim, dtype=v.dtype, device=v.device)
        t_inv = torch.triu(v.T @ v, diagonal=1) + 0.5 * eye
        t = torch.linalg.solve_triangular(t_inv, eye, upper=True)
        return eye - v @ t @ v.T

    def forward(self, h: Tensor) -> Tensor:
        """Rotate each row: (B, K) → (B, K), row i = ``R h_i``."""
        return h @ self.matrix().T


def bit_variance_loss(z: Tensor) -> Tensor:
    """``mean(σ(z) (1 − σ(z)))`` over all entries (authors' ``AdaTriplet.losses.bit_var_loss``).

    Parameters
    ----------
    z : Tensor, shape (B, K)
        Row-normalised rotated codes.

    Returns
    -------
    Tensor, shape (); in (0, 0.25].
    """
    p = torch.sigmoid(z)
    return (p * (1.0 - p)).mean()


class DScPHLoss(nn.Module):
    """Total DScPH loss with its learnable proxies (C×K, Xavier-uniform) and Householder rotation.

    ``forward(h_img, h_txt, labels) -> (loss, info)`` with ``h_*`` (B, K), ``labels`` (B, C) multi-hot;
    ``info`` holds each term and the margins ε, β of both modalities.
    """

    def __init__(self, bits: int, n_classes: int, cfg: DScPHConfig) -> None:
        super().__init__()
        self.proxies = nn.Parameter(torch.empty(n_classes, bits))
        nn.init.xavier_uniform_(self.proxies)
        self.rotation = HouseholderRotation(bits)
        self.cfg = cfg

    def forward(self, h_img: Tensor, h_txt: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        cfg = self.cfg
        sim = label_similarity(labels)
        kw = {"tau": cfg.proxy_tau, "psi": cfg.proxy_psi, "s_p": cfg.proxy_sp, "s_n": cfg.proxy_sn, "mu": cfg.proxy_mu, "b": cfg.proxy_b}
        info: dict[str, float] = {}
        proxy = class_proxy_loss(h_img, labels, self.proxies, **kw) + class_proxy_loss(h_txt, labels, self.proxies, **kw)
        rot = self.rotation.matrix()
        total_trip = h_img.sum() * 0.0
        total_bv = h_img.sum() * 0.0
        for name, h in (("img", h_img), ("txt", h_txt)):
            trip, tinfo = adaptive_triplet_loss(
                h, sim, k_margin=cfg.margin_k, k_beta=cfg.beta_k, neg_pair_similarity=cfg.neg_pair_similarity
            )
            bv = bit_variance_loss(F.normalize(h @ rot.T, dim=1))
            total_trip = total_trip + trip
            total_bv = total_bv + bv
            info.update({f"{k}_{name}": v for k, v in tinfo.items()})
        loss = proxy + cfg.lambda_triplet * total_trip + cfg.lambda_bitvar * total_bv
        info.update({"proxy": float(proxy.detach()), "triplet": float(total_trip.detach()),
                     "bitvar": float(total_bv.detach()), "loss": float(loss.detach())})
        return loss, info


@dataclass
class DScPHConfig(SupervisedConfig):
    """Hyper-parameters of ``dscph`` (training ones: see :class:`~methods.supervised.SupervisedConfig`).

    Attributes
    ----------
    proxy_lr : float
        Learning rate of the class proxies (authors: 1e-5 with separate Adam; ours follows the same
        warm-up/cosine schedule, no weight decay). Tune.
    rotation_lr : float
        Learning rate of the Householder vectors (authors: 1e-5; no weight decay here).
    proxy_tau, proxy_psi, proxy_sp, proxy_sn, proxy_mu, proxy_b : float
        Class-proxy constants τ 0.3, ψ 0.3, s_p 1.3, s_n 1.3, μ 1, b 2.
    margin_k, beta_k : float
        Divisors K_Δ and K_an of the adaptive margin rules (2, 2).
    lambda_triplet, lambda_bitvar : float
        Weights of the triplet and bit-variance terms (1, 1 in the authors' sum).
    neg_pair_similarity : {"cosine", "dot"}
        Similarity in the negative-pair hinge of the triplet loss: cosine (default, a deviation: module
        docstring) or the raw inner product of the authors' code (variant ``dscph-raw-ip``).
    """

    proxy_lr: float = 1e-3
    rotation_lr: float = 1e-4
    proxy_tau: float = 0.3
    proxy_psi: float = 0.3
    proxy_sp: float = 1.3
    proxy_sn: float = 1.3
    proxy_mu: float = 1.0
    proxy_b: float = 2.0
    margin_k: float = 2.0
    beta_k: float = 2.0
    lambda_triplet: float = 1.0
    lambda_bitvar: float = 1.0
    neg_pair_similarity: str = "cosine"

    def validate(self) -> None:
        super().validate()
        check_range(self, "proxy_lr", 0.0, 10.0)
        check_range(self, "rotation_lr", 0.0, 10.0)
        check_range(self, "proxy_tau", -1.0, 1.0)
        check_range(self, "proxy_psi", -1.0, 1.0)
        check_range(self, "proxy_sp", 0.0, 20.0)
        check_range(self, "proxy_sn", 0.0, 20.0)
        check_range(self, "proxy_mu", -2.0, 2.0)
        check_range(self, "proxy_b", 0.0, 1000.0)
        check_range(self, "margin_k", 1e-3, 100.0)
        check_range(self, "beta_k", 1e-3, 100.0)
        check_range(self, "lambda_triplet", 0.0, 100.0)
        check_range(self, "lambda_bitvar", 0.0, 100.0)
        if self.neg_pair_similarity not in ("dot", "cosine"):
            raise ConfigError(f"DScPHConfig.neg_pair_similarity = {self.neg_pair_similarity!r}; valid: 'cosine', 'dot'")


#: Written into ``info()`` so every row states how the negative-pair hinge deviates from the authors' code.
NEG_PAIR_NOTES = {
    "cosine": "negative-pair hinge on cosine similarity (deviation: the authors' code uses the raw inner product "
              "h_a·h_n, which collapses to chance at 64 bits on frozen MedPix features with the default settings; variant "
              "dscph-raw-ip keeps it)",
    "dot": "negative-pair hinge on the raw inner product h_a·h_n, as the authors' code",
}


@register_method("dscph", tags=("supervised",), description="DScPH (Qin et al., TMM 2025): class-proxy + adaptive triplet hashing, frozen-feature re-implementation; cosine negative-pair term")
class DScPH(SupervisedHashingMethod):
    """DScPH heads on frozen features: class-proxy loss, adaptive triplet loss and bit-variance
    quantization on Householder-rotated codes; supervised (labels from the training split only).

    Deviation: the negative-pair hinge uses cosine similarity by default, the authors' raw inner product is
    ``neg_pair_similarity="dot"`` / variant ``dscph-raw-ip`` (module docstring).
    """

    config_class = DScPHConfig

    def make_loss(self, bits: int, n_classes: int) -> nn.Module:
        cfg = self.config
        assert isinstance(cfg, DScPHConfig)
        return DScPHLoss(bits, n_classes, cfg)

    def loss_param_groups(self, loss: nn.Module) -> list[dict[str, Any]]:
        cfg = self.config
        assert isinstance(cfg, DScPHConfig) and isinstance(loss, DScPHLoss)
        return [
            {"params": [loss.proxies], "lr": cfg.proxy_lr, "weight_decay": 0.0},
            {"params": list(loss.rotation.parameters()), "lr": cfg.rotation_lr, "weight_decay": 0.0},
        ]

    def rotation_matrix(self) -> Tensor:
        """The current rotation R (K, K), detached (raises ``RuntimeError`` before ``fit``)."""
        if not isinstance(self.loss_module, DScPHLoss):
            raise RuntimeError("DScPH.rotation_matrix called before fit")
        with torch.no_grad():
            return self.loss_module.rotation.matrix().detach().clone()

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Shared knobs (lr, weight decay, dropout, epochs cap), proxy and rotation lr, proxy margins τ/ψ and
        scales s_p/s_n, both adaptive-margin divisors, the triplet and bit-variance weights, and the similarity
        of the negative-pair hinge."""
        return {
            **suggest_common(trial),
            "proxy_lr": trial.suggest_float("proxy_lr", 1e-5, 1e-2, log=True),
            "rotation_lr": trial.suggest_float("rotation_lr", 1e-5, 1e-2, log=True),
            "proxy_tau": trial.suggest_float("proxy_tau", 0.0, 0.6),
            "proxy_psi": trial.suggest_float("proxy_psi", 0.0, 0.6),
            "proxy_sp": trial.suggest_float("proxy_sp", 0.5, 4.0),
            "proxy_sn": trial.suggest_float("proxy_sn", 0.5, 4.0),
            "margin_k": trial.suggest_float("margin_k", 1.0, 4.0),
            "beta_k": trial.suggest_float("beta_k", 1.0, 4.0),
            "lambda_triplet": trial.suggest_float("lambda_triplet", 0.1, 10.0, log=True),
            "lambda_bitvar": trial.suggest_float("lambda_bitvar", 0.1, 10.0, log=True),
            "neg_pair_similarity": trial.suggest_categorical("neg_pair_similarity", ["cosine", "dot"]),
        }

    def info(self) -> dict[str, Any]:
        """The shared record (:meth:`SupervisedHashingMethod.info`) plus the negative-pair similarity and its note."""
        cfg = self.config
        assert isinstance(cfg, DScPHConfig)
        return {**super().info(), "neg_pair_similarity": cfg.neg_pair_similarity,
                "deviation": NEG_PAIR_NOTES[cfg.neg_pair_similarity]}


register_variant(
    "dscph-raw-ip", "dscph", neg_pair_similarity="dot",
    description="DScPH with the authors' raw inner product h_a·h_n in the negative-pair hinge (collapses at 64 bits on frozen MedPix features with the default settings)",
)

__all__ = [
    "NEG_PAIR_NOTES",
    "DScPH",
    "DScPHConfig",
    "DScPHLoss",
    "HouseholderRotation",
    "adaptive_triplet_loss",
    "bit_variance_loss",
    "class_proxy_loss",
]
