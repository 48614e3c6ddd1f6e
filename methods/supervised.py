"""Shared pieces of the supervised CLIP-feature hashing baselines (DScPH, DDBH).

Both methods (Qin et al., TMM 2025 and TCSVT 2025; authors' code github.com/QinLab-WFU/DScPH and
github.com/QinLab-WFU/DDBH) put one small hash head per modality on top of CLIP features and train with
label-driven losses. The originals fine-tune CLIP ViT-B/32 end to end; here the encoder is frozen and only
the heads (plus each loss's own learnable parameters) are trained, so every result carries the label
:data:`REIMPLEMENTATION_NOTE` (methods spec, DScPH/DDBH sections).

What lives here: :class:`SupervisedConfig`, :func:`suggest_common` and :class:`SupervisedHashingMethod` — the
``fit``/``encode``/persistence skeleton with the training loop and validation-based early stopping; a subclass
only supplies its loss module. The heads, label similarity, optimiser schedule and validation mAP are in
:mod:`methods.supervised_blocks`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from medhash_datasets.base import FeatureSplit
from methods.base import ConfigError, EncodedBatch, HashingMethod, MethodConfig, check_bits, check_range
from methods.nn import EarlyStopping, as_tensor, make_generator, seeded, state_to_cpu
from methods.supervised_blocks import (
    PairedHashHeads,
    build_optimizer,
    cpu_threads,
    run_head,
    validation_map,
)

logger = logging.getLogger(__name__)

#: Recorded in ``info()`` of both methods so result rows say what was run.
REIMPLEMENTATION_NOTE = "frozen-backbone re-implementation (original fine-tunes CLIP ViT-B/32 end to end)"

StepHook = Callable[["SupervisedHashingMethod", int, int, dict[str, float]], None]


# ---- config and method skeleton ----------------------------------------------------------------------------
@dataclass
class SupervisedConfig(MethodConfig):
    """Training hyper-parameters shared by DScPH and DDBH.

    Attributes
    ----------
    epochs : int
        Maximum training epochs (the authors run 100 with a fine-tuned CLIP; frozen features converge faster).
    batch_size : int
        Items per step (DScPH 128, DDBH 64 in the authors' scripts). An epoch is split into
        ``ceil(n / batch_size)`` near-equal batches, so no item is dropped and no batch is tiny.
    lr : float
        Head learning rate (1e-3 in both papers).
    weight_decay : float
        Decoupled weight decay of the heads (0.2 in both papers).
    warmup_fraction : float
        Fraction of all steps with linear warm-up (0.1).
    grad_clip : float
        Max global gradient norm (the authors' ``BertAdam`` clips at 1.0); 0 disables.
    dropout : float
        Dropout of the hash heads (0.2).
    input_norm : {"rms", "none"}
        Per-row RMS normalisation of the frozen features (our choice, see :func:`methods.supervised_blocks.rms_normalize`).
    adapter : {"auto", "none", "linear"}
        Common ``Linear(d → 512)`` input adapter (methods spec, "Common ground"); ``auto`` = when d != 512.
    early_stopping : bool
        Select the epoch with the best validation mAP (:func:`methods.supervised_blocks.validation_map`: tie-aware, validation queries
        against the training database, mean of i2t and t2i); ``False`` keeps the last epoch and never reads
        validation labels.
    eval_every : int
        Epochs between validation evaluations (1: every epoch).
    patience : int
        Evaluations without improvement before stopping.
    torch_threads : int
        Intra-op CPU threads during ``fit`` (restored afterwards); 0 keeps the caller's setting.
        One thread is fastest for these small models and makes CPU results independent of the caller.
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.2
    warmup_fraction: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.2
    input_norm: str = "rms"
    adapter: str = "auto"
    early_stopping: bool = True
    eval_every: int = 1
    patience: int = 10
    torch_threads: int = 1

    def validate(self) -> None:
        super().validate()
        check_range(self, "epochs", 1, 100_000)
        check_range(self, "batch_size", 2, 1_000_000)
        check_range(self, "lr", 1e-8, 10.0)
        check_range(self, "weight_decay", 0.0, 10.0)
        check_range(self, "warmup_fraction", 0.0, 0.9)
        check_range(self, "grad_clip", 0.0, None)
        check_range(self, "dropout", 0.0, 0.95)
        check_range(self, "eval_every", 1, 100_000)
        check_range(self, "patience", 1, 100_000)
        check_range(self, "torch_threads", 0, 1024)
        if self.input_norm not in ("rms", "none"):
            raise ConfigError(f"{type(self).__name__}.input_norm = {self.input_norm!r}; valid: 'rms', 'none'")
        if self.adapter not in ("auto", "none", "linear"):
            raise ConfigError(f"{type(self).__name__}.adapter = {self.adapter!r}; valid: 'auto', 'none', 'linear'")


def suggest_common(trial: Any) -> dict[str, Any]:
    """Optuna suggestions for the shared training knobs: head lr, decoupled weight decay, head dropout and the
    epochs cap (the epoch itself is chosen by validation mAP within the cap)."""
    return {
        "lr": trial.suggest_float("lr", 1e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-3, 0.5, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "epochs": trial.suggest_int("epochs", 20, 120, step=20),
    }


def _check_split(split: FeatureSplit, name: str, *, need_labels: bool) -> None:
    """Raise ``ValueError`` naming the split and field when shapes are inconsistent."""
    for field in ("image", "text"):
        arr = getattr(split, field)
        if np.ndim(arr) != 2:
            raise ValueError(f"{name}.{field} must be 2-D (n, d), got shape {np.shape(arr)}")
    n = split.image.shape[0]
    if split.text.shape[0] != n:
        raise ValueError(f"{name}: image has {n} rows but text has {split.text.shape[0]}")
    if need_labels and (np.ndim(split.labels) != 2 or np.shape(split.labels)[0] != n):
        raise ValueError(f"{name}.labels must have shape ({n}, C), got {np.shape(split.labels)}")


class SupervisedHashingMethod(HashingMethod):
    """Skeleton of a supervised two-head hashing method on frozen features.

    A subclass sets ``config_class`` and implements :meth:`make_loss` (a module whose parameters, if any,
    are the loss's own learnable state, e.g. DScPH's proxies) and :meth:`loss_param_groups`.

    Training (``fit``): seed torch's RNG from ``seed`` (weights, dropout), shuffle with a CPU generator
    seeded from ``seed``, AdamW + warm-up/cosine, gradient clipping, validation mAP every ``eval_every``
    epochs with early stopping (the best epoch's weights are restored). Labels are read from
    ``train.labels`` only; ``validation.labels`` only score the validation mAP.

    Attributes
    ----------
    step_hooks : list of callables
        ``hook(method, epoch, step, info)`` is called after every optimiser step (``info``: the loss
        terms and statistics of that step); used by tests and diagnostics.
    history_ : list of dict
        One entry per evaluation: epoch, mean training loss, validation mAP.
    """

    supervised: ClassVar[bool] = True
    config_class: ClassVar[type[MethodConfig]] = SupervisedConfig

    def __init__(self, config: MethodConfig | None = None, *, device: str = "cpu") -> None:
        super().__init__(config, device=device)
        self.heads: PairedHashHeads | None = None
        self.loss_module: nn.Module | None = None
        self.step_hooks: list[StepHook] = []
        self.history_: list[dict[str, float]] = []
        self.best_epoch_: int | None = None
        self.epochs_run_: int = 0
        self.fit_seconds_: float | None = None
        self._dims: tuple[int, int, int] | None = None  # d_img, d_txt, n_classes

    # ---- subclass API --------------------------------------------------------------------------------------
    def make_loss(self, bits: int, n_classes: int) -> nn.Module:
        """Build the loss module; ``forward(h_img, h_txt, labels) -> (loss, info)``."""
        raise NotImplementedError

    def loss_param_groups(self, loss: nn.Module) -> list[dict[str, Any]]:
        """Optimiser groups of the loss module's own parameters (default: none)."""
        return []

    # ---- fit -----------------------------------------------------------------------------------------------
    def _build(self, d_img: int, d_txt: int, bits: int, n_classes: int) -> None:
        cfg = self.config
        assert isinstance(cfg, SupervisedConfig)
        self.heads = PairedHashHeads(d_img, d_txt, bits, dropout=cfg.dropout, input_norm=cfg.input_norm, adapter=cfg.adapter)
        self.loss_module = self.make_loss(bits, n_classes)
        self.heads.to(self.device)
        self.loss_module.to(self.device)
        self._dims = (d_img, d_txt, n_classes)

    def fit(self, train: FeatureSplit, validation: FeatureSplit, bits: int, seed: int) -> SupervisedHashingMethod:
        """Train both heads on ``train`` (labels from ``train.labels`` only); select on ``validation``.

        Parameters
        ----------
        train : FeatureSplit
            image (n, d_img), text (n, d_txt) float32, labels (n, C) multi-hot; n >= 2.
        validation : FeatureSplit
            Same widths; used only for the validation mAP of early stopping (may be empty).
        bits : int
            K >= 8.
        seed : int
            Seeds weights, dropout and shuffles: same seed ⇒ same codes on CPU.

        Returns
        -------
        self

        Raises
        ------
        ValueError
            For bad ``bits``, inconsistent shapes, fewer than 2 training items or non-finite features.
        FloatingPointError
            If the training loss becomes NaN or infinite.
        """
        check_bits(bits)
        cfg = self.config
        assert isinstance(cfg, SupervisedConfig)
        _check_split(train, "train", need_labels=True)
        n = len(train)
        if n < 2:
            raise ValueError(f"train split has {n} items; need at least 2")
        use_val = cfg.early_stopping and len(validation) > 0
        if use_val:
            _check_split(validation, "validation", need_labels=True)
            for field in ("image", "text"):
                if getattr(validation, field).shape[1] != getattr(train, field).shape[1]:
                    raise ValueError(
                        f"validation.{field} has width {getattr(validation, field).shape[1]}, "
                        f"train.{field} has {getattr(train, field).shape[1]}"
                    )
        t0 = time.perf_counter()
        dev = self.device
        x_img = as_tensor(train.image, dev, "train.image")
        x_txt = as_tensor(train.text, dev, "train.text")
        y = torch.as_tensor(np.asarray(train.labels), dtype=torch.float32, device=dev)

        with seeded(seed, str(dev)), cpu_threads(cfg.torch_threads, dev):
            self._build(x_img.shape[1], x_txt.shape[1], int(bits), int(y.shape[1]))
            heads, loss_mod = self.heads, self.loss_module
            assert heads is not None and loss_mod is not None
            groups = [{"params": list(heads.parameters()), "lr": cfg.lr, "weight_decay": cfg.weight_decay}]
            groups += self.loss_param_groups(loss_mod)
            n_batches = math.ceil(n / cfg.batch_size)
            opt, sched = build_optimizer(groups, cfg.epochs * n_batches, cfg.warmup_fraction)
            params = [p for g in groups for p in g["params"]]
            gen = make_generator(seed)
            stopper = EarlyStopping(cfg.patience) if use_val else None
            self.history_ = []
            step = 0
            epoch = 0
            for epoch in range(1, cfg.epochs + 1):
                heads.train()
                loss_mod.train()
                order = torch.randperm(n, generator=gen).to(dev)
                total = 0.0
                for idx in torch.tensor_split(order, n_batches):
                    h_img = heads.image(x_img[idx])
                    h_txt = heads.text(x_txt[idx])
                    loss, info = loss_mod(h_img, h_txt, y[idx])
                    opt.zero_grad(set_to_none=True)
                    if loss.requires_grad:
                        loss.backward()
                        if cfg.grad_clip > 0:
                            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                        opt.step()
                    sched.step()
                    step += 1
                    total += float(loss.detach())
                    if not math.isfinite(total):
                        raise FloatingPointError(f"{type(self).__name__}: training loss is not finite at epoch {epoch}")
                    for hook in self.step_hooks:
                        hook(self, epoch, step, info)
                mean_loss = total / n_batches
                if stopper is not None and (epoch % cfg.eval_every == 0 or epoch == cfg.epochs):
                    heads.eval()
                    score = validation_map(heads, train, validation, dev)
                    self.history_.append({"epoch": epoch, "train_loss": mean_loss, "val_map": score.mean,
                                          "val_i2t": score.i2t, "val_t2i": score.t2i})
                    logger.info("%s %d bits epoch %d/%d: loss %.4f, validation mAP %.4f (i2t %.4f, t2i %.4f)",
                                type(self).__name__, bits, epoch, cfg.epochs, mean_loss, score.mean, score.i2t, score.t2i)
                    done = stopper.update(-score.mean, _Both(heads, loss_mod))
                    if done:
                        logger.info("%s: early stop after epoch %d (best validation mAP %.4f at epoch %d)",
                                    type(self).__name__, epoch, -stopper.best,
                                    int(self.history_[stopper.best_epoch - 1]["epoch"]))
                        break
                else:
                    logger.info("%s %d bits epoch %d/%d: loss %.4f, validation mAP –", type(self).__name__, bits,
                                epoch, cfg.epochs, mean_loss)
            self.epochs_run_ = epoch
            if stopper is not None and stopper.best_state is not None:
                stopper.restore(_Both(heads, loss_mod))
                self.best_epoch_ = int(self.history_[stopper.best_epoch - 1]["epoch"])
            else:
                self.best_epoch_ = epoch
        heads.eval()
        loss_mod.eval()
        self.bits, self.seed = int(bits), int(seed)
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    # ---- encode --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        """Relaxed codes of each modality's own head (no fusion: a paired encode = two unimodal encodes).

        Parameters
        ----------
        image : np.ndarray, shape (n, d_img), optional
        text : np.ndarray, shape (n, d_txt), optional

        Returns
        -------
        EncodedBatch
            float32 (n, K) arrays in (-1, 1) for the modalities given, ``None`` for the others.

        Raises
        ------
        RuntimeError
            Before ``fit``/``load``.
        ValueError
            No modality, non-2-D input, row counts differ, or a width differs from the trained one.
        """
        self._check_fitted()
        self._check_inputs(image, text)
        assert self.heads is not None
        self.heads.eval()
        out: list[np.ndarray | None] = []
        for name, arr, head in (("image", image, self.heads.image), ("text", text, self.heads.text)):
            if arr is None:
                out.append(None)
                continue
            if arr.shape[1] != head.in_dim:
                raise ValueError(f"encode: {name} features have width {arr.shape[1]}, the model was trained on {head.in_dim}")
            out.append(run_head(head, arr, self.device, name))
        return EncodedBatch(out[0], out[1])

    # ---- persistence and info ------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Head and loss-module weights (CPU tensors), input widths, class count, training record."""
        if self.heads is None or self.loss_module is None or self._dims is None:
            raise RuntimeError(f"{type(self).__name__}.get_state called before fit")
        return {
            "dims": list(self._dims),
            "heads": state_to_cpu(self.heads),
            "loss": state_to_cpu(self.loss_module),
            "history": list(self.history_),
            "best_epoch": self.best_epoch_,
            "epochs_run": self.epochs_run_,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Rebuild the modules from ``state`` (``self.bits`` must be set, as :meth:`HashingMethod.load` does)."""
        if self.bits is None:
            raise RuntimeError(f"{type(self).__name__}.set_state needs self.bits (use HashingMethod.load)")
        d_img, d_txt, n_classes = (int(v) for v in state["dims"])
        self._build(d_img, d_txt, int(self.bits), n_classes)
        assert self.heads is not None and self.loss_module is not None
        self.heads.load_state_dict(state["heads"])
        self.loss_module.load_state_dict(state["loss"])
        self.heads.eval()
        self.loss_module.eval()
        self.history_ = list(state.get("history", []))
        self.best_epoch_ = state.get("best_epoch")
        self.epochs_run_ = int(state.get("epochs_run", 0))

    def info(self) -> dict[str, Any]:
        """``reimplementation`` label; after fit: ``epochs`` run, ``best_epoch`` (selected), ``fit_seconds`` (wall)."""
        out: dict[str, Any] = {"reimplementation": REIMPLEMENTATION_NOTE}
        if self.bits is not None:
            out.update({"epochs": self.epochs_run_, "best_epoch": self.best_epoch_})
            if self.fit_seconds_ is not None:
                out["fit_seconds"] = round(self.fit_seconds_, 3)
        return out


class _Both(nn.Module):
    """Heads + loss module as one module, so one snapshot/restore covers every trained parameter."""

    def __init__(self, heads: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.heads = heads
        self.loss = loss


__all__ = [
    "REIMPLEMENTATION_NOTE",
    "SupervisedConfig",
    "SupervisedHashingMethod",
    "suggest_common",
]
