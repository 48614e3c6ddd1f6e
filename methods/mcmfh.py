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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from medhash_datasets.base import FeatureSplit
from methods import register_method, register_variant
from methods.base import ConfigError, MethodConfig, check_range
from methods.fusion import FusionHashingMethod
from methods.fusion_net import FusionConfig, FusionNet, check_choice
from methods.moe import DropoutVotingMLP, FusionLayer, MoEFeedForward, load_balancing_loss, router_z_loss
from methods.nn import make_generator

__all__ = [
    "COLLAPSE_SHARE",
    "MCMFH",
    "DropoutVotingMLP",
    "FusionLayer",
    "MCMFHConfig",
    "MoEFeedForward",
    "MoEFusion",
    "load_balancing_loss",
    "router_z_loss",
]

#: A router has collapsed when one expert receives more than this fraction of the tokens (issue 13 item 2).
COLLAPSE_SHARE = 0.9


class MoEFusion(nn.Module):
    """MCMFH fusion transformer: ``n_layers`` :class:`FusionLayer` with MoE (or dense) feed-forward blocks.

    Token layouts:
    ``concat`` — one 1024-d token per pair (a length-1 sequence, as UCMFH);
    ``pair`` — two 512-d tokens (image half, text half of the front output) plus learned modality
    embeddings, a length-2 sequence whose outputs are concatenated back to 1024 dims.

    Notes
    -----
    ``forward(tokens (B, 1024)) -> (out (B, 1024), gate_loss scalar)``; ``gate_loss`` is
    ``mean over MoE layers of (L_balance + z_weight · L_z)`` (0 without MoE, and under ``torch.inference_mode``).
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
        if blocks and not torch.is_inference_mode_enabled():
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
        Epoch caps of stage 2 (20) and stage 1 (8); in each stage the epoch is selected by validation mAP and
        training stops after ``patience`` (4) evaluations without improvement (:class:`methods.fusion_net.FusionConfig`).
        Ours, chosen for the time budget: one epoch on MedPix (1,653 pairs) costs about 7 CPU-seconds on one
        core, so at most 28 epochs keep a 16-bit fit under 3 minutes on 2 cores. Both caps are in the search
        space (the tuned MedPix study chose 14 + 40).
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
        check_choice(self, "dv_vote", ("soft", "majority"))
        check_choice(self, "token_layout", ("concat", "pair"))
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
    EPOCH_CAP_RANGE: ClassVar[tuple[int, int, int]] = (10, 40, 5)

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

    def _after_stage(
        self, net: FusionNet, stage: dict[str, Any], train: FeatureSplit, tokens: Callable[[Any, Any], Tensor]
    ) -> None:
        """After the last stage: measure the expert load on the training split's paired inputs (eval mode)."""
        if stage["name"] == self._stages()[-1]["name"]:
            self.expert_load = self._measure_load(tokens(train.image, train.text))

    @torch.inference_mode()
    def _measure_load(self, tokens: Tensor) -> list[list[float]]:
        """Per MoE layer, the fraction of token-to-expert assignments per expert over front ``tokens`` (n, 1024)."""
        assert self.net is not None
        fusion = self.net.fusion
        assert isinstance(fusion, MoEFusion)
        blocks = fusion.moe_blocks()
        if not blocks:
            return []
        totals = [torch.zeros(self.config.n_experts) for _ in blocks]
        step = self.config.encode_batch_size
        for start in range(0, tokens.shape[0], step):
            fusion(tokens[start : start + step])
            for tot, blk in zip(totals, blocks):
                tot += blk.last["counts"].float().cpu()
        return [(tot / tot.sum()).tolist() for tot in totals]

    def _encode_is_token_path(self) -> bool:
        return not (self.config.dv_vote == "majority" and self.config.dv)

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
        """Base facts (epochs per stage, selection) plus the routing facts.

        Returns
        -------
        dict
            Adds ``expert_load`` (E floats, mean over MoE layers; empty without MoE), ``expert_load_per_layer``,
            ``router_max_share`` (largest fraction of tokens any expert receives in any layer: its share of the
            N·k assignments times k, in [0, 1]; ``None`` without MoE) and ``router_collapse`` (bool: that
            fraction exceeds :data:`COLLAPSE_SHARE` while routing has a choice, E > k — for top-1 routing, one
            expert taking > 90 % of the assignments; issue 13 item 2).
        """
        out = super().info()
        cfg = self.config
        if self.expert_load:
            out["expert_load"] = [float(v) for v in np.mean(np.asarray(self.expert_load), axis=0)]
            out["expert_load_per_layer"] = self.expert_load
            k = 1 if cfg.dense_gating else cfg.top_k
            share = float(max(max(layer) for layer in self.expert_load)) * k
            out["router_max_share"] = share
            out["router_collapse"] = bool(cfg.n_experts > k and share > COLLAPSE_SHARE)
        else:
            out["expert_load"] = []
            out["router_max_share"] = None
            out["router_collapse"] = False
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
        """The fusion space (learning rates, temperature, hash-loss weight, p_missing, dropouts, stage-2 epoch
        cap) plus the gating-loss weight λ_g, the DV-MLP dropout p_dv and the stage-1 epoch cap.

        The architecture (E = 4, k = 2, T_dv = 5) is the method under test and is not tuned; the ablation
        variants vary it.
        """
        space = super().search_space(trial)
        space.update(
            gate_weight=trial.suggest_float("gate_weight", 1e-3, 1e-1, log=True),
            p_dv=trial.suggest_float("p_dv", 0.05, 0.5),
            epochs_stage1=trial.suggest_int("epochs_stage1", 2, 16, step=2),
        )
        return space


register_variant("mcmfh-no-moe", "mcmfh", description="MCMFH ablation: dense feed-forward instead of MoE", moe=False)
register_variant("mcmfh-no-dv", "mcmfh", description="MCMFH ablation: DV-MLP removed (no dropout voting)", dv=False)
register_variant("mcmfh-no-gate", "mcmfh", description="MCMFH ablation: no gating loss (λ_g = 0)", gate_weight=0.0)
register_variant(
    "mcmfh-no-stage1", "mcmfh", description="MCMFH ablation: one joint stage (no fusion pre-training, DV-MLP trained)", stage1=False
)

