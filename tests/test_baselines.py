"""Reference baselines: random at chance, CCA maths, ITQ rotation, real-valued space, save/load."""

from __future__ import annotations

import numpy as np
import pytest

from medhash_datasets import DATASETS, Features, feature_split
from methods import create_method
from methods.baselines import fit_cca, itq_rotation


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
    assert rv.info() == {"space": "cca"}  # dims differ (128 vs 64), so the CCA space is used
    value_rv, _ = i2t_map(rv, splits)
    assert value_rv > chance + 0.15


def test_real_valued_uses_the_raw_space_when_dims_agree(splits):
    tr = splits["train"]
    same = type(tr)(tr.image[:, :64].copy(), tr.text.copy(), tr.labels)
    rv = create_method("real-valued").fit(same, same, 16, seed=0)
    assert rv.info() == {"space": "raw"}
    np.testing.assert_array_equal(rv.encode(image=same.image[:4]).image, same.image[:4])


def test_cca_itq_rejects_more_bits_than_dimensions(splits):
    from methods import ConfigError

    with pytest.raises(ConfigError, match="min\\(d_img=128, d_txt=64\\)"):
        create_method("cca-itq").fit(splits["train"], splits["validation"], 128, seed=0)


@pytest.mark.parametrize("name", ["random", "cca-itq", "real-valued"])
def test_save_load_round_trip_gives_identical_codes(name, splits, tmp_path):
    from methods.base import HashingMethod

    m = create_method(name).fit(splits["train"], splits["validation"], 16, seed=2)
    m.save(tmp_path / "model.pt")
    back = HashingMethod.load(tmp_path / "model.pt")
    q = splits["query"]
    for kw in ({"image": q.image}, {"text": q.text}):
        a, b = m.encode(**kw), back.encode(**kw)
        got = [x for x in a if x is not None][0]
        exp = [x for x in b if x is not None][0]
        np.testing.assert_array_equal(got, exp)


def test_encode_before_fit_and_without_input_are_errors():
    m = create_method("cca-itq")
    with pytest.raises(RuntimeError, match="before fit"):
        m.encode(image=np.zeros((1, 4), np.float32))
    r = create_method("random").fit(None, None, 8, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="image features, text features, or both"):
        r.encode()
