"""UCMFH: unsupervised CLIP-feature fusion hashing.

Source: Xia, Dong, Li, Zhu, Ying, "When CLIP meets cross-modal hashing retrieval: A new strong baseline",
*Information Fusion* 100, 101968 (2023); authors' code github.com/XinyuXia97/UCMFH (``model.py``,
``ICMR.py``, ``metric.py``), read for facts. Specification: ``../shared/spec/methods.md`` (UCMFH).

Pipeline of one pair (image features ``(d_img,)``, text features ``(d_txt,)``)::

    adapters (Linear(d → 512), identity for 512-d) → token [f_img ; f_txt] (1024)
    → fusion transformer (2 layers, d 1024, 4 heads, ff 2048, post-norm) → L2-normalise over 1024
    → F_img = first 512, F_txt = last 512 → hash heads → H_img, H_txt (K each, relaxed codes in [-1, 1])

Loss ``NTXent(F_img, F_txt) + 0.5 · NTXent(H_img, H_txt)`` (τ 0.5), Adam (0.5, 0.999), lr 1e-4 for the
fusion part, 1e-3 for the heads, batch 128.

Our additions (methods spec, "Common ground"): a learned missing-modality vector and modality dropout so an
image alone or a text alone can be encoded (unimodal protocol), the epoch selected by validation mAP with the
best weights restored, and the authors'-code behaviours as flags, each off by default:
``eval_cross_batch`` (an evaluation batch is one attention sequence), ``lr_growth`` (per-iteration
MultiStepLR on the heads, milestones 30/80, gamma 1.2), ``train_first_4992`` (training cut to 4,992 items).

The config, networks and training loop shared with MCMFH live in :mod:`methods.fusion_net` and
:mod:`methods.fusion` (re-exported here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from methods import register_method
from methods.base import MethodConfig
from methods.fusion import AUTHORS_TRAIN_CUT, FusionHashingMethod
from methods.fusion_net import SLOT, FusionConfig, FusionNet, TransformerFusion

__all__ = [
    "AUTHORS_TRAIN_CUT",
    "SLOT",
    "UCMFH",
    "FusionConfig",
    "FusionHashingMethod",
    "FusionNet",
    "TransformerFusion",
    "UCMFHConfig",
]


# ---- UCMFH ---------------------------------------------------------------------------------------------------
@dataclass
class UCMFHConfig(FusionConfig):
    """UCMFH config: the shared fusion settings plus the authors'-code behaviours (all off by default).

    Attributes
    ----------
    eval_cross_batch : bool
        Encode each chunk of ``batch_size`` items as ONE attention sequence (the authors' evaluation passes a
        2-D (B, 1024) tensor, which PyTorch reads as a length-B sequence): a code then depends on its batch
        neighbours. Default ``False``: every item is its own length-1 sequence.
    lr_growth : bool
        The authors' head scheduler: MultiStepLR(milestones [30, 80], gamma 1.2) stepped every iteration,
        so the head lr grows to 1.2× after 30 and 1.44× after 80 optimiser steps. Default: constant lr.
    train_first_4992 : bool
        Train on the first 4,992 training items only (the authors' loader). Default: all items.
    """

    eval_cross_batch: bool = False
    lr_growth: bool = False
    train_first_4992: bool = False


@register_method("ucmfh", tags=("fusion", "unsupervised"))
class UCMFH(FusionHashingMethod):
    """UCMFH (Xia et al., Information Fusion 2023): transformer fusion of CLIP features + contrastive hashing."""

    config_class: ClassVar[type[MethodConfig]] = UCMFHConfig

    #: Authors' head scheduler (``lr_scheduler.MultiStepLR(milestones=[30, 80], gamma=1.2)``, per iteration).
    LR_MILESTONES: ClassVar[tuple[int, ...]] = (30, 80)
    LR_GAMMA: ClassVar[float] = 1.2

    def _head_lr(self, iteration: int) -> float:
        cfg = self.config
        if not cfg.lr_growth:
            return cfg.lr_head
        return cfg.lr_head * self.LR_GAMMA ** sum(iteration >= m for m in self.LR_MILESTONES)

    def _encode_chunk(self, image: Tensor | None, text: Tensor | None, which: str) -> tuple[Tensor | None, Tensor | None]:
        assert self.net is not None
        fusion = self.net.fusion
        assert isinstance(fusion, TransformerFusion)
        fusion.cross_batch = bool(self.config.eval_cross_batch)
        try:
            return super()._encode_chunk(image, text, which)
        finally:
            fusion.cross_batch = False

    def _encode_is_token_path(self) -> bool:
        return not self.config.eval_cross_batch

    def _encode_batch_size(self) -> int:
        # The quirk's batch neighbours are those of the authors' evaluation loader (batch 128).
        return self.config.batch_size if self.config.eval_cross_batch else self.config.encode_batch_size
