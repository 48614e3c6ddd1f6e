"""Building blocks of the supervised CLIP-feature hashing baselines (DScPH, DDBH; :mod:`methods.supervised`).

Sources: Qin et al., TMM 2025 (DScPH) and TCSVT 2025 (DDBH); authors' code github.com/QinLab-WFU/DScPH and
github.com/QinLab-WFU/DDBH (``model/hash_model.py``, ``BertAdam``).

- :class:`ModalityHashHead` / :class:`PairedHashHeads` — ``Linear(d, K) → Dropout(0.2) → tanh`` per modality
  (authors' ``LinearHash``), with an optional input adapter and RMS input normalisation in front.
- :func:`label_similarity` — ``S = [Y_a Y_bᵀ > 0]``.
- :func:`warmup_cosine` and :func:`build_optimizer` — AdamW + linear warm-up + cosine decay to 0.
- :func:`run_head`, :func:`validation_map` — relaxed codes in chunks; tie-aware validation mAP (model selection).
- :func:`cpu_threads` — a block run with a fixed torch thread count on CPU.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from medhash_datasets.base import FeatureSplit
from methods.base import EncodedBatch
from methods.nn import InputAdapter, as_tensor
from methods.selection import ValidationScore, validation_score

#: AdamW moment and epsilon constants of the authors' ``BertAdam`` call (b1 0.9, b2 0.98, e 1e-6).
ADAM_BETAS = (0.9, 0.98)
ADAM_EPS = 1e-6


def label_similarity(labels_a: Tensor, labels_b: Tensor | None = None) -> Tensor:
    """Pairwise label similarity ``S_ij = [y_i · y_j > 0]`` (items sharing at least one label).

    Parameters
    ----------
    labels_a : Tensor, shape (n, C)
        Multi-hot labels (any numeric dtype; nonzero = present).
    labels_b : Tensor, shape (m, C), optional
        Defaults to ``labels_a``.

    Returns
    -------
    Tensor, shape (n, m), bool

    Raises
    ------
    ValueError
        If the inputs are not 2-D or their label counts C differ.
    """
    b = labels_a if labels_b is None else labels_b
    if labels_a.ndim != 2 or b.ndim != 2 or labels_a.shape[1] != b.shape[1]:
        raise ValueError(f"label_similarity: need (n, C) and (m, C) labels, got {tuple(labels_a.shape)} and {tuple(b.shape)}")
    return (labels_a.float() @ b.float().T) > 0


def rms_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Scale each row to unit root-mean-square: ``x_i / sqrt(mean_j x_ij²)`` (stateless, shape kept).

    Frozen encoders give features of very different scales (CLIP projections vs. EfficientNet pooled
    activations); unit-RMS rows let the same initialisation and learning rates work for all of them.
    """
    return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True).clamp_min(eps))


class ModalityHashHead(nn.Module):
    """One modality's hash function: ``[RMS-norm] → [adapter] → Linear(d, K) → Dropout(p) → tanh``.

    The head is the authors' ``LinearHash`` (DScPH/DDBH ``model/hash_model.py``: fc → dropout(0.2) → tanh).
    Its weights are Kaiming-uniform (He et al., ICCV 2015) with the linear gain, i.e. ``U(±sqrt(3/d))`` so
    a unit-RMS input gives unit-variance pre-activations, and its bias is zero (the issue's choice; the
    authors keep PyTorch's default ``nn.Linear`` init).

    Parameters
    ----------
    in_dim : int
        Feature width d of the modality.
    bits : int
        Code length K.
    dropout : float
        Dropout probability between the linear layer and tanh (0.2 in both papers' code).
    input_norm : {"rms", "none"}
        Row normalisation of the input features (see :func:`rms_normalize`).
    adapter : {"auto", "none", "linear"}
        ``auto``: the common ``Linear(d → 512)`` adapter of the methods spec when d != 512, identity for
        512-d input; ``none``: never; ``linear``: always.

    Notes
    -----
    Input (B, d) float32 → output (B, K) float32 in (-1, 1); the bit is ``h >= 0``.
    """

    def __init__(self, in_dim: int, bits: int, *, dropout: float = 0.2, input_norm: str = "rms", adapter: str = "auto") -> None:
        super().__init__()
        self.in_dim, self.bits, self.input_norm = int(in_dim), int(bits), input_norm
        if adapter == "none":
            self.adapter: nn.Module = nn.Identity()
            width = self.in_dim
        else:
            self.adapter = InputAdapter(self.in_dim, 512, force_linear=adapter == "linear")
            width = 512
        self.fc = nn.Linear(width, self.bits)
        nn.init.kaiming_uniform_(self.fc.weight, nonlinearity="linear")
        nn.init.zeros_(self.fc.bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"ModalityHashHead: expected features of shape (n, {self.in_dim}), got {tuple(x.shape)}")
        if self.input_norm == "rms":
            x = rms_normalize(x)
        return torch.tanh(self.dropout(self.fc(self.adapter(x))))


