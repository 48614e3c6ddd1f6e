"""Shared torch pieces for the deep hashing methods (UCMFH, MCMFH, and any other method that wants them).

What lives here, each usable on its own:

- :func:`nt_xent` — the SimCLR NT-Xent contrastive loss between two paired views (UCMFH's loss).
- :class:`HashHead` — UCMFH's hash head (L2-norm → Linear → ReLU → Dropout → Linear → tanh → L2-norm).
- :class:`InputAdapter` — per-modality ``Linear(d → 512)`` in front of a fusion model (identity for 512-d).
- :class:`MissingModality` and :func:`modality_dropout_plan` — learned "missing" vectors plus modality
  dropout, so a fusion model can encode an image alone or a text alone.
- :func:`single_token_attention` — self-attention of length-1 sequences without the query/key projections.
- Seeding and batching helpers (:func:`seeded`, :func:`make_generator`, :func:`minibatches`) and a small
  :class:`EarlyStopping` tracker that keeps the best weights, for the usual epoch loop.

Nothing here knows about a particular method or imports ``benchmarks``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "IMAGE_ALONE",
    "PAIRED",
    "TEXT_ALONE",
    "EarlyStopping",
    "HashHead",
    "InputAdapter",
    "MissingModality",
    "RowPlan",
    "as_tensor",
    "make_generator",
    "minibatches",
    "modality_dropout_plan",
    "nt_xent",
    "seeded",
    "single_token_attention",
    "state_to_cpu",
]


# ---- losses ------------------------------------------------------------------------------------------------
def nt_xent(a: Tensor, b: Tensor, temperature: float = 0.5) -> Tensor:
    """NT-Xent (normalised temperature-scaled cross-entropy) between paired views ``a[i] ↔ b[i]``.

    The SimCLR form over the 2B stacked, L2-normalised vectors ``z = [a; b]``: for each of the 2B anchors
    the positive is its pair in the other view and the denominator sums over every other of the 2B − 1
    vectors (same and other view)::

        ℓ_i = −log( exp(s(z_i, z_p(i)) / τ) / Σ_{j ≠ i} exp(s(z_i, z_j) / τ) ),   loss = mean_i ℓ_i

    with ``s`` the cosine similarity. Source: Chen et al., "A Simple Framework for Contrastive Learning of
    Visual Representations", ICML 2020 (eq. 1); the UCMFH authors' ``metric.ContrastiveLoss`` computes the
    same quantity (here via a numerically stable log-softmax, for any batch size).

    Parameters
    ----------
    a, b : Tensor, shape (B, D), float
        Paired embeddings (row i of ``a`` pairs with row i of ``b``); need not be normalised. B >= 2.
    temperature : float
        τ > 0 (UCMFH: 0.5).

    Returns
    -------
    Tensor, shape (), float
        Mean loss over the 2B anchors (natural log units).

    Raises
    ------
    ValueError
        If the shapes differ, are not 2-D, B < 2, or ``temperature <= 0``.
    """
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"nt_xent: a and b must be 2-D with equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < 2:
        raise ValueError(f"nt_xent: need at least 2 pairs, got batch of {a.shape[0]}")
    if not temperature > 0:
        raise ValueError(f"nt_xent: temperature must be > 0, got {temperature}")
    n = a.shape[0]
    z = F.normalize(torch.cat([a, b], dim=0), dim=1)
    logits = (z @ z.T) / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, target)


# ---- modules -----------------------------------------------------------------------------------------------
class HashHead(nn.Module):
    """UCMFH hash head: L2-normalise → Linear(d, hidden) → ReLU → Dropout → Linear(hidden, K) → tanh → L2-normalise.

    Source: Xia et al., "When CLIP meets cross-modal hashing retrieval: A new strong baseline", Information
    Fusion 2023 (authors' ``model.ImageMlp``/``TextMlp``: hidden 4096, dropout 0.3).

    Parameters
    ----------
    in_dim : int
        Input width d (UCMFH: 512, one half of the fused token).
    bits : int
        Code length K.
    hidden : int
        Hidden width (default 4096).
    dropout : float
        Dropout probability before the last layer (default 0.3).

    Notes
    -----
    Input (B, d) float; output (B, K) float, unit L2 norm, every entry in [-1, 1] (a relaxed code; the
    bit is ``h >= 0``).
    """

    def __init__(self, in_dim: int, bits: int, hidden: int = 4096, dropout: float = 0.3) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, bits)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc2(self.dropout(F.relu(self.fc1(F.normalize(x, dim=1)))))
        return F.normalize(torch.tanh(h), dim=1)


class InputAdapter(nn.Module):
    """Per-modality input adapter ``Linear(d → out_dim)``; the identity when ``d == out_dim`` (unless forced).

    The fusion methods are specified for 512-d BiomedCLIP features; other encoders (offline: 1280-d image,
    384-d text) get a learned linear map in front (methods spec, "Common ground").

    Parameters
    ----------
    in_dim : int
        Feature width d of the modality.
    out_dim : int
        Width the fusion model expects (default 512).
    force_linear : bool
        Use a Linear layer even when ``in_dim == out_dim``.

    Notes
    -----
    Input (B, in_dim) float32 → output (B, out_dim) float32.
    """

    def __init__(self, in_dim: int, out_dim: int = 512, *, force_linear: bool = False) -> None:
        super().__init__()
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        self.proj: nn.Module = (
            nn.Linear(self.in_dim, self.out_dim) if force_linear or self.in_dim != self.out_dim else nn.Identity()
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"InputAdapter: expected features of width {self.in_dim}, got shape {tuple(x.shape)}")
        return self.proj(x)


class MissingModality(nn.Module):
    """Learned "missing" vectors for image and text, and modality dropout for training.

    A fusion model sees a token built from both modalities. To encode an image alone (the unimodal
    protocol) the text slot is filled with a learned vector ``missing_text`` (and vice versa). Modality
    dropout trains that case: :func:`modality_dropout_plan` draws which training rows lose a modality and
    :meth:`assemble` builds those rows (the scheme is ours; methods spec, "Common ground", leaves it open).

    Parameters
    ----------
    dim : int
        Width of each modality slot (512 for UCMFH/MCMFH, after the input adapters).

    Notes
    -----
    Both vectors start at zero (an absent modality contributes nothing before training moves it).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = int(dim)
        self.missing_image = nn.Parameter(torch.zeros(self.dim))
        self.missing_text = nn.Parameter(torch.zeros(self.dim))

    def fill(self, image: Tensor | None, text: Tensor | None) -> tuple[Tensor, Tensor]:
        """Return ``(image, text)`` with an absent modality replaced by its missing vector.

        Parameters
        ----------
        image, text : Tensor, shape (B, dim), or None
            At least one must be given; when both are, they must have the same B.

        Returns
        -------
        tuple of Tensor, each (B, dim)

        Raises
        ------
        ValueError
            If both are ``None`` or the row counts differ.
        """
        if image is None and text is None:
            raise ValueError("MissingModality.fill: need image, text or both")
        if image is not None and text is not None:
            if image.shape[0] != text.shape[0]:
                raise ValueError(f"MissingModality.fill: image has {image.shape[0]} rows, text {text.shape[0]}")
            return image, text
        if image is None:
            assert text is not None
            return self.missing_image.expand(text.shape[0], -1), text
        return image, self.missing_text.expand(image.shape[0], -1)

    def assemble(self, image: Tensor, text: Tensor, plan: RowPlan) -> tuple[Tensor, Tensor]:
        """Model inputs of the rows of ``plan``: each row's pair with an absent modality replaced.

        Parameters
        ----------
        image, text : Tensor, shape (B, dim)
            The batch's (adapted) pairs.
        plan : RowPlan
            From :func:`modality_dropout_plan` for this batch.

        Returns
        -------
        image_in, text_in : Tensor, shape (R, dim)
            Row r holds pair ``plan.source[r]``; its image is ``missing_image`` when ``plan.kind[r] == TEXT_ALONE``
            and its text is ``missing_text`` when ``plan.kind[r] == IMAGE_ALONE``.
        """
        src, kind = plan.source.to(image.device), plan.kind.to(image.device).unsqueeze(1)
        img, txt = image.index_select(0, src), text.index_select(0, src)
        img = torch.where(kind == TEXT_ALONE, self.missing_image.expand_as(img), img)
        txt = torch.where(kind == IMAGE_ALONE, self.missing_text.expand_as(txt), txt)
        return img, txt


#: Row kinds of a :class:`RowPlan`: both modalities, image alone (text slot missing), text alone (image missing).
PAIRED, IMAGE_ALONE, TEXT_ALONE = 0, 1, 2


class RowPlan(NamedTuple):
    """Which model input rows a training batch of B pairs becomes under modality dropout.

    Attributes
    ----------
    source : Tensor, shape (R,), int64
        Pair (batch position) of each model row.
    kind : Tensor, shape (R,), int64
        ``PAIRED``, ``IMAGE_ALONE`` or ``TEXT_ALONE`` per row.
    image_rows, text_rows : Tensor, shape (B,), int64
        Row whose image-side / text-side output stands for pair i in the loss.
    """

    source: Tensor
    kind: Tensor
    image_rows: Tensor
    text_rows: Tensor


def modality_dropout_plan(n: int, p_missing: float, mode: str, generator: torch.Generator) -> RowPlan:
    """Draw modality dropout for a batch of ``n`` pairs (our choice; the methods spec leaves the scheme open).

    ``mode = "split"``: each pair, with probability ``p_missing``, becomes two unimodal rows: row i
    ``[image_i ; missing_text]`` (its image side is read) and an extra row ``[missing_image ; text_i]`` (its text
    side is read), exactly as the unimodal protocol encodes a query image and a database text, so the
    contrastive loss aligns image-alone with text-alone outputs. ``mode = "one"``: each pair, with probability
    ``p_missing``, loses exactly one of its modalities (image or text with equal probability), never both.

    Parameters
    ----------
    n : int
        Pairs in the batch.
    p_missing : float
        Probability in [0, 1); 0 gives every pair as one paired row.
    mode : {"split", "one"}
    generator : torch.Generator
        CPU generator drawing the choices: ``split`` draws ``rand(n)`` once, ``one`` twice (none for p = 0).

    Returns
    -------
    RowPlan
        R = n + (number of split pairs) rows for ``split``, R = n for ``one``.

    Raises
    ------
    ValueError
        For an unknown ``mode``.
    """
    rows = torch.arange(n)
    kind = torch.zeros(n, dtype=torch.int64)
    if p_missing <= 0:
        return RowPlan(rows, kind, rows, rows)
    if mode == "split":
        idx = (torch.rand(n, generator=generator) < p_missing).nonzero(as_tuple=True)[0]
        m = int(idx.numel())
        kind[idx] = IMAGE_ALONE
        text_rows = rows.clone()
        text_rows[idx] = torch.arange(n, n + m)
        source = torch.cat([rows, idx])
        kind = torch.cat([kind, torch.full((m,), TEXT_ALONE, dtype=torch.int64)])
        return RowPlan(source, kind, rows, text_rows)
    if mode == "one":
        drop = torch.rand(n, generator=generator) < p_missing
        which = torch.rand(n, generator=generator) < 0.5  # True: drop the image, False: drop the text
        kind[drop & which] = TEXT_ALONE
        kind[drop & ~which] = IMAGE_ALONE
        return RowPlan(rows, kind, rows, rows)
    raise ValueError(f"modality_dropout_plan: mode must be 'split' or 'one', got {mode!r}")


def single_token_attention(attn: nn.MultiheadAttention, x: Tensor) -> Tensor:
    """Self-attention of length-1 sequences, ``out_proj(d ⊙ v_proj(x))``, for tokens ``x`` (N, dim).

    With one key the attention weight of every head is exactly 1, so ``nn.MultiheadAttention`` on a
    (N, 1, dim) batch returns ``out_proj`` of the value projection; in training mode its attention dropout
    zeroes that weight per (item, head) with probability ``p`` (else scales it by 1/(1 − p)), reproduced here
    by the per-head mask ``d``. The query and key projections are skipped (a third of the cost); they never
    receive gradient at S = 1 in either form.

    Parameters
    ----------
    attn : nn.MultiheadAttention
        With a packed ``in_proj_weight`` (query, key and value of the same width).
    x : Tensor, shape (N, dim)

    Returns
    -------
    Tensor, shape (N, dim)
    """
    d, h = attn.embed_dim, attn.num_heads
    bias = attn.in_proj_bias[2 * d :] if attn.in_proj_bias is not None else None
    v = F.linear(x, attn.in_proj_weight[2 * d :], bias)
    if attn.training and attn.dropout > 0:
        keep = F.dropout(v.new_ones(x.shape[0], h, 1), attn.dropout, training=True)
        v = (v.view(x.shape[0], h, d // h) * keep).view(x.shape[0], d)
    return attn.out_proj(v)


# ---- seeding, batching, early stopping -----------------------------------------------------------------------
def make_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (for shuffles, dropout choices and masks)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(int(seed))
    return gen


@contextlib.contextmanager
def seeded(seed: int, device: str = "cpu") -> Iterator[None]:
    """Run a block with torch's global RNG seeded by ``seed``, restoring the caller's RNG state afterwards.

    Weight initialisation and ``nn.Dropout`` draw from the global RNG; wrapping a whole ``fit`` in this
    block makes it reproducible (same seed ⇒ same weights ⇒ same codes on CPU) without disturbing the
    caller's random stream.

    Parameters
    ----------
    seed : int
    device : str
        ``"cpu"`` or a CUDA device; the CUDA RNG of that device is forked and seeded too.
    """
    devices = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(int(seed))
        yield


def minibatches(n: int, batch_size: int, generator: torch.Generator | None = None, *, min_last: int = 2) -> list[Tensor]:
    """Split ``range(n)`` into batches of index tensors, shuffled by ``generator`` when given.

    Parameters
    ----------
    n : int
        Number of items.
    batch_size : int
    generator : torch.Generator or None
        Shuffle with this generator; ``None`` keeps the order.
    min_last : int
        A final partial batch smaller than this is dropped (a contrastive loss needs >= 2 items);
        default 2 so at most one item per epoch is left out of training.

    Returns
    -------
    list of Tensor, each (b,), int64
    """
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(order.split(batch_size))
    if batches and len(batches[-1]) < min_last:
        batches.pop()
    return batches


def as_tensor(x: np.ndarray, device: str | torch.device, name: str = "features") -> Tensor:
    """``x`` as a float32 tensor on ``device``; non-finite values raise ``ValueError`` naming ``name``."""
    arr = np.asarray(x, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(arr)).to(device)


def state_to_cpu(module: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of ``module.state_dict()`` (for snapshots and ``get_state``)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


class EarlyStopping:
    """Track a validation loss per epoch, keep the best weights, and say when to stop.

    Stops when the loss has not improved by more than ``min_delta`` for ``patience`` consecutive epochs.

    Parameters
    ----------
    patience : int
        Epochs without improvement before stopping (>= 1).
    min_delta : float
        Smallest decrease that counts as an improvement (absolute, in loss units).

    Attributes
    ----------
    best : float
        Lowest loss seen (``inf`` before the first update).
    best_epoch : int
        1-based epoch of ``best`` (0 before the first update).
    epochs : int
        Number of updates so far (epochs run).
    history : list of float
        Every loss given to :meth:`update`.

    Examples
    --------
    >>> stop = EarlyStopping(patience=2)
    >>> [stop.update(v) for v in (3.0, 2.0, 2.5, 2.1)]
    [False, False, False, True]
    >>> stop.best, stop.best_epoch
    (2.0, 2)
    """

    def __init__(self, patience: int, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError(f"EarlyStopping: patience must be >= 1, got {patience}")
        self.patience = int(patience)
        self.min_delta = float(min_delta)
        self.best = math.inf
        self.best_epoch = 0
        self.epochs = 0
        self.history: list[float] = []
        self.best_state: Any = None

    def update(self, loss: float, model: nn.Module | None = None) -> bool:
        """Record one epoch's validation ``loss``; snapshot ``model`` when it is the best so far.

        Returns
        -------
        bool
            ``True`` when training should stop.

        Raises
        ------
        ValueError
            If ``loss`` is NaN (training diverged).
        """
        if math.isnan(loss):
            raise ValueError(f"validation loss is NaN at epoch {self.epochs + 1} (training diverged)")
        self.epochs += 1
        self.history.append(float(loss))
        if loss < self.best - self.min_delta:
            self.best, self.best_epoch = float(loss), self.epochs
            if model is not None:
                self._snapshot(model)
        return self.epochs - self.best_epoch >= self.patience

    def _snapshot(self, model: nn.Module) -> None:
        """Copy ``model``'s state into the snapshot, reusing its buffers when the layout matches (a fresh
        ~200 MB allocation per improvement costs page faults on every copy)."""
        state = model.state_dict()
        old = self.best_state
        if not isinstance(old, dict) or old.keys() != state.keys() or any(
            old[k].shape != v.shape or old[k].dtype != v.dtype for k, v in state.items()
        ):
            self.best_state = state_to_cpu(model)
            return
        with torch.no_grad():
            for k, v in state.items():
                old[k].copy_(v.detach())

    def restore(self, model: nn.Module) -> None:
        """Load the best snapshot into ``model`` (no-op when none was taken)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)
