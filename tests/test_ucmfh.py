"""Tests of UCMFH (``methods/ucmfh.py``): architecture at defaults, encode protocols, batch independence and
the cross-batch quirk, determinism, persistence, the authors'-code flags, early stopping, and learning."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from medhash_datasets.base import Features, FeatureSplit, feature_split
from medhash_datasets.loaders import DATASETS
from methods import METHODS, create_method
from methods.base import ConfigError
from methods.ucmfh import UCMFH, TransformerFusion, UCMFHConfig

#: Small widths so logic tests train in a fraction of a second (the default is slot_dim 512).
TINY = {"slot_dim": 16, "n_heads": 2, "dim_feedforward": 32, "head_hidden": 32, "epochs": 3, "batch_size": 32}


def random_split(n: int, d_img: int = 12, d_txt: int = 8, seed: int = 0) -> FeatureSplit:
    rng = np.random.default_rng(seed)
    return FeatureSplit(
        image=rng.standard_normal((n, d_img)).astype(np.float32),
        text=rng.standard_normal((n, d_txt)).astype(np.float32),
        labels=(rng.random((n, 3)) < 0.5).astype(np.uint8),
    )


@pytest.fixture(scope="module")
def tiny_fitted() -> UCMFH:
    m = create_method("ucmfh", TINY)
    return m.fit(random_split(96), random_split(40, seed=1), 16, seed=0)


def reference_map(q: np.ndarray, d: np.ndarray, ql: np.ndarray, dl: np.ndarray) -> float:
    """mAP@all with Hamming ranking, ties broken by database index (independent of the project's evaluator)."""
    qb, db = q >= 0, d >= 0
    ham = (qb[:, None, :] != db[None, :, :]).sum(-1)
    rel = (ql.astype(int) @ dl.T.astype(int)) > 0
    aps = []
    for i in range(len(q)):
        r = rel[i][np.argsort(ham[i], kind="stable")]
        if not r.any():
            aps.append(0.0)
            continue
        hits = np.cumsum(r)[r]
        aps.append(float(np.mean(hits / (np.flatnonzero(r) + 1))))
    return float(np.mean(aps))


def test_registered_unsupervised_fusion_method():
    entry = METHODS.get("ucmfh")
    assert entry.cls is UCMFH
    assert UCMFH.supervised is False and UCMFH.uses_both_modalities_at_encode is True


def test_default_architecture_matches_the_paper():
    cfg = UCMFHConfig()
    assert (cfg.batch_size, cfg.lr_fusion, cfg.lr_head, cfg.beta1, cfg.beta2) == (128, 1e-4, 1e-3, 0.5, 0.999)
    assert (cfg.temperature, cfg.hash_weight, cfg.p_missing) == (0.5, 0.5, 0.3)
    assert not (cfg.eval_cross_batch or cfg.lr_growth or cfg.train_first_4992)
    net = UCMFH(cfg)._build_net(512, 512, 16)
    assert isinstance(net.img_adapter.proj, torch.nn.Identity)
    fusion = net.fusion
    assert isinstance(fusion, TransformerFusion)
    layers = fusion.encoder.layers
    assert len(layers) == 2
    layer = layers[0]
    assert layer.self_attn.embed_dim == 1024 and layer.self_attn.num_heads == 4
    assert (layer.linear1.in_features, layer.linear1.out_features) == (1024, 2048)
    assert layer.dropout.p == 0.1 and layer.norm_first is False
    assert (net.img_head.fc1.in_features, net.img_head.fc1.out_features, net.img_head.fc2.out_features) == (512, 4096, 16)
    assert net.img_head.fc1.weight.data_ptr() != net.txt_head.fc1.weight.data_ptr()
    # Offline-encoder widths get Linear adapters to 512.
    net2 = UCMFH(cfg)._build_net(1280, 384, 16)
    assert net2.img_adapter.proj.weight.shape == (512, 1280) and net2.txt_adapter.proj.weight.shape == (512, 384)


@pytest.mark.parametrize(
    "override",
    [{"p_missing": 1.0}, {"adapter": "conv"}, {"n_heads": 3}, {"batch_size": 1}, {"modality_dropout": "both"}, {"lr_head": 0}],
)
def test_config_out_of_range_raises(override):
    with pytest.raises(ConfigError):
        create_method("ucmfh", override)


def test_encode_protocols_shapes_and_ranges(tiny_fitted):
    q = random_split(10, seed=2)
    img_only = tiny_fitted.encode(image=q.image)
    txt_only = tiny_fitted.encode(text=q.text)
    both = tiny_fitted.encode(image=q.image, text=q.text)
    assert img_only.text is None and txt_only.image is None
    for arr in (img_only.image, txt_only.text, both.image, both.text):
        assert arr.shape == (10, 16) and arr.dtype == np.float32
        assert np.abs(arr).max() <= 1.0
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    # The paired code is not the unimodal code (the text slot holds the real text, not the missing vector).
    assert not np.allclose(both.image, img_only.image)


def test_encode_errors(tiny_fitted):
    q = random_split(4, seed=2)
    with pytest.raises(RuntimeError, match="before fit"):
        create_method("ucmfh", TINY).encode(image=q.image)
    with pytest.raises(ValueError, match="width 8, the model was fit on 12"):
        tiny_fitted.encode(image=q.text)
    with pytest.raises(ValueError, match="rows"):
        tiny_fitted.encode(image=q.image, text=q.text[:3])
    with pytest.raises(ValueError, match="neither|needs"):
        tiny_fitted.encode()
    with pytest.raises(ValueError, match="bits"):
        create_method("ucmfh", TINY).fit(q, q, 4, 0)
    with pytest.raises(ValueError, match="validation"):
        create_method("ucmfh", TINY).fit(random_split(8), random_split(8, d_img=5), 16, 0)


def test_code_does_not_depend_on_batch_neighbours_by_default(tiny_fitted):
    q = random_split(30, seed=3)
    full = tiny_fitted.encode(image=q.image, text=q.text)
    alone = [tiny_fitted.encode(image=q.image[i : i + 1], text=q.text[i : i + 1]) for i in (0, 7, 29)]
    for i, one in zip((0, 7, 29), alone):
        np.testing.assert_allclose(one.image[0], full.image[i], atol=1e-5)
        np.testing.assert_array_equal(one.text[0] >= 0, full.text[i] >= 0)
    # Reordering the batch reorders the codes and changes nothing else.
    perm = np.random.default_rng(0).permutation(30)
    shuffled = tiny_fitted.encode(image=q.image[perm], text=q.text[perm])
    np.testing.assert_allclose(shuffled.image, full.image[perm], atol=1e-5)


def test_cross_batch_flag_makes_codes_depend_on_neighbours(tiny_fitted):
    quirk = create_method("ucmfh", {**TINY, "eval_cross_batch": True})
    quirk.set_state(tiny_fitted.get_state())
    q = random_split(30, seed=3)
    full = quirk.encode(image=q.image, text=q.text).image
    alone = quirk.encode(image=q.image[:1], text=q.text[:1]).image
    assert np.abs(full[0] - alone[0]).max() > 1e-3
    # A single item forms a length-1 sequence either way, so alone it equals the default encoding.
    np.testing.assert_allclose(alone, tiny_fitted.encode(image=q.image[:1], text=q.text[:1]).image, atol=1e-5)


def test_same_seed_same_codes_different_seed_different_codes():
    train, val, q = random_split(80), random_split(30, seed=1), random_split(20, seed=2)
    a = create_method("ucmfh", TINY).fit(train, val, 16, seed=5).encode(image=q.image, text=q.text)
    b = create_method("ucmfh", TINY).fit(train, val, 16, seed=5).encode(image=q.image, text=q.text)
    c = create_method("ucmfh", TINY).fit(train, val, 16, seed=6).encode(image=q.image, text=q.text)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.text, b.text)
    assert not np.array_equal(a.image, c.image)


