"""Tests of DScPH (methods/dscph.py) and of the shared supervised skeleton (methods/supervised.py).

DScPH: the class-proxy loss against a hand computation, the adaptive triplet loss and its margin rules
against brute-force loops over all triplets, the Householder rotation (a product of reflections, orthogonal
throughout training), the bit-variance loss by hand, and learning on synthetic data. Shared (both ``dscph``
and ``ddbh``): determinism, labels read from the training split only, early stopping restoring the best
epoch, persistence, encode contract and errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import methods.dscph as dscph_mod
from medhash_datasets.base import Features, FeatureSplit, feature_split
from medhash_datasets.loaders import DATASETS
from methods import METHODS, ConfigError, create_method
from methods.dscph import (
    DScPHConfig,
    DScPHLoss,
    HouseholderRotation,
    adaptive_triplet_loss,
    bit_variance_loss,
    class_proxy_loss,
)
from methods.supervised import REIMPLEMENTATION_NOTE
from methods.supervised_blocks import label_similarity, validation_map, warmup_cosine

SUPERVISED = ("dscph", "ddbh")


# ---- (a) class-proxy loss ----------------------------------------------------------------------------------
def test_class_proxy_loss_hand_example():
    # proxies: w1 = e1, w2 = e2; items: h1 = e1, h2 = (0.6, 0.8), h3 = -e1 (norms do not matter: cosines)
    proxies = torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    h = torch.tensor([[0.9, 0.0], [0.3, 0.4], [-0.7, 0.0]], dtype=torch.float64)
    y = torch.tensor([[1, 0], [0, 1], [1, 1]], dtype=torch.float64)
    # cosines: [[1, 0], [0.6, 0.8], [-1, 0]]
    t = 2 * (1.0 + 0.8 + 0.0 + 0.0) + 2  # positives (1,1)=1, (2,2)=0.8, (3,1)=-1→0, (3,2)=0
    p = 0.0 * math.exp(1.3 * 0.0) + 0.2 * math.exp(1.3 * 0.2) + 2.0 * math.exp(1.3 * 2.0) + 1.0 * math.exp(1.3 * 1.0)
    n = (0.6 - 0.3) * math.exp(1.3 * (0.6 - 1.0))  # the only negative with cosine > 0.3 is (item 2, class 1)
    want = 1 - t / (t + p + n)
    got = class_proxy_loss(h, y, proxies.double())
    assert got.item() == pytest.approx(want, rel=1e-12)


def test_class_proxy_loss_stops_gradient_through_exp_weights():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(6, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 8, generator=gen, dtype=torch.float64)
    y = (torch.rand(6, 3, generator=gen) < 0.5).double()
    (g,) = torch.autograd.grad(class_proxy_loss(h, y, w), h)

    def manual(h: torch.Tensor, detach: bool) -> torch.Tensor:
        c = torch.nn.functional.normalize(h, dim=1) @ torch.nn.functional.normalize(w, dim=1).T
        ep = torch.exp(1.3 * (1 - c))
        en = torch.exp(1.3 * (c - 1))
        if detach:
            ep, en = ep.detach(), en.detach()
        t = 2 * (y * c.clamp_min(0)).sum() + 2
        p = (y * (1 - c) * ep).sum()
        n = ((c > 0.3) * (1 - y) * (c - 0.3) * en).sum()
        return 1 - t / (t + p + n)

    (g_sg,) = torch.autograd.grad(manual(h, True), h)
    (g_full,) = torch.autograd.grad(manual(h, False), h)
    torch.testing.assert_close(g, g_sg)
    assert not torch.allclose(g, g_full)


# ---- (b) adaptive triplet loss -----------------------------------------------------------------------------
def triplet_brute_force(h: torch.Tensor, sim: torch.Tensor, k_margin: float = 2.0, k_beta: float = 2.0, neg: str = "cosine"):
    """The spec's rules over an explicit list of every (a, p, n) triplet (``neg``: similarity of the pair hinge)."""
    z = h / h.norm(dim=1, keepdim=True)
    cos = z @ z.T
    n = h.shape[0]
    trip = [(a, p, q) for a in range(n) for p in range(n) for q in range(n) if a != p and sim[a, p] and not sim[a, q]]
    deltas = [cos[a, p] - cos[a, q] for a, p, q in trip]
    margin = max(0.0, sum(float(d.detach()) for d in deltas) / len(trip) / k_margin)
    pairs = sorted({(min(a, q), max(a, q)) for a, _, q in trip})
    beta = 1 - (1 - sum(float(cos[i, j].detach()) for i, j in pairs) / len(pairs)) / k_beta
    mined = [d for d in deltas if 0 < float(d.detach()) <= margin]
    loss = torch.stack([torch.relu(margin - d) for d in mined]).mean() if mined else h.sum() * 0
    selected = [(i, j) for i, j in pairs if float(cos[i, j].detach()) >= beta]
    if selected:
        pair = (lambda i, j: h[i] @ h[j]) if neg == "dot" else (lambda i, j: cos[i, j])
        loss = loss + torch.stack([torch.relu(pair(i, j) - beta) for i, j in selected]).mean()
    return loss, margin, beta, len(trip), len(mined), len(pairs), len(selected)


