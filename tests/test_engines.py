"""Search engines (``benchmarks.search``) and the efficiency measurement (``benchmarks.search.study``).

Exact engines are checked against an independent brute force (unpacked ±1 codes, Hamming = (K - a·b)/2,
ranking by a full stable sort on (distance, id)); tie order by id on hand-made examples; approximate engines
through recall; memory figures against K/8·N and 4·d·N. Sizes are tiny: no timing is asserted here (speed
targets live in ``tests/benchmarks/`` and the ``efficiency`` command).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.results import ROW_FIELDS
from benchmarks.search.base import MISSING_HAMMING, sort_rows_by_distance_then_id
from benchmarks.search.faiss_binary import FaissMultiHashEngine
from benchmarks.search.popcount import PopcountEngine, topk_from_hamming
from benchmarks.search.registry import ENGINES, create_engine
from benchmarks.search.study import EfficiencySpec, run_efficiency
from benchmarks.search.summary import ratio_table, target_checks
from benchmarks.search.timing import Contender, hamming_to, recall_at_k, time_engine, time_engines
from benchmarks.search.workload import bit_frequencies, draw_codes, extend_codes, extend_features, pack_codes
from medhash_datasets.registry import RegistryError

BINARY_EXACT = ("popcount", "BFlat")
FLOAT_EXACT = ("numpy-ip", "FlatIP")


# ---- independent references ------------------------------------------------------------------------
def brute_hamming(q_packed: np.ndarray, db_packed: np.ndarray, bits: int) -> np.ndarray:
    """Hamming distances from ±1 codes: (K - a·b) / 2 (evaluation spec), int64 (nq, nd)."""
    q = np.unpackbits(q_packed, axis=1, count=bits, bitorder="little").astype(np.int64) * 2 - 1
    d = np.unpackbits(db_packed, axis=1, count=bits, bitorder="little").astype(np.int64) * 2 - 1
    return (bits - q @ d.T) // 2


def brute_topk(dist: np.ndarray, k: int, descending: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-k per row by a full sort on (distance, id)."""
    n = dist.shape[1]
    ids = np.arange(n)
    out_ids, out_d = [], []
    for row in dist:
        order = np.lexsort((ids, -row if descending else row))[:k]
        out_ids.append(order)
        out_d.append(row[order])
    return np.array(out_ids, dtype=np.int64), np.array(out_d)


def tied_codes(n: int, n_bytes: int, rng: np.random.Generator, n_distinct: int = 40) -> np.ndarray:
    """Codes drawn from a few distinct values, so most distances tie."""
    distinct = rng.integers(0, 256, size=(n_distinct, n_bytes), dtype=np.uint8)
    return distinct[rng.integers(0, n_distinct, size=n)]


# ---- exact binary engines ---------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [8, 16, 24, 32, 48, 64, 128, 264])
def test_exact_binary_engines_match_brute_force_with_ties_by_id(bits: int) -> None:
    rng = np.random.default_rng(bits)
    n_bytes = bits // 8
    db = tied_codes(3000, n_bytes, rng)
    queries = np.concatenate([db[:5], rng.integers(0, 256, size=(7, n_bytes), dtype=np.uint8)])
    ref_ids, ref_d = brute_topk(brute_hamming(queries, db, bits), 50)
    for spec in BINARY_EXACT + (("hash-ball",) if bits <= 64 else ()):
        engine = create_engine(spec)
        engine.build(db)
        ids, dist = engine.search(queries, 50)
        assert ids.dtype == np.int64 and dist.dtype == np.int32 and ids.shape == (12, 50)
        np.testing.assert_array_equal(dist, ref_d, err_msg=f"{spec} distances at {bits} bits")
        np.testing.assert_array_equal(ids, ref_ids, err_msg=f"{spec} ids (tie order) at {bits} bits")