def test_save_load_round_trip_gives_identical_codes(tiny_fitted, tmp_path):
    q = random_split(12, seed=4)
    path = tmp_path / "ucmfh.pt"
    tiny_fitted.save(path)
    loaded = UCMFH.load(path)
    assert loaded.bits == 16 and loaded.seed == 0
    for kwargs in ({"image": q.image}, {"text": q.text}, {"image": q.image, "text": q.text}):
        a, b = tiny_fitted.encode(**kwargs), loaded.encode(**kwargs)
        for x, y in zip(a, b):
            if x is not None:
                np.testing.assert_array_equal(x, y)


def tie_aware_map(q: np.ndarray, d: np.ndarray, ql: np.ndarray, dl: np.ndarray) -> float:
    """Tie-aware mAP@all of ``h >= 0`` bits by the project's evaluator (independent of methods/)."""
    from benchmarks.evaluation import MetricSpec, binarize, evaluate_hamming

    return float(evaluate_hamming(binarize(q), binarize(d), ql, dl, tie="aware", metrics=MetricSpec.map_only()).get("map"))


def test_epoch_selected_by_validation_map_and_best_weights_restored():
    m = create_method("ucmfh", {**TINY, "epochs": 8, "patience": 2, "eval_every": 1})
    train, val = random_split(96), random_split(40, seed=1)
    m.fit(train, val, 16, seed=0)
    stage = m.history["stages"][0]
    maps = [e["map"] for e in stage["val_map"]]
    assert [e["epoch"] for e in stage["val_map"]] == list(range(1, stage["epochs"] + 1))
    assert stage["best_epoch"] == 1 + int(np.argmax(maps))  # the first epoch with the highest score
    if stage["epochs"] < 8:  # stopped early: patience evaluations after the best one
        assert stage["epochs"] - stage["best_epoch"] == 2
    # The restored weights score exactly the recorded best, recomputed through the public encode and the
    # evaluator: validation queries (unimodal) against the training database, mean of i2t and t2i.
    i2t = tie_aware_map(m.encode(image=val.image).image, m.encode(text=train.text).text, val.labels, train.labels)
    t2i = tie_aware_map(m.encode(text=val.text).text, m.encode(image=train.image).image, val.labels, train.labels)
    assert (i2t + t2i) / 2 == pytest.approx(max(maps), abs=1e-9)
    info = m.info()
    assert info["epochs"] == stage["epochs"] and info["best_epoch_per_stage"] == {"joint": stage["best_epoch"]}
    assert info["best_val_map_per_stage"]["joint"] == pytest.approx(max(maps))
    assert info["selection"] == "validation mAP, unimodal protocol, labels relevance"


