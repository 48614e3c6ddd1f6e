"""UCMFH: unsupervised CLIP-feature fusion hashing (and the shared machinery of the fusion methods).

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
image alone or a text alone can be encoded (unimodal protocol), early stopping on the validation loss with
the best weights restored, and the authors'-code behaviours as flags, each off by default:
``eval_cross_batch`` (an evaluation batch is one attention sequence), ``lr_growth`` (per-iteration
MultiStepLR on the heads, milestones 30/80, gamma 1.2), ``train_first_4992`` (training cut to 4,992 items).

:class:`FusionHashingMethod` holds everything the two fusion methods share; MCMFH (``methods/mcmfh.py``)
subclasses it.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medhash_datasets.base import FeatureSplit
from methods import register_method
from methods.base import ConfigError, EncodedBatch, HashingMethod, MethodConfig, check_bits, check_range
from methods.nn import (
    EarlyStopping,
    HashHead,
    InputAdapter,
    MissingModality,
    as_tensor,
    make_generator,
    minibatches,
    nt_xent,
    seeded,
    state_to_cpu,
)

_log = logging.getLogger(__name__)

#: Default width of one modality slot of the fused token (BiomedCLIP's embedding width).
SLOT = 512
#: Training items kept by the authors' loader (``train_images[:4992]``).
AUTHORS_TRAIN_CUT = 4992


@dataclass
class FusionConfig(MethodConfig):
    """Hyper-parameters shared by UCMFH and MCMFH (defaults: the UCMFH paper/code unless noted).

    Attributes
    ----------
    epochs : int
        Epoch cap; early stopping on the validation loss usually ends training sooner (ours: the authors
        run 100–500 fixed epochs on much larger sets).
    patience : int
        Epochs without a validation-loss improvement > ``min_delta`` before stopping (ours).
    min_delta : float
        Smallest validation-loss decrease that counts as an improvement (ours).
    batch_size : int
        Training batch (128).
    lr_fusion, lr_head : float
        Adam learning rates of the fusion part (adapters, missing vectors, transformer) and the hash heads.
    beta1, beta2 : float
        Adam betas (0.5, 0.999).
    temperature : float
        NT-Xent τ (0.5).
    hash_weight : float
        Weight of the hash-code NT-Xent term (0.5).
    p_missing : float
        Modality-dropout probability (0.3; 0 reproduces the papers' paired-only training).
    modality_dropout : str
        ``"split"`` (a dropped pair becomes an image-alone and a text-alone input, aligned by the loss) or
        ``"one"`` (one random modality of the pair is replaced by its missing vector).
    n_layers, n_heads, dim_feedforward, dropout : int, int, int, float
        Fusion transformer (2, 4, 2048, 0.1).
    head_hidden, head_dropout : int, float
        Hash head hidden width and dropout (4096, 0.3).
    slot_dim : int
        Width of each modality slot of the fused token (512; the token is ``2 · slot_dim`` wide). Smaller
        values exist for fast tests only.
    adapter : str
        ``"auto"`` (Linear(d → slot_dim) only when d ≠ slot_dim) or ``"linear"`` (always a Linear).
    encode_batch_size : int
        Items per forward pass in ``encode`` (does not change the codes unless ``eval_cross_batch``).
    """

    epochs: int = 50
    patience: int = 4
    min_delta: float = 0.01
    batch_size: int = 128
    lr_fusion: float = 1e-4
    lr_head: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    temperature: float = 0.5
    hash_weight: float = 0.5
    p_missing: float = 0.3
    modality_dropout: str = "split"
    n_layers: int = 2
    n_heads: int = 4
    dim_feedforward: int = 2048
    dropout: float = 0.1
    head_hidden: int = 4096
    head_dropout: float = 0.3
    slot_dim: int = SLOT
    adapter: str = "auto"
    encode_batch_size: int = 1024

    def validate(self) -> None:
        super().validate()
        check_range(self, "epochs", 1)
        check_range(self, "patience", 1)
        check_range(self, "min_delta", 0.0)
        check_range(self, "batch_size", 2)
        for name in ("lr_fusion", "lr_head", "temperature"):
            check_range(self, name, 1e-12)
        check_range(self, "beta1", 0.0, 0.999999)
        check_range(self, "beta2", 0.0, 0.999999)
        check_range(self, "hash_weight", 0.0)
        check_range(self, "p_missing", 0.0, 0.99)
        for name in ("n_layers", "n_heads", "dim_feedforward", "head_hidden", "encode_batch_size", "slot_dim"):
            check_range(self, name, 1)
        check_range(self, "dropout", 0.0, 0.99)
        check_range(self, "head_dropout", 0.0, 0.99)
        _check_choice(self, "modality_dropout", ("split", "one"))
        _check_choice(self, "adapter", ("auto", "linear"))
        if (2 * self.slot_dim) % self.n_heads:
            raise ConfigError(
                f"{type(self).__name__}.n_heads = {self.n_heads} must divide the token width {2 * self.slot_dim}"
            )


def _check_choice(cfg: object, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise ConfigError(f"{type(cfg).__name__}.{name} = {value!r}; choose one of {list(choices)}")


# ---- networks ----------------------------------------------------------------------------------------------
class TransformerFusion(nn.Module):
    """UCMFH's fusion encoder: ``nn.TransformerEncoder`` over 1024-d fused tokens (post-norm, ReLU).

    Parameters
    ----------
    cfg : FusionConfig
        ``n_layers``, ``n_heads``, ``dim_feedforward``, ``dropout``.

    Notes
    -----
    ``forward(tokens)`` takes (B, 1024) and returns ``(out (B, 1024), aux_loss 0)``. By default each token
    is its own sequence of length 1, so attention is trivial and an output depends on its own token only
    (the authors' training-time behaviour). With ``cross_batch = True`` the whole batch is one sequence of
    length B, as when the authors' evaluation passes a 2-D tensor: items attend to each other.
    """

    def __init__(self, cfg: FusionConfig) -> None:
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model=2 * cfg.slot_dim,
            nhead=cfg.n_heads,
            dim_feedforward=cfg.dim_feedforward,
            dropout=cfg.dropout,
            activation="relu",
            batch_first=True,
            norm_first=False,
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers=cfg.n_layers, enable_nested_tensor=False)
        self.cross_batch = False

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        if self.cross_batch:
            out = self.encoder(tokens.unsqueeze(0)).squeeze(0)
        else:
            out = self.encoder(tokens.unsqueeze(1)).squeeze(1)
        return out, tokens.new_zeros(())


class FusionNet(nn.Module):
    """Adapters + missing vectors + optional front module + fusion module + two hash heads.

    Parameters
    ----------
    d_img, d_txt : int
        Input feature widths.
    bits : int
        Code length K.
    cfg : FusionConfig
    front : nn.Module
        Module on the (B, 1024) token before fusion (identity for UCMFH, the DV-MLP for MCMFH).
    fusion : nn.Module
        ``fusion(tokens (B, 1024)) -> (out (B, 1024), aux_loss scalar)``.
    """

    def __init__(self, d_img: int, d_txt: int, bits: int, cfg: FusionConfig, front: nn.Module, fusion: nn.Module) -> None:
        super().__init__()
        force = cfg.adapter == "linear"
        self.slot = slot = cfg.slot_dim
        self.img_adapter = InputAdapter(d_img, slot, force_linear=force)
        self.txt_adapter = InputAdapter(d_txt, slot, force_linear=force)
        self.missing = MissingModality(slot)
        self.front = front
        self.fusion = fusion
        self.img_head = HashHead(slot, bits, cfg.head_hidden, cfg.head_dropout)
        self.txt_head = HashHead(slot, bits, cfg.head_hidden, cfg.head_dropout)

    def front_modules(self) -> list[nn.Module]:
        """Modules before the fusion transformer (frozen in MCMFH's stage 2)."""
        return [self.img_adapter, self.txt_adapter, self.missing, self.front]

    def head_parameters(self) -> list[nn.Parameter]:
        return [*self.img_head.parameters(), *self.txt_head.parameters()]

    def fuse(self, tokens: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Fusion of (B, 1024) tokens → ``(F_img (B, 512), F_txt (B, 512), aux_loss)``.

        The fused output is L2-normalised over all 1024 dims, then split (authors' ``FuseTransEncoder``).
        """
        out, aux = self.fusion(tokens)
        out = F.normalize(out, dim=1)
        return out[:, : self.slot], out[:, self.slot :], aux

    def tokens(self, image: Tensor | None, text: Tensor | None) -> Tensor:
        """Adapted, missing-filled, front-processed tokens (B, 1024) for encoding."""
        img = self.img_adapter(image) if image is not None else None
        txt = self.txt_adapter(text) if text is not None else None
        img, txt = self.missing.fill(img, txt)
        return self.front(torch.cat([img, txt], dim=1))


class FusionHashingMethod(HashingMethod):
    """Shared fit/encode/persistence of the fusion hashing methods (UCMFH, MCMFH).

    Subclasses provide :meth:`_build_front`, :meth:`_build_fusion` and may override :meth:`_stages`
    (the training schedule) and :meth:`_encode_tokens`.

    Attributes (after ``fit``)
    --------------------------
    net : FusionNet
    history : dict
        Per stage: epochs run, best epoch, validation losses, seconds.
    """

    config_class: ClassVar[type[MethodConfig]] = FusionConfig
    supervised: ClassVar[bool] = False
    uses_both_modalities_at_encode: ClassVar[bool] = True

    def __init__(self, config: MethodConfig | None = None, *, device: str = "cpu") -> None:
        super().__init__(config, device=device)
        self.net: FusionNet | None = None
        self.dims: tuple[int, int] | None = None
        self.history: dict[str, Any] = {}

    # ---- hooks ---------------------------------------------------------------------------------------------
    def _build_front(self) -> nn.Module:
        return nn.Identity()

    def _build_fusion(self) -> nn.Module:
        return TransformerFusion(self.config)  # type: ignore[arg-type]

    def _build_net(self, d_img: int, d_txt: int, bits: int) -> FusionNet:
        return FusionNet(d_img, d_txt, bits, self.config, self._build_front(), self._build_fusion())  # type: ignore[arg-type]

    def _stages(self) -> list[dict[str, Any]]:
        """Training schedule: a list of stages, each a dict with keys
        ``name`` (str), ``epochs`` (int), ``hash`` (bool: train the heads and include the hash term),
        ``freeze_front`` (bool: adapters, missing vectors and front module frozen, in eval mode)."""
        return [{"name": "joint", "epochs": self.config.epochs, "hash": True, "freeze_front": False}]

    def _aux_weight(self) -> float:
        return 0.0

    def _after_build(self, net: FusionNet, seed: int) -> None:
        """Called once after the network is built (MCMFH draws its fixed voting masks here)."""

    # ---- input checks --------------------------------------------------------------------------------------
    @staticmethod
    def _check_split(split: FeatureSplit, name: str, dims: tuple[int, int] | None) -> None:
        for mod in ("image", "text"):
            arr = getattr(split, mod)
            if not isinstance(arr, np.ndarray) or arr.ndim != 2:
                raise ValueError(f"{name}.{mod} must be a 2-D array (n, d), got {getattr(arr, 'shape', type(arr))}")
        if split.image.shape[0] != split.text.shape[0]:
            raise ValueError(f"{name}: image has {split.image.shape[0]} rows, text has {split.text.shape[0]}")
        if dims is not None and (split.image.shape[1], split.text.shape[1]) != dims:
            raise ValueError(
                f"{name}: feature widths (image {split.image.shape[1]}, text {split.text.shape[1]}) differ from "
                f"the training split's {dims}"
            )

    # ---- training -------------------------------------------------------------------------------------------
    def fit(self, train: FeatureSplit, validation: FeatureSplit, bits: int, seed: int) -> FusionHashingMethod:
        """Train on ``train`` pairs (labels unused); early-stop on the validation loss; keep the best weights.

        Parameters
        ----------
        train : FeatureSplit
            image (n, d_img), text (n, d_txt) float32; n >= 2.
        validation : FeatureSplit
            Same widths; used only for the early-stopping loss (fewer than 2 items: no early stopping, the
            full epoch cap runs).
        bits : int
            K >= 8.
        seed : int
            Seeds weights, shuffles, dropout and modality dropout (same seed ⇒ same codes on CPU).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            Bad shapes, fewer than 2 training items, non-finite features, or bits < 8.
        """
        check_bits(bits)
        cfg = self.config
        self._check_split(train, "train", None)
        dims = (int(train.image.shape[1]), int(train.text.shape[1]))
        self._check_split(validation, "validation", dims)
        n_train = len(train)
        if getattr(cfg, "train_first_4992", False):
            n_train = min(n_train, AUTHORS_TRAIN_CUT)
        if n_train < 2:
            raise ValueError(f"train: need at least 2 pairs, got {n_train}")
        self.bits, self.seed, self.dims = int(bits), int(seed), dims
        dev = self.device
        tr_img = as_tensor(train.image[:n_train], dev, "train.image")
        tr_txt = as_tensor(train.text[:n_train], dev, "train.text")
        va_img = as_tensor(validation.image, dev, "validation.image")
        va_txt = as_tensor(validation.text, dev, "validation.text")
        self.history = {"n_train": n_train, "stages": []}
        with seeded(seed, dev):
            net = self._build_net(dims[0], dims[1], int(bits)).to(dev)
            self._after_build(net, seed)
            self.net = net
            gen = make_generator(seed)
            for stage in self._stages():
                if stage["epochs"] > 0:
                    self.history["stages"].append(self._run_stage(net, stage, tr_img, tr_txt, va_img, va_txt, gen))
        net.eval()
        return self

    def _set_train_mode(self, net: FusionNet, stage: dict[str, Any]) -> None:
        net.train()
        for mod in net.front_modules():
            for p in mod.parameters():
                p.requires_grad_(not stage["freeze_front"])
            if stage["freeze_front"]:
                mod.eval()
        for p in net.head_parameters():
            p.requires_grad_(bool(stage["hash"]))

    def _loss(self, net: FusionNet, img: Tensor, txt: Tensor, stage: dict[str, Any], gen: torch.Generator | None) -> Tensor:
        """Training (``gen`` given: modality dropout drawn from it) or validation (``gen=None``) loss.

        Training: ``NTXent(F_img, F_txt) + hash_weight · NTXent(H_img, H_txt) + aux_weight · aux`` on the
        batch after modality dropout. Validation: the same terms in eval mode on the paired inputs, plus,
        when ``p_missing > 0``, on unimodal inputs (image alone vs text alone), so the selected weights
        serve both protocols.
        """
        cfg = self.config
        tau = cfg.temperature
        with torch.set_grad_enabled(torch.is_grad_enabled() and not stage["freeze_front"]):
            a_img, a_txt = net.img_adapter(img), net.txt_adapter(txt)
            if gen is not None:
                if cfg.modality_dropout == "split":
                    a_img, a_txt, rows_i, rows_t = net.missing.split_pairs(a_img, a_txt, cfg.p_missing, gen)
                else:
                    a_img, a_txt = net.missing.dropout(a_img, a_txt, cfg.p_missing, gen)
                    rows_i = rows_t = torch.arange(img.shape[0], device=img.device)
            else:
                n = img.shape[0]
                rows_i = rows_t = torch.arange(n, device=img.device)
                if cfg.p_missing > 0:  # append image-alone and text-alone rows
                    a_img, a_txt = (
                        torch.cat([a_img, a_img, net.missing.missing_image.expand(n, -1)]),
                        torch.cat([a_txt, net.missing.missing_text.expand(n, -1), a_txt]),
                    )
            tokens = net.front(torch.cat([a_img, a_txt], dim=1))
        f_img, f_txt, aux = net.fuse(tokens)

        def terms(ri: Tensor, rt: Tensor) -> Tensor:
            loss = nt_xent(f_img[ri], f_txt[rt], tau)
            if stage["hash"] and cfg.hash_weight > 0:
                loss = loss + cfg.hash_weight * nt_xent(net.img_head(f_img[ri]), net.txt_head(f_txt[rt]), tau)
            return loss

        loss = terms(rows_i, rows_t)
        if gen is None and cfg.p_missing > 0:
            n = img.shape[0]
            loss = loss + terms(torch.arange(n, 2 * n, device=img.device), torch.arange(2 * n, 3 * n, device=img.device))
        weight = self._aux_weight()
        if weight > 0:
            loss = loss + weight * aux
        return loss

    def _make_optimizer(self, net: FusionNet, stage: dict[str, Any]) -> torch.optim.Optimizer:
        cfg = self.config
        head_ids = {id(p) for p in net.head_parameters()}
        fusion_params = [p for p in net.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": fusion_params, "lr": cfg.lr_fusion, "name": "fusion"}]
        if stage["hash"]:
            groups.append({"params": net.head_parameters(), "lr": cfg.lr_head, "name": "head"})
        return torch.optim.Adam(groups, betas=(cfg.beta1, cfg.beta2))

    def _head_lr(self, iteration: int) -> float:
        """Head learning rate after ``iteration`` optimiser steps (constant unless ``lr_growth``)."""
        return self.config.lr_head

    def _run_stage(
        self,
        net: FusionNet,
        stage: dict[str, Any],
        tr_img: Tensor,
        tr_txt: Tensor,
        va_img: Tensor,
        va_txt: Tensor,
        gen: torch.Generator,
    ) -> dict[str, Any]:
        cfg = self.config
        t0 = time.perf_counter()
        self._set_train_mode(net, stage)
        opt = self._make_optimizer(net, stage)
        stopper = EarlyStopping(cfg.patience, cfg.min_delta)
        use_val = va_img.shape[0] >= 2
        iteration = 0
        train_losses: list[float] = []
        for _epoch in range(stage["epochs"]):
            self._set_train_mode(net, stage)
            total, count = 0.0, 0
            for idx in minibatches(tr_img.shape[0], cfg.batch_size, gen):
                idx = idx.to(tr_img.device)
                loss = self._loss(net, tr_img[idx], tr_txt[idx], stage, gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                iteration += 1
                for group in opt.param_groups:
                    if group.get("name") == "head":
                        group["lr"] = self._head_lr(iteration)
                total, count = total + float(loss.detach()), count + 1
            train_losses.append(total / max(count, 1))
            if not math.isfinite(train_losses[-1]):
                raise ValueError(f"{type(self).__name__}: training loss is not finite in stage {stage['name']!r}")
            if use_val:
                val_loss = self._validation_loss(net, stage, va_img, va_txt)
                _log.info("%s stage %s epoch %d/%d: loss %.4f, validation loss %.4f", type(self).__name__,
                          stage["name"], _epoch + 1, stage["epochs"], train_losses[-1], val_loss)
                if stopper.update(val_loss, net):
                    break
            else:
                _log.info("%s stage %s epoch %d/%d: loss %.4f", type(self).__name__, stage["name"], _epoch + 1,
                          stage["epochs"], train_losses[-1])
                stopper.epochs += 1
        if use_val:
            stopper.restore(net)
        for p in net.parameters():
            p.requires_grad_(True)
        net.eval()
        return {
            "name": stage["name"],
            "epochs": stopper.epochs,
            "best_epoch": stopper.best_epoch if use_val else stopper.epochs,
            "val_loss": stopper.history,
            "train_loss": train_losses,
            "seconds": time.perf_counter() - t0,
        }

    @torch.no_grad()
    def _validation_loss(self, net: FusionNet, stage: dict[str, Any], va_img: Tensor, va_txt: Tensor) -> float:
        """Mean loss over validation chunks of up to 1024 pairs (fixed order, eval mode)."""
        net.eval()
        losses, weights = [], []
        for idx in minibatches(va_img.shape[0], 1024, None):
            idx = idx.to(va_img.device)
            losses.append(float(self._loss(net, va_img[idx], va_txt[idx], stage, None)))
            weights.append(len(idx))
        return float(np.average(losses, weights=weights))

    # ---- encoding -------------------------------------------------------------------------------------------
    def _encode_tokens(self, tokens: Tensor, which: str) -> tuple[Tensor | None, Tensor | None]:
        """Hash codes from front-processed tokens; ``which`` in {"image", "text", "both"}."""
        assert self.net is not None
        f_img, f_txt, _ = self.net.fuse(tokens)
        h_img = self.net.img_head(f_img) if which in ("image", "both") else None
        h_txt = self.net.txt_head(f_txt) if which in ("text", "both") else None
        return h_img, h_txt

    def _encode_chunk(self, image: Tensor | None, text: Tensor | None, which: str) -> tuple[Tensor | None, Tensor | None]:
        assert self.net is not None
        return self._encode_tokens(self.net.tokens(image, text), which)

    def _encode_batch_size(self) -> int:
        return self.config.encode_batch_size

    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        """Relaxed codes: image alone (missing text vector), text alone (missing image vector), or pairs.

        Parameters
        ----------
        image : np.ndarray, shape (n, d_img), or None
        text : np.ndarray, shape (n, d_txt), or None
            With both given (same n) this is the paired protocol: the image half and the text half of each
            pair's fused code.

        Returns
        -------
        EncodedBatch
            ``image`` and/or ``text`` codes, float32 (n, K), unit L2 norm, entries in [-1, 1].

        Raises
        ------
        RuntimeError
            Before ``fit``.
        ValueError
            No input, non-2-D input, row counts that differ, or a feature width other than the training one.
        """
        self._check_fitted()
        n = self._check_inputs(image, text)
        assert self.net is not None and self.dims is not None
        for name, arr, d in (("image", image, self.dims[0]), ("text", text, self.dims[1])):
            if arr is not None and arr.shape[1] != d:
                raise ValueError(f"encode: {name} features have width {arr.shape[1]}, the model was fit on {d}")
        which = "both" if image is not None and text is not None else ("image" if image is not None else "text")
        dev = self.device
        img_t = as_tensor(image, dev, "encode image") if image is not None else None
        txt_t = as_tensor(text, dev, "encode text") if text is not None else None
        self.net.eval()
        out_img: list[np.ndarray] = []
        out_txt: list[np.ndarray] = []
        step = self._encode_batch_size()
        with torch.inference_mode():
            for start in range(0, n, step):
                sl = slice(start, start + step)
                h_img, h_txt = self._encode_chunk(
                    img_t[sl] if img_t is not None else None, txt_t[sl] if txt_t is not None else None, which
                )
                if h_img is not None:
                    out_img.append(h_img.float().cpu().numpy())
                if h_txt is not None:
                    out_txt.append(h_txt.float().cpu().numpy())
        bits = int(self.bits or 0)

        def cat(parts: list[np.ndarray]) -> np.ndarray:
            return np.concatenate(parts).astype(np.float32) if parts else np.zeros((0, bits), np.float32)

        return EncodedBatch(image=cat(out_img) if image is not None else None, text=cat(out_txt) if text is not None else None)

    # ---- facts, persistence, tuning -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """``{"epochs": total epochs run, "epochs_per_stage": {...}, "best_epoch_per_stage": {...}}``."""
        stages = self.history.get("stages", [])
        return {
            "epochs": int(sum(s["epochs"] for s in stages)),
            "epochs_per_stage": {s["name"]: int(s["epochs"]) for s in stages},
            "best_epoch_per_stage": {s["name"]: int(s["best_epoch"]) for s in stages},
        }

    def get_state(self) -> dict[str, Any]:
        """``{"dims": (d_img, d_txt), "bits": K, "net": CPU state dict, "history": ...}``.

        Raises
        ------
        RuntimeError
            Before ``fit``.
        """
        self._check_fitted()
        assert self.net is not None
        return {"dims": self.dims, "bits": self.bits, "net": state_to_cpu(self.net), "history": self.history}

    def set_state(self, state: dict[str, Any]) -> None:
        """Rebuild the network for ``state["dims"]``/``state["bits"]`` and load its weights (codes identical)."""
        self.dims = (int(state["dims"][0]), int(state["dims"][1]))
        self.bits = int(state["bits"])
        net = self._build_net(self.dims[0], self.dims[1], self.bits)
        net.load_state_dict(state["net"])
        self.net = net.to(self.device).eval()
        self.history = state.get("history", {})

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Optuna space: learning rates, epoch cap, modality dropout, temperature."""
        return {
            "lr_fusion": trial.suggest_float("lr_fusion", 1e-5, 1e-3, log=True),
            "lr_head": trial.suggest_float("lr_head", 1e-4, 1e-2, log=True),
            "epochs": trial.suggest_int("epochs", 20, 120, step=20),
            "p_missing": trial.suggest_float("p_missing", 0.0, 0.6),
            "temperature": trial.suggest_float("temperature", 0.1, 1.0, log=True),
        }


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

    def _encode_batch_size(self) -> int:
        # The quirk's batch neighbours are those of the authors' evaluation loader (batch 128).
        return self.config.batch_size if self.config.eval_cross_batch else self.config.encode_batch_size
