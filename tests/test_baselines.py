"""Reference baselines: random at chance, CCA maths, ITQ rotation, real-valued space, save/load; the CCA ridge and
dimension chosen on the validation split (issue 14 item 1) and rank-deficient views (issue 13 item 3)."""

from __future__ import annotations

import numpy as np
import pytest

from medhash_datasets.base import Features, FeatureSplit, feature_split
from medhash_datasets.loaders import DATASETS
from methods import ConfigError, create_method
from methods.baselines import fit_cca, itq_rotation
from methods.cca import CCARankError, CCAStatistics


def plain_map(scores: np.ndarray, rel: np.ndarray) -> float:
    """Independent mAP@all: stable argsort by descending score (ties by database index)."""
    order = np.argsort(-scores, axis=1, kind="stable")
    r = np.take_along_axis(rel, order, 1).astype(float)
    hits = np.cumsum(r, 1)
    ap = (r * hits / np.arange(1, r.shape[1] + 1)).sum(1) / np.maximum(r.sum(1), 1)
    return float(ap.mean())


@pytest.fixture(scope="module")
def splits():
    d = DATASETS.get("synthetic")(None, seed=0)
    f = Features(d.image_features, d.text_features, "precomputed")
    return {s: feature_split(d, f, s) for s in ("train", "validation", "query", "database")}


def i2t_map(method, splits):
    q, db = splits["query"], splits["database"]
    qi = method.encode(image=q.image).image
    dt = method.encode(text=db.text).text
    rel = (q.labels.astype(int) @ db.labels.T.astype(int)) > 0
    if method.binary:
        a, b = np.where(qi >= 0, 1, -1), np.where(dt >= 0, 1, -1)
        return plain_map(a @ b.T, rel), rel.mean()
    a = qi / np.linalg.norm(qi, axis=1, keepdims=True)
    b = dt / np.linalg.norm(dt, axis=1, keepdims=True)
    return plain_map(a @ b.T, rel), rel.mean()


def test_random_codes_sit_at_chance_and_are_deterministic(splits):
    m = create_method("random").fit(splits["train"], splits["validation"], 16, seed=0)
    value, chance = i2t_map(m, splits)
    assert abs(value - chance) < 0.03
    a = m.encode(image=splits["query"].image[:5]).image
    b = m.encode(image=splits["query"].image[:5]).image
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {-1.0, 1.0} and a.shape == (5, 16)
    other = create_method("random").fit(splits["train"], splits["validation"], 16, seed=1)
    assert not np.array_equal(other.encode(image=splits["query"].image[:5]).image, a)
    # Any K >= 8, including K not a multiple of 8 and K > 512 bits.
    for k in (9, 600):
        mk = create_method("random").fit(splits["train"], splits["validation"], k, seed=0)
        assert mk.encode(text=splits["query"].text[:3]).text.shape == (3, k)


def test_cca_recovers_a_planted_correlation():
    rng = np.random.default_rng(0)
    n = 4000
    shared = rng.standard_normal((n, 2))
    x = np.column_stack([shared[:, 0], rng.standard_normal((n, 3))]) @ rng.standard_normal((4, 4))
    y = np.column_stack([0.8 * shared[:, 0] + 0.6 * rng.standard_normal(n), rng.standard_normal((n, 2))])
    cca = fit_cca(x, y, 2, reg=0.0)
    assert cca.corr[0] == pytest.approx(0.8, abs=0.02)
    px, py = cca.project_x(x), cca.project_y(y)
    # Projections are whitened and their first pair correlates as the reported canonical correlation.
    np.testing.assert_allclose(np.cov(px.T), np.eye(2), atol=1e-6)
    assert np.corrcoef(px[:, 0], py[:, 0])[0, 1] == pytest.approx(cca.corr[0], abs=1e-6)


