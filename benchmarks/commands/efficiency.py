"""``efficiency``: latency, throughput, build time and memory of search engines from 10³ to 10⁶ items.

Examples::

    python -m benchmarks efficiency --random --bits 16 32 64 --db-sizes 1e3 1e4 1e5 1e6 --k 100
    python -m benchmarks efficiency --method cca-itq --dataset synthetic --bits 16 64 --db-sizes 1e3 1e5

Rows go to ``OUT/efficiency/<dataset-or-random>/<config_hash>.jsonl``; the ratio table (hash engine vs
real-valued search), the target check and a log-log latency figure are written beside them and printed.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmarks.cli import UsageError, add_device_argument, resolve_device

NAME = "efficiency"
HELP = "time search engines (hash codes vs float32 features) from 1e3 to 1e6 items: latency, memory, ratios"


def parse_size(text: str) -> int:
    """``"1e6"`` or ``"1000000"`` → 1000000; anything not a positive whole number raises ``ArgumentTypeError``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"database size {text!r} is not a number (e.g. 1e5 or 100000)") from None
    if not value.is_integer() or value < 1:
        raise argparse.ArgumentTypeError(f"database size {text!r} must be a whole number >= 1")
    return int(value)


def add_arguments(p: argparse.ArgumentParser) -> None:
    from benchmarks.search.study import DEFAULT_DB_SIZES, DEFAULT_ENGINES
    from benchmarks.threads import default_threads

    src = p.add_mutually_exclusive_group()
    src.add_argument("--random", action="store_true", help="uniformly random codes and Gaussian features (default)")
    src.add_argument("--method", default=None, help="hashing method whose trained codes are searched (needs --dataset)")
    p.add_argument("--dataset", default=None, help="dataset the method is trained on (needs --method)")
    p.add_argument("--task", choices=("i2t", "t2i", "i2i", "t2t"), default="i2t",
                   help="query/database modalities for trained codes (default: i2t)")
    p.add_argument("--bits", nargs="+", type=int, default=[16, 32, 64], help="code lengths K >= 8 (default: 16 32 64)")
    p.add_argument("--db-sizes", nargs="+", type=parse_size, default=list(DEFAULT_DB_SIZES), metavar="N",
                   help="database sizes, e.g. 1e3 1e4 1e5 1e6 (default)")
    p.add_argument("--k", type=int, default=100, help="neighbours per query (default: 100)")
    p.add_argument("--engines", nargs="+", default=list(DEFAULT_ENGINES), metavar="SPEC",
                   help="engine specs (see `list engines`; BHash<m>x<b>f<r> accepted); default: "
                        + " ".join(DEFAULT_ENGINES))
    p.add_argument("--feature-dims", nargs="+", type=int, default=None, metavar="D",
                   help="float feature dimensions (default: encoder dimension and 512 with --method, 512 with --random)")
    p.add_argument("--n-queries", type=int, default=50, help="single-query latency samples (default: 50)")
    p.add_argument("--batch-size", type=int, default=100, help="queries per batch call (default: 100)")
    p.add_argument("--repeats", type=int, default=5, help="timed batch calls (default: 5)")
    p.add_argument("--threads", type=int, default=1,
                   help=f"threads for faiss, BLAS, torch and popcount batches (default: 1; this machine has "
                        f"{default_threads()} cores; more threads than idle cores distort faiss/BLAS times)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                   help="wall: latency as seen by a user (default); cpu: this process's CPU time, robust on a "
                        "shared machine (needs --threads 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of drawn codes/features and of training (default: 0)")
    p.add_argument("--out", default="results", help="output folder (default: results/)")
    p.add_argument("--data-root", default=None, help="folder holding the datasets (else $MEDHASH_DATA_ROOT)")
    p.add_argument("--encoder", default="auto", help="feature encoder for --dataset (default: auto)")
    p.add_argument("--cache-dir", default=None, help="feature cache folder")
    p.add_argument("--dataset-option", action="append", metavar="KEY=VALUE", help="loader option (repeatable)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="method config override (repeatable)")
    add_device_argument(p)


def main(args: argparse.Namespace) -> int:
    from benchmarks.commands._args import parse_key_values
    from benchmarks.commands.run import check_writable, parse_param_values
    from benchmarks.search.study import EfficiencySpec, run_efficiency
    from benchmarks.search.summary import format_ratio_table, format_targets
    from medhash_datasets import resolve_data_root

    if (args.method is None) != (args.dataset is None):
        raise UsageError("--method and --dataset go together (or use --random)")
    bad_bits = [b for b in args.bits if b < 8]
    if bad_bits:
        raise UsageError(f"--bits must all be >= 8 (any K >= 8 works, e.g. 12 or 24), got {bad_bits}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    dataset_options = parse_key_values(args.dataset_option, "--dataset-option")
    for key, what in (("label_scheme", "label scheme"), ("seed", "data seed (0)")):
        if key in dataset_options:  # keywords of the loader itself, not options (efficiency has no flag for them)
            raise UsageError(f"--dataset-option {key}=... is not a loader option; efficiency uses the dataset's "
                             f"default {what}")
    out = Path(args.out)
    check_writable(out)
    spec = EfficiencySpec(
        bits=list(dict.fromkeys(args.bits)),
        db_sizes=sorted(set(args.db_sizes)),
        k=args.k,
        engines=list(dict.fromkeys(args.engines)),
        feature_dims=None if args.feature_dims is None else list(dict.fromkeys(args.feature_dims)),
        method=args.method,
        dataset=args.dataset,
        task=args.task,
        n_queries=args.n_queries,
        batch_size=args.batch_size,
        repeats=args.repeats,
        threads=args.threads,
        clock=args.clock,
        seed=args.seed,
        out=out,
        data_root=resolve_data_root(args.data_root),
        encoder=args.encoder,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        device=resolve_device(args.device),
        dataset_options=dataset_options,
        params=parse_param_values(args.param),
        command="python -m benchmarks " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    try:
        spec.validate()
    except ValueError as err:
        raise UsageError(str(err)) from None
    result = run_efficiency(spec)
    print()
    print(f"Hash engine vs real-valued search at the same database size ({args.threads} thread(s), "
          f"{args.clock} clock, k={args.k}):")
    print(format_ratio_table(result.ratio_table))
    print()
    print("Targets:")
    print(format_targets(result.targets))
    print()
    print(f"{len(result.rows)} rows in {len(result.cell_paths)} cell files under {result.out_dir}")
    for path in result.figures:
        print(f"figure: {path}")
    print(f"summary: {result.out_dir / 'summary.md'}")
    return 0
