"""Validation-selection scorer (methods/selection.py): hand-worked values, brute force over tie orders, and an
independent re-computation by the harness evaluator (benchmarks.evaluation)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks.evaluation.metrics import MetricSpec, evaluate_hamming, evaluate_scores
from medhash_datasets.base import FeatureSplit
from methods.base import EncodedBatch
from methods.selection import (
    ValidationScore,
    has_labels,
    tie_aware_ap,
    validation_map_codes,
    validation_map_scores,
    validation_score,
)


def _brute_force_ap(dist: np.ndarray, rel: np.ndarray) -> float:
    """Mean AP over every ordering inside each group of equal distance (enumerated)."""
    groups = [np.flatnonzero(dist == v) for v in np.unique(dist)]
    total, count = 0.0, 0
    for perms in itertools.product(*(itertools.permutations(g) for g in groups)):
        ranked = rel[np.concatenate(perms)]
        hits = np.cumsum(ranked)
        ap = (ranked * hits / np.arange(1, len(ranked) + 1)).sum() / ranked.sum() if ranked.sum() else 0.0
        total, count = total + ap, count + 1
    return total / count


def test_hand_worked_bucket():
    # One query; distances 0, 1, 1; only the second item relevant: it sits at rank 2 or 3 with probability
    # 1/2 each, so AP = (1/2 + 1/3) / 2 = 5/12.
    q = np.array([[1.0, 1.0]])
    db = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0]])
    labels_q = np.array([[1, 0]])
    labels_db = np.array([[0, 1], [1, 1], [0, 1]])
    assert validation_map_codes(q, db, labels_q, labels_db) == pytest.approx(5 / 12, abs=1e-12)
    assert tie_aware_ap(np.array([[1, 2]]), np.array([[0, 1]]))[0] == pytest.approx(5 / 12)


def test_relaxed_codes_and_bits_agree_and_zero_is_bit_one():
    rng = np.random.default_rng(0)
    relaxed = np.tanh(rng.standard_normal((6, 16)))
    relaxed[0, :4] = 0.0  # bit = (h >= 0): 0 is a 1-bit, never a third value
    db = np.tanh(rng.standard_normal((9, 16)))
    lq, ld = rng.integers(0, 2, (6, 3)), rng.integers(0, 2, (9, 3))
    a = validation_map_codes(relaxed, db, lq, ld)
    b = validation_map_codes(relaxed >= 0, db >= 0, lq, ld)
    assert a == b
    with pytest.raises(ValueError, match="unsigned"):
        validation_map_codes((relaxed >= 0).astype(np.uint8), db, lq, ld)


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_over_tie_orders(seed):
    rng = np.random.default_rng(seed)
    bits, nd = 8, 7
    q = rng.choice([-1.0, 1.0], (3, bits))
    db = rng.choice([-1.0, 1.0], (nd, bits))
    db[3] = db[1]  # force ties
    db[5] = db[1]
    lq, ld = rng.integers(0, 2, (3, 4)), rng.integers(0, 2, (nd, 4))
    expected = []
    for i in range(3):
        dist = (bits - db @ q[i]) / 2
        expected.append(_brute_force_ap(dist, (ld @ lq[i] > 0).astype(float)))
    assert validation_map_codes(q, db, lq, ld) == pytest.approx(np.mean(expected), abs=1e-12)


@pytest.mark.parametrize("bits", [16, 64])
def test_codes_agree_with_harness_evaluator(bits):
    rng = np.random.default_rng(bits)
    q = np.tanh(rng.standard_normal((137, bits)))
    db = np.tanh(rng.standard_normal((411, bits)))
    lq = (rng.random((137, 6)) < 0.25).astype(np.uint8)
    ld = (rng.random((411, 6)) < 0.25).astype(np.uint8)
    ours = validation_map_codes(q, db, lq, ld, chunk_pairs=5000)  # several chunks
    ref = evaluate_hamming(q, db, lq, ld, tie="aware", metrics=MetricSpec.map_only()).get("map")
    assert ours == pytest.approx(ref, abs=1e-10)


@pytest.mark.parametrize("ties", ["none", "all rows", "some rows"])
def test_scores_agree_with_harness_evaluator(ties):
    rng = np.random.default_rng(7)
    q = rng.standard_normal((50, 12))
    db = rng.standard_normal((120, 12))
    if ties == "all rows":
        db[60:90] = db[:30] * 2.0  # equal cosine to rows 0..29 for every query: exact ties
    elif ties == "some rows":
        db[1] = db[0] * np.r_[-1.0, np.ones(11)]  # mirror image in coordinate 0:
        q[::2, 0] = 0.0  # ... ties with item 0 exactly for the even queries only
    lq = (rng.random((50, 5)) < 0.3).astype(np.uint8)
    ld = (rng.random((120, 5)) < 0.3).astype(np.uint8)
    ours = validation_map_scores(q, db, lq, ld, chunk_pairs=1000)
    ref = evaluate_scores(q, db, lq, ld, tie="aware", metrics=MetricSpec.map_only()).get("map")
    assert ours == pytest.approx(ref, abs=1e-10)


def test_instance_relevance_hand_worked():
    # Query 0's pair (item 0) is first; query 1's pair (item 1) ties with item 0 at distance 0 -> AP 3/4.
    q = np.array([[1.0, 1.0], [1.0, 1.0]])
    db = np.array([[1.0, 1.0], [1.0, 1.0], [-1.0, -1.0]])
    # Both items 0 and 1 at distance 0: for query 0 its pair is at rank 1 or 2 -> (1 + 1/2)/2 = 3/4, same for 1.
    assert validation_map_codes(q, db, None, None) == pytest.approx(0.75)
    assert validation_map_scores(np.eye(2), np.eye(2), None, None) == pytest.approx(1.0)


def test_validation_score_protocol_and_fallback():
    rng = np.random.default_rng(3)
    lab = (rng.random((40, 4)) < 0.4).astype(np.uint8)
    train = FeatureSplit(rng.standard_normal((40, 8)).astype(np.float32), rng.standard_normal((40, 8)).astype(np.float32), lab)
    val = FeatureSplit(rng.standard_normal((15, 8)).astype(np.float32), rng.standard_normal((15, 8)).astype(np.float32), lab[:15])

    def identity(image=None, text=None):
        return EncodedBatch(image, text)

    score = validation_score(identity, train, val)
    assert isinstance(score, ValidationScore) and score.relevance == "labels"
    assert score.i2t == pytest.approx(validation_map_codes(val.image, train.text, val.labels, train.labels))
    assert score.t2i == pytest.approx(validation_map_codes(val.text, train.image, val.labels, train.labels))
    assert score.mean == pytest.approx((score.i2t + score.t2i) / 2)
    unlabelled = FeatureSplit(val.image, val.text, np.zeros((15, 0), np.uint8))
    assert not has_labels(unlabelled.labels)
    fb = validation_score(identity, train, unlabelled, binary=False)
    assert fb.relevance == "instance"
    assert fb.i2t == pytest.approx(validation_map_scores(val.image, val.text, None, None))
    # Paired items identical across modalities: instance relevance gives a perfect score.
    same = FeatureSplit(val.image, val.image.copy(), np.zeros((15, 0), np.uint8))
    assert validation_score(identity, train, same, binary=False).mean == pytest.approx(1.0)
    with pytest.raises(ValueError, match="protocol"):
        validation_score(identity, train, val, protocol="fused")
