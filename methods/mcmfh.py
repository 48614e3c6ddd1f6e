"""MCMFH: dropout-voting mixture-of-experts fusion hashing (the headline method), and its ablations.

Source: Ahn, Jang, Jang, "Enhancing Medical Cross-Modal Hashing Retrieval using Dropout-Voting
Mixture-of-Experts Fusion", arXiv 2512.06449 (MMGenSR workshop at CIKM 2025). No public code; the paper
names the parts (frozen dropout-voting MLP, MoE fusion transformer with a hybrid gating loss, hashing MLP,
fusion + load-balancing + contrastive objective) and builds on UCMFH. Every unstated detail is our reading
in ``../shared/spec/methods.md`` (MCMFH), each a config option:

- token ``x = [f_img ; f_txt]`` (1024-d) as UCMFH (adapters and missing-modality vectors as UCMFH);
- DV-MLP ``x' = LayerNorm(x + MLP(x))``, MLP = Linear(1024,1024) → GELU → Dropout(p_dv) → Linear(1024,1024);
  soft vote = mean of ``T_dv`` passes with dropout active; at evaluation the ``T_dv`` masks are fixed,
  drawn once from the seed (one mask per pass, shared by all items, so a code depends on its own input only);
- two-stage training: stage 1 trains adapters, missing vectors, DV-MLP and the fusion transformer with the
  fusion NT-Xent (+ the gating loss, as the router trains too); stage 2 freezes everything before the
  fusion transformer ("frozen DV-MLP") and trains the MoE transformer and hash heads with the hybrid loss;
- MoE transformer: UCMFH's encoder with each feed-forward block replaced by E = 4 experts (Linear(1024,2048)
  → ReLU → Dropout(0.1) → Linear(2048,1024)), router Linear(1024, E) + softmax, top-k = 2 with renormalised
  gates (Shazeer et al., ICLR 2017; Fedus et al., "Switch Transformers", JMLR 2022);
- hybrid gating loss ``L_gate = L_balance + 1e-3 · L_z``: ``L_balance = E · Σ_e f_e P_e`` (Switch
  Transformers eq. 4, f_e = fraction of token-to-expert assignments going to e, P_e = mean router
  probability) and the router z-loss ``L_z = mean_n (logsumexp_e r_ne)²`` (Zoph et al., "ST-MoE", 2022);
  averaged over the MoE layers;
- total ``L = NTXent(F_img, F_txt) + 0.5 · NTXent(H_img, H_txt) + 0.01 · L_gate``.

Ablations registered as variants: ``mcmfh-no-moe`` (dense feed-forward), ``mcmfh-no-dv`` (DV-MLP removed),
``mcmfh-no-gate`` (λ_g = 0), ``mcmfh-no-stage1`` (one joint stage, DV-MLP trained, not frozen).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from medhash_datasets.base import FeatureSplit
from methods import register_method, register_variant
from methods.base import ConfigError, MethodConfig, check_range
from methods.nn import make_generator
from methods.ucmfh import FusionConfig, FusionHashingMethod, FusionNet, _check_choice

__all__ = [
    "MCMFH",
    "DropoutVotingMLP",
    "FusionLayer",
    "MCMFHConfig",
    "MoEFeedForward",
    "MoEFusion",
    "load_balancing_loss",
    "router_z_loss",
]


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


# ---- modules -----------------------------------------------------------------------------------------------
class DropoutVotingMLP(nn.Module):
    """Residual MLP whose dropout is "voted": ``mean_t LayerNorm(x + W2 · (m_t ⊙ GELU(W1 x)))``.

    Training: each of the ``t_dv`` passes draws ordinary inverted-dropout masks per element (global RNG).
    Evaluation: pass t uses the fixed mask ``eval_masks[t]`` (a buffer drawn once from the seed by
    :meth:`draw_masks`, shared by every item), so outputs are deterministic and per-item.

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
            outs = [self.norm(x + self.fc2(F.dropout(h, self.p, training=True))) for _ in range(self.passes)]
        else:
            passes = range(self.passes) if self.vote_pass is None else [self.vote_pass]
            outs = [self.norm(x + self.fc2(h * self.eval_masks[t])) for t in passes]
        return torch.stack(outs).mean(dim=0) if len(outs) > 1 else outs[0]


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
    gating loss in ``last["balance"]``, ``last["z"]``.
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

    def forward(self, x: Tensor) -> Tensor:
        logits, probs, topi, gates = self.route(x)
        if self.dense:
            out = sum(probs[:, e : e + 1] * expert(x) for e, expert in enumerate(self.experts))
            counts = probs.detach().sum(dim=0)
            balance = self.n_experts * (probs.mean(dim=0) ** 2).sum()
        else:
            out = torch.zeros_like(x)
            for e, expert in enumerate(self.experts):
                token, slot = (topi == e).nonzero(as_tuple=True)
                if token.numel():
                    out = out.index_add(0, token, gates[token, slot].unsqueeze(1) * expert(x[token]))
            counts = torch.bincount(topi.reshape(-1), minlength=self.n_experts).float()
            balance = load_balancing_loss(probs, topi)
        self.last = {
            "logits": logits,
            "probs": probs,
            "topi": topi,
            "gates": gates,
            "counts": counts.detach(),
            "balance": balance,
            "z": router_z_loss(logits),
        }
        return out  # type: ignore[return-value]