@pytest.mark.parametrize("neg", ["cosine", "dot"])
@pytest.mark.parametrize(("seed", "n", "bits", "n_labels"), [(1, 9, 8, 3), (1, 12, 16, 4), (5, 12, 4, 3), (2, 12, 4, 3)])
def test_adaptive_triplet_loss_matches_brute_force(seed, n, bits, n_labels, neg):
    gen = torch.Generator().manual_seed(seed)
    labels = (torch.rand(n, n_labels, generator=gen) < 0.35).double()
    labels[labels.sum(1) == 0, 0] = 1
    proto = torch.randn(n_labels, bits, generator=gen, dtype=torch.float64)  # label-driven codes plus noise
    h = torch.tanh(labels @ proto + torch.randn(n, bits, generator=gen, dtype=torch.float64)).requires_grad_(True)
    sim = label_similarity(labels)
    loss, info = adaptive_triplet_loss(h, sim, neg_pair_similarity=neg)
    ref, margin, beta, n_trip, n_mined, n_pairs, n_sel = triplet_brute_force(h, sim, neg=neg)
    assert n_mined > 0 and n_sel > 0  # both terms are exercised
    assert info["margin"] == pytest.approx(margin, rel=1e-12)
    assert info["beta"] == pytest.approx(beta, rel=1e-12)
    assert (info["n_triplets"], info["n_semihard"], info["n_neg_pairs"], info["n_neg_selected"]) == (n_trip, n_mined, n_pairs, n_sel)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-10)
    (g,) = torch.autograd.grad(loss, h)
    (g_ref,) = torch.autograd.grad(ref, h)
    torch.testing.assert_close(g, g_ref, rtol=1e-9, atol=1e-12)