def test_popcount_tie_order_hand_worked() -> None:
    # bits (LSB first): A = 0b0000_0000, B = 0b0000_0011 (distance 2 from A), C = 0b0000_0001 (distance 1)
    a, b, c = 0x00, 0x03, 0x01
    db = np.array([[b], [a], [c], [a], [b], [a]], dtype=np.uint8)
    engine = create_engine("popcount")
    engine.build(db)
    ids, dist = engine.search(np.array([[a]], dtype=np.uint8), 4)
    assert ids.tolist() == [[1, 3, 5, 2]]  # the three A's by id, then C
    assert dist.tolist() == [[0, 0, 0, 1]]
    ids, dist = engine.search(np.array([[a]], dtype=np.uint8), 5)
    assert ids.tolist() == [[1, 3, 5, 2, 0]]  # of the two B's at distance 2, the lower id first
    assert dist.tolist() == [[0, 0, 0, 1, 2]]


def test_k_larger_than_database_pads_with_missing() -> None:
    db = np.array([[0b1], [0b0]], dtype=np.uint8)
    for spec in (*BINARY_EXACT, "hash-ball"):
        engine = create_engine(spec)
        engine.build(db)
        ids, dist = engine.search(np.array([[0]], dtype=np.uint8), 4)
        assert ids.tolist() == [[1, 0, -1, -1]], spec
        assert dist.tolist() == [[0, 1, MISSING_HAMMING, MISSING_HAMMING]], spec


def test_popcount_threaded_batch_equals_single_queries() -> None:
    rng = np.random.default_rng(3)
    db = tied_codes(5000, 4, rng, n_distinct=200)
    queries = rng.integers(0, 256, size=(9, 4), dtype=np.uint8)
    threaded = create_engine("popcount", threads=2)
    threaded.build(db)
    ids2, d2 = threaded.search(queries, 30)
    single = create_engine("popcount", threads=1)
    single.build(db)
    rows = [single.search(queries[i : i + 1], 30) for i in range(9)]
    np.testing.assert_array_equal(ids2, np.concatenate([r[0] for r in rows]))
    np.testing.assert_array_equal(d2, np.concatenate([r[1] for r in rows]))


def test_popcount_distances_equal_pm1_formula() -> None:
    rng = np.random.default_rng(11)
    db = rng.integers(0, 256, size=(500, 6), dtype=np.uint8)  # 48 bits -> three uint16 words
    q = rng.integers(0, 256, size=(1, 6), dtype=np.uint8)
    engine = PopcountEngine(threads=1)
    engine.build(db)
    np.testing.assert_array_equal(engine.distances(q[0]), brute_hamming(q, db, 48)[0])


def test_topk_from_hamming_sampled_threshold_is_exact() -> None:
    # N > THRESHOLD_SAMPLE, so the threshold is estimated from a strided sample; the few small distances
    # sit at odd positions the stride-2 sample never sees, forcing the retry path.
    n = 150_001
    dist = np.full(n, 9, dtype=np.uint8)
    dist[1:40:2] = 1  # 20 items at distance 1, all off the sample
    dist[1001:1200:2] = 3  # 100 items at distance 3
    dist[::7] = np.minimum(dist[::7], 5)
    for k in (1, 15, 20, 21, 100, 130, 5000):
        ids, d = topk_from_hamming(dist, k, max_distance=16)
        order = np.argsort(dist, kind="stable")[:k]
        np.testing.assert_array_equal(ids, order, err_msg=f"k={k}")
        np.testing.assert_array_equal(d, dist[order])


def test_topk_from_hamming_random_large() -> None:
    rng = np.random.default_rng(5)
    dist = rng.binomial(64, 0.5, size=300_000).astype(np.uint8)
    ids, d = topk_from_hamming(dist, 100, max_distance=64)
    order = np.argsort(dist, kind="stable")[:100]
    np.testing.assert_array_equal(ids, order)


