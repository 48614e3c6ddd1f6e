"""``bench-evaluator``: speed and memory of the Hamming evaluator against a straightforward argsort mAP.

Two references, both the DCMH evaluation code (Jiang & Li, CVPR 2017, ``calc_map``): relevance from a label
product, Hamming distance as ``(K - b_q . B^T) / 2`` on ±1 codes, an argsort per query (stable, on the same
shuffled database, so tie order equals ``tie="index"``), then ``mean(count / tindex)``:

- *DCMH per-query loop*: literally that loop (products per query);
- *blocked argsort*: products for 100 queries at once by matrix multiplication, argsort per query (the faster,
  fairer reference; the speed ratio against it is the headline).

The evaluator is run with ``MetricSpec.map_only()`` and ``tie="index"``; values must agree to 1e-12 (they are
the same sums in a different order of floating-point operations). This is a benchmark, not a unit test.

Example::

    python -m benchmarks bench-evaluator                    # 2,000 x 20,000 at 16/32/64 bits + 1e6 memory check
    python -m benchmarks bench-evaluator --queries 200 --database 5000 --bits 32 --large-database 100000
"""

from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

NAME = "bench-evaluator"
HELP = "benchmark the evaluator against a plain argsort mAP@all (speed ratio, identical values, peak memory)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m benchmarks bench-evaluator``."""
    parser.add_argument("--queries", type=int, default=2000, help="queries (default 2000)")
    parser.add_argument("--database", type=int, default=20000, help="database items (default 20000)")
    parser.add_argument("--bits", type=int, nargs="+", default=[16, 32, 64], help="code lengths (default 16 32 64)")
    parser.add_argument("--labels", type=int, default=24, help="label columns of the random multi-hot labels (default 24)")
    parser.add_argument("--large-database", type=int, default=1_000_000, help="database size of the memory check (default 1e6; 0 skips)")
    parser.add_argument("--large-queries", type=int, default=20, help="queries of the memory check (default 20)")
    parser.add_argument("--memory-budget-mb", type=float, default=256.0, help="evaluator memory budget (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random codes and labels (default 0)")
    parser.add_argument("--skip-dcmh-loop", action="store_true",
                        help="skip the literal per-query DCMH loop (slowest reference); keep the blocked one")