class PairedHashHeads(nn.Module):
    """The image head and the text head (separate weights, no fusion)."""

    def __init__(self, d_img: int, d_txt: int, bits: int, **head_kwargs: Any) -> None:
        super().__init__()
        self.image = ModalityHashHead(d_img, bits, **head_kwargs)
        self.text = ModalityHashHead(d_txt, bits, **head_kwargs)


def warmup_cosine(step: int, total_steps: int, warmup_fraction: float) -> float:
    """Learning-rate multiplier: linear warm-up over the first ``warmup_fraction`` of steps, then cosine to 0.

    ``m(t) = (t + 1) / W`` for ``t < W = ceil(warmup_fraction · T)``, else
    ``m(t) = ½ (1 + cos(π (t − W) / (T − W)))``, for step index ``t`` in ``[0, T)``. Source: the
    "warmup_cosine" schedule of the authors' ``BertAdam`` (warm-up proportion 0.1), with the cosine
    restarted at the end of warm-up so the rate is continuous (1 at ``t = W``).

    Returns
    -------
    float in [0, 1]
    """
    total = max(1, int(total_steps))
    warm = int(math.ceil(warmup_fraction * total))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def build_optimizer(
    groups: list[dict[str, Any]], total_steps: int, warmup_fraction: float
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (decoupled weight decay, Loshchilov & Hutter, ICLR 2019) with the :func:`warmup_cosine` schedule.

    Parameters
    ----------
    groups : list of dict
        Torch parameter groups, each with its own ``lr`` and ``weight_decay``.
    total_steps : int
        Optimiser steps planned for the whole run (epochs × batches per epoch).
    warmup_fraction : float
        Fraction of ``total_steps`` spent warming up (0.1 in both papers).

    Returns
    -------
    (optimizer, scheduler)
        Call ``scheduler.step()`` after every ``optimizer.step()``.
    """
    opt = torch.optim.AdamW(groups, betas=ADAM_BETAS, eps=ADAM_EPS)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: warmup_cosine(t, total_steps, warmup_fraction))
    return opt, sched


@torch.no_grad()
def run_head(head: ModalityHashHead, x: np.ndarray, device: str | torch.device, name: str, chunk: int = 8192) -> np.ndarray:
    """Relaxed codes of ``head`` for features ``x`` (n, d) in chunks of ``chunk`` rows → float32 (n, K)."""
    if len(x) == 0:
        return np.zeros((0, head.bits), np.float32)
    return np.concatenate([head(as_tensor(x[s : s + chunk], device, name)).float().cpu().numpy() for s in range(0, len(x), chunk)])


@torch.no_grad()
def validation_map(heads: PairedHashHeads, train: FeatureSplit, validation: FeatureSplit, device: str | torch.device) -> ValidationScore:
    """Tie-aware validation mAP: validation queries against the training database, i2t and t2i.

    The protocol every method selects on (methods spec, "Common ground"; :mod:`methods.selection`):
    relaxed codes of each modality's head, bits ``h >= 0``, Hamming ranking with tie-aware AP, relevance
    ``y_i · y_j > 0`` (instance relevance when the validation split has no labels).

    Parameters
    ----------
    heads : PairedHashHeads
        Put in eval mode by the caller.
    train : FeatureSplit
        The database: training features (n, d_img) / (n, d_txt), labels (n, C).
    validation : FeatureSplit
        The queries.
    device : str or torch.device

    Returns
    -------
    ValidationScore
        ``.i2t``, ``.t2i`` and ``.mean`` in [0, 1].
    """

    def encode(image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        return EncodedBatch(
            None if image is None else run_head(heads.image, image, device, "image"),
            None if text is None else run_head(heads.text, text, device, "text"),
        )

    return validation_score(encode, train, validation, binary=True)


@contextlib.contextmanager
def cpu_threads(n: int, device: str | torch.device) -> Iterator[None]:
    """Run a block with ``torch.set_num_threads(n)`` on CPU, restoring the caller's setting afterwards.

    The heads and batch losses are small (B×d matrices), so extra intra-op threads mostly add
    synchronisation cost (several times slower on a loaded 2-core machine) and make results depend on the
    caller's thread setting. ``n <= 0`` or a CUDA device leaves torch's setting alone.
    """
    if n <= 0 or torch.device(device).type != "cpu":
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


__all__ = [
    "ADAM_BETAS",
    "ADAM_EPS",
    "ModalityHashHead",
    "PairedHashHeads",
    "build_optimizer",
    "cpu_threads",
    "label_similarity",
    "rms_normalize",
    "run_head",
    "validation_map",
    "warmup_cosine",
]