# ---- float engines ------------------------------------------------------------------------------------
def test_float_engines_match_brute_force_and_order_ties_by_id() -> None:
    rng = np.random.default_rng(2)
    base = rng.standard_normal((60, 16)).astype(np.float32)
    db = base[rng.integers(0, 60, size=800)]  # duplicated rows: exactly tied scores
    queries = rng.standard_normal((6, 16)).astype(np.float32)
    scores = queries.astype(np.float64) @ db.T.astype(np.float64)
    ref_ids, _ = brute_topk(scores, 25, descending=True)
    for spec in FLOAT_EXACT:
        engine = create_engine(spec)
        engine.build(db)
        ids, vals = engine.search(queries, 25)
        assert vals.dtype == np.float32 and ids.shape == (6, 25)
        # tied groups (identical rows) must come out by id: compare per-row sets of (row content, id order)
        np.testing.assert_array_equal(ids, ref_ids, err_msg=spec)
        np.testing.assert_allclose(vals, np.take_along_axis(scores, ref_ids, 1), rtol=1e-5, atol=1e-5)


def test_float_engines_pad_when_k_exceeds_database() -> None:
    db = np.eye(3, dtype=np.float32)
    for spec in FLOAT_EXACT:
        engine = create_engine(spec)
        engine.build(db)
        ids, vals = engine.search(np.array([[0.0, 1.0, 0.5]], dtype=np.float32), 5)
        assert ids.tolist() == [[1, 2, 0, -1, -1]], spec
        assert vals[0, :3].tolist() == [1.0, 0.5, 0.0] and np.isneginf(vals[0, 3:]).all(), spec


# ---- approximate engines -------------------------------------------------------------------------------
def test_multihash_finds_every_neighbour_within_pigeonhole_radius() -> None:
    # With m sub-tables and flip radius 0, an item at full distance < m shares at least one whole substring
    # with the query (pigeonhole), so it is always found.
    rng = np.random.default_rng(8)
    queries = rng.integers(0, 256, size=(5, 8), dtype=np.uint8)
    near = []
    for q in queries:
        for _ in range(10):
            bits = np.unpackbits(q, bitorder="little")
            flip = rng.choice(64, size=rng.integers(0, 4), replace=False)  # distance 0..3 < m = 4
            bits[flip] ^= 1
            near.append(np.packbits(bits, bitorder="little"))
    far = rng.integers(0, 256, size=(2000, 8), dtype=np.uint8)
    db = np.concatenate([far[:1000], np.array(near), far[1000:]])
    engine = create_engine("BHash4")
    engine.build(db)
    assert engine.bits_per_table == 16 and not engine.exact
    ids, dist = engine.search(queries, 10)
    exact = create_engine("popcount")
    exact.build(db)
    ex_ids, ex_d = exact.search(queries, 10)
    assert ex_d.max() <= 3
    true_d = hamming_to(queries, db, ids)
    np.testing.assert_array_equal(true_d, dist)  # reported distances are the true ones
    assert recall_at_k(true_d, ids, ex_d, 10) == 1.0


def test_multihash_recall_below_one_for_random_codes() -> None:
    rng = np.random.default_rng(9)
    db = rng.integers(0, 256, size=(3000, 8), dtype=np.uint8)
    queries = rng.integers(0, 256, size=(20, 8), dtype=np.uint8)
    approx = create_engine("BHash4")
    approx.build(db)
    ids, dist = approx.search(queries, 10)
    exact = create_engine("BFlat")
    exact.build(db)
    _, ex_d = exact.search(queries, 10)
    true_d = hamming_to(queries, db, ids)
    np.testing.assert_array_equal(true_d[ids >= 0], dist[ids >= 0])
    r = recall_at_k(true_d, ids, ex_d, 10)
    assert 0.0 <= r < 0.5  # random 64-bit neighbours sit ~20 bits away: a 16-bit substring rarely matches
    # a flip radius of 4 per 16-bit table covers every item within distance 4*4+3 = 19 of the query
    wide = create_engine("BHash4f4")
    wide.build(db)
    wids, _ = wide.search(queries, 10)
    assert recall_at_k(hamming_to(queries, db, wids), wids, ex_d, 10) > r


