"""``evaluate``: score codes produced elsewhere (``.mat``/``.npz`` with ``q_img, q_txt, r_img, r_txt, q_l, r_l``).

Examples::

    python -m benchmarks evaluate codes.mat                       # i2t and t2i, both tie policies, a table
    python -m benchmarks evaluate codes.npz --tasks i2t t2i i2i t2t --tie aware --json
"""

from __future__ import annotations

import argparse
import json

from benchmarks.cli import UsageError

NAME = "evaluate"
HELP = "evaluate Hamming retrieval of codes from a .mat/.npz file (keys q_img q_txt r_img r_txt q_l r_l)"

#: curve points shown in the table (all points are in --json)
_TABLE_P_AT_N = (1, 10, 100, 1000)
_TABLE_RADII = (0, 1, 2)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m benchmarks evaluate``."""
    parser.add_argument("file", metavar="FILE", help=".mat (v5/v7) or .npz code file")
    parser.add_argument("--tasks", nargs="+", choices=("i2t", "t2i", "i2i", "t2t"), default=["i2t", "t2i"],
                        help="retrieval tasks (default: i2t t2i)")
    parser.add_argument("--tie", choices=("index", "aware", "both"), default="both",
                        help="tie policy: index (seeded shuffle, stable order), aware (expected value), both (default)")
    parser.add_argument("--shuffle-seed", type=int, default=0, help="seed of the database shuffle for --tie index (default 0)")
    parser.add_argument("--map-at-k", type=int, nargs="*", default=[50], help="cut-offs of map@k (default 50)")
    parser.add_argument("--first-k-relevant", type=int, nargs="*", default=[5000],
                        help="k of map_first_k_relevant@k (default 5000)")
    parser.add_argument("--ndcg-at-k", type=int, nargs="*", default=[10, 50], help="cut-offs of ndcg@k (default 10 50)")
    parser.add_argument("--memory-budget-mb", type=float, default=256.0, help="memory for per-chunk temporaries (default 256)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every metric instead of a table")


def main(args: argparse.Namespace) -> int:
    """Evaluate the file and print a table (or JSON)."""
    from benchmarks.evaluation import DEFAULT_P_AT_N, MetricSpec, evaluate_code_file

    if args.shuffle_seed < 0:
        raise UsageError(f"--shuffle-seed must be >= 0, got {args.shuffle_seed}")
    ties = ("index", "aware") if args.tie == "both" else (args.tie,)
    tasks = tuple(dict.fromkeys(args.tasks))
    try:
        spec = MetricSpec(map_at_k=tuple(args.map_at_k), map_first_k_relevant=tuple(args.first_k_relevant),
                          p_at_n=DEFAULT_P_AT_N, ndcg_at_k=tuple(args.ndcg_at_k))
        if args.memory_budget_mb <= 0:
            raise ValueError(f"--memory-budget-mb must be > 0, got {args.memory_budget_mb}")
        results = evaluate_code_file(args.file, tasks=tasks, ties=ties, metrics=spec, shuffle_seed=args.shuffle_seed,
                                     memory_budget_mb=args.memory_budget_mb)
    except ValueError as err:
        raise UsageError(str(err)) from None
    any_result = next(iter(results.values()))
    if args.json:
        rows = []
        for (task, _tie), res in results.items():
            rows.extend({"task": task, **row} for row in res.as_dicts())
        print(json.dumps({"file": str(args.file), "n_queries": any_result.n_queries,
                          "n_database": any_result.n_database, "results": rows}, sort_keys=True))
        return 0
    print(format_table(results))
    counts = ", ".join(f"{task}: {res.n_queries_without_relevant}" for (task, tie), res in results.items() if tie == ties[0])
    print(f"{any_result.n_queries} queries, {any_result.n_database} database items; "
          f"queries without any relevant item (scored 0): {counts}")
    if "index" in ties:
        print(f"tie=index: database shuffled with seed {args.shuffle_seed}, ties in shuffled order")
    return 0


def format_table(results: dict) -> str:
    """One row per (metric, k) shown, one column per (task, tie) plus the chance level per task."""
    from tabulate import tabulate

    tasks = list(dict.fromkeys(task for task, _ in results))
    columns = list(results)
    first = results[columns[0]]
    keys = []
    for v in first.values:
        if v.metric == "p@n" and v.k not in _TABLE_P_AT_N and v.k != first.n_database:
            continue
        if v.metric.startswith("pr_radius") and v.k not in _TABLE_RADII:
            continue
        keys.append((v.metric, v.k))
    headers = ["metric", "k"] + [f"{task} {tie}" for task, tie in columns] + [f"{task} chance" for task in tasks]
    body = []
    for metric, k in keys:
        row = [metric, "" if k is None else k]
        row += [f"{results[col].get(metric, k):.4f}" for col in columns]
        for task in tasks:
            col = next(c for c in columns if c[0] == task)
            chance = results[col].chance(metric, k)
            row.append("" if chance is None else f"{chance:.4f}")
        body.append(row)
    return tabulate(body, headers=headers, tablefmt="github")