def test_triplet_margins_clamp_and_empty_sets():
    # all items share a label: no triplet, no negative pair → margin 0, beta NaN, loss 0
    h = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))
    loss, info = adaptive_triplet_loss(h, torch.ones(4, 4, dtype=torch.bool))
    assert loss.item() == 0.0 and info["margin"] == 0.0 and math.isnan(info["beta"])
    # positives farther than negatives on average → mean(s_ap - s_an) < 0 → margin clamped to 0
    h = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 0.1]])
    sim = torch.tensor([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=torch.bool)
    _, info = adaptive_triplet_loss(h, sim)
    assert info["margin"] == 0.0


# ---- (c) rotation and bit-variance -------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [8, 13, 64])
def test_rotation_is_the_product_of_reflections(dim):
    rot = HouseholderRotation(dim)
    assert torch.allclose(rot.matrix(), -torch.eye(dim))  # every v_j = e_j at the start: R = −I
    with torch.no_grad():
        rot.vectors.copy_(torch.randn(dim, dim, generator=torch.Generator().manual_seed(dim)))
    v = rot.vectors.detach().double()
    want = torch.eye(dim, dtype=torch.float64)
    for j in range(dim):
        u = v[:, j] / v[:, j].norm()
        want = want @ (torch.eye(dim, dtype=torch.float64) - 2 * torch.outer(u, u))
    got = rot.matrix().detach().double()
    torch.testing.assert_close(got, want, atol=2e-5, rtol=0)
    assert (got @ got.T - torch.eye(dim, dtype=torch.float64)).abs().max() < 1e-5
    h = torch.randn(3, dim)
    torch.testing.assert_close(rot(h), h @ rot.matrix().T)


def test_bit_variance_loss_by_hand():
    z = torch.tensor([[0.0, math.log(3.0)]])  # σ = 0.5 and 0.75
    assert bit_variance_loss(z).item() == pytest.approx((0.25 + 0.75 * 0.25) / 2)


def test_total_loss_is_the_sum_of_its_terms():
    torch.manual_seed(0)
    cfg = DScPHConfig()
    loss_mod = DScPHLoss(16, 4, cfg)
    gen = torch.Generator().manual_seed(3)
    hi, ht = torch.tanh(torch.randn(2, 12, 16, generator=gen))
    y = (torch.rand(12, 4, generator=gen) < 0.4).float()
    y[y.sum(1) == 0, 2] = 1
    s = label_similarity(y)
    r = loss_mod.rotation.matrix()
    want = class_proxy_loss(hi, y, loss_mod.proxies) + class_proxy_loss(ht, y, loss_mod.proxies)
    for h in (hi, ht):
        want = want + adaptive_triplet_loss(h, s)[0] + bit_variance_loss(torch.nn.functional.normalize(h @ r.T, dim=1))
    got, info = loss_mod(hi, ht, y)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    assert info["loss"] == pytest.approx(got.item())


# ---- shared data -------------------------------------------------------------------------------------------
def _splits(n_train: int = 160, seed: int = 0) -> dict[str, FeatureSplit]:
    ds = DATASETS.get("synthetic")(None, seed=seed, n_train=n_train, n_validation=60, n_query=40)
    feats = Features(ds.image_features, ds.text_features, "precomputed")
    return {s: feature_split(ds, feats, s) for s in ("train", "validation", "query", "database")}


@pytest.fixture(scope="module")
def small() -> dict[str, FeatureSplit]:
    return _splits()


FAST = {"epochs": 3, "batch_size": 64}


# ---- DScPH in training ------------------------------------------------------------------------------------
def test_rotation_stays_orthogonal_throughout_training(small):
    m = create_method("dscph", {**FAST, "epochs": 4, "rotation_lr": 0.05})
    errors: list[float] = []
    m.step_hooks.append(lambda meth, ep, st, info: errors.append(float((meth.rotation_matrix() @ meth.rotation_matrix().T - torch.eye(16)).abs().max())))
    m.fit(small["train"], small["validation"], 16, 0)
    assert len(errors) == 4 * 3  # 160 items in batches of 64 → 3 steps per epoch
    assert max(errors) < 1e-5
    assert (m.rotation_matrix() + torch.eye(16)).abs().max() > 1e-2  # R moved away from its start −I


def test_margins_are_recomputed_from_each_batch(small, monkeypatch):
    seen: list[tuple[torch.Tensor, torch.Tensor, dict]] = []
    original = dscph_mod.adaptive_triplet_loss

    def spy(h, sim, **kw):
        loss, info = original(h, sim, **kw)
        seen.append((h.detach().double().clone(), sim.clone(), info))
        return loss, info

    monkeypatch.setattr(dscph_mod, "adaptive_triplet_loss", spy)
    create_method("dscph", {"epochs": 1, "batch_size": 16}).fit(small["train"], small["validation"], 16, 0)
    assert len(seen) == 10 * 2  # 160 items in batches of 16, two modalities
    for h, sim, info in seen[::4]:
        _, margin, beta, *_ = triplet_brute_force(h, sim)
        assert info["margin"] == pytest.approx(margin, rel=1e-5, abs=1e-7)
        assert info["beta"] == pytest.approx(beta, rel=1e-5)
    assert len({round(i["margin"], 9) for _, _, i in seen}) > 1  # not a constant


# ---- shared skeleton: both methods ------------------------------------------------------------------------
@pytest.mark.parametrize("name", SUPERVISED)
def test_registered_supervised_and_labelled_as_reimplementation(name):
    entry = METHODS.get(name)
    assert entry.cls.supervised is True
    m = create_method(name)
    assert m.info()["reimplementation"] == REIMPLEMENTATION_NOTE


@pytest.mark.parametrize("name", SUPERVISED)
def test_same_seed_same_codes(name, small):
    a = create_method(name, FAST).fit(small["train"], small["validation"], 16, 7)
    b = create_method(name, FAST).fit(small["train"], small["validation"], 16, 7)
    c = create_method(name, FAST).fit(small["train"], small["validation"], 16, 8)
    ea, eb, ec = (m.encode(small["query"].image, small["query"].text) for m in (a, b, c))
    assert np.array_equal(ea.image, eb.image) and np.array_equal(ea.text, eb.text)
    assert not np.array_equal(ea.image, ec.image)


@pytest.mark.parametrize("name", SUPERVISED)
def test_labels_come_from_the_training_split_only(name, small):
    tr, va, q = small["train"], small["validation"], small["query"]
    params = {**FAST, "early_stopping": False}
    base = create_method(name, params).fit(tr, va, 16, 0).encode(q.image, q.text)
    other_val = FeatureSplit(va.image, va.text, np.ones_like(va.labels))
    same = create_method(name, params).fit(tr, other_val, 16, 0).encode(q.image, q.text)
    assert np.array_equal(base.image, same.image) and np.array_equal(base.text, same.text)
    perm = np.random.default_rng(0).permutation(len(tr))
    other_train = FeatureSplit(tr.image, tr.text, tr.labels[perm])
    moved = create_method(name, params).fit(other_train, va, 16, 0).encode(q.image, q.text)
    assert not np.array_equal(base.image, moved.image)


@pytest.mark.parametrize("name", SUPERVISED)
def test_early_stopping_restores_the_best_evaluated_epoch(name, small):
    m = create_method(name, {**FAST, "epochs": 6, "eval_every": 1, "patience": 100})
    m.fit(small["train"], small["validation"], 16, 0)
    scores = [h["val_map"] for h in m.history_]
    assert [h["epoch"] for h in m.history_] == [1, 2, 3, 4, 5, 6]
    best = int(np.argmax(scores))
    assert m.best_epoch_ == best + 1
    assert validation_map(m.heads, small["train"], small["validation"], "cpu").mean == pytest.approx(scores[best], abs=1e-12)
    # Independent re-computation by the harness evaluator: validation queries against the training database.
    from benchmarks.evaluation.metrics import MetricSpec, evaluate_hamming

    tr, va = small["train"], small["validation"]
    spec = MetricSpec.map_only()
    i2t = evaluate_hamming(m.encode(image=va.image).image, m.encode(text=tr.text).text, va.labels, tr.labels,
                           tie="aware", metrics=spec).get("map")
    t2i = evaluate_hamming(m.encode(text=va.text).text, m.encode(image=tr.image).image, va.labels, tr.labels,
                           tie="aware", metrics=spec).get("map")
    assert (i2t + t2i) / 2 == pytest.approx(scores[best], abs=1e-10)


@pytest.mark.parametrize("name", SUPERVISED)
def test_one_progress_line_per_epoch(name, small, caplog):
    import logging

    with caplog.at_level(logging.INFO, logger="methods"):
        create_method(name, {**FAST, "epochs": 4, "patience": 100}).fit(small["train"], small["validation"], 16, 0)
    lines = [r.getMessage() for r in caplog.records if r.name == "methods.supervised" and " epoch " in r.getMessage()]
    assert len(lines) == 4
    assert all(f"epoch {e}/4: loss " in line and "validation mAP 0." in line for e, line in zip(range(1, 5), lines))


@pytest.mark.parametrize("name", SUPERVISED)
def test_encode_contract_and_persistence(name, small, tmp_path):
    q = small["query"]
    m = create_method(name, FAST)
    with pytest.raises(RuntimeError, match="before fit"):
        m.encode(image=q.image)
    m.fit(small["train"], small["validation"], 24, 0)
    both = m.encode(q.image, q.text)
    assert both.image.shape == (len(q), 24) and both.image.dtype == np.float32
    assert np.abs(both.image).max() < 1 and np.abs(both.text).max() < 1
    assert np.array_equal(m.encode(image=q.image).image, both.image)  # no fusion: unimodal = paired halves
    assert m.encode(text=q.text).image is None
    with pytest.raises(ValueError, match="width"):
        m.encode(image=q.text)
    m.save(tmp_path / "m.pt")
    loaded = type(m).load(tmp_path / "m.pt")
    again = loaded.encode(q.image, q.text)
    assert np.array_equal(again.image, both.image) and np.array_equal(again.text, both.text)
    assert loaded.info()["best_epoch"] == m.info()["best_epoch"]


@pytest.mark.parametrize("name", SUPERVISED)
def test_bad_inputs_raise_clear_errors(name, small):
    tr = small["train"]
    with pytest.raises(ValueError, match="bits"):
        create_method(name, FAST).fit(tr, small["validation"], 4, 0)
    with pytest.raises(ValueError, match="train.labels"):
        create_method(name, FAST).fit(FeatureSplit(tr.image, tr.text, tr.labels[:5]), small["validation"], 16, 0)
    with pytest.raises(ConfigError, match="lr"):
        create_method(name, {"lr": -1.0})
    with pytest.raises(ConfigError, match="adapter"):
        create_method(name, {"adapter": "mlp"})


@pytest.mark.parametrize("name", SUPERVISED)
def test_search_space_gives_valid_configs(name):
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        params = METHODS.get(name).cls.search_space(study.ask())
        assert {"lr", "weight_decay", "epochs"} <= set(params)
        create_method(name, params)  # validates every suggested value


def test_warmup_cosine_schedule():
    total, frac = 100, 0.1
    m = [warmup_cosine(t, total, frac) for t in range(total)]
    assert m[0] == pytest.approx(0.1) and m[9] == pytest.approx(1.0)  # linear over the first 10 steps
    assert m[10] == pytest.approx(1.0)
    assert m[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 45 / 90)))
    assert all(a >= b for a, b in zip(m[10:], m[11:]))