def test_itq_rotation_is_orthogonal_and_lowers_quantisation_error():
    rng = np.random.default_rng(1)
    v = rng.standard_normal((500, 8)) @ rng.standard_normal((8, 8))
    v -= v.mean(0)
    r0 = itq_rotation(v, 0, np.random.default_rng(0))
    r = itq_rotation(v, 50, np.random.default_rng(0))
    np.testing.assert_allclose(r @ r.T, np.eye(8), atol=1e-10)

    def err(rot):
        p = v @ rot
        return np.linalg.norm(np.where(p >= 0, 1.0, -1.0) - p)

    assert err(r) < err(r0)


def test_cca_itq_learns_and_real_valued_beats_chance(splits):
    m = create_method("cca-itq").fit(splits["train"], splits["validation"], 16, seed=0)
    value, chance = i2t_map(m, splits)
    assert value > chance + 0.15
    rv = create_method("real-valued").fit(splits["train"], splits["validation"], 16, seed=0)
    assert rv.info()["space"] == "cca"  # dims differ (128 vs 64), so the CCA space is used
    value_rv, _ = i2t_map(rv, splits)
    assert value_rv > chance + 0.15
    assert value_rv >= value  # the float reference never loses to its own hashed version


def test_real_valued_uses_the_raw_space_when_dims_agree(splits):
    tr = splits["train"]
    same = type(tr)(tr.image[:, :64].copy(), tr.text.copy(), tr.labels)
    rv = create_method("real-valued").fit(same, same, 16, seed=0)
    assert rv.info() == {"space": "raw"}
    np.testing.assert_array_equal(rv.encode(image=same.image[:4]).image, same.image[:4])


def test_cca_itq_rejects_more_bits_than_dimensions(splits):
    with pytest.raises(CCARankError, match=r"needs 128 canonical directions.*rank 128 \(image, d=128\) and 64 \(text, d=64\)"):
        create_method("cca-itq").fit(splits["train"], splits["validation"], 128, seed=0)


@pytest.mark.parametrize("name", ["random", "cca-itq", "real-valued"])
def test_save_load_round_trip_gives_identical_codes(name, splits, tmp_path):
    from methods.base import HashingMethod

    fixed = {"real-valued": {"reg": 1.0, "cca_dim": 32, "eig_power": 1.0, "squash": 3.0}}.get(name)  # selection itself is tested above
    m = create_method(name, fixed).fit(splits["train"], splits["validation"], 16, seed=2)
    m.save(tmp_path / "model.pt")
    back = HashingMethod.load(tmp_path / "model.pt")
    q = splits["query"]
    for kw in ({"image": q.image}, {"text": q.text}):
        a, b = m.encode(**kw), back.encode(**kw)
        got = [x for x in a if x is not None][0]
        exp = [x for x in b if x is not None][0]
        np.testing.assert_array_equal(got, exp)
    assert back.info() == m.info()


