"""MCMFH's building blocks: the dropout-voting MLP, the mixture-of-experts feed-forward block and its gating
losses, and the post-norm fusion layer that hosts it.

Sources: Ahn, Jang, Jang, "Enhancing Medical Cross-Modal Hashing Retrieval using Dropout-Voting
Mixture-of-Experts Fusion", arXiv 2512.06449 (the parts); Shazeer et al., "Outrageously Large Neural
Networks", ICLR 2017 (top-k routing); Fedus, Zoph, Shazeer, "Switch Transformers", JMLR 2022 (load
balancing); Zoph et al., "ST-MoE", arXiv 2202.08906 (router z-loss). Our reading of the unstated details is
in ``../shared/spec/methods.md`` (MCMFH).

Speed (issue 15): the ``T_dv`` voting passes run as ONE batched forward (one matmul over ``T_dv · B`` rows),
and the experts are dispatched grouped (tokens sorted by expert, one contiguous matmul per expert that
receives tokens), so a forward costs the top-k FLOPs and a handful of kernel calls at any batch size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from methods.nn import single_token_attention

__all__ = ["DropoutVotingMLP", "FusionLayer", "MoEFeedForward", "load_balancing_loss", "router_z_loss"]


# ---- losses ------------------------------------------------------------------------------------------------
def load_balancing_loss(probs: Tensor, assignments: Tensor) -> Tensor:
    """Switch-Transformer load-balancing loss ``E · Σ_e f_e · P_e``.

    Source: Fedus, Zoph, Shazeer, "Switch Transformers", JMLR 2022, eq. (4)-(6); for top-k routing f_e counts
    each of a token's k assignments (so Σ_e f_e = 1).

    Parameters
    ----------
    probs : Tensor, shape (N, E), float
        Router probabilities (softmax over experts) of N tokens.
    assignments : Tensor, shape (N, k), int64
        The k experts each token is routed to.

    Returns
    -------
    Tensor, shape ()
        ``E · Σ_e f_e P_e`` with ``f_e = #{(n, j): assignments[n, j] = e} / (N k)`` (no gradient) and
        ``P_e = mean_n probs[n, e]``. Equals 1 when routing is balanced (f_e = 1/E) or probabilities are
        uniform; for tokens sharing one probability vector it is >= 1 with equality iff the top-k mass is k/E.
    """
    n, e = probs.shape
    counts = torch.bincount(assignments.reshape(-1), minlength=e).to(probs.dtype)
    f = counts / max(assignments.numel(), 1)
    p = probs.mean(dim=0)
    return e * (f.detach() * p).sum()


def router_z_loss(logits: Tensor) -> Tensor:
    """Router z-loss ``mean_n (logsumexp_e logits[n, e])²`` (Zoph et al., "ST-MoE", arXiv 2202.08906, eq. 5).

    Parameters
    ----------
    logits : Tensor, shape (N, E)
        Router logits (before softmax).

    Returns
    -------
    Tensor, shape ()
    """
    return torch.logsumexp(logits, dim=1).pow(2).mean()


# ---- dropout voting ----------------------------------------------------------------------------------------
class DropoutVotingMLP(nn.Module):
    """Residual MLP whose dropout is "voted": ``mean_t LayerNorm(x + W2 · (m_t ⊙ GELU(W1 x)))``.

    Training: each of the ``t_dv`` passes draws ordinary inverted-dropout masks per element (global RNG).
    Evaluation: pass t uses the fixed mask ``eval_masks[t]`` (a buffer drawn once from the seed by
    :meth:`draw_masks`, shared by every item), so outputs are deterministic and per-item. ``W1 x`` is
    computed once; the ``t_dv`` masked copies go through ``W2`` and the LayerNorm as one (T·B, dim) batch.

    Parameters
    ----------
    dim : int
        Token width (1024).
    p : float
        Dropout probability p_dv in [0, 1).
    passes : int
        Number of voting passes T_dv >= 1.

    Notes
    -----
    Input (B, dim) → output (B, dim). ``vote_pass`` (None or an index) restricts the forward pass to one
    fixed mask, for the bit-wise majority vote over whole-network passes.
    """

    def __init__(self, dim: int, p: float, passes: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.p, self.passes = float(p), int(passes)
        self.register_buffer("eval_masks", torch.ones(self.passes, dim))
        self.vote_pass: int | None = None

    def draw_masks(self, generator: torch.Generator) -> None:
        """Draw the fixed evaluation masks (T_dv, dim): Bernoulli(1 − p) / (1 − p), from ``generator``."""
        keep = (torch.rand(self.eval_masks.shape, generator=generator) >= self.p).float()
        self.eval_masks.copy_(keep / (1.0 - self.p))

    def forward(self, x: Tensor) -> Tensor:
        h = F.gelu(self.fc1(x))
        if self.training:
            hm = F.dropout(h.unsqueeze(0).expand(self.passes, -1, -1), self.p, training=True)
        elif self.vote_pass is None:
            hm = h.unsqueeze(0) * self.eval_masks.unsqueeze(1)
        else:
            return self.norm(x + self.fc2(h * self.eval_masks[self.vote_pass]))
        out = self.norm(x.unsqueeze(0) + self.fc2(hm))  # (T, B, dim)
        return out.mean(dim=0) if out.shape[0] > 1 else out[0]


# ---- mixture of experts ------------------------------------------------------------------------------------
class MoEFeedForward(nn.Module):
    """Mixture-of-experts feed-forward block with top-k routing (or dense soft gating).

    Parameters
    ----------
    dim, hidden : int
        Expert Linear(dim, hidden) → ReLU → Dropout → Linear(hidden, dim).
    n_experts, top_k : int
        E experts; each token goes to its k most probable experts, gates renormalised to sum to 1.
    dropout : float
        Dropout inside each expert.
    dense : bool
        Dense gating: every expert, weighted by the full softmax (load f_e is then P_e).

    Notes
    -----
    ``forward(x (N, dim)) -> out (N, dim)``; the last call's routing is kept in ``last`` (``probs`` (N, E),
    ``logits`` (N, E), ``topi`` (N, k), ``gates`` (N, k), ``counts`` (E,) assignments per expert) and the
    gating loss in ``last["balance"]``, ``last["z"]`` (zero under ``torch.inference_mode``, where nothing can
    train on it: encoding skips that bookkeeping). Top-k dispatch is grouped: the N·k (token, expert)
    assignments are sorted by expert (stable), each expert runs once on its contiguous block, and each token's
    k gated outputs are summed in routing order (deterministic, no atomics).
    """

    def __init__(self, dim: int, hidden: int, n_experts: int, top_k: int, dropout: float, dense: bool = False) -> None:
        super().__init__()
        self.router = nn.Linear(dim, n_experts)
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
            for _ in range(n_experts)
        )
        self.n_experts, self.top_k, self.dense = int(n_experts), int(top_k), bool(dense)
        self.last: dict[str, Tensor] = {}

    def route(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Router logits, probabilities, chosen experts and renormalised gates for tokens ``x`` (N, dim).

        Returns
        -------
        logits, probs : Tensor, (N, E)
        topi : Tensor, (N, k) int64 — experts in decreasing probability
        gates : Tensor, (N, k) — ``probs[topi] / probs[topi].sum()`` per token (sums to 1)
        """
        logits = self.router(x)
        probs = logits.softmax(dim=1)
        topv, topi = probs.topk(self.top_k, dim=1)
        gates = topv / topv.sum(dim=1, keepdim=True)
        return logits, probs, topi, gates

    def dispatch(self, x: Tensor, topi: Tensor, gates: Tensor) -> Tensor:
        """``out[n] = Σ_j gates[n, j] · expert_{topi[n, j]}(x[n])`` by grouped dispatch (see class notes).

        Parameters
        ----------
        x : Tensor, (N, dim)
        topi : Tensor, (N, k) int64
        gates : Tensor, (N, k)

        Returns
        -------
        Tensor, (N, dim)
        """
        n, k = topi.shape
        if n == 1:  # one token (batch-size-1 encoding): its k experts directly, fewer kernel calls
            chosen, g = topi[0].tolist(), gates[0]
            out = g[0] * self.experts[chosen[0]](x)
            for j in range(1, k):
                out = out + g[j] * self.experts[chosen[j]](x)
            return out
        flat = topi.reshape(-1)
        order = torch.argsort(flat, stable=True)
        sizes = torch.bincount(flat, minlength=self.n_experts).tolist()
        xs = x.index_select(0, order // k)
        parts = [self.experts[e](chunk) for e, chunk in enumerate(xs.split(sizes)) if sizes[e]]
        ys = torch.cat(parts) if len(parts) > 1 else parts[0]
        ys = ys * gates.reshape(-1).index_select(0, order).unsqueeze(1)
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel(), device=order.device)
        return ys.index_select(0, inverse).view(n, k, -1).sum(dim=1)

    def forward(self, x: Tensor) -> Tensor:
        logits, probs, topi, gates = self.route(x)
        inference = torch.is_inference_mode_enabled()
        if self.dense:
            out = sum(probs[:, e : e + 1] * expert(x) for e, expert in enumerate(self.experts))
            counts = probs.detach().sum(dim=0)
            balance = x.new_zeros(()) if inference else self.n_experts * (probs.mean(dim=0) ** 2).sum()
        else:
            out = self.dispatch(x, topi, gates)
            counts = torch.bincount(topi.reshape(-1), minlength=self.n_experts).float()
            balance = x.new_zeros(()) if inference else load_balancing_loss(probs, topi)
        self.last = {
            "logits": logits,
            "probs": probs,
            "topi": topi,
            "gates": gates,
            "counts": counts.detach(),
            "balance": balance,
            "z": x.new_zeros(()) if inference else router_z_loss(logits),
        }
        return out  # type: ignore[return-value]


