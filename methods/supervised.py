"""Shared pieces of the supervised CLIP-feature hashing baselines (DScPH, DDBH).

Both methods (Qin et al., TMM 2025 and TCSVT 2025; authors' code github.com/QinLab-WFU/DScPH and
github.com/QinLab-WFU/DDBH) put one small hash head per modality on top of CLIP features and train with
label-driven losses. The originals fine-tune CLIP ViT-B/32 end to end; here the encoder is frozen and only
the heads (plus each loss's own learnable parameters) are trained, so every result carries the label
:data:`REIMPLEMENTATION_NOTE` (methods spec, DScPH/DDBH sections).

What lives here:

- :class:`ModalityHashHead` — ``Linear(d, K) → Dropout(0.2) → tanh`` (authors' ``LinearHash``), with an
  optional input adapter and RMS input normalisation in front.
- :func:`label_similarity` — ``S = [Y_a Y_bᵀ > 0]``.
- :func:`warmup_cosine` and :func:`build_optimizer` — AdamW (decoupled weight decay) + linear warm-up over
  the first 10 % of steps + cosine decay to 0 (the authors' ``BertAdam(schedule="warmup_cosine")``).
- :func:`validation_map` — tie-aware cross-modal mAP@all, validation queries against the training database
  (:mod:`methods.selection`; model selection only).
- :class:`SupervisedHashingMethod` — the ``fit``/``encode``/persistence skeleton with the training loop and
  validation-based early stopping; a subclass only supplies its loss module.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from medhash_datasets.base import FeatureSplit
from methods.base import ConfigError, EncodedBatch, HashingMethod, MethodConfig, check_bits, check_range
from methods.nn import EarlyStopping, InputAdapter, as_tensor, make_generator, seeded, state_to_cpu
from methods.selection import ValidationScore, validation_score

logger = logging.getLogger(__name__)

#: Recorded in ``info()`` of both methods so result rows say what was run.
REIMPLEMENTATION_NOTE = "frozen-backbone re-implementation (original fine-tunes CLIP ViT-B/32 end to end)"

#: AdamW moment and epsilon constants of the authors' ``BertAdam`` call (b1 0.9, b2 0.98, e 1e-6).
ADAM_BETAS = (0.9, 0.98)
ADAM_EPS = 1e-6

StepHook = Callable[["SupervisedHashingMethod", int, int, dict[str, float]], None]


# ---- building blocks ---------------------------------------------------------------------------------------
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
        Per-row RMS normalisation of the frozen features (our choice, see :func:`rms_normalize`).
    adapter : {"auto", "none", "linear"}
        Common ``Linear(d → 512)`` input adapter (methods spec, "Common ground"); ``auto`` = when d != 512.
    early_stopping : bool
        Select the epoch with the best validation mAP (:func:`validation_map`: tie-aware, validation queries
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
    "ModalityHashHead",
    "PairedHashHeads",
    "SupervisedConfig",
    "SupervisedHashingMethod",
    "build_optimizer",
    "label_similarity",
    "rms_normalize",
    "run_head",
    "suggest_common",
    "validation_map",
    "warmup_cosine",
]