def test_encode_before_fit_and_without_input_are_errors():
    m = create_method("cca-itq")
    with pytest.raises(RuntimeError, match="before fit"):
        m.encode(image=np.zeros((1, 4), np.float32))
    r = create_method("random").fit(None, None, 8, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image features, text features, or both"):
        r.encode()


# ---- issue 13 item 3: rank-deficient views; tiny training sets ----------------------------------------------
def _rank_one_text_pairs() -> FeatureSplit:
    """The issue's input: 10 pairs, image 10x8 standard normal, text = one column repeated 8 times (rank 1)."""
    rng = np.random.default_rng(0)
    image = rng.standard_normal((10, 8)).astype(np.float32)
    text = np.repeat(rng.standard_normal((10, 1)), 8, axis=1).astype(np.float32)
    return FeatureSplit(image, text, np.eye(10, 2, dtype=np.uint8))


def test_cca_itq_on_a_rank_one_view_names_the_rank_instead_of_emitting_constant_bits():
    pairs = _rank_one_text_pairs()
    stats = CCAStatistics(pairs.image, pairs.text)
    assert (stats.rank_x, stats.rank_y) == (8, 1)
    with pytest.raises(CCARankError, match=r"8 bits needs 8 canonical directions.*rank 8 \(image, d=8\) and 1 \(text, d=8\) from 10 pairs"):
        create_method("cca-itq").fit(pairs, pairs, 8, seed=0)
    with pytest.raises(CCARankError, match="rank 1"):
        fit_cca(pairs.image, pairs.text, 2)


def test_real_valued_caps_its_cca_dimension_at_the_rank_and_records_it():
    pairs = _rank_one_text_pairs()
    rv = create_method("real-valued", {"space": "cca", "cca_dim": 8}).fit(pairs, pairs, 8, seed=0)
    info = rv.info()
    assert info["cca_dim"] == 1 and info["cca_rank_text"] == 1
    assert "capped at the training views' numerical rank 1" in info["warning"]
    emb = rv.encode(image=pairs.image, text=pairs.text)
    assert emb.image.shape == (10, 1) and np.isfinite(emb.image).all() and np.isfinite(emb.text).all()


def test_tiny_and_constant_training_sets_give_named_errors_not_nan():
    rng = np.random.default_rng(1)
    three = FeatureSplit(rng.standard_normal((3, 16)).astype(np.float32), rng.standard_normal((3, 12)).astype(np.float32),
                         np.ones((3, 2), np.uint8))
    with pytest.raises(CCARankError, match="rank 2 .* from 3 pairs"):  # 3 centred pairs have rank 2 < 8 bits
        create_method("cca-itq").fit(three, three, 8, seed=0)
    rv = create_method("real-valued").fit(three, three, 8, seed=0)
    assert rv.info()["cca_dim"] == 2 and np.isfinite(rv.encode(image=three.image).image).all()
    with pytest.raises(ConfigError, match="at least 2 training pairs, got 1"):
        create_method("real-valued").fit(FeatureSplit(three.image[:1], three.text[:1], three.labels[:1]), three, 8, 0)
    constant = FeatureSplit(three.image, np.ones_like(three.text), three.labels)
    with pytest.raises(CCARankError, match=r"rank 2 \(image, d=16\) and 0 \(text, d=12\)"):
        create_method("real-valued").fit(constant, three, 8, seed=0)
    nan = FeatureSplit(np.full_like(three.image, np.nan), three.text, three.labels)
    with pytest.raises(ConfigError, match="image features contain NaN"):
        create_method("cca-itq").fit(nan, three, 8, seed=0)


# ---- issue 14 item 1: ridge and dimension chosen on the validation split ------------------------------------
def test_cca_statistics_match_the_direct_formula():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((60, 7)) @ rng.standard_normal((7, 7))
    y = np.column_stack([x[:, :2] + rng.standard_normal((60, 2)), rng.standard_normal((60, 3))])
    reg = 0.3
    xc, yc = x - x.mean(0), y - y.mean(0)
    cxx, cyy, cxy = xc.T @ xc / 59, yc.T @ yc / 59, xc.T @ yc / 59
    cxx += reg * np.trace(cxx) / 7 * np.eye(7)
    cyy += reg * np.trace(cyy) / 5 * np.eye(5)

    def inv_sqrt(c):
        w, v = np.linalg.eigh(c)
        return v / np.sqrt(w) @ v.T

    direct = np.linalg.svd(inv_sqrt(cxx) @ cxy @ inv_sqrt(cyy), compute_uv=False)[:4]
    cca = CCAStatistics(x, y).projection(4, reg)
    np.testing.assert_allclose(cca.corr, direct, rtol=1e-10)
    # The regularised problem whitens to (C + ridge)^-1: wxᵀ (Cxx + λI) wx = I.
    np.testing.assert_allclose(cca.wx.T @ cxx @ cca.wx, np.eye(4), atol=1e-10)


def _val_map_vs_train(method, train, val) -> float:
    """Independent validation score: the harness evaluator, validation queries vs training database."""
    from benchmarks.evaluation.metrics import MetricSpec, evaluate_hamming

    spec = MetricSpec.map_only()
    i2t = evaluate_hamming(method.encode(image=val.image).image, method.encode(text=train.text).text, val.labels,
                           train.labels, tie="aware", metrics=spec).get("map")
    t2i = evaluate_hamming(method.encode(text=val.text).text, method.encode(image=train.image).image, val.labels,
                           train.labels, tie="aware", metrics=spec).get("map")
    return (i2t + t2i) / 2


def test_cca_itq_ridge_is_the_validation_argmax_and_is_recorded(splits, monkeypatch):
    import methods.baselines as baselines

    grid = (1e-4, 1.0, 1e3)
    monkeypatch.setattr(baselines, "RIDGE_GRID", grid)
    monkeypatch.setattr(baselines, "EIG_POWER_GRID", (1.0,))
    tr, va = splits["train"], splits["validation"]
    scores = {reg: _val_map_vs_train(create_method("cca-itq", {"reg": reg}).fit(tr, va, 16, 0), tr, va) for reg in grid}
    chosen = create_method("cca-itq").fit(tr, va, 16, 0)
    info = chosen.info()
    assert info["reg_selection"] == "validation" and info["val_relevance"] == "labels"
    assert info["eig_power"] == 1.0 and info["eig_power_selection"] == "validation"
    assert info["reg"] == max(grid, key=lambda r: scores[r]) == 1.0  # the planted optimum is not an end point
    assert info["val_map"] == pytest.approx(scores[1.0], abs=1e-6)
    assert scores[1.0] > scores[1e-4] + 0.05  # the old fixed ridge over-fits
    fixed = create_method("cca-itq", {"reg": 0.5}).fit(tr, va, 16, 0).info()
    assert fixed["reg"] == 0.5 and fixed["reg_selection"] == "fixed (config)" and fixed["val_map"] < info["val_map"]
    empty = FeatureSplit(va.image[:0], va.text[:0], va.labels[:0])
    fb = create_method("cca-itq").fit(tr, empty, 16, 0).info()
    assert fb["reg"] == 1.0 and fb["reg_selection"] == "fallback (empty validation split)" and "val_map" not in fb


def test_real_valued_selects_ridge_weights_and_dimension_on_validation(splits, monkeypatch):
    import methods.baselines as baselines
    from methods.selection import validation_score

    monkeypatch.setattr(baselines, "RIDGE_GRID", (1e-3, 1.0))
    monkeypatch.setattr(baselines, "EIG_POWER_GRID", (1.0, 4.0))
    monkeypatch.setattr(baselines, "DIM_GRID", (8, 32, 128))
    monkeypatch.setattr(baselines, "SQUASH_GRID", (0.0, 3.0))
    tr, va = splits["train"], splits["validation"]
    rv = create_method("real-valued").fit(tr, va, 16, 0)
    info = rv.info()
    assert "warning" not in info  # 128 capped at min(d_img, d_txt) = 64 = the rank: not rank-deficient

    def score(**params):
        return validation_score(create_method("real-valued", params).fit(tr, va, 16, 0).encode, tr, va, binary=False).mean

    # Stage 1: ridge and weight power jointly at the largest dimension (64); stage 2: the dimension.
    stage1 = {(reg, p): score(reg=reg, eig_power=p, cca_dim=64, squash=0.0) for reg in (1e-3, 1.0) for p in (1.0, 4.0)}
    assert (info["reg"], info["eig_power"]) == max(stage1, key=stage1.get)
    fixed = {"reg": info["reg"], "eig_power": info["eig_power"]}
    stage2 = {k: score(**fixed, cca_dim=k, squash=0.0) for k in (8, 32, 64)}
    assert info["cca_dim"] == max(stage2, key=stage2.get) == rv.dim
    stage3 = {c: score(**fixed, cca_dim=info["cca_dim"], squash=c) for c in (0.0, 3.0)}
    assert info["squash"] == max(stage3, key=stage3.get)
    assert info["val_map"] == pytest.approx(max(stage3.values()), abs=1e-6)
    assert {info[f"{k}_selection"] for k in ("reg", "eig_power", "cca_dim", "squash")} == {"validation"}


def test_real_valued_squash_limit_ranks_as_cca_itq_hamming(splits):
    # tanh(c z / σ) of the ITQ-rotated projection: for large c its cosine is 1 − 2·Hamming/K of CCA-ITQ's bits.
    tr, va, q = splits["train"], splits["validation"], splits["query"]
    params = {"reg": 1.0, "eig_power": 1.0}
    codes = create_method("cca-itq", params).fit(tr, va, 16, 3)
    rv = create_method("real-valued", {**params, "cca_dim": 16, "squash": 1e3}).fit(tr, va, 16, 3)
    bits = np.where(codes.encode(image=q.image).image >= 0, 1.0, -1.0)
    np.testing.assert_array_equal(np.sign(rv.encode(image=q.image).image), bits)


def test_selection_never_sees_the_query_split(splits, monkeypatch):
    import methods.baselines as baselines

    monkeypatch.setattr(baselines, "RIDGE_GRID", (1e-2, 1.0, 1e2))
    monkeypatch.setattr(baselines, "EIG_POWER_GRID", (1.0, 2.0))
    monkeypatch.setattr(baselines, "DIM_GRID", (16, 32))
    monkeypatch.setattr(baselines, "SQUASH_GRID", (0.0, 3.0))
    d = DATASETS.get("synthetic")(None, seed=0)
    f = Features(d.image_features, d.text_features, "precomputed")
    q_idx = d.splits["query"]
    d.labels = d.labels.copy()
    d.labels[q_idx] = np.random.default_rng(9).permutation(d.labels[q_idx])  # other query labels
    tr, va = feature_split(d, f, "train"), feature_split(d, f, "validation")
    for name in ("cca-itq", "real-valued"):
        a = create_method(name).fit(splits["train"], splits["validation"], 16, 0)
        b = create_method(name).fit(tr, va, 16, 0)
        assert a.info() == b.info()
        for key, value in a.get_state().items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(value, b.get_state()[key])


def test_a_harness_cell_fits_the_same_model_whatever_the_query_split_holds(monkeypatch, tmp_path):
    """Through ``run_cell`` (the path a run takes): query features and labels replaced by noise change the test
    numbers but not one value of the fitted model or of the choices recorded in its rows."""
    import benchmarks.cell as cell

    fitted = []

    def keep(*args, **kwargs):
        fitted.append(create_method(*args, **kwargs))
        return fitted[-1]

    monkeypatch.setattr(cell, "create_method", keep)
    spec = cell.RunSpec(methods=["cca-itq", "real-valued"], datasets=["synthetic"], bits=[16], seeds=[0],
                        out=tmp_path, progress=False)
    clean = DATASETS.get("synthetic")(None, seed=0)
    noisy = DATASETS.get("synthetic")(None, seed=0)
    q_idx, rng = noisy.splits["query"], np.random.default_rng(9)
    for name in ("image_features", "text_features"):
        array = getattr(noisy, name).copy()
        array[q_idx] = rng.standard_normal((len(q_idx), array.shape[1])).astype(array.dtype)
        setattr(noisy, name, array)
    noisy.labels = noisy.labels.copy()
    noisy.labels[q_idx] = rng.integers(0, 2, size=noisy.labels[q_idx].shape).astype(noisy.labels.dtype)
    for name, bits in (("cca-itq", 16), ("real-valued", None)):
        rows = []
        for d in (clean, noisy):
            f = Features(d.image_features, d.text_features, "precomputed")
            rows.append(cell.run_cell(spec, d, f, name, bits, 0, run_id="r"))
        a, b = fitted[-2:]
        assert a.info() == b.info() and rows[0][0]["method_info"] == rows[1][0]["method_info"]
        state_a, state_b = a.get_state(), b.get_state()
        assert state_a.keys() == state_b.keys()
        for key, value in state_a.items():
            np.testing.assert_array_equal(np.asarray(value), np.asarray(state_b[key]), err_msg=f"{name}: {key}")
        values = [{(r["protocol"], r["task"], r["metric"], r["tie"]): r["value"] for r in rs if r["metric"] == "map"}
                  for rs in rows]
        assert values[0] != values[1]  # the query split did change: the test numbers moved


@pytest.mark.parametrize("name", ["cca-itq", "real-valued"])
def test_search_space_gives_valid_configs(name):
    optuna = pytest.importorskip("optuna")
    from methods import METHODS

    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(4):
        params = METHODS.get(name).cls.search_space(study.ask())
        assert params  # something to tune beyond what fit selects on validation
        create_method(name, params)