class FusionLayer(nn.Module):
    """Post-norm transformer encoder layer (as ``nn.TransformerEncoderLayer``) with a dense or MoE feed-forward.

    ``x = LN1(x + Drop(SelfAttn(x)));  x = LN2(x + Drop(FF(x)))`` on (B, S, dim) batch-first input.
    For S = 1 self-attention reduces exactly to ``out_proj(v_proj(x))`` (softmax over one key is 1), which is
    computed directly (same function, a third of the projection cost).
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
            d = x.shape[-1]
            attn = self.self_attn
            v = F.linear(x, attn.in_proj_weight[2 * d :], attn.in_proj_bias[2 * d :])
            return attn.out_proj(v)
        return self.self_attn(x, x, x, need_weights=False)[0]

    def forward(self, x: Tensor) -> Tensor:
        b, s, d = x.shape
        x = self.norm1(x + self.dropout1(self._attend(x)))
        return self.norm2(x + self.dropout2(self.ff(x.reshape(b * s, d)).reshape(b, s, d)))


class MoEFusion(nn.Module):
    """MCMFH fusion transformer: ``n_layers`` :class:`FusionLayer` with MoE (or dense) feed-forward blocks.

    Token layouts:
    ``concat`` — one 1024-d token per pair (a length-1 sequence, as UCMFH);
    ``pair`` — two 512-d tokens (image half, text half of the front output) plus learned modality
    embeddings, a length-2 sequence whose outputs are concatenated back to 1024 dims.

    Notes
    -----
    ``forward(tokens (B, 1024)) -> (out (B, 1024), gate_loss scalar)``; ``gate_loss`` is
    ``mean over MoE layers of (L_balance + z_weight · L_z)`` (0 without MoE).
    """

    def __init__(self, cfg: MCMFHConfig) -> None:
        super().__init__()
        self.layout = cfg.token_layout
        self.slot = slot = cfg.slot_dim
        dim = 2 * slot if self.layout == "concat" else slot
        self.z_weight = cfg.z_weight
        layers = []
        for _ in range(cfg.n_layers):
            moe = (
                MoEFeedForward(dim, cfg.dim_feedforward, cfg.n_experts, cfg.top_k, cfg.dropout, cfg.dense_gating)
                if cfg.moe
                else None
            )
            layers.append(FusionLayer(dim, cfg.n_heads, cfg.dim_feedforward, cfg.dropout, moe))
        self.layers = nn.ModuleList(layers)
        self.modality_embedding = nn.Parameter(torch.zeros(2, slot)) if self.layout == "pair" else None
        if self.modality_embedding is not None:
            nn.init.normal_(self.modality_embedding, std=0.02)

    def moe_blocks(self) -> list[MoEFeedForward]:
        return [layer.ff for layer in self.layers if isinstance(layer.ff, MoEFeedForward)]

    def forward(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        b = tokens.shape[0]
        if self.layout == "concat":
            x = tokens.unsqueeze(1)
        else:
            assert self.modality_embedding is not None
            x = tokens.reshape(b, 2, self.slot) + self.modality_embedding
        for layer in self.layers:
            x = layer(x)
        blocks = self.moe_blocks()
        if blocks:
            gate = torch.stack([blk.last["balance"] + self.z_weight * blk.last["z"] for blk in blocks]).mean()
        else:
            gate = tokens.new_zeros(())
        return x.reshape(b, 2 * self.slot), gate


# ---- config and method -----------------------------------------------------------------------------------------
@dataclass
class MCMFHConfig(FusionConfig):
    """MCMFH config: the UCMFH training defaults plus the DV-MLP, MoE, gating-loss and schedule options.

    Attributes
    ----------
    epochs, epochs_stage1 : int
        Epoch caps of stage 2 (20) and stage 1 (8), early stopping (``patience`` 4, ``min_delta`` 0.01 on
        the validation loss) in each. Ours, chosen for the time budget: one epoch on MedPix (1,653 pairs)
        costs about 7 CPU-seconds on one core, so at most 28 epochs keep a 16-bit fit under 3 minutes on 2
        cores; the validation loss moves by < 1 % per epoch after ~8 stage-1 epochs.
    stage1 : bool
        Two-stage training (default). ``False``: one joint stage with the hybrid loss, DV-MLP trained.
    dv : bool
        Use the DV-MLP (``False``: removed, the "no dropout voting" ablation).
    p_dv : float
        DV-MLP dropout probability (0.2).
    t_dv : int
        Voting passes T_dv (5).
    dv_vote : str
        ``"soft"`` (mean of the T_dv DV-MLP outputs) or ``"majority"`` (at encode: bit-wise majority over
        T_dv passes of the whole network, each with one fixed mask; relaxed code = mean of ±1 bits).
    moe : bool
        MoE feed-forward blocks (``False``: dense, the "no MoE" ablation).
    n_experts, top_k : int
        E (4) and k (2).
    dense_gating : bool
        Weight every expert by the full softmax instead of top-k routing.
    gate_weight : float
        λ_g, weight of L_gate in the total loss (0.01; 0 is the "no gating loss" ablation).
    z_weight : float
        Weight of the router z-loss inside L_gate (1e-3).
    token_layout : str
        ``"concat"`` (one 1024-d token) or ``"pair"`` (two 512-d tokens with modality embeddings).
    """

    epochs: int = 20
    epochs_stage1: int = 8
    stage1: bool = True
    dv: bool = True
    p_dv: float = 0.2
    t_dv: int = 5
    dv_vote: str = "soft"
    moe: bool = True
    n_experts: int = 4
    top_k: int = 2
    dense_gating: bool = False
    gate_weight: float = 0.01
    z_weight: float = 1e-3
    token_layout: str = "concat"

    def validate(self) -> None:
        super().validate()
        check_range(self, "epochs_stage1", 0)
        check_range(self, "p_dv", 0.0, 0.95)
        check_range(self, "t_dv", 1)
        check_range(self, "n_experts", 1)
        check_range(self, "top_k", 1, self.n_experts)
        check_range(self, "gate_weight", 0.0)
        check_range(self, "z_weight", 0.0)
        _check_choice(self, "dv_vote", ("soft", "majority"))
        _check_choice(self, "token_layout", ("concat", "pair"))
        if self.token_layout == "pair" and self.slot_dim % self.n_heads:
            raise ConfigError(f"MCMFHConfig.n_heads = {self.n_heads} must divide the pair-token width {self.slot_dim}")
        if self.dv_vote == "majority" and not self.dv:
            raise ConfigError("MCMFHConfig.dv_vote = 'majority' needs dv = True")


@register_method("mcmfh", tags=("fusion", "unsupervised", "headline"))
class MCMFH(FusionHashingMethod):
    """MCMFH (Ahn et al., 2025): dropout-voting MLP + mixture-of-experts fusion transformer + contrastive hashing.

    ``info()`` adds ``expert_load``: per expert, the fraction of token-to-expert assignments it receives,
    averaged over the MoE layers, measured after ``fit`` (best weights restored) on the training split's
    paired inputs in evaluation mode; ``expert_load_per_layer`` gives each layer's values.
    """

    config_class: ClassVar[type[MethodConfig]] = MCMFHConfig

    def __init__(self, config: MethodConfig | None = None, *, device: str = "cpu") -> None:
        super().__init__(config, device=device)
        self.expert_load: list[list[float]] = []

    def _build_front(self) -> nn.Module:
        cfg = self.config
        return DropoutVotingMLP(2 * cfg.slot_dim, cfg.p_dv, cfg.t_dv) if cfg.dv else nn.Identity()

    def _build_fusion(self) -> nn.Module:
        return MoEFusion(self.config)  # type: ignore[arg-type]

    def _after_build(self, net: FusionNet, seed: int) -> None:
        if isinstance(net.front, DropoutVotingMLP):
            # A generator of its own (seed offset by a fixed prime) so the masks do not shift other draws.
            net.front.draw_masks(make_generator(seed + 7919))

    def _aux_weight(self) -> float:
        return self.config.gate_weight if self.config.moe else 0.0

    def _stages(self) -> list[dict[str, Any]]:
        cfg = self.config
        if not cfg.stage1:
            return [{"name": "joint", "epochs": cfg.epochs, "hash": True, "freeze_front": False}]
        return [
            {"name": "stage1", "epochs": cfg.epochs_stage1, "hash": False, "freeze_front": False},
            {"name": "stage2", "epochs": cfg.epochs, "hash": True, "freeze_front": True},
        ]

    def fit(self, train: FeatureSplit, validation: FeatureSplit, bits: int, seed: int) -> MCMFH:
        """Train as :meth:`FusionHashingMethod.fit` (two stages by default), then measure the expert load."""
        super().fit(train, validation, bits, seed)
        n = self.history["n_train"]
        self.expert_load = self._measure_load(train.image[:n], train.text[:n])
        return self

    @torch.inference_mode()
    def _measure_load(self, image: np.ndarray, text: np.ndarray) -> list[list[float]]:
        """Per MoE layer, the fraction of assignments per expert over paired inputs (eval mode)."""
        assert self.net is not None
        fusion = self.net.fusion
        assert isinstance(fusion, MoEFusion)
        blocks = fusion.moe_blocks()
        if not blocks:
            return []
        totals = [torch.zeros(self.config.n_experts) for _ in blocks]
        self.net.eval()
        step = self.config.encode_batch_size
        for start in range(0, image.shape[0], step):
            img = torch.from_numpy(np.ascontiguousarray(image[start : start + step], np.float32)).to(self.device)
            txt = torch.from_numpy(np.ascontiguousarray(text[start : start + step], np.float32)).to(self.device)
            self.net.fuse(self.net.tokens(img, txt))
            for tot, blk in zip(totals, blocks):
                tot += blk.last["counts"].float().cpu()
        return [(tot / tot.sum()).tolist() for tot in totals]

    def _encode_chunk(self, image: Tensor | None, text: Tensor | None, which: str) -> tuple[Tensor | None, Tensor | None]:
        assert self.net is not None
        front = self.net.front
        if self.config.dv_vote != "majority" or not isinstance(front, DropoutVotingMLP):
            return super()._encode_chunk(image, text, which)
        votes: list[tuple[Tensor | None, Tensor | None]] = []
        try:
            for t in range(front.passes):
                front.vote_pass = t
                votes.append(super()._encode_chunk(image, text, which))
        finally:
            front.vote_pass = None

        def majority(side: int) -> Tensor | None:
            if votes[0][side] is None:
                return None
            signs = torch.stack([torch.where(v[side] >= 0, 1.0, -1.0) for v in votes])  # type: ignore[index]
            return signs.mean(dim=0)

        return majority(0), majority(1)

    def info(self) -> dict[str, Any]:
        """Base facts (epochs per stage) plus ``expert_load`` (E floats, mean over MoE layers; empty without MoE)
        and ``expert_load_per_layer``."""
        out = super().info()
        if self.expert_load:
            out["expert_load"] = [float(v) for v in np.mean(np.asarray(self.expert_load), axis=0)]
            out["expert_load_per_layer"] = self.expert_load
        else:
            out["expert_load"] = []
        return out

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()
        state["expert_load"] = self.expert_load
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        super().set_state(state)
        self.expert_load = [list(map(float, layer)) for layer in state.get("expert_load", [])]

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """UCMFH's space plus E, top-k, λ_g, p_dv, T_dv and the stage-1 epoch cap."""
        space = super().search_space(trial)
        n_experts = trial.suggest_categorical("n_experts", [2, 4, 8])
        space.update(
            n_experts=n_experts,
            top_k=min(trial.suggest_categorical("top_k", [1, 2]), n_experts),
            gate_weight=trial.suggest_float("gate_weight", 1e-3, 1e-1, log=True),
            p_dv=trial.suggest_float("p_dv", 0.05, 0.5),
            t_dv=trial.suggest_categorical("t_dv", [1, 3, 5, 9]),
            epochs_stage1=trial.suggest_int("epochs_stage1", 0, 20, step=5),
        )
        return space


register_variant("mcmfh-no-moe", "mcmfh", description="MCMFH ablation: dense feed-forward instead of MoE", moe=False)
register_variant("mcmfh-no-dv", "mcmfh", description="MCMFH ablation: DV-MLP removed (no dropout voting)", dv=False)
register_variant("mcmfh-no-gate", "mcmfh", description="MCMFH ablation: no gating loss (λ_g = 0)", gate_weight=0.0)
register_variant(
    "mcmfh-no-stage1", "mcmfh", description="MCMFH ablation: one joint stage (no fusion pre-training, DV-MLP trained)", stage1=False
)

