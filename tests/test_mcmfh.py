"""Tests of MCMFH (``methods/mcmfh.py``): MoE routing and gates, the gating losses against their formulas,
dropout voting, the frozen DV-MLP in stage 2, expert load, ablation variants, determinism and learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_ucmfh import random_split, reference_map

from medhash_datasets.base import Features, feature_split
from medhash_datasets.loaders import DATASETS
from methods import METHODS, create_method
from methods.base import ConfigError
from methods.mcmfh import (
    MCMFH,
    DropoutVotingMLP,
    MCMFHConfig,
    MoEFeedForward,
    MoEFusion,
    load_balancing_loss,
    router_z_loss,
)
from methods.nn import make_generator, state_to_cpu

TINY = {
    "slot_dim": 16,
    "n_heads": 2,
    "dim_feedforward": 32,
    "head_hidden": 32,
    "epochs": 3,
    "epochs_stage1": 2,
    "batch_size": 32,
}


@pytest.fixture(scope="module")
def tiny_fitted() -> MCMFH:
    return create_method("mcmfh", TINY).fit(random_split(96), random_split(40, seed=1), 16, seed=0)


# ---- routing and losses ------------------------------------------------------------------------------------
def test_top_k_routing_picks_most_probable_experts_and_gates_sum_to_one():
    torch.manual_seed(0)
    moe = MoEFeedForward(dim=6, hidden=8, n_experts=5, top_k=2, dropout=0.0).eval()
    x = torch.randn(40, 6)
    logits, probs, topi, gates = moe.route(x)
    p = np.exp(logits.detach().numpy().astype(np.float64))
    p /= p.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(probs.detach().numpy(), p, rtol=1e-5)
    expected = np.argsort(-p, axis=1, kind="stable")[:, :2]
    np.testing.assert_array_equal(topi.numpy(), expected)
    np.testing.assert_allclose(gates.detach().sum(dim=1).numpy(), 1.0, rtol=1e-6)
    chosen = np.take_along_axis(p, expected, axis=1)
    np.testing.assert_allclose(gates.detach().numpy(), chosen / chosen.sum(axis=1, keepdims=True), rtol=1e-5)
    # The block output is the gate-weighted sum of the chosen experts' outputs, token by token.
    out = moe(x).detach()
    for n in range(0, 40, 7):
        ref = sum(gates[n, j] * moe.experts[int(topi[n, j])](x[n : n + 1])[0] for j in range(2))
        torch.testing.assert_close(out[n], ref.detach(), rtol=1e-5, atol=1e-6)
    counts = np.bincount(expected.ravel(), minlength=5)
    np.testing.assert_array_equal(moe.last["counts"].numpy(), counts)


def test_dense_gating_uses_every_expert_weighted_by_softmax():
    torch.manual_seed(1)
    moe = MoEFeedForward(dim=4, hidden=8, n_experts=3, top_k=1, dropout=0.0, dense=True).eval()
    x = torch.randn(5, 4)
    probs = moe.route(x)[1]
    ref = sum(probs[:, e : e + 1] * moe.experts[e](x) for e in range(3))
    torch.testing.assert_close(moe(x), ref)
    assert moe.last["balance"].detach().item() == pytest.approx(3 * float((probs.detach().mean(0) ** 2).sum()), rel=1e-6)


def test_load_balancing_loss_hand_worked():
    probs = torch.tensor([[0.7, 0.3], [0.4, 0.6]])
    # top-1 routing to experts 0 and 1: f = (1/2, 1/2), P = (0.55, 0.45): 2 * (0.275 + 0.225) = 1.0
    assert load_balancing_loss(probs, torch.tensor([[0], [1]])).item() == pytest.approx(1.0)
    # both to expert 0: f = (1, 0): 2 * 0.55 = 1.1
    assert load_balancing_loss(probs, torch.tensor([[0], [0]])).item() == pytest.approx(1.1)
    # E = 3, N = 2, top-2: assignments {0,1} and {0,2} -> f = (2/4, 1/4, 1/4)
    probs3 = torch.tensor([[0.5, 0.3, 0.2], [0.4, 0.1, 0.5]])
    expected = 3 * (0.5 * 0.45 + 0.25 * 0.2 + 0.25 * 0.35)
    assert load_balancing_loss(probs3, torch.tensor([[0, 1], [2, 0]])).item() == pytest.approx(expected)


def test_load_balancing_loss_is_minimal_for_uniform_routing():
    n, e = 64, 4
    uniform = torch.full((n, e), 1 / e)
    balanced = torch.arange(n).remainder(e).unsqueeze(1)
    assert load_balancing_loss(uniform, balanced).item() == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    for k in (1, 2):
        # Tokens sharing one probability vector p are routed to p's top-k experts; the loss is then
        # (E/k) * (top-k mass of p) >= 1, with equality only for uniform p.
        for _ in range(50):
            p = torch.tensor(rng.dirichlet(np.ones(e)), dtype=torch.float32)
            probs = p.expand(n, e)
            topi = probs.topk(k, dim=1).indices
            loss = load_balancing_loss(probs, topi).item()
            assert loss >= 1.0 - 1e-6
            assert loss == pytest.approx(e / k * float(p.topk(k).values.sum()), rel=1e-5)
        collapsed = torch.tensor([1.0, 0.0, 0.0, 0.0]).expand(n, e)
        assert load_balancing_loss(collapsed, collapsed.topk(k, dim=1).indices).item() == pytest.approx(e / k)


def test_router_z_loss_formula():
    assert router_z_loss(torch.zeros(3, 4)).item() == pytest.approx(math.log(4) ** 2)
    logits = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    expected = np.mean([np.log(np.exp(1) + np.exp(2)) ** 2, np.log(1 + np.exp(-1)) ** 2])
    assert router_z_loss(logits).item() == pytest.approx(expected, rel=1e-6)


def test_gate_loss_of_fusion_is_balance_plus_weighted_z_averaged_over_layers():
    cfg = MCMFHConfig(**TINY)
    torch.manual_seed(0)
    fusion = MoEFusion(cfg).eval()
    with torch.no_grad():
        _, gate = fusion(torch.randn(10, 32))
    blocks = fusion.moe_blocks()
    assert len(blocks) == 2
    expected = np.mean([float(b.last["balance"] + 1e-3 * b.last["z"]) for b in blocks])
    assert gate.item() == pytest.approx(expected, rel=1e-6)


# ---- dropout voting ----------------------------------------------------------------------------------------
def test_dv_mlp_soft_vote_is_the_mean_of_fixed_mask_passes_and_per_item():
    torch.manual_seed(0)
    dv = DropoutVotingMLP(8, p=0.5, passes=3)
    dv.draw_masks(make_generator(1))
    masks = dv.eval_masks
    assert set(torch.unique(masks).tolist()) <= {0.0, 2.0} and (masks == 0).any()
    dv.eval()
    x = torch.randn(6, 8)
    h = torch.nn.functional.gelu(dv.fc1(x))
    ref = torch.stack([dv.norm(x + dv.fc2(h * masks[t])) for t in range(3)]).mean(0)
    out = dv(x)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(dv(x[2:3]), out[2:3])  # an item's output does not depend on its batch
    torch.testing.assert_close(dv(x), out)  # deterministic
    dv.train()
    a, b = dv(x), dv(x)
    assert not torch.allclose(a, b)  # training passes draw fresh masks


def test_dv_mlp_parameters_do_not_change_in_stage_2():
    m = create_method("mcmfh", TINY)
    snapshots: dict[str, dict[str, torch.Tensor]] = {}
    original = m._run_stage

    def recording(net, stage, *args):
        snapshots[f"before {stage['name']}"] = state_to_cpu(net)
        out = original(net, stage, *args)
        snapshots[f"after {stage['name']}"] = state_to_cpu(net)
        return out

    m._run_stage = recording  # type: ignore[method-assign]
    m.fit(random_split(96), random_split(40, seed=1), 16, seed=0)
    final = state_to_cpu(m.net)
    dv_keys = [k for k in final if k.startswith("front.")]
    front_keys = [k for k in final if k.startswith(("front.", "img_adapter.", "txt_adapter.", "missing."))]
    assert {"front.fc1.weight", "front.fc2.weight", "front.norm.weight"} <= set(dv_keys)
    # Stage 1 trains the DV-MLP (so the check below is not vacuous) ...
    assert not torch.equal(snapshots["before stage1"]["front.fc1.weight"], snapshots["after stage1"]["front.fc1.weight"])
    # ... stage 2 leaves it (and the rest of the front end) exactly as stage 1 left it ...
    for key in front_keys:
        assert torch.equal(snapshots["after stage1"][key], final[key]), key
    # ... while the fusion transformer and the heads keep training.
    assert not torch.equal(snapshots["after stage1"]["fusion.layers.0.ff.router.weight"], final["fusion.layers.0.ff.router.weight"])
    assert not torch.equal(snapshots["after stage1"]["img_head.fc1.weight"], final["img_head.fc1.weight"])


def test_no_stage1_variant_trains_dv_mlp_jointly():
    m = create_method("mcmfh-no-stage1", TINY)
    m.fit(random_split(64), random_split(20, seed=1), 16, seed=0)
    assert [s["name"] for s in m.history["stages"]] == ["joint"]


def test_majority_vote_codes_are_bitwise_majorities_of_single_pass_codes(tiny_fitted):
    q = random_split(15, seed=5)
    maj = create_method("mcmfh", {**TINY, "dv_vote": "majority"})
    maj.set_state(tiny_fitted.get_state())
    got = maj.encode(image=q.image, text=q.text)
    net = maj.net
    per_pass = []
    for t in range(5):  # each whole-network pass with one fixed mask, recomputed by hand
        net.front.vote_pass = t
        with torch.no_grad():
            f_img, f_txt, _ = net.fuse(net.tokens(torch.tensor(q.image), torch.tensor(q.text)))
            per_pass.append((net.img_head(f_img).numpy(), net.txt_head(f_txt).numpy()))
    net.front.vote_pass = None
    for side, codes in ((0, got.image), (1, got.text)):
        signs = np.stack([np.where(p[side] >= 0, 1.0, -1.0) for p in per_pass])
        np.testing.assert_allclose(codes, signs.mean(0), atol=1e-6)
        assert set(np.round(np.unique(codes) * 5).astype(int)) <= {-5, -3, -1, 1, 3, 5}


# ---- method behaviour --------------------------------------------------------------------------------------
def test_defaults_follow_the_spec():
    cfg = MCMFHConfig()
    assert (cfg.n_experts, cfg.top_k, cfg.gate_weight, cfg.z_weight) == (4, 2, 0.01, 1e-3)
    assert (cfg.p_dv, cfg.t_dv, cfg.dv_vote, cfg.token_layout) == (0.2, 5, "soft", "concat")
    assert cfg.stage1 and cfg.dv and cfg.moe and not cfg.dense_gating
    assert (cfg.batch_size, cfg.lr_fusion, cfg.lr_head, cfg.temperature, cfg.p_missing) == (128, 1e-4, 1e-3, 0.5, 0.3)
    net = MCMFH(cfg)._build_net(512, 512, 16)
    assert isinstance(net.front, DropoutVotingMLP) and net.front.fc1.in_features == 1024
    layer = net.fusion.layers[0]
    assert layer.self_attn.embed_dim == 1024 and layer.self_attn.num_heads == 4 and len(net.fusion.layers) == 2
    experts = layer.ff.experts
    assert len(experts) == 4 and (experts[0][0].in_features, experts[0][0].out_features) == (1024, 2048)
    assert layer.ff.router.out_features == 4


def test_ablation_variants_registered_with_overrides():
    expected = {
        "mcmfh-no-moe": ("moe", False),
        "mcmfh-no-dv": ("dv", False),
        "mcmfh-no-gate": ("gate_weight", 0.0),
        "mcmfh-no-stage1": ("stage1", False),
    }
    for name, (field, value) in expected.items():
        assert "ablation" in METHODS.tags(name) and METHODS.get(name).base == "mcmfh"
        assert getattr(create_method(name).config, field) == value
    assert METHODS.resolve(["all"], all_excludes_tag="ablation").count("mcmfh") == 1
    assert not set(expected) & set(METHODS.resolve(["all"], all_excludes_tag="ablation"))


@pytest.mark.parametrize("override", [{"top_k": 5}, {"token_layout": "stack"}, {"dv_vote": "hard"}, {"t_dv": 0}])
def test_config_out_of_range_raises(override):
    with pytest.raises(ConfigError):
        create_method("mcmfh", override)


def test_expert_load_recorded_and_sums_to_one(tiny_fitted):
    info = tiny_fitted.info()
    load = info["expert_load"]
    assert len(load) == 4 and sum(load) == pytest.approx(1.0) and min(load) >= 0
    assert len(info["expert_load_per_layer"]) == 2
    assert info["epochs_per_stage"]["stage1"] <= 2 and info["epochs_per_stage"]["stage2"] <= 3
    # Recount layer 0's assignments independently from the router on the training inputs.
    net = tiny_fitted.net
    train = random_split(96)
    with torch.no_grad():
        x = net.tokens(torch.tensor(train.image), torch.tensor(train.text))  # adapters, missing fill, DV-MLP
        layer0_in = net.fusion.layers[0].norm1(x.unsqueeze(1) + net.fusion.layers[0]._attend(x.unsqueeze(1)))
        topi = net.fusion.layers[0].ff.route(layer0_in.squeeze(1))[2]
    counts = np.bincount(topi.numpy().ravel(), minlength=4)
    np.testing.assert_allclose(info["expert_load_per_layer"][0], counts / counts.sum(), rtol=1e-6)
    no_moe = create_method("mcmfh-no-moe", TINY).fit(random_split(64), random_split(20, seed=1), 16, 0)
    assert no_moe.info()["expert_load"] == []


def test_same_seed_same_codes_and_batch_independence():
    train, val, q = random_split(80), random_split(30, seed=1), random_split(20, seed=2)
    a = create_method("mcmfh", TINY).fit(train, val, 16, seed=3)
    b = create_method("mcmfh", TINY).fit(train, val, 16, seed=3)
    ca, cb = a.encode(image=q.image, text=q.text), b.encode(image=q.image, text=q.text)
    np.testing.assert_array_equal(ca.image, cb.image)
    np.testing.assert_array_equal(ca.text, cb.text)
    np.testing.assert_array_equal(a.encode(text=q.text).text, b.encode(text=q.text).text)
    alone = a.encode(image=q.image[4:5], text=q.text[4:5])
    np.testing.assert_allclose(alone.image[0], ca.image[4], atol=1e-5)


@pytest.mark.parametrize("layout", ["pair", "concat"])
def test_token_layouts_encode_both_protocols(layout, tmp_path):
    m = create_method("mcmfh", {**TINY, "token_layout": layout, "epochs": 1, "epochs_stage1": 1})
    m.fit(random_split(64), random_split(20, seed=1), 8, 0)
    q = random_split(9, seed=2)
    paired = m.encode(image=q.image, text=q.text)
    assert paired.image.shape == paired.text.shape == (9, 8)
    assert m.encode(image=q.image).image.shape == (9, 8)
    alone = m.encode(image=q.image[:1], text=q.text[:1])
    np.testing.assert_allclose(alone.image[0], paired.image[0], atol=1e-5)
    m.save(tmp_path / "m.pt")
    np.testing.assert_array_equal(MCMFH.load(tmp_path / "m.pt").encode(text=q.text).text, m.encode(text=q.text).text)
    assert MCMFH.load(tmp_path / "m.pt").info()["expert_load"] == m.info()["expert_load"]


def test_mcmfh_learns_on_synthetic_data():
    """Reduced widths, default losses/optimiser/routing/voting: mAP clearly above random codes."""
    ds = DATASETS.get("synthetic")(None, seed=0, n_train=300, n_validation=100, n_query=100)
    feats = Features(ds.image_features, ds.text_features, "precomputed")
    train, val, q, db = (feature_split(ds, feats, s) for s in ("train", "validation", "query", "database"))
    params = {"slot_dim": 64, "dim_feedforward": 128, "head_hidden": 256, "epochs": 8, "epochs_stage1": 4}
    m = create_method("mcmfh", params).fit(train, val, 16, seed=0)
    rng = np.random.default_rng(0)
    chance = reference_map(rng.standard_normal((len(q), 16)), rng.standard_normal((len(db), 16)), q.labels, db.labels)
    uni = reference_map(m.encode(text=q.text).text, m.encode(image=db.image).image, q.labels, db.labels)
    pq, pd = m.encode(image=q.image, text=q.text), m.encode(image=db.image, text=db.text)
    paired = reference_map(pq.image, pd.text, q.labels, db.labels)
    assert uni > chance + 0.1, (uni, chance)
    assert paired > chance + 0.1, (paired, chance)


# ---- speed paths (issue 15) and selection (issue 14) -------------------------------------------------------
def test_grouped_dispatch_at_batch_size_one_and_with_idle_experts():
    torch.manual_seed(3)
    moe = MoEFeedForward(dim=6, hidden=8, n_experts=6, top_k=2, dropout=0.0).eval()
    for n in (1, 3):  # at most 2n of the 6 experts receive a token
        x = torch.randn(n, 6)
        _, _, topi, gates = moe.route(x)
        ref = torch.stack([sum(gates[i, j] * moe.experts[int(topi[i, j])](x[i : i + 1])[0] for j in range(2)) for i in range(n)])
        torch.testing.assert_close(moe(x).detach(), ref.detach(), rtol=1e-5, atol=1e-6)


def test_dv_mlp_training_passes_run_batched_with_independent_masks():
    torch.manual_seed(0)
    dv = DropoutVotingMLP(8, p=0.0, passes=4).train()
    x = torch.randn(5, 8)
    # Without dropout every pass is the plain residual MLP.
    torch.testing.assert_close(dv(x), dv.norm(x + dv.fc2(torch.nn.functional.gelu(dv.fc1(x)))))
    dv.p = 0.5
    outs = torch.stack([dv(x) for _ in range(200)])  # each output is a mean of 4 independently masked passes
    single = torch.stack([DropoutVotingMLP.forward(_one_pass(dv), x) for _ in range(200)])
    # Averaging 4 independent passes divides the spread of one pass by about 2 (variance / 4).
    ratio = (outs.var(0).mean() / single.var(0).mean()).item()
    assert 0.15 < ratio < 0.4, ratio


def _one_pass(dv: DropoutVotingMLP) -> DropoutVotingMLP:
    one = DropoutVotingMLP(8, p=dv.p, passes=1).train()
    one.load_state_dict({k: v for k, v in dv.state_dict().items() if k != "eval_masks"}, strict=False)
    return one


def test_router_collapse_flag_hand_worked():
    m = create_method("mcmfh", TINY)  # E = 4, top-2: an expert's share of tokens is 2 x its share of assignments
    m.expert_load = [[0.25, 0.25, 0.25, 0.25], [0.3, 0.3, 0.2, 0.2]]
    info = m.info()
    assert info["router_max_share"] == pytest.approx(0.6) and info["router_collapse"] is False
    m.expert_load = [[0.25] * 4, [0.46, 0.44, 0.05, 0.05]]  # expert 0 in 92 % of the tokens' top-2 in layer 2
    assert m.info()["router_collapse"] is True
    top1 = create_method("mcmfh", {**TINY, "top_k": 1})
    top1.expert_load = [[0.91, 0.03, 0.03, 0.03]]  # one expert takes 91 % of the assignments
    assert top1.info()["router_collapse"] is True
    top1.expert_load = [[0.89, 0.05, 0.03, 0.03]]
    assert top1.info()["router_collapse"] is False
    m.expert_load = []
    assert m.info()["router_collapse"] is False and m.info()["router_max_share"] is None


def test_router_collapse_recorded_after_fit(tiny_fitted):
    info = tiny_fitted.info()
    share = max(max(layer) for layer in info["expert_load_per_layer"]) * 2
    assert info["router_max_share"] == pytest.approx(share) and info["router_collapse"] == (share > 0.9)


def test_frozen_front_cache_trains_like_recomputing_the_front(monkeypatch):
    """Stage 2 reuses the frozen front's outputs; recomputing them per batch gives the same training."""
    import methods.fusion

    params = {**TINY, "epochs": 2, "epochs_stage1": 1, "patience": 9}
    train, val = random_split(80), random_split(30, seed=1)
    cached = create_method("mcmfh", params).fit(train, val, 16, seed=2)
    monkeypatch.setattr(methods.fusion, "FRONT_CACHE_MAX_BYTES", 0)
    plain = create_method("mcmfh", params).fit(train, val, 16, seed=2)
    for a, b in zip(cached.history["stages"], plain.history["stages"]):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-4)
        np.testing.assert_allclose([e["map"] for e in a["val_map"]], [e["map"] for e in b["val_map"]], atol=1e-3)