# ---- learning on the synthetic dataset -------------------------------------------------------------------
def test_dscph_at_64_bits_beats_random_by_a_clear_margin(cross_modal_map):
    # Issue 14 item 2: with the authors' raw inner product the negative-pair hinge swamps the loss at 64 bits
    # (dscph-raw-ip: 0.621 here against random 0.341); the default cosine form learns (0.852).
    dscph, rnd = cross_modal_map("dscph", 64), cross_modal_map("random", 64)
    assert dscph > rnd + 0.3, (dscph, rnd)


def test_negative_pair_similarity_defaults_to_cosine_and_raw_ip_is_a_variant():
    m = create_method("dscph")
    assert m.config.neg_pair_similarity == "cosine"
    assert "deviation" in m.info() and "raw inner product" in m.info()["deviation"]
    raw = create_method("dscph-raw-ip")
    assert METHODS.get("dscph-raw-ip").base == "dscph"
    assert raw.config.neg_pair_similarity == "dot" and raw.info()["neg_pair_similarity"] == "dot"
    # The two forms differ exactly in the hinge: cosine vs h_a·h_n on the same selected pairs.
    gen = torch.Generator().manual_seed(0)
    h = torch.tanh(torch.randn(10, 64, generator=gen, dtype=torch.float64))
    sim = label_similarity((torch.rand(10, 3, generator=gen) < 0.4).double())
    (_, i_cos), (_, i_dot) = (adaptive_triplet_loss(h, sim, neg_pair_similarity=v) for v in ("cosine", "dot"))
    assert i_cos == i_dot  # same margins and selections


def test_dscph_learns_on_synthetic_beyond_random(cross_modal_map):
    # With the validation-selected CCA ridge, cca-itq (0.818) now beats default DScPH at 16 bits here (0.670
    # with the 30-epoch cap; 0.805 with 100 epochs): the comparison with baselines is left to tuned runs.
    dscph, rnd = cross_modal_map("dscph", 16), cross_modal_map("random", 16)
    assert dscph > rnd + 0.3, (dscph, rnd)
