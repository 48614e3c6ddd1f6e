"""Metrics: hand-worked values, agreement with a plain argsort implementation, tie-aware expectations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from benchmarks.evaluation import MetricSpec, evaluate_hamming, evaluate_scores, tie_aware_ap_sum

SPEC = MetricSpec(map_at_k=(1, 3, 10), map_first_k_relevant=(1, 2, 5, 1000), p_at_n=(1, 2, 5, 10, 10_000), ndcg_at_k=(1, 3, 10))
PER_QUERY = ["map", "map@k", "map_first_k_relevant@k", "p@n", "ndcg@k"]


# ------------------------------------------------------------------ independent plain reference (argsort)


def ref_query(order: np.ndarray, shared: np.ndarray, spec: MetricSpec) -> dict:
    """Every per-query metric of one ranking, written directly from the definitions."""
    nd = len(order)
    rel = shared[order] > 0
    gains = shared[order]
    pos = np.flatnonzero(rel) + 1.0
    big_r = len(pos)
    out = {("map", None): float(np.mean(np.arange(1, big_r + 1) / pos)) if big_r else 0.0}
    for k in spec.map_at_k:
        pk = pos[pos <= k]
        out[("map@k", k)] = float(np.mean(np.arange(1, len(pk) + 1) / pk)) if len(pk) else 0.0
    for k in spec.map_first_k_relevant:
        m = min(k, big_r)
        out[("map_first_k_relevant@k", k)] = float(np.mean(np.arange(1, m + 1) / pos[:m])) if m else 0.0
    for n in spec.p_at_n:
        n = min(n, nd)
        out[("p@n", n)] = float(rel[:n].sum() / n)
    for k in spec.ndcg_at_k:
        kk = min(k, nd)
        disc = 1.0 / np.log2(np.arange(2, kk + 2))
        ideal = np.sort(shared)[::-1][:kk]
        idcg = float(((2.0**ideal - 1) * disc).sum())
        out[("ndcg@k", k)] = float(((2.0 ** gains[:kk] - 1) * disc).sum() / idcg) if idcg > 0 else 0.0
    return out


def ref_index(dist: np.ndarray, q_lab: np.ndarray, db_lab: np.ndarray, spec: MetricSpec, seed: int) -> list[dict]:
    """Index ties: shuffle the database with the seed, then a stable argsort per query."""
    perm = np.random.default_rng(seed).permutation(dist.shape[1])
    d, lab = dist[:, perm], db_lab[perm]
    shared = q_lab.astype(int) @ lab.T.astype(int)
    return [ref_query(np.argsort(d[i], kind="stable"), shared[i], spec) for i in range(len(d))]


def random_problem(rng, nq, nd, k, n_labels, p_label=0.3):
    q = rng.random((nq, k)) < 0.5
    db = rng.random((nd, k)) < 0.5
    ql = rng.random((nq, n_labels)) < p_label
    dl = rng.random((nd, n_labels)) < p_label
    dist = (q[:, None, :] != db[None, :, :]).sum(axis=2)
    return q, db, ql, dl, dist


def assert_matches(res, refs, tol=1e-9):
    keys = refs[0].keys()
    for key in keys:
        ref = np.array([r[key] for r in refs])
        np.testing.assert_allclose(res.per_query[key], ref, rtol=0, atol=tol, err_msg=str(key))
        assert res.get(*key) == pytest.approx(ref.mean(), abs=tol)


# --------------------------------------------------------------------------------- hand-worked examples


def _one_query(dist_row, rel_row):
    """Codes realising given distances from an all-zero query (K = max distance, prefix-of-ones codes)."""
    k = max(int(max(dist_row)), 1)
    db = np.array([[t < d for t in range(k)] for d in dist_row])
    q = np.zeros((1, k), dtype=bool)
    ql = np.ones((1, 1), dtype=bool)
    dl = np.array(rel_row, dtype=bool)[:, None]
    return q, db, ql, dl


def test_hand_worked_ap_ranks_1_and_3():
    # distances 0,1,2,3 -> ranks 1..4; relevant at ranks 1 and 3: AP = (1/1 + 2/3) / 2 = 5/6
    q, db, ql, dl = _one_query([0, 1, 2, 3], [1, 0, 1, 0])
    spec = MetricSpec(map_at_k=(2,), map_first_k_relevant=(1,), p_at_n=(1, 2, 3, 4), ndcg_at_k=(2,))
    for tie in ("index", "aware"):  # no ties here: both policies agree
        res = evaluate_hamming(q, db, ql, dl, tie=tie, metrics=spec)
        assert res.get("map") == pytest.approx(5 / 6, abs=1e-12)
        assert res.get("map@k", 2) == pytest.approx(1.0, abs=1e-12)  # only rank 1 inside the top 2
        assert res.get("map_first_k_relevant@k", 1) == pytest.approx(1.0, abs=1e-12)
        assert [res.get("p@n", n) for n in (1, 2, 3, 4)] == pytest.approx([1, 0.5, 2 / 3, 0.5])
        # gains 2**1-1 = 1 at ranks 1, 3; ideal puts them at 1, 2
        assert res.get("ndcg@k", 2) == pytest.approx(1.0 / (1.0 + 1.0 / math.log2(3)))
        assert res.n_queries_without_relevant == 0


def test_hand_worked_tie_aware_two_items_one_relevant():
    # both items at distance 0, one relevant: AP is 1 or 1/2 with probability 1/2 each
    q, db, ql, dl = _one_query([0, 0], [1, 0])
    res = evaluate_hamming(q, db, ql, dl, tie="aware", metrics=MetricSpec(map_at_k=(1,), p_at_n=(1,), ndcg_at_k=(1,)))
    assert res.get("map") == pytest.approx(0.75)
    assert res.get("map@k", 1) == pytest.approx(0.5)  # relevant item in the top 1 half of the time
    assert res.get("p@n", 1) == pytest.approx(0.5)
    assert res.get("ndcg@k", 1) == pytest.approx(0.5)


def test_pr_radius_and_p_r2_hand_worked():
    # query 0: distances 0,1,2,3 relevance 1,0,1,0 ; query 1 (other label): nothing relevant
    q, db, ql, dl = _one_query([0, 1, 2, 3], [1, 0, 1, 0])
    q = np.vstack([q, q])
    ql = np.array([[1, 0], [0, 1]], dtype=bool)
    dl = np.hstack([dl, np.zeros_like(dl)])
    res = evaluate_hamming(q, db, ql, dl, metrics=MetricSpec(p_at_n=(), ndcg_at_k=(), map_at_k=(), map_first_k_relevant=()))
    # pairs within r (both queries): r=0: 2, r=1: 4, r=2: 6, r=3: 8 ; relevant within r: 1, 1, 2, 2 of 2
    assert [res.get("pr_radius_precision", r) for r in range(4)] == pytest.approx([1 / 2, 1 / 4, 2 / 6, 2 / 8])
    assert [res.get("pr_radius_recall", r) for r in range(4)] == pytest.approx([0.5, 0.5, 1.0, 1.0])
    assert res.get("p@r2") == pytest.approx((2 / 3 + 0.0) / 2)
    assert res.n_queries_without_relevant == 1
    assert res.get("map") == pytest.approx(5 / 6 / 2)  # the query without relevant items counts as 0


# ------------------------------------------------------------------- agreement with a plain argsort


@pytest.mark.parametrize("k, seed", [(4, 0), (8, 1), (13, 2), (32, 3)])
def test_index_ties_match_plain_argsort(k, seed):
    rng = np.random.default_rng(seed)
    q, db, ql, dl, dist = random_problem(rng, 12, 150, k, 5)
    res = evaluate_hamming(q, db, ql, dl, tie="index", metrics=SPEC, shuffle_seed=seed + 10, memory_budget_mb=0.05)
    assert res.shuffle_seed == seed + 10
    assert_matches(res, ref_index(dist, ql, dl, SPEC, seed + 10))


def test_chunking_does_not_change_values():
    rng = np.random.default_rng(5)
    q, db, ql, dl, _ = random_problem(rng, 30, 80, 6, 4)
    for tie in ("index", "aware"):
        a = evaluate_hamming(q, db, ql, dl, tie=tie, metrics=SPEC, memory_budget_mb=1e-6)  # one query per chunk
        b = evaluate_hamming(q, db, ql, dl, tie=tie, metrics=SPEC, memory_budget_mb=512)
        assert a.values == b.values


# -------------------------------------------------------------------------------------- tie-aware


def _all_tie_orders(dist_row):
    """Every ranking that sorts by distance (all orderings inside each bucket)."""
    buckets = [np.flatnonzero(dist_row == v) for v in np.unique(dist_row)]
    for perms in itertools.product(*(itertools.permutations(b) for b in buckets)):
        yield np.concatenate(perms)


def test_tie_aware_equals_average_over_all_orderings():
    rng = np.random.default_rng(7)
    spec = MetricSpec(map_at_k=(1, 2, 3, 5), map_first_k_relevant=(1, 2, 3), p_at_n=(1, 2, 3, 4), ndcg_at_k=(1, 2, 4))
    q, db, ql, dl, dist = random_problem(rng, 10, 7, 3, 3, p_label=0.45)
    res = evaluate_hamming(q, db, ql, dl, tie="aware", metrics=spec)
    shared = ql.astype(int) @ dl.T.astype(int)
    refs = []
    for i in range(len(q)):
        runs = [ref_query(o, shared[i], spec) for o in _all_tie_orders(dist[i])]
        refs.append({key: float(np.mean([r[key] for r in runs])) for key in runs[0]})
    assert_matches(res, refs, tol=1e-9)


def test_tie_aware_partial_bucket_first_k_relevant_all_orders():
    # one bucket of 6 with 4 relevant, plus items before/after: first-2-relevant stops inside the bucket
    dist_row = np.array([0, 1, 1, 1, 1, 1, 1, 2])
    rel_row = np.array([1, 1, 0, 1, 1, 0, 1, 1])
    q, db, ql, dl = _one_query(dist_row, rel_row)
    spec = MetricSpec(map_at_k=(3, 4), map_first_k_relevant=(2, 3, 4), p_at_n=(4,), ndcg_at_k=(4,))
    res = evaluate_hamming(q, db, ql, dl, tie="aware", metrics=spec)
    shared = rel_row.astype(int)
    runs = [ref_query(o, shared, spec) for o in _all_tie_orders(dist_row)]
    for key in runs[0]:
        assert res.per_query[key][0] == pytest.approx(np.mean([r[key] for r in runs]), abs=1e-12), key


def test_tie_aware_ap_monte_carlo_larger():
    rng = np.random.default_rng(11)
    q, db, ql, dl, dist = random_problem(rng, 3, 400, 4, 3)
    spec = MetricSpec.map_only()
    res = evaluate_hamming(q, db, ql, dl, tie="aware", metrics=spec)
    shared = ql.astype(int) @ dl.T.astype(int)
    draws = 400
    for i in range(3):
        aps = []
        for _ in range(draws):
            order = np.lexsort((rng.random(dist.shape[1]), dist[i]))
            aps.append(ref_query(order, shared[i], spec)[("map", None)])
        sem = np.std(aps) / math.sqrt(draws)
        assert abs(res.per_query[("map", None)][i] - np.mean(aps)) < 5 * sem + 1e-12


def test_tie_aware_closed_form_equals_direct_sum():
    n, r, big_n, big_r = 9, 4, 13, 5
    direct = sum((r / n) * (big_r + 1 + (j - 1) * (r - 1) / (n - 1)) / (big_n + j) for j in range(1, n + 1))
    assert tie_aware_ap_sum(n, r, big_n, big_r) == pytest.approx(direct, rel=1e-13)
    assert tie_aware_ap_sum(1, 1, 3, 2) == pytest.approx(3 / 4)  # n = 1: precision (R+1)/(N+1)
    assert tie_aware_ap_sum(5, 0, 3, 2) == 0.0


def test_first_k_relevant_equals_map_when_k_covers_all_relevant():
    rng = np.random.default_rng(3)
    q, db, ql, dl, _ = random_problem(rng, 15, 60, 5, 3)
    spec = MetricSpec(map_first_k_relevant=(60,), map_at_k=(), p_at_n=(), ndcg_at_k=())
    for tie in ("index", "aware"):
        res = evaluate_hamming(q, db, ql, dl, tie=tie, metrics=spec)
        np.testing.assert_allclose(res.per_query[("map_first_k_relevant@k", 60)], res.per_query[("map", None)], atol=1e-12)


# --------------------------------------------------------------------------------------- degenerate


def test_single_item_database():
    q, db, ql, dl = _one_query([0], [1])
    for tie in ("index", "aware"):
        res = evaluate_hamming(q, db, ql, dl, tie=tie)
        assert res.n_database == 1
        assert res.get("map") == 1.0 and res.get("p@n", 1) == 1.0 and res.get("ndcg@k", 10) == pytest.approx(1.0)
        assert res.get("map@k", 50) == 1.0 and res.get("map_first_k_relevant@k", 5000) == 1.0


def test_all_distances_tied_aware_equals_chance_and_index_is_shuffle_order():
    rng = np.random.default_rng(2)
    nd = 30
    db = np.zeros((nd, 8), dtype=bool)
    q = np.zeros((4, 8), dtype=bool)
    ql = rng.random((4, 3)) < 0.5
    ql[:, 0] = True
    dl = rng.random((nd, 3)) < 0.3
    spec = MetricSpec(map_first_k_relevant=(3,), map_at_k=(5,), p_at_n=(1, 10), ndcg_at_k=(5,), pr_radius=False, p_at_r2=False)
    res = evaluate_hamming(q, db, ql, dl, tie="aware", metrics=spec)
    for v in res.values:  # one bucket: expected value over all orders = chance level
        assert v.value == pytest.approx(v.chance, abs=1e-12), v.metric
    big_r = (ql.astype(int) @ dl.T.astype(int) > 0).sum(1)
    h = sum(1.0 / j for j in range(1, nd + 1))
    exact = np.mean((h + (big_r - 1) / (nd - 1) * (nd - h)) / nd)
    assert res.get("map") == pytest.approx(exact, abs=1e-12)
    assert res.chance("p@n", 10) == pytest.approx(np.mean(big_r / nd))
    idx = evaluate_hamming(q, db, ql, dl, tie="index", metrics=spec, shuffle_seed=4)
    assert_matches(idx, ref_index(np.zeros((4, nd), int), ql, dl, spec, 4))


def test_no_relevant_items_at_all():
    rng = np.random.default_rng(0)
    q, db = rng.random((3, 8)) < 0.5, rng.random((10, 8)) < 0.5
    ql = np.tile([[1, 0]], (3, 1))
    dl = np.tile([[0, 1]], (10, 1))
    for tie in ("index", "aware"):
        res = evaluate_hamming(q, db, ql, dl, tie=tie)
        assert res.n_queries_without_relevant == 3 and res.n_queries == 3
        assert all(v.value == 0.0 for v in res.values)
        assert res.get("pr_radius_recall", 8) == 0.0


def test_chance_levels_by_enumeration():
    # one query, 5 items, 2 relevant with grades 1 and 2: average each metric over all 120 rankings
    shared = np.array([1, 0, 2, 0, 0])
    ql = np.array([[1, 1]], dtype=bool)
    dl = np.array([[1, 0], [0, 0], [1, 1], [0, 0], [0, 0]], dtype=bool)
    spec = MetricSpec(map_at_k=(2,), map_first_k_relevant=(1,), p_at_n=(2,), ndcg_at_k=(2,), pr_radius=False, p_at_r2=False)
    rng = np.random.default_rng(0)
    q, db = rng.random((1, 8)) < 0.5, rng.random((5, 8)) < 0.5
    res = evaluate_hamming(q, db, ql, dl, metrics=spec)
    runs = [ref_query(np.array(p), shared, spec) for p in itertools.permutations(range(5))]
    for key in runs[0]:
        assert res.chance(*key) == pytest.approx(np.mean([r[key] for r in runs]), abs=1e-12), key


def test_result_shape_and_get():
    rng = np.random.default_rng(0)
    q, db, ql, dl, _ = random_problem(rng, 4, 20, 16, 3)
    res = evaluate_hamming(q, db, ql, dl)
    assert [v.k for v in res.values if v.metric == "p@n"] == [1, 5, 10, 20]  # capped at n_database
    assert [v.k for v in res.values if v.metric == "pr_radius_precision"] == list(range(17))
    assert res.get("map@k", 50) == res.get("map@k", 50)
    with pytest.raises(KeyError, match="not computed"):
        res.get("map@k", 7)


# ------------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ql": np.ones((3, 2))}, r"query labels: 3 rows"),
        ({"dl": np.ones((6, 4))}, r"different widths"),
        ({"dl": np.full((6, 3), 2.0)}, "multi-hot"),
        ({"db": np.ones((6, 9))}, "9 bits"),
        ({"q": np.full((4, 8), np.nan)}, "NaN"),
        ({"tie": "random"}, "tie must be"),
    ],
)
def test_validation_errors(kwargs, match):
    args = {"q": np.ones((4, 8)), "db": np.ones((6, 8)), "ql": np.ones((4, 3)), "dl": np.ones((6, 3)), "tie": "index"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        evaluate_hamming(args["q"], args["db"], args["ql"], args["dl"], tie=args["tie"])


def test_packed_input_equals_bool_input():
    rng = np.random.default_rng(9)
    q, db, ql, dl, _ = random_problem(rng, 5, 40, 12, 3)
    a = evaluate_hamming(q, db, ql, dl)
    b = evaluate_hamming(np.packbits(q, 1, bitorder="little"), np.packbits(db, 1, bitorder="little"), ql, dl, bits=12)
    assert a.values == b.values


# ------------------------------------------------------------------------------------- real scores


def test_scores_match_plain_argsort_and_hamming_equivalence():
    rng = np.random.default_rng(4)
    nq, nd, d = 8, 90, 6
    qf, df = rng.normal(size=(nq, d)), rng.normal(size=(nd, d))
    ql, dl = rng.random((nq, 4)) < 0.3, rng.random((nd, 4)) < 0.3
    res = evaluate_scores(qf, df, ql, dl, tie="index", metrics=SPEC, shuffle_seed=2)
    assert not any(v.metric.startswith("pr_radius") or v.metric == "p@r2" for v in res.values)
    perm = np.random.default_rng(2).permutation(nd)
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    dn = (df / np.linalg.norm(df, axis=1, keepdims=True))[perm]
    shared = ql.astype(int) @ dl[perm].T.astype(int)
    refs = [ref_query(np.argsort(-(qn[i] @ dn.T), kind="stable"), shared[i], SPEC) for i in range(nq)]
    assert_matches(res, refs)
    # ±1 codes as features: cosine = 1 - 2 d / K, so score ranking == Hamming ranking (ties included)
    q, db, ql2, dl2, _ = random_problem(rng, 6, 50, 5, 3)
    spec = MetricSpec(pr_radius=False, p_at_r2=False, map_at_k=(4,), map_first_k_relevant=(2,), ndcg_at_k=(3,))
    for tie in ("index", "aware"):
        h = evaluate_hamming(q, db, ql2, dl2, tie=tie, metrics=spec, shuffle_seed=1)
        s = evaluate_scores(np.where(q, 1.0, -1.0), np.where(db, 1.0, -1.0), ql2, dl2, tie=tie, metrics=spec, shuffle_seed=1)
        for a, b in zip(h.values, s.values):
            assert a.metric == b.metric and a.k == b.k
            assert a.value == pytest.approx(b.value, abs=1e-12) and a.chance == pytest.approx(b.chance, abs=1e-12)


def test_scores_reject_zero_rows():
    with pytest.raises(ValueError, match="row 1 is all zeros"):
        evaluate_scores(np.array([[1.0, 0.0], [0.0, 0.0]]), np.ones((3, 2)), np.ones((2, 1)), np.ones((3, 1)))


def test_deterministic_same_seed():
    rng = np.random.default_rng(8)
    q, db, ql, dl, _ = random_problem(rng, 6, 50, 8, 3)
    a = evaluate_hamming(q, db, ql, dl, shuffle_seed=5)
    b = evaluate_hamming(q, db, ql, dl, shuffle_seed=5)
    c = evaluate_hamming(q, db, ql, dl, shuffle_seed=6)
    assert a.values == b.values
    assert a.get("map") != c.get("map")  # 8-bit codes on 50 items: many ties, so the shuffle matters