def test_each_stage_selected_on_validation_map():
    m = create_method("mcmfh", {**TINY, "epochs": 3, "epochs_stage1": 2, "patience": 9})
    train, val = random_split(80), random_split(30, seed=1)
    m.fit(train, val, 16, seed=0)
    s1, s2 = m.history["stages"]
    assert s1["selected_on"] == "fused-feature cosine mAP" and s2["selected_on"] == "code Hamming mAP"
    assert [e["epoch"] for e in s1["val_map"]] == [2] and [e["epoch"] for e in s2["val_map"]] == [2, 3]
    for stage in (s1, s2):
        maps = [e["map"] for e in stage["val_map"]]
        assert stage["best_epoch"] == stage["val_map"][int(np.argmax(maps))]["epoch"]
    assert m.info()["best_epoch_per_stage"] == {"stage1": s1["best_epoch"], "stage2": s2["best_epoch"]}


def test_search_space_covers_losses_dropouts_and_epoch_caps():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(5):
        space = MCMFH.search_space(study.ask())
        expected = {"lr_fusion", "lr_head", "temperature", "hash_weight", "gate_weight", "p_missing", "dropout",
                    "head_dropout", "p_dv", "epochs", "epochs_stage1"}
        assert expected <= set(space) and not {"n_experts", "top_k", "t_dv"} & set(space)
        create_method("mcmfh", space)