def _problem(rng: np.random.Generator, nq: int, nd: int, bits: int, n_labels: int):
    q = rng.random((nq, bits)) < 0.5
    db = rng.random((nd, bits)) < 0.5
    ql = rng.random((nq, n_labels)) < 0.1
    dl = rng.random((nd, n_labels)) < 0.1
    # correlate codes with a label so the ranking is better than chance (not needed for timing, but realistic)
    db[:, : bits // 4] ^= dl[:, :1]
    q[:, : bits // 4] ^= ql[:, :1]
    return q, db, ql, dl


def dcmh_loop_map(q: np.ndarray, db: np.ndarray, ql: np.ndarray, dl: np.ndarray, shuffle_seed: int) -> np.ndarray:
    """Per-query AP exactly as the DCMH ``calc_map`` loop: label product, distances and argsort per query.

    Returns
    -------
    np.ndarray, shape (nq,), float64
    """
    perm = np.random.default_rng(shuffle_seed).permutation(len(db))
    q_pm, db_pm = np.where(q, 1.0, -1.0), np.where(db[perm], 1.0, -1.0)
    labels, ql = dl[perm].astype(np.float64), ql.astype(np.float64)
    bits = q.shape[1]
    ap = np.zeros(len(q))
    for i in range(len(q)):
        gnd = (np.dot(ql[i, :], labels.transpose()) > 0).astype(np.float64)
        tsum = int(np.sum(gnd))
        if tsum == 0:
            continue
        hamm = 0.5 * (bits - np.dot(q_pm[i, :], db_pm.transpose()))
        gnd = gnd[np.argsort(hamm, kind="stable")]
        count = np.linspace(1, tsum, tsum)
        tindex = np.asarray(np.where(gnd == 1)).ravel() + 1.0
        ap[i] = np.mean(count / tindex)
    return ap


def argsort_map(q: np.ndarray, db: np.ndarray, ql: np.ndarray, dl: np.ndarray, shuffle_seed: int, block: int = 100) -> np.ndarray:
    """Per-query AP by the DCMH loop (stable argsort on the seeded shuffle of the database).

    Distances and relevance are computed for ``block`` queries at once by matrix products (as efficient
    published code does); the ranking is one ``np.argsort(kind="stable")`` per query.

    Returns
    -------
    np.ndarray, shape (nq,), float64
        AP per query (0 for queries without relevant items).
    """
    perm = np.random.default_rng(shuffle_seed).permutation(len(db))
    q_pm = np.where(q, 1.0, -1.0)
    db_pm_t = np.ascontiguousarray(np.where(db[perm], 1.0, -1.0).T)
    labels_t = np.ascontiguousarray(dl[perm].astype(np.float64).T)
    ql = ql.astype(np.float64)
    bits = q.shape[1]
    ap = np.zeros(len(q))
    for s in range(0, len(q), block):
        hamm_block = 0.5 * (bits - q_pm[s : s + block] @ db_pm_t)
        gnd_block = (ql[s : s + block] @ labels_t > 0).astype(np.float64)
        for i in range(hamm_block.shape[0]):
            gnd = gnd_block[i]
            tsum = int(gnd.sum())
            if tsum == 0:
                continue
            gnd = gnd[np.argsort(hamm_block[i], kind="stable")]
            count = np.linspace(1, tsum, tsum)
            tindex = np.flatnonzero(gnd == 1) + 1.0
            ap[s + i] = np.mean(count / tindex)
    return ap


def main(args: argparse.Namespace) -> int:
    """Run the comparison and the memory check; print one line per measurement."""
    from benchmarks.cli import UsageError
    from benchmarks.evaluation import MetricSpec, evaluate_hamming

    if min(args.queries, args.database, args.labels) < 1:
        raise UsageError("--queries, --database and --labels must be >= 1")
    if min(args.bits) < 8:
        raise UsageError(f"--bits must all be >= 8, got {[b for b in args.bits if b < 8]}")
    rng = np.random.default_rng(args.seed)
    print(f"queries={args.queries} database={args.database} labels={args.labels} budget={args.memory_budget_mb} MiB")
    for bits in args.bits:
        q, db, ql, dl = _problem(rng, args.queries, args.database, bits, args.labels)
        t0 = time.perf_counter()
        ref = argsort_map(q, db, ql, dl, args.seed)
        t_ref = time.perf_counter() - t0
        t_loop = None
        if not args.skip_dcmh_loop:
            t0 = time.perf_counter()
            loop = dcmh_loop_map(q, db, ql, dl, args.seed)
            t_loop = time.perf_counter() - t0
            if float(np.abs(loop - ref).max()) > 1e-12:
                print(f"bits={bits}: the two argsort references disagree (max |diff| {np.abs(loop - ref).max():.1e})")
        t0 = time.perf_counter()
        res = evaluate_hamming(q, db, ql, dl, tie="index", metrics=MetricSpec.map_only(), shuffle_seed=args.seed,
                               memory_budget_mb=args.memory_budget_mb)
        t_idx = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluate_hamming(q, db, ql, dl, tie="aware", metrics=MetricSpec.map_only(), memory_budget_mb=args.memory_budget_mb)
        t_aware = time.perf_counter() - t0
        t0 = time.perf_counter()
        evaluate_hamming(q, db, ql, dl, tie="index", shuffle_seed=args.seed, memory_budget_mb=args.memory_budget_mb)
        t_all = time.perf_counter() - t0
        diff = float(np.abs(res.per_query[("map", None)] - ref).max())
        same = "identical" if diff <= 1e-12 else "DIFFERENT"
        loop_txt = "" if t_loop is None else f"  | DCMH per-query loop {t_loop:.3f}s: index {t_loop / t_idx:.1f}x faster"
        print(f"bits={bits:3d}  mAP={ref.mean():.6f}  values {same} (max |diff| {diff:.1e})  | blocked argsort "
              f"{t_ref:.3f}s: evaluator index {t_idx:.3f}s ({t_ref / t_idx:.1f}x), aware {t_aware:.3f}s "
              f"({t_ref / t_aware:.1f}x){loop_txt}  | all default metrics, index {t_all:.3f}s")
    if args.large_database > 0:
        nq, nd, bits = args.large_queries, args.large_database, 64
        q, db, ql, dl = _problem(rng, nq, nd, bits, args.labels)
        inputs_mb = (q.nbytes + db.nbytes + ql.nbytes + dl.nbytes) / 2**20
        for tie in ("index", "aware"):
            tracemalloc.start()
            t0 = time.perf_counter()
            res = evaluate_hamming(q, db, ql, dl, tie=tie, memory_budget_mb=args.memory_budget_mb)
            elapsed = time.perf_counter() - t0
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"memory check: {nq} queries x {nd} items, {bits} bits, tie={tie}, all default metrics: "
                  f"peak {peak / 2**20:.0f} MiB above the {inputs_mb:.0f} MiB of inputs (budget {args.memory_budget_mb:.0f} MiB"
                  f" for chunk temporaries), {elapsed:.2f}s, mAP={res.get('map'):.4f}")
    return 0
