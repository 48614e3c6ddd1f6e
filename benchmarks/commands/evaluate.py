"""``evaluate``: score codes produced elsewhere (``.mat``/``.npz`` with ``q_img, q_txt, r_img, r_txt, q_l, r_l``).

Examples::

    python -m benchmarks evaluate codes.mat                       # i2t and t2i, both tie policies, a table
    python -m benchmarks evaluate codes.npz --tasks i2t t2i i2i t2t --tie aware --json
    python -m benchmarks evaluate relaxed_sign_codes.npz --code-convention relaxed

One binary convention holds for the whole file (``--code-convention``, default ``auto``: decided over all code
keys together; an ambiguous file is refused with the key and its values). Below the metric table, a code
table gives per key the number of distinct codes, constant bits and bit balance, and a warning names
degenerate codes (one distinct code, or constant bits), whose metric values only measure tie handling.
"""

from __future__ import annotations

import argparse
import math

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
    parser.add_argument("--code-convention", choices=("auto", "pm1", "01", "relaxed"), default="auto",
                        help="binary convention of ALL code keys: pm1 (±1), 01 (0/1), relaxed (bit = h >= 0), or "
                             "auto (default: decided over all keys together; ambiguous files are refused)")
    parser.add_argument("--json", action="store_true", help="print one JSON object with every metric instead of a table")


def main(args: argparse.Namespace) -> int:
    """Evaluate the file and print a table (or JSON)."""
    from benchmarks.evaluation import DEFAULT_P_AT_N, MetricSpec, evaluate_code_file, load_code_file
    from benchmarks.results import dumps_strict, strict_row

    if args.shuffle_seed < 0:
        raise UsageError(f"--shuffle-seed must be >= 0, got {args.shuffle_seed}")
    ties = ("index", "aware") if args.tie == "both" else (args.tie,)
    tasks = tuple(dict.fromkeys(args.tasks))
    try:
        spec = MetricSpec(map_at_k=tuple(args.map_at_k), map_first_k_relevant=tuple(args.first_k_relevant),
                          p_at_n=DEFAULT_P_AT_N, ndcg_at_k=tuple(args.ndcg_at_k))
        if args.memory_budget_mb <= 0:
            raise ValueError(f"--memory-budget-mb must be > 0, got {args.memory_budget_mb}")
        code_file = load_code_file(args.file, tasks, args.code_convention)
        results = evaluate_code_file(code_file, tasks=tasks, ties=ties, metrics=spec, shuffle_seed=args.shuffle_seed,
                                     memory_budget_mb=args.memory_budget_mb)
    except ValueError as err:
        raise UsageError(str(err)) from None
    any_result = next(iter(results.values()))
    codes = code_diagnostics_by_key(results)
    degenerate = {key: d["reason"] for key, d in codes.items() if d["degenerate"]}
    if args.json:
        rows = []
        for (task, _tie), res in results.items():
            rows.extend(strict_row({"task": task, **row}) for row in res.as_dicts())
        print(dumps_strict({"file": str(args.file), "convention": code_file.convention, "n_queries": any_result.n_queries,
                            "n_database": any_result.n_database, "codes": {k: strict_row(d) for k, d in codes.items()},
                            "degenerate_codes": bool(degenerate), "results": rows}, sort_keys=True))
        return 0
    print(format_table(results))
    counts = ", ".join(f"{task}: {res.n_queries_without_relevant}" for (task, tie), res in results.items() if tie == ties[0])
    print(f"{any_result.n_queries} queries, {any_result.n_database} database items; "
          f"queries without any relevant item (scored 0): {counts}")
    if "index" in ties:
        print(f"tie=index: database shuffled with seed {args.shuffle_seed}, ties in shuffled order")
    print(f"\ncodes ({code_file.bits} bits, one convention for the file: {code_file.convention})")
    print(format_code_table(codes))
    if degenerate:
        named = "; ".join(f"{key}: {why}" for key, why in degenerate.items())
        print(f"WARNING: degenerate codes ({named}). Their metric values measure tie handling, not retrieval "
              "(with a single distinct database code, tie-aware values equal chance and tie=index values depend "
              "only on the database shuffle).")
    return 0


def code_diagnostics_by_key(results: dict) -> dict[str, dict]:
    """Code diagnostics per file key (``q_img``, ``r_txt``, ...) from the results of its tasks."""
    from benchmarks.evaluation import TASKS

    out: dict[str, dict] = {}
    for (task, _tie), res in results.items():
        q_key, r_key = TASKS[task]
        out.setdefault(q_key, res.query_codes)
        out.setdefault(r_key, res.database_codes)
    return out


def _fmt(value: float | None) -> str:
    """A value with 4 decimals, or ``–`` when it is missing (None or not finite)."""
    return "–" if value is None or not math.isfinite(value) else f"{value:.4f}"


def format_code_table(codes: dict[str, dict]) -> str:
    """One row per code key: codes, distinct codes, constant bits, bit-balance range, degenerate flag."""
    from tabulate import tabulate

    headers = ["key", "codes", "distinct codes", "constant bits", "bit balance min–max", "flag"]
    body = []
    for key, d in codes.items():
        balance = [b for b in d["bit_balance"] if b is not None]
        n_bits = len(d["bit_balance"])
        body.append([
            key, str(d["n_codes"]), str(d["n_distinct_codes"]),
            f"{len(d['constant_bits'])} of {n_bits}" if d["n_codes"] >= 2 else "–",
            f"{min(balance):.3f}–{max(balance):.3f}" if balance else "–",
            f"DEGENERATE: {d['reason']}" if d["degenerate"] else "",
        ])
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)


def format_table(results: dict) -> str:
    """One row per (metric, k) shown, one column per (task, tie) plus the chance level per task.

    Cells are formatted here (4 decimals) and printed verbatim (``disable_numparse``, so ``0.5000`` stays
    ``0.5000``); a missing value is ``–``.
    """
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
        row = [metric, "–" if k is None else str(k)]
        row += [_fmt(results[col].get(metric, k)) for col in columns]
        for task in tasks:
            col = next(c for c in columns if c[0] == task)
            row.append(_fmt(results[col].chance(metric, k)))
        body.append(row)
    return tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