def test_paired_selection_protocol_and_eval_every():
    m = create_method("ucmfh", {**TINY, "epochs": 5, "patience": 9, "eval_every": 2, "select_protocol": "paired"})
    train, val = random_split(96), random_split(40, seed=1)
    m.fit(train, val, 16, seed=0)
    stage = m.history["stages"][0]
    assert [e["epoch"] for e in stage["val_map"]] == [2, 4, 5]  # every 2 epochs, and the last one
    q, d = m.encode(image=val.image, text=val.text), m.encode(image=train.image, text=train.text)
    score = (tie_aware_map(q.image, d.text, val.labels, train.labels) + tie_aware_map(q.text, d.image, val.labels, train.labels)) / 2
    assert score == pytest.approx(max(e["map"] for e in stage["val_map"]), abs=1e-9)
    assert "paired protocol" in m.info()["selection"]
    with pytest.raises(ConfigError, match="select_protocol"):
        create_method("ucmfh", {"select_protocol": "both"})


def test_unlabelled_validation_falls_back_to_instance_relevance_and_empty_validation_keeps_last_epoch():
    train, val = random_split(64), random_split(20, seed=1)
    unlabelled = type(val)(image=val.image, text=val.text, labels=np.zeros_like(val.labels))
    m = create_method("ucmfh", {**TINY, "epochs": 2}).fit(train, unlabelled, 16, 0)
    assert m.info()["selection"].endswith("instance relevance")
    empty = type(val)(image=val.image[:0], text=val.text[:0], labels=val.labels[:0])
    m = create_method("ucmfh", {**TINY, "epochs": 2}).fit(train, empty, 16, 0)
    stage = m.history["stages"][0]
    assert stage["epochs"] == stage["best_epoch"] == 2 and stage["val_map"] == []