def test_recall_at_k_hand_worked() -> None:
    exact_d = np.array([[0, 1, 2, 2]])
    # returned: distance 0 (hit), 2 (hit: ties with the exact 4th), 3 (miss), missing slot
    approx_ids = np.array([[4, 7, 9, -1]])
    approx_d = np.array([[0, 2, 3, -1]])
    assert recall_at_k(approx_d, approx_ids, exact_d, 4) == pytest.approx(0.5)


# ---- memory ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [16, 64])
def test_binary_memory_is_k_over_8_per_item(bits: int) -> None:
    n = 1000
    db = np.random.default_rng(0).integers(0, 256, size=(n, bits // 8), dtype=np.uint8)
    pop = create_engine("popcount")
    pop.build(db)
    assert pop.memory_bytes() == n * bits // 8  # exactly: ids are implicit row numbers
    flat = create_engine("BFlat")
    flat.build(db)
    assert n * bits // 8 <= flat.memory_bytes() <= n * bits // 8 + 256  # + the faiss header
    mh = create_engine("BHash4")
    mh.build(db)
    # faiss serialises codes + 4 tables whose ids are bit-packed in ceil(log2 N) = 10 bits each
    id_bytes = 4 * n * 10 / 8
    assert n * bits // 8 + id_bytes <= mh.memory_bytes() <= n * bits // 8 + id_bytes + 4 * 2 ** (bits // 4) * 8 + 512


def test_float_memory_is_4d_per_item() -> None:
    n, d = 700, 24
    db = np.random.default_rng(0).standard_normal((n, d)).astype(np.float32)
    ip = create_engine("numpy-ip")
    ip.build(db)
    assert ip.memory_bytes() == 4 * d * n
    fl = create_engine("FlatIP")
    fl.build(db)
    assert 4 * d * n <= fl.memory_bytes() <= 4 * d * n + 256


# ---- interface, registry, errors -----------------------------------------------------------------------
def test_registry_and_spec_strings() -> None:
    assert {"popcount", "BFlat", "BHash4", "numpy-ip", "FlatIP"} <= set(ENGINES.names())
    assert ENGINES.names(tag="exact") == sorted(["popcount", "BFlat", "hash-ball", "numpy-ip", "FlatIP"])
    e = create_engine("BHash2x8f1")
    assert isinstance(e, FaissMultiHashEngine) and (e.nhash, e.b, e.nflip) == (2, 8, 1) and e.name == "BHash2x8f1"
    assert create_engine("BHash4").name == "BHash4"
    with pytest.raises(RegistryError, match="valid engines: .*popcount"):
        create_engine("IVF100")


def test_engine_input_errors() -> None:
    pop = create_engine("popcount")
    with pytest.raises(RuntimeError, match="before build"):
        pop.search(np.zeros((1, 2), np.uint8), 1)
    with pytest.raises(ValueError, match="uint8"):
        pop.build(np.zeros((3, 2), np.int64))
    with pytest.raises(ValueError, match="2-D"):
        pop.build(np.zeros(8, np.uint8))
    pop.build(np.zeros((3, 2), np.uint8))
    with pytest.raises(ValueError, match=r"shape \(nq, 2\)"):
        pop.search(np.zeros((1, 4), np.uint8), 1)
    with pytest.raises(ValueError, match="k must be"):
        pop.search(np.zeros((1, 2), np.uint8), 0)
    ip = create_engine("numpy-ip")
    bad = np.ones((4, 3), np.float32)
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ip.build(bad)
    with pytest.raises(ValueError, match="do not fit"):
        create_engine("BHash4x32").build(np.zeros((5, 8), np.uint8))


def test_sort_rows_puts_missing_last() -> None:
    ids = np.array([[5, -1, 2, 9]])
    d = np.array([[3, MISSING_HAMMING, 3, 1]], dtype=np.int32)
    si, sd = sort_rows_by_distance_then_id(ids, d)
    assert si.tolist() == [[9, 2, 5, -1]] and sd.tolist() == [[1, 3, 3, MISSING_HAMMING]]


# ---- efficiency: drawn codes and features ----------------------------------------------------------
def test_draw_codes_matches_bit_frequencies_and_zero_padding() -> None:
    rng = np.random.default_rng(0)
    p = np.linspace(0.05, 0.95, 12)
    codes = draw_codes(20_000, 12, rng, p)
    assert codes.shape == (20_000, 2) and codes.dtype == np.uint8
    assert not (codes[:, 1] & 0xF0).any()  # padding bits 12..15 are zero
    freq = bit_frequencies(codes, 12)
    assert np.all(np.abs(freq - p) < 4 * np.sqrt(p * (1 - p) / 20_000))


def test_extend_codes_keeps_real_codes_first() -> None:
    rng = np.random.default_rng(1)
    bits = np.zeros((400, 16), dtype=bool)
    bits[:, :4] = True  # four bits always one, the rest always zero
    real = pack_codes(bits)
    out = extend_codes(real, 5000, 16, rng)
    np.testing.assert_array_equal(out[:400], real)
    np.testing.assert_array_equal(out[400:], np.broadcast_to(real[0], (4600, 2)))  # p = 1 or 0 exactly
    np.testing.assert_array_equal(extend_codes(real, 50, 16, rng), real[:50])


def test_extend_features_normalised_real_first() -> None:
    rng = np.random.default_rng(2)
    real = rng.standard_normal((30, 8)).astype(np.float32) * 3 + 1
    out = extend_features(real, 100, rng)
    assert out.shape == (100, 8) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out[:30], real / np.linalg.norm(real, axis=1, keepdims=True), rtol=1e-5)


# ---- efficiency: timing and the whole command ------------------------------------------------------
def test_time_engine_uses_the_clock() -> None:
    ticks = iter(np.arange(0.0, 1000.0, 0.5))  # every clock() call advances 0.5 s
    db = np.zeros((10, 2), np.uint8)
    t = time_engine(create_engine("popcount"), db, db[:3], db[:4], k=2, repeats=2, clock=lambda: next(ticks))
    assert t.build_s == 0.5
    np.testing.assert_array_equal(t.latencies_ms, [500.0, 500.0, 500.0])
    assert t.batch_latency_ms_median == 500.0 and t.throughput_qps == pytest.approx(4 / 0.5)
    assert t.index_bytes == 20 and t.bytes_per_item == 2.0


class _LoggingEngine(PopcountEngine):
    """A popcount engine that logs (label, number of queries) of every search call."""

    def __init__(self, label: str, log: list) -> None:
        super().__init__(threads=1)
        self.label, self.log = label, log

    def search(self, queries, k):
        self.log.append((self.label, queries.shape[0]))
        return super().search(queries, k)


def test_time_engines_alternates_blocks_and_batches() -> None:
    log: list = []
    db = np.zeros((20, 1), np.uint8)
    q = np.arange(5, dtype=np.uint8)[:, None]
    contenders = [Contender(name, _LoggingEngine(name, log), db, q, q[:3]) for name in ("a", "b")]
    timings = time_engines(contenders, k=2, repeats=2, block=2)
    warm = [("a", 1), ("a", 3), ("b", 1), ("b", 3)]
    # blocks of 2 single queries (plus one untimed warm-up call each), a then b, then the batches alternate
    singles = [("a", 1)] * 3 + [("b", 1)] * 3 + [("a", 1)] * 3 + [("b", 1)] * 3 + [("a", 1)] * 2 + [("b", 1)] * 2
    assert log == warm + singles + [("a", 3), ("b", 3), ("a", 3), ("b", 3)]
    assert timings["a"].latencies_ms.shape == (5,) and timings["b"].batch_ms.shape == (2,)
    with pytest.raises(ValueError, match="duplicate"):
        time_engines([contenders[0], contenders[0]], k=2, repeats=1)


def test_run_efficiency_random_writes_rows_tables_and_figure(tmp_path) -> None:
    spec = EfficiencySpec(bits=[16, 64], db_sizes=[300, 1200], k=10, feature_dims=[16], n_queries=4, batch_size=6,
                          repeats=2, out=tmp_path, command="test")
    res = run_efficiency(spec, echo=lambda s: None)
    out = tmp_path / "efficiency" / "random"
    assert res.out_dir == out
    files = sorted(out.glob("*.jsonl"))
    # 2 bits x 2 sizes x 3 binary engines + 1 dim x 2 sizes x 2 float engines
    assert len(files) == 12 + 4 == len(res.cell_paths)
    rows = [json.loads(line) for f in files for line in f.read_text().splitlines()]
    assert all(set(ROW_FIELDS) <= set(r) for r in rows)
    assert {r["protocol"] for r in rows} == {"efficiency"} and {r["task"] for r in rows} == {"-"}
    by = {(r["engine"], r["bits"], r["feature_dim"], r["db_size"], r["metric"]): r["value"] for r in rows}
    assert by[("popcount", 16, None, 1200, "index_bytes")] == 2400
    assert by[("popcount", 64, None, 300, "bytes_per_item")] == 8.0
    assert by[("numpy-ip", None, 16, 1200, "index_bytes")] == 4 * 16 * 1200
    assert 0.0 <= by[("BHash4", 16, None, 300, "recall@k")] <= 1.0
    assert ("popcount", 16, None, 300, "recall@k") not in by
    assert {r["batch_size"] for r in rows} == {6}
    for f in ("latency_vs_db_size.png", "latency_vs_db_size.pdf", "summary.md", "ratios.csv"):
        assert (out / f).stat().st_size > 0
    table = res.ratio_table
    assert len(table) == 12  # one line per (bits, size, binary engine)
    line = table[(table["bits"] == 16) & (table["db_size"] == 1200) & (table["engine"] == "popcount")].iloc[0]
    assert line["memory vs numpy-ip d=16"] == pytest.approx(64 / 2)
    lat = {(r["engine"], r["bits"], r["feature_dim"]): r["value"] for r in rows
           if r["metric"] == "latency_ms_median" and r["db_size"] == 1200}
    assert line["speedup vs FlatIP d=16"] == pytest.approx(lat[("FlatIP", None, 16)] / lat[("popcount", 16, None)])
    # the 1e6 targets are reported as not measured at these sizes, and evaluated when asked at 1200
    assert {t["status"] for t in res.targets} == {"not measured"}
    mem = [t for t in target_checks(res.rows, db_size=1200) if t["target"].startswith("memory")][0]
    assert mem["status"] == "pass" and mem["value"] == 2400


def test_ratio_table_hand_made_rows() -> None:
    def row(engine, bits, dim, metric, value):
        return {"engine": engine, "bits": bits, "feature_dim": dim, "db_size": 1000, "metric": metric, "value": value}

    rows = []
    for engine, bits, dim, lat, qps, bpi in (("popcount", 16, None, 0.5, 4000.0, 2.0), ("FlatIP", None, 512, 20.0, 100.0, 2048.0)):
        for m, v in (("latency_ms_median", lat), ("throughput_qps", qps), ("bytes_per_item", bpi)):
            rows.append(row(engine, bits, dim, m, v))
    t = ratio_table(rows)
    assert len(t) == 1
    assert t.loc[0, "speedup vs FlatIP d=512"] == pytest.approx(40.0)
    assert t.loc[0, "batch speedup vs FlatIP d=512"] == pytest.approx(40.0)
    assert t.loc[0, "memory vs FlatIP d=512"] == pytest.approx(1024.0)


def test_run_efficiency_trained_codes_on_synthetic(tmp_path) -> None:
    spec = EfficiencySpec(bits=[16], db_sizes=[100, 3000], k=5, engines=["popcount", "numpy-ip"], method="cca-itq",
                          dataset="synthetic", n_queries=3, batch_size=4, repeats=1, out=tmp_path,
                          dataset_options={"n_train": "120", "n_validation": "30", "n_query": "20"})
    res = run_efficiency(spec, echo=lambda s: None)
    rows = res.rows
    enc = [r for r in rows if r["metric"] == "encode_ms_per_item"]
    assert sorted(r["task"] for r in enc) == ["i2t", "t2i"] and all(r["value"] > 0 for r in enc)
    search = [r for r in rows if r["metric"] == "index_bytes" and r["engine"] == "popcount"]
    assert {r["db_source"] for r in search} == {"bit-frequencies"} and {r["task"] for r in search} == {"i2t"}
    assert all(r["dataset"] == "synthetic" and r["method"] == "cca-itq" for r in rows)
    # float engines at the text encoder's width (synthetic text_dim = 64) and at 512 (BiomedCLIP)
    assert {r["feature_dim"] for r in rows if r["engine"] == "numpy-ip"} == {64, 512}
    assert (tmp_path / "efficiency" / "synthetic" / "latency_vs_db_size.png").exists()


def test_spec_validation_messages() -> None:
    with pytest.raises(ValueError, match="both a method and a dataset"):
        EfficiencySpec(method="cca-itq").validate()
    with pytest.raises(ValueError, match="bits must be"):
        EfficiencySpec(bits=[4]).validate()
    with pytest.raises(RegistryError, match="unknown engine"):
        EfficiencySpec(engines=["nope"]).validate()
    with pytest.raises(ValueError, match="threads=1"):
        EfficiencySpec(clock="cpu", threads=2).validate()
    with pytest.raises(ValueError, match="real-valued"):
        run_efficiency(EfficiencySpec(method="real-valued", dataset="synthetic", db_sizes=[10]), echo=lambda s: None)


def test_cli_efficiency(tmp_path, capsys) -> None:
    from benchmarks.cli import main

    code = main(["efficiency", "--random", "--bits", "16", "--db-sizes", "2e2", "5e2", "--k", "5",
                 "--feature-dims", "8", "--n-queries", "2", "--batch-size", "3", "--repeats", "1",
                 "--clock", "cpu", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "speedup vs numpy-ip d=8" in out and "Targets:" in out
    files = list((tmp_path / "efficiency" / "random").glob("*.jsonl"))
    assert len(files) == 2 * 5
    assert {json.loads(f.read_text().splitlines()[0])["clock"] for f in files} == {"cpu"}
    assert main(["efficiency", "--dataset", "synthetic", "--out", str(tmp_path)]) == 2
    assert "--method and --dataset go together" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["efficiency", "--random", "--db-sizes", "1.5e0"])
    assert exc.value.code == 2
    assert "whole number" in capsys.readouterr().err


def test_every_registered_engine_has_a_one_line_description() -> None:
    from benchmarks.search.registry import ENGINE_DESCRIPTIONS

    assert set(ENGINE_DESCRIPTIONS) == set(ENGINES.names())
    for name in ENGINES.names():
        text = getattr(ENGINES.get(name), "description", "")
        assert text == ENGINE_DESCRIPTIONS[name] and "\n" not in text and len(text) > 20
        assert "partial" not in text.lower() and text.count("(") == text.count(")")
    assert "IndexBinaryMultiHash, 4 sub-tables" in ENGINES.get("BHash4").description


def test_efficiency_command_refuses_bits_below_8_up_front(tmp_path, capsys) -> None:
    from benchmarks.cli import main

    out = tmp_path / "never"
    assert main(["efficiency", "--bits", "4", "16", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --bits must all be >= 8") and "[4]" in err and err.count("\n") == 1
    assert not out.exists()
    assert main(["efficiency", "--seed", "-1", "--out", str(out)]) == 2
    assert "--seed must be >= 0" in capsys.readouterr().err
    assert main(["efficiency", "--method", "cca-itq", "--dataset", "synthetic", "--dataset-option", "label_scheme=x",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --dataset-option label_scheme=... is not a loader option") and err.count("\n") == 1
