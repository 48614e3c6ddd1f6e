"""DDBH: Deep Discriminative Boundary Hashing, as a frozen-feature re-implementation.

Qin, Huo, Zhang, Huang, Nie, "Deep Discriminative Boundary Hashing for Cross-modal Retrieval", IEEE TCSVT
2025, doi 10.1109/TCSVT.2025.3570128. Authors' code: github.com/QinLab-WFU/DDBH (``train/hash_train.py``,
``utils/BPloss.py``), read for facts only. The original fine-tunes CLIP ViT-B/32; here the encoder is
frozen and the two hash heads are trained on its features (``info()["reimplementation"]`` says so).

Loss (methods spec, DDBH section), for relaxed codes ``U = H_img``, ``V = H_txt`` of a batch:
``BP(U, U) + BP(V, V) + BP(U, V) + 0.1 · [mean(S (U − sgn U)²) + mean(S (V − sgn V)²)]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods import register_method
from methods.base import check_range
from methods.supervised import SupervisedConfig, SupervisedHashingMethod, suggest_common
from methods.supervised_blocks import label_similarity


def _hard_tail_mean(values: Tensor, member: Tensor, percent: float, largest: bool) -> Tensor:
    """Row-wise mean of the hardest entries among ``values[i, member[i]]``.

    For a row with ``n`` members the authors sort the members (descending when ``largest`` is False,
    ascending when True) and average ``sorted[int(n · percent):]``, i.e. the ``n − ⌊n · percent⌋``
    smallest (resp. largest) members; at least one entry whenever ``n >= 1``.

    Parameters
    ----------
    values : Tensor, shape (B, M), float
    member : Tensor, shape (B, M), bool
    percent : float
        0.9 in the authors' code ("mean of the largest / smallest 10 %").
    largest : bool
        Average the largest members (True) or the smallest (False).

    Returns
    -------
    Tensor, shape (B,)
        0 for rows without members.
    """
    n = member.sum(dim=1)
    keep = n - torch.floor(n.double() * percent).long()
    fill = float("-inf") if largest else float("inf")
    k_max = max(1, int(keep.max())) if keep.numel() else 1
    ranked = values.masked_fill(~member, fill).topk(k_max, dim=1, largest=largest, sorted=True).values
    pos = torch.arange(k_max, device=values.device).unsqueeze(0)
    taken = torch.where(pos < keep.unsqueeze(1), ranked, torch.zeros_like(ranked)).sum(dim=1)
    return taken / keep.clamp_min(1).to(values.dtype)


def boundary_preserving_loss(
    u: Tensor,
    v: Tensor,
    sim: Tensor,
    *,
    r_fraction: float = 1 / 6,
    ub_fraction: float = 1 / 4,
    percent: float = 0.9,
) -> Tensor:
    """DDBH boundary-preserving loss BP(U, V), vectorised over rows (the authors loop in Python).

    With ``Θ = U Vᵀ`` (raw inner products in [−K, K]), ``r = K · r_fraction`` (K/6), ``l = r/2``,
    ``Ub = K · ub_fraction`` (K/4) and ``c = −ln(99)/r``, for each row i that has at least one similar
    entry (``s = Θ_i[S_i]``) and one dissimilar entry (``d = Θ_i[¬S_i]``)::

        μ_s = clamp(mean s, 0, Ub),  d_max = mean of the largest 10 % of d,
        BP_s = μ_s − ((Ub − μ_s)/Ub) · |μ_s − d_max|
        μ_d = clamp(mean d, 0, Ub),  s_min = mean of the smallest 10 % of s,
        BP_d = μ_d − (μ_d/Ub) · |μ_d − s_min|                     (both base points detached)
        similar θ:     f = c(θ − BP_s) if θ > BP_s else (r/l)·c(θ − BP_s),  loss softplus(f)
        dissimilar θ:  f = c(θ − BP_d) if θ < BP_d else (r/l)·c(θ − BP_d),  loss softplus(−f)

    Entries exactly at their base point are dropped; row loss = mean over its similar entries + mean over
    its dissimilar entries (a part with no entry left contributes 0); BP = mean over valid rows (0 when no
    row is valid). The two-piece logistic is the authors' ``calcParameter`` with ``y_p = 0.5``
    (``c = (1/r) ln(y_p / (99 (1 − y_p)))``, hard-side slope ``a = r/l = 2``), and ``softplus(f)`` equals
    their ``f + log(1 + exp(−f))``. Sources: methods spec (DDBH), authors' ``utils/BPloss.py``.

    Parameters
    ----------
    u : Tensor, shape (B, K), float
        Relaxed codes of the anchors (rows of Θ).
    v : Tensor, shape (M, K), float
        Relaxed codes of the compared items (columns of Θ).
    sim : Tensor, shape (B, M), bool
        ``S_ij = [y_i · y_j > 0]``.
    r_fraction, ub_fraction : float
        ``r = K · r_fraction`` and ``Ub = K · ub_fraction`` (1/6 and 1/4 in the paper's code).
    percent : float
        The hardest ``1 − percent`` share of entries define ``d_max`` and ``s_min`` (0.9).

    Returns
    -------
    Tensor, shape (), same dtype as ``u``; differentiable in ``u`` and ``v``.

    Raises
    ------
    ValueError
        If the shapes disagree.
    """
    if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[1]:
        raise ValueError(f"boundary_preserving_loss: u and v must be (B, K) and (M, K), got {tuple(u.shape)}, {tuple(v.shape)}")
    if sim.shape != (u.shape[0], v.shape[0]):
        raise ValueError(f"boundary_preserving_loss: sim has shape {tuple(sim.shape)}, expected {(u.shape[0], v.shape[0])}")
    sim = sim.bool()
    bits = u.shape[1]
    r = bits * r_fraction
    ub = bits * ub_fraction
    c = -math.log(99.0) / r
    slope_hard = 2.0  # r / l with l = r / 2
    theta = u @ v.T
    dis = ~sim
    n_s = sim.sum(dim=1)
    n_d = dis.sum(dim=1)
    valid = (n_s > 0) & (n_d > 0)
    with torch.no_grad():
        t = theta.detach()
        mean_s = torch.where(sim, t, torch.zeros_like(t)).sum(dim=1) / n_s.clamp_min(1).to(t.dtype)
        mean_d = torch.where(dis, t, torch.zeros_like(t)).sum(dim=1) / n_d.clamp_min(1).to(t.dtype)
        mu_s = mean_s.clamp(0.0, ub)
        mu_d = mean_d.clamp(0.0, ub)
        d_max = _hard_tail_mean(t, dis, percent, largest=True)
        s_min = _hard_tail_mean(t, sim, percent, largest=False)
        bp_s = mu_s - (ub - mu_s) / ub * (mu_s - d_max).abs()
        bp_d = mu_d - mu_d / ub * (mu_d - s_min).abs()
    diff_s = theta - bp_s.unsqueeze(1)
    f_s = torch.where(diff_s > 0, c * diff_s, slope_hard * c * diff_s)
    diff_d = theta - bp_d.unsqueeze(1)
    f_d = torch.where(diff_d < 0, c * diff_d, slope_hard * c * diff_d)
    keep_s = sim & (diff_s != 0)
    keep_d = dis & (diff_d != 0)
    per_entry = F.softplus(torch.where(sim, f_s, -f_d))  # one softplus for both kinds of entry
    zero = torch.zeros_like(theta)
    row_s = torch.where(keep_s, per_entry, zero).sum(dim=1) / keep_s.sum(dim=1).clamp_min(1).to(theta.dtype)
    row_d = torch.where(keep_d, per_entry, zero).sum(dim=1) / keep_d.sum(dim=1).clamp_min(1).to(theta.dtype)
    rows = torch.where(valid, row_s + row_d, torch.zeros_like(row_s))
    return rows.sum() / valid.sum().clamp_min(1).to(theta.dtype)


def neighbour_quantization_loss(h: Tensor, sim: Tensor) -> Tensor:
    """DDBH class-wise quantization loss ``mean(S Q)`` with ``Q = (H − sgn H)²``.

    ``S Q`` is a matrix product (B×B)·(B×K), so each item's quantization error is weighted by its number
    of in-batch neighbours (items sharing a label, itself included); the mean is over the B·K entries.
    Source: authors' ``train/hash_train.py`` (``torch.matmul(s, (hash_img − hash_img.sign()).pow(2)).mean()``).

    Parameters
    ----------
    h : Tensor, shape (B, K), float
    sim : Tensor, shape (B, B), bool

    Returns
    -------
    Tensor, shape ()
    """
    return (sim.to(h.dtype) @ (h - h.sign()).pow(2)).mean()


class DDBHLoss(nn.Module):
    """Total DDBH loss on a batch; no learnable parameters.

    ``forward(h_img, h_txt, labels) -> (loss, info)`` with ``h_*`` (B, K) float, ``labels`` (B, C)
    multi-hot; ``info`` holds the float value of each term.
    """

    def __init__(self, r_fraction: float, ub_fraction: float, percent: float, lambda_quant: float) -> None:
        super().__init__()
        self.r_fraction, self.ub_fraction, self.percent = r_fraction, ub_fraction, percent
        self.lambda_quant = lambda_quant

    def forward(self, h_img: Tensor, h_txt: Tensor, labels: Tensor) -> tuple[Tensor, dict[str, float]]:
        sim = label_similarity(labels)
        kw = {"r_fraction": self.r_fraction, "ub_fraction": self.ub_fraction, "percent": self.percent}
        bp_ii = boundary_preserving_loss(h_img, h_img, sim, **kw)
        bp_tt = boundary_preserving_loss(h_txt, h_txt, sim, **kw)
        bp_it = boundary_preserving_loss(h_img, h_txt, sim, **kw)
        quant = neighbour_quantization_loss(h_img, sim) + neighbour_quantization_loss(h_txt, sim)
        loss = bp_ii + bp_tt + bp_it + self.lambda_quant * quant
        info = {k: float(t.detach()) for k, t in (("bp_ii", bp_ii), ("bp_tt", bp_tt), ("bp_it", bp_it), ("quant", quant), ("loss", loss))}
        return loss, info


@dataclass
class DDBHConfig(SupervisedConfig):
    """Hyper-parameters of ``ddbh`` (training ones: see :class:`~methods.supervised.SupervisedConfig`).

    Attributes
    ----------
    r_fraction : float
        ``r = K · r_fraction`` sets the logistic's width (authors: K/6); ``l = r/2``.
    ub_fraction : float
        Upper bound of the adaptive base points, ``Ub = K · ub_fraction`` (authors: K/4).
    percent : float
        ``d_max``/``s_min`` average the hardest ``1 − percent`` of a row's entries (authors: 0.9).
    lambda_quant : float
        Weight of the neighbour-weighted quantization loss (authors: 0.1).
    """

    r_fraction: float = 1 / 6
    ub_fraction: float = 1 / 4
    percent: float = 0.9
    lambda_quant: float = 0.1

    def validate(self) -> None:
        super().validate()
        check_range(self, "r_fraction", 1e-3, 1.0)
        check_range(self, "ub_fraction", 1e-3, 1.0)
        check_range(self, "percent", 0.0, 0.999)
        check_range(self, "lambda_quant", 0.0, 100.0)


@register_method("ddbh", tags=("supervised",), description="DDBH (Qin et al., TCSVT 2025): boundary-preserving hashing, frozen-feature re-implementation")
class DDBH(SupervisedHashingMethod):
    """DDBH heads on frozen features: boundary-preserving loss (image–image, text–text, image–text) plus
    neighbour-weighted quantization; supervised (labels from the training split only)."""

    config_class = DDBHConfig

    def make_loss(self, bits: int, n_classes: int) -> nn.Module:
        cfg = self.config
        assert isinstance(cfg, DDBHConfig)
        return DDBHLoss(cfg.r_fraction, cfg.ub_fraction, cfg.percent, cfg.lambda_quant)

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Shared knobs (lr, weight decay, dropout, epochs cap), quantization weight, the logistic width
        ``r`` and base-point bound ``Ub`` (margins, as fractions of K), and the hard-tail share."""
        return {
            **suggest_common(trial),
            "lambda_quant": trial.suggest_float("lambda_quant", 0.01, 1.0, log=True),
            "r_fraction": trial.suggest_float("r_fraction", 0.08, 0.35),
            "ub_fraction": trial.suggest_float("ub_fraction", 0.1, 0.5),
            "percent": trial.suggest_float("percent", 0.7, 0.97),
        }


__all__ = ["DDBH", "DDBHConfig", "DDBHLoss", "boundary_preserving_loss", "neighbour_quantization_loss"]