def test_one_progress_line_per_epoch(caplog):
    with caplog.at_level(logging.INFO, logger="methods.fusion"):
        create_method("ucmfh", {**TINY, "epochs": 3, "patience": 9}).fit(random_split(64), random_split(20, seed=1), 16, 0)
    lines = [r.getMessage() for r in caplog.records if " epoch " in r.getMessage() and "loss" in r.getMessage()]
    assert len(lines) == 3
    for i, line in enumerate(lines, start=1):
        assert line.startswith(f"UCMFH 16 bits joint epoch {i}/3: loss ")
    # Default eval_every = 2: epoch 1 is not evaluated, epoch 2 is, and the last epoch always is.
    assert lines[0].endswith("validation mAP –")
    assert "validation mAP 0." in lines[1] and "validation mAP 0." in lines[2]


def test_single_token_fusion_equals_the_transformer_encoder_module():
    cfg = UCMFHConfig(**{k: v for k, v in TINY.items() if k in ("slot_dim", "n_heads", "dim_feedforward")})
    torch.manual_seed(0)
    fusion = TransformerFusion(cfg).eval()
    tokens = torch.randn(7, 32)
    with torch.no_grad():
        ref = fusion.encoder(tokens.unsqueeze(1)).squeeze(1)
        out, aux = fusion(tokens)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert aux.item() == 0.0
    # Training mode without dropout: the same function (gradients flow through the same parameters).
    cfg0 = UCMFHConfig(**{k: v for k, v in TINY.items() if k in ("slot_dim", "n_heads", "dim_feedforward")}, dropout=0.0)
    fusion0 = TransformerFusion(cfg0).train()
    torch.testing.assert_close(fusion0(tokens)[0], fusion0.encoder(tokens.unsqueeze(1)).squeeze(1), rtol=1e-5, atol=1e-5)


def test_search_space_covers_the_training_hyper_parameters():
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(5):
        space = UCMFH.search_space(study.ask())
        assert {"lr_fusion", "lr_head", "temperature", "hash_weight", "p_missing", "dropout", "head_dropout", "epochs"} <= set(space)
        create_method("ucmfh", space)  # every sampled point is a valid config


def test_lr_growth_flag_reproduces_per_iteration_multisteplr():
    plain = create_method("ucmfh", TINY)
    grow = create_method("ucmfh", {**TINY, "lr_growth": True})
    assert [plain._head_lr(i) for i in (0, 30, 100)] == [1e-3] * 3
    # torch's MultiStepLR stepped once per iteration is the authors' schedule: compare with it.
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[30, 80], gamma=1.2)
    for it in range(1, 120):
        opt.step()
        sched.step()
        assert grow._head_lr(it) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
    assert grow._head_lr(85) == pytest.approx(1.44e-3)


def test_train_first_4992_flag_cuts_training_set():
    train = random_split(5000, d_img=4, d_txt=4)
    small = {**TINY, "epochs": 1, "slot_dim": 4, "dim_feedforward": 4, "head_hidden": 4, "batch_size": 1024}
    m = create_method("ucmfh", {**small, "train_first_4992": True}).fit(train, random_split(8, 4, 4), 8, 0)
    assert m.history["n_train"] == 4992
    m = create_method("ucmfh", small).fit(train, random_split(8, 4, 4), 8, 0)
    assert m.history["n_train"] == 5000


def test_default_ucmfh_learns_on_synthetic_data():
    """Default architecture and optimiser, few epochs: mAP far above random codes, both protocols."""
    ds = DATASETS.get("synthetic")(None, seed=0, n_train=300, n_validation=100, n_query=100)
    feats = Features(ds.image_features, ds.text_features, "precomputed")
    train, val, q, db = (feature_split(ds, feats, s) for s in ("train", "validation", "query", "database"))
    m = create_method("ucmfh", {"epochs": 3}).fit(train, val, 16, seed=0)
    rng = np.random.default_rng(0)
    chance = reference_map(rng.standard_normal((len(q), 16)), rng.standard_normal((len(db), 16)), q.labels, db.labels)
    uni = reference_map(m.encode(image=q.image).image, m.encode(text=db.text).text, q.labels, db.labels)
    pq, pd = m.encode(image=q.image, text=q.text), m.encode(image=db.image, text=db.text)
    paired = reference_map(pq.text, pd.image, q.labels, db.labels)
    assert uni > chance + 0.1, (uni, chance)
    assert paired > chance + 0.1, (paired, chance)
