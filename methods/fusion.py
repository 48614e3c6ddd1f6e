"""Training, model selection, encoding and persistence shared by the fusion hashing methods (UCMFH, MCMFH).

Source of the training recipe: Xia et al., *Information Fusion* 2023 (UCMFH) and its authors' code
(``ICMR.py``); specification ``../shared/spec/methods.md``. Loss ``NTXent(F_img, F_txt) + 0.5 ·
NTXent(H_img, H_txt)`` (τ 0.5, + a method's auxiliary loss), Adam (0.5, 0.999), lr 1e-4 for the fusion part,
1e-3 for the heads, batch 128, with modality dropout (ours) so an image alone or a text alone can be encoded.

Model selection (methods spec, "Common ground"; issue 14): every ``eval_every`` epochs the model is scored by
the tie-aware validation mAP of :func:`methods.selection.validation_score` (validation queries against the
training database, i2t and t2i averaged, under ``select_protocol``); the best-scoring weights of each stage are
restored and training stops after ``patience`` evaluations without improvement. A stage that trains no hash
heads (MCMFH's fusion pre-training) is scored on the fused 512-d halves (cosine ranking) since it has no codes
yet; a stage with heads on the Hamming ranking of its codes.

Speed (issue 15), without changing any function the network computes: fused Adam; while the front end
(adapters, missing vectors, DV-MLP) is frozen its outputs for the training and validation inputs are computed
once per stage and reused by every step and every evaluation; validation encodes run under ``no_grad`` in
large chunks; batch-size-1 ``encode`` calls run under ``inference_mode`` with no per-call thread changes.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from medhash_datasets.base import FeatureSplit
from methods.base import EncodedBatch, HashingMethod, MethodConfig, check_bits
from methods.fusion_net import FrontTokens, FusionConfig, FusionNet, TransformerFusion
from methods.nn import (
    EarlyStopping,
    as_tensor,
    make_generator,
    minibatches,
    modality_dropout_plan,
    nt_xent,
    seeded,
    state_to_cpu,
)
from methods.selection import ValidationScore, validation_score

__all__ = ["AUTHORS_TRAIN_CUT", "FRONT_CACHE_MAX_BYTES", "FusionHashingMethod"]

logger = logging.getLogger(__name__)

#: Training items kept by the authors' loader (``train_images[:4992]``).
AUTHORS_TRAIN_CUT = 4992
#: Largest front-token cache kept per stage (bytes); larger splits recompute the frozen front end per batch.
FRONT_CACHE_MAX_BYTES = 1 << 31


class FusionHashingMethod(HashingMethod):
    """Shared fit/encode/persistence of the fusion hashing methods (UCMFH, MCMFH).

    Subclasses provide :meth:`_build_front`, :meth:`_build_fusion` and may override :meth:`_stages`
    (the training schedule), :meth:`_aux_weight` and :meth:`_encode_chunk`.

    Attributes (after ``fit``)
    --------------------------
    net : FusionNet
    history : dict
        ``n_train``, ``selection`` (protocol, relevance) and per stage: epochs run, best epoch, training loss
        per epoch, validation mAP per evaluation, seconds.
    """

    config_class: ClassVar[type[MethodConfig]] = FusionConfig
    supervised: ClassVar[bool] = False
    uses_both_modalities_at_encode: ClassVar[bool] = True
    selects_under_protocol: ClassVar[bool] = True
    #: (low, high, step) of the tuned epoch cap (of the stage with hash heads).
    EPOCH_CAP_RANGE: ClassVar[tuple[int, int, int]] = (10, 60, 10)

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

    def _after_stage(
        self, net: FusionNet, stage: dict[str, Any], train: FeatureSplit, tokens: Callable[[Any, Any], Tensor]
    ) -> None:
        """Called after each stage with its selected weights restored (eval mode); ``tokens(image, text)``
        gives front tokens of the training arrays (cached while the front end is frozen). Default: nothing."""

    def _encode_is_token_path(self) -> bool:
        """Whether :meth:`encode` is heads(fuse(tokens)) per item (so selection may reuse cached tokens)."""
        return True

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
        """Train on ``train`` pairs; select each stage's epoch by validation mAP; keep those weights.

        Parameters
        ----------
        train : FeatureSplit
            image (n, d_img), text (n, d_txt) float32; n >= 2. Its labels are read only as the database side
            of the validation mAP (never by the loss).
        validation : FeatureSplit
            Same widths; the queries of the validation mAP (labels as relevance; without labels the score
            falls back to instance relevance within the validation split). Empty: no selection, every stage
            runs its full epoch cap and keeps its last weights.
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
            Bad shapes, fewer than 2 training items, non-finite features, bits < 8, or a training loss that
            is not finite.
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
        if n_train < len(train):
            labels = train.labels[:n_train] if train.labels is not None else None
            train = FeatureSplit(image=train.image[:n_train], text=train.text[:n_train], labels=labels)  # type: ignore[arg-type]
        self.bits, self.seed, self.dims = int(bits), int(seed), dims
        self.history = {"n_train": n_train, "stages": [], "selection": {"protocol": cfg.select_protocol}}
        with seeded(seed, self.device):
            net = self._build_net(dims[0], dims[1], int(bits)).to(self.device)
            self._after_build(net, seed)
            self.net = net
            gen = make_generator(seed)
            for stage in self._stages():
                if stage["epochs"] > 0:
                    self.history["stages"].append(self._run_stage(net, stage, train, validation, gen))
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

    def _make_optimizer(self, net: FusionNet, stage: dict[str, Any]) -> torch.optim.Optimizer:
        """Adam over the trainable parameters, one group for the fusion part and one for the heads (fused kernel)."""
        cfg = self.config
        head_ids = {id(p) for p in net.head_parameters()}
        fusion_params = [p for p in net.parameters() if p.requires_grad and id(p) not in head_ids]
        groups = [{"params": fusion_params, "lr": cfg.lr_fusion, "name": "fusion"}]
        if stage["hash"]:
            groups.append({"params": net.head_parameters(), "lr": cfg.lr_head, "name": "head"})
        return torch.optim.Adam(groups, betas=(cfg.beta1, cfg.beta2), fused=True)

    def _head_lr(self, iteration: int) -> float:
        """Head learning rate after ``iteration`` optimiser steps (constant unless ``lr_growth``)."""
        return self.config.lr_head

    def _batch_loss(self, net: FusionNet, stage: dict[str, Any], tokens: Tensor, plan: Any) -> Tensor:
        """``NTXent(F_img, F_txt) + hash_weight · NTXent(H_img, H_txt) + aux_weight · aux`` of planned rows.

        ``tokens`` (R, 2·slot) are the front outputs of the plan's rows; pair i's image side is read from row
        ``plan.image_rows[i]``, its text side from ``plan.text_rows[i]``.
        """
        cfg = self.config
        f_img, f_txt, aux = net.fuse(tokens)
        ri, rt = plan.image_rows.to(tokens.device), plan.text_rows.to(tokens.device)
        f_img, f_txt = f_img.index_select(0, ri), f_txt.index_select(0, rt)
        loss = nt_xent(f_img, f_txt, cfg.temperature)
        if stage["hash"] and cfg.hash_weight > 0:
            loss = loss + cfg.hash_weight * nt_xent(net.img_head(f_img), net.txt_head(f_txt), cfg.temperature)
        weight = self._aux_weight()
        if weight > 0:
            loss = loss + weight * aux
        return loss

    def _run_stage(
        self, net: FusionNet, stage: dict[str, Any], train: FeatureSplit, validation: FeatureSplit, gen: torch.Generator
    ) -> dict[str, Any]:
        """Train one stage; evaluate every ``eval_every`` epochs; restore the best-scoring weights."""
        cfg = self.config
        t0 = time.perf_counter()
        self._set_train_mode(net, stage)
        opt = self._make_optimizer(net, stage)
        cache = FrontTokens(net, self.device, cfg.encode_batch_size, bool(stage["freeze_front"]), FRONT_CACHE_MAX_BYTES)
        tr_img, tr_txt = cache.tensor(train.image, "train.image"), cache.tensor(train.text, "train.text")
        frozen_tokens = cache.training(train.image, train.text)
        stopper = EarlyStopping(cfg.patience, cfg.min_delta) if len(validation) > 0 else None
        evaluations: list[dict[str, Any]] = []
        train_losses: list[float] = []
        iteration, epoch = 0, 0
        name, cap = stage["name"], int(stage["epochs"])
        for epoch in range(1, cap + 1):
            self._set_train_mode(net, stage)
            total, count = 0.0, 0
            for idx in minibatches(tr_img.shape[0], cfg.batch_size, gen):
                plan = modality_dropout_plan(len(idx), cfg.p_missing, cfg.modality_dropout, gen)
                if frozen_tokens is not None:
                    rows = (plan.kind.to(frozen_tokens.device), idx[plan.source].to(frozen_tokens.device))
                    tokens = frozen_tokens[rows]
                else:
                    with torch.set_grad_enabled(not stage["freeze_front"]):
                        dev_idx = idx.to(tr_img.device)
                        tokens = net.planned_tokens(tr_img[dev_idx], tr_txt[dev_idx], plan)
                loss = self._batch_loss(net, stage, tokens, plan)
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
                raise ValueError(f"{type(self).__name__}: training loss is not finite in stage {name!r} epoch {epoch}")
            if stopper is None or (epoch % cfg.eval_every and epoch != cap):
                logger.info("%s %d bits %s epoch %d/%d: loss %.4f, validation mAP –",
                            type(self).__name__, self.bits, name, epoch, cap, train_losses[-1])
                continue
            score = self._validation_score(net, stage, train, validation, cache)
            evaluations.append({"epoch": epoch, "map": score.mean, "i2t": score.i2t, "t2i": score.t2i})
            self.history["selection"]["relevance"] = score.relevance
            logger.info("%s %d bits %s epoch %d/%d: loss %.4f, validation mAP %.4f (i2t %.4f, t2i %.4f)",
                        type(self).__name__, self.bits, name, epoch, cap, train_losses[-1], score.mean, score.i2t, score.t2i)
            if stopper.update(-score.mean, net):
                break
        best_epoch = epoch
        if stopper is not None and stopper.best_state is not None:
            stopper.restore(net)
            best_epoch = evaluations[stopper.best_epoch - 1]["epoch"]
            logger.info("%s %s: best validation mAP %.4f at epoch %d of %d run",
                        type(self).__name__, name, -stopper.best, best_epoch, epoch)
        for p in net.parameters():
            p.requires_grad_(True)
        net.eval()
        self._after_stage(net, stage, train, cache.get)
        return {
            "name": name,
            "epochs": epoch,
            "best_epoch": best_epoch,
            "val_map": evaluations,
            "train_loss": train_losses,
            "selected_on": "fused-feature cosine mAP" if not stage["hash"] else "code Hamming mAP",
            "seconds": time.perf_counter() - t0,
        }

    def _validation_score(
        self, net: FusionNet, stage: dict[str, Any], train: FeatureSplit, validation: FeatureSplit, cache: FrontTokens
    ) -> ValidationScore:
        """Tie-aware validation mAP (validation queries vs the training database) of the current weights.

        With hash heads (``stage["hash"]``): Hamming ranking of the codes, encoded as :meth:`encode` does.
        Without: cosine ranking of the fused halves ``F_img`` / ``F_txt`` (the stage has no codes yet).
        """
        net.eval()
        codes = bool(stage["hash"])
        encode: Callable[..., EncodedBatch]
        if codes and not self._encode_is_token_path():
            encode = self.encode
        else:
            encode = self._token_encoder(net, cache, codes)
        return validation_score(encode, train, validation, binary=codes, protocol=self.config.select_protocol)

    def _token_encoder(self, net: FusionNet, cache: FrontTokens, codes: bool) -> Callable[..., EncodedBatch]:
        """``encode(image=, text=)`` from (cached) front tokens: codes, or fused halves when ``codes`` is False."""
        step = self.config.encode_batch_size

        @torch.no_grad()
        def encode(image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
            tokens = cache.get(image, text)
            out_img, out_txt = [], []
            for s in range(0, tokens.shape[0], step):
                f_img, f_txt, _ = net.fuse(tokens[s : s + step])
                if image is not None:
                    out_img.append(net.img_head(f_img) if codes else f_img)
                if text is not None:
                    out_txt.append(net.txt_head(f_txt) if codes else f_txt)
            return EncodedBatch(
                image=torch.cat(out_img).cpu().numpy() if out_img else None,
                text=torch.cat(out_txt).cpu().numpy() if out_txt else None,
            )

        return encode

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
        if self.net.training:
            self.net.eval()
        out_img: list[Tensor] = []
        out_txt: list[Tensor] = []
        step = self._encode_batch_size()
        with torch.inference_mode():
            for start in range(0, n, step):
                sl = slice(start, start + step)
                h_img, h_txt = self._encode_chunk(
                    img_t[sl] if img_t is not None else None, txt_t[sl] if txt_t is not None else None, which
                )
                if h_img is not None:
                    out_img.append(h_img)
                if h_txt is not None:
                    out_txt.append(h_txt)

        def cat(parts: list[Tensor]) -> np.ndarray:
            if not parts:
                return np.zeros((0, int(self.bits or 0)), np.float32)
            return (torch.cat(parts) if len(parts) > 1 else parts[0]).float().cpu().numpy().astype(np.float32, copy=False)

        return EncodedBatch(image=cat(out_img) if image is not None else None, text=cat(out_txt) if text is not None else None)

    # ---- facts, persistence, tuning -------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Epochs run and selected per stage, the best validation mAP per stage, and the selection protocol.

        Returns
        -------
        dict
            ``epochs`` (int, total run), ``epochs_per_stage`` / ``best_epoch_per_stage`` ({stage: int}),
            ``best_val_map_per_stage`` ({stage: float}, stages that were evaluated), ``selection``
            (``"validation mAP, <protocol> protocol, <relevance> relevance"``).
        """
        stages = self.history.get("stages", [])
        sel = self.history.get("selection", {})
        best = {
            s["name"]: float(next(e["map"] for e in s["val_map"] if e["epoch"] == s["best_epoch"]))
            for s in stages
            if any(e["epoch"] == s["best_epoch"] for e in s.get("val_map", []))
        }
        return {
            "epochs": int(sum(s["epochs"] for s in stages)),
            "epochs_per_stage": {s["name"]: int(s["epochs"]) for s in stages},
            "best_epoch_per_stage": {s["name"]: int(s["best_epoch"]) for s in stages},
            "best_val_map_per_stage": best,
            "selection": (
                f"validation mAP, {sel.get('protocol', self.config.select_protocol)} protocol, "
                f"{sel.get('relevance', 'no')} relevance"
            ),
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
        """Optuna space shared by the fusion methods (issue 14 item 4).

        Learning rates of the fusion part and the heads (log-uniform around the paper's 1e-4 / 1e-3), NT-Xent
        temperature, hash-loss weight, modality-dropout probability, transformer and head dropout, and the
        epoch cap (selection by validation mAP still picks the epoch inside it).
        """
        return {
            "lr_fusion": trial.suggest_float("lr_fusion", 1e-5, 1e-3, log=True),
            "lr_head": trial.suggest_float("lr_head", 1e-4, 1e-2, log=True),
            "temperature": trial.suggest_float("temperature", 0.05, 1.0, log=True),
            "hash_weight": trial.suggest_float("hash_weight", 0.1, 2.0, log=True),
            "p_missing": trial.suggest_float("p_missing", 0.0, 0.6),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "head_dropout": trial.suggest_float("head_dropout", 0.0, 0.5),
            "epochs": trial.suggest_int("epochs", *cls.EPOCH_CAP_RANGE[:2], step=cls.EPOCH_CAP_RANGE[2]),
        }