class FusionLayer(nn.Module):
    """Post-norm transformer encoder layer (as ``nn.TransformerEncoderLayer``) with a dense or MoE feed-forward.

    ``x = LN1(x + Drop(SelfAttn(x)));  x = LN2(x + Drop(FF(x)))`` on (B, S, dim) batch-first input.
    For S = 1 self-attention is computed by :func:`methods.nn.single_token_attention` (the same function,
    attention-weight dropout included, at a third of the projection cost).
    """

    def __init__(self, dim: int, n_heads: int, hidden: int, dropout: float, moe: MoEFeedForward | None) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, n_heads, dropout=dropout, batch_first=True)
        self.ff: nn.Module = moe if moe is not None else nn.Sequential(
            nn.Linear(dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, dim)
        )
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout1, self.dropout2 = nn.Dropout(dropout), nn.Dropout(dropout)

    def _attend(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            return single_token_attention(self.self_attn, x.squeeze(1)).unsqueeze(1)
        return self.self_attn(x, x, x, need_weights=False)[0]

    def forward(self, x: Tensor) -> Tensor:
        b, s, d = x.shape
        x = self.norm1(x + self.dropout1(self._attend(x)))
        return self.norm2(x + self.dropout2(self.ff(x.reshape(b * s, d)).reshape(b, s, d)))
