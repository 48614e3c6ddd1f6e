"""Config and networks shared by the fusion hashing methods (UCMFH, MCMFH).

Source: Xia, Dong, Li, Zhu, Ying, "When CLIP meets cross-modal hashing retrieval: A new strong baseline",
*Information Fusion* 100, 101968 (2023); authors' code github.com/XinyuXia97/UCMFH (``model.py``), read for
facts. Specification: ``../shared/spec/methods.md`` (UCMFH; MCMFH builds on it).

Pipeline of one pair (image features ``(d_img,)``, text features ``(d_txt,)``)::

    adapters (Linear(d → 512), identity for 512-d) → token [f_img ; f_txt] (1024) → front module
    (identity for UCMFH, the DV-MLP for MCMFH) → fusion transformer → L2-normalise over 1024
    → F_img = first 512, F_txt = last 512 → hash heads → H_img, H_txt (K each, relaxed codes in [-1, 1])

The training loop, model selection and encoding live in :mod:`methods.fusion`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.base import ConfigError, MethodConfig, check_range
from methods.nn import (
    IMAGE_ALONE,
    PAIRED,
    TEXT_ALONE,
    HashHead,
    InputAdapter,
    MissingModality,
    RowPlan,
    as_tensor,
    single_token_attention,
)

__all__ = ["SLOT", "FrontTokens", "FusionConfig", "FusionNet", "TransformerFusion", "check_choice"]

#: Default width of one modality slot of the fused token (BiomedCLIP's embedding width).
SLOT = 512


def check_choice(cfg: object, name: str, choices: tuple[str, ...]) -> None:
    """Raise :class:`ConfigError` unless ``cfg.name`` is one of ``choices``."""
    value = getattr(cfg, name)
    if value not in choices:
        raise ConfigError(f"{type(cfg).__name__}.{name} = {value!r}; choose one of {list(choices)}")


@dataclass
class FusionConfig(MethodConfig):
    """Hyper-parameters shared by UCMFH and MCMFH (defaults: the UCMFH paper/code unless noted).

    Attributes
    ----------
    epochs : int
        Epoch cap; early stopping on the validation mAP usually ends training sooner (ours: the authors
        run 100–500 fixed epochs on much larger sets).
    patience : int
        Validation evaluations without an improvement of the validation mAP by more than ``min_delta`` before
        stopping (ours); with ``eval_every = 1`` these are epochs.
    min_delta : float
        Smallest validation-mAP increase that counts as an improvement (ours; mAP units).
    eval_every : int
        Epochs between validation evaluations (2; the last epoch is always evaluated). One evaluation encodes
        the validation and training splits (about half the cost of a training epoch on MedPix), so evaluating
        every other epoch adds about a quarter to the training time instead of a half.
    select_protocol : str
        Protocol under which the validation mAP is computed (evaluation spec): ``"unimodal"`` (each side encoded
        from its own modality, the missing one filled by its learned vector) or ``"paired"``. ``run`` and
        ``tune`` set it to the protocol being evaluated (the methods spec: selection "under the protocol being
        evaluated"), so a run scoring both protocols fits one model per protocol; a ``--param select_protocol=...``
        pins one model for every protocol instead. ``"unimodal"`` is the default of a bare ``fit``.
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
    min_delta: float = 0.0
    eval_every: int = 2
    select_protocol: str = "unimodal"
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
        check_range(self, "eval_every", 1)
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
        check_choice(self, "modality_dropout", ("split", "one"))
        check_choice(self, "adapter", ("auto", "linear"))
        check_choice(self, "select_protocol", ("unimodal", "paired"))
        if (2 * self.slot_dim) % self.n_heads:
            raise ConfigError(
                f"{type(self).__name__}.n_heads = {self.n_heads} must divide the token width {2 * self.slot_dim}"
            )


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
    (the authors' training-time behaviour); that case runs the encoder layers' own parameters through
    :meth:`single_token_layer` (the same function as ``nn.TransformerEncoderLayer`` at S = 1, without the
    query/key projections). With ``cross_batch = True`` the whole batch is one sequence of length B, as when
    the authors' evaluation passes a 2-D tensor: items attend to each other.
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

    @staticmethod
    def single_token_layer(layer: nn.TransformerEncoderLayer, x: Tensor) -> Tensor:
        """One post-norm encoder layer on length-1 sequences ``x`` (B, d), dropout as in training mode."""
        x = layer.norm1(x + layer.dropout1(single_token_attention(layer.self_attn, x)))
        ff = layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))
        return layer.norm2(x + layer.dropout2(ff))

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        if self.cross_batch:
            out = self.encoder(tokens.unsqueeze(0)).squeeze(0)
        else:
            out = tokens
            for layer in self.encoder.layers:
                out = self.single_token_layer(layer, out)  # type: ignore[arg-type]
            if self.encoder.norm is not None:
                out = self.encoder.norm(out)
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

    def planned_tokens(self, image: Tensor, text: Tensor, plan: RowPlan) -> Tensor:
        """Front-processed tokens (R, 1024) of the rows of a modality-dropout ``plan`` over pairs (B, d)."""
        img, txt = self.missing.assemble(self.img_adapter(image), self.txt_adapter(text), plan)
        return self.front(torch.cat([img, txt], dim=1))


class FrontTokens:
    """Front-processed tokens of fixed feature arrays, cached while the front end is frozen (one training stage).

    Keys are the identities of the numpy arrays passed in (the training and validation splits, alive for
    the whole ``fit``); each entry keeps its arrays so an identity cannot be reused. Without ``frozen`` only
    the float32 tensors of the inputs are cached and tokens are recomputed with the current weights.

    Parameters
    ----------
    net : FusionNet
        The network whose ``tokens`` (adapters, missing vectors, front module) are evaluated; the caller puts
        the front modules in eval mode.
    device : str
        Device of the input tensors.
    chunk : int
        Rows per forward pass.
    frozen : bool
        Whether the front end is frozen for this stage (only then are tokens cached).
    max_bytes : int
        Budget of cached tokens (float32 bytes); past it tokens are recomputed on every call.
    """

    def __init__(self, net: FusionNet, device: str, chunk: int, frozen: bool, max_bytes: int) -> None:
        self.net, self.device, self.chunk = net, device, int(chunk)
        self.frozen, self.budget = frozen, int(max_bytes)
        self._inputs: dict[int, tuple[np.ndarray, Tensor]] = {}
        self._tokens: dict[tuple[int | None, int | None], tuple[tuple[Any, Any], Tensor]] = {}

    def tensor(self, arr: np.ndarray, name: str) -> Tensor:
        """``arr`` (n, d) as a float32 tensor on the device, converted once (``ValueError`` names ``name``
        on non-finite values)."""
        hit = self._inputs.get(id(arr))
        if hit is None or hit[0] is not arr:
            hit = (arr, as_tensor(arr, self.device, name))
            self._inputs[id(arr)] = hit
        return hit[1]

    @torch.no_grad()
    def get(self, image: np.ndarray | None, text: np.ndarray | None) -> Tensor:
        """Tokens (n, 2·slot) of ``[image ; text]`` (a missing side filled by its learned vector), eval mode."""
        key = (id(image) if image is not None else None, id(text) if text is not None else None)
        hit = self._tokens.get(key)
        if hit is not None and hit[0][0] is image and hit[0][1] is text:
            return hit[1]
        img = self.tensor(image, "image features") if image is not None else None
        txt = self.tensor(text, "text features") if text is not None else None
        n = int((img if img is not None else txt).shape[0])  # type: ignore[union-attr]
        parts = [
            self.net.tokens(img[s : s + self.chunk] if img is not None else None, txt[s : s + self.chunk] if txt is not None else None)
            for s in range(0, n, self.chunk)
        ]
        tokens = torch.cat(parts) if len(parts) > 1 else parts[0]
        if self.frozen and tokens.numel() * tokens.element_size() <= self.budget:
            self.budget -= tokens.numel() * tokens.element_size()
            self._tokens[key] = ((image, text), tokens)
        return tokens

    def training(self, image: np.ndarray, text: np.ndarray) -> Tensor | None:
        """``(3, n, 2·slot)`` tokens of every training pair as PAIRED / IMAGE_ALONE / TEXT_ALONE rows, or
        ``None`` when the front end trains (or the cache would exceed its budget)."""
        if not self.frozen:
            return None
        need = 3 * image.shape[0] * 2 * self.net.slot * 4
        if need > self.budget:
            return None
        kinds = {PAIRED: (image, text), IMAGE_ALONE: (image, None), TEXT_ALONE: (None, text)}
        return torch.stack([self.get(*kinds[k]) for k in (PAIRED, IMAGE_ALONE, TEXT_ALONE)])
