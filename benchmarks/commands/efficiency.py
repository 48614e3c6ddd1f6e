"""``efficiency``: search engines from 10³ to 10⁶ items (latency, memory, recall, bandwidth limit), and with
``--end-to-end`` the latency of a query from raw image or text to a ranked list, hashing vs real-valued.

Examples::

    python -m benchmarks efficiency --random --bits 16 32 64 --db-sizes 1e3 1e4 1e5 1e6 --k 100
    python -m benchmarks efficiency --random --bits 8 12 16 20 24 32 --engines popcount hash-ball
    python -m benchmarks efficiency --method cca-itq --dataset synthetic --bits 16 64 --db-sizes 1e3 1e5
    python -m benchmarks efficiency --end-to-end --method ddbh --method cca-itq --dataset medpix --bits 16

Engine rows go to ``OUT/efficiency/<dataset-or-random>/<config_hash>.jsonl`` with ``summary.md`` (engine table,
speed-up over popcount, 64/16-bit memory, hash vs real-valued ratios, targets) and a log-log latency figure;
end-to-end rows to ``OUT/efficiency/<dataset>/end-to-end/`` with ``end_to_end.md`` and a stacked bar figure.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from benchmarks.cli import UsageError, add_device_argument, resolve_device

NAME = "efficiency"
HELP = ("time search engines (hash codes vs float32 features) from 1e3 to 1e6 items, or a query end to end "
        "(--end-to-end): latency, memory, recall, ratios")


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
    from benchmarks.search.workload import DEFAULT_DB_SIZES, DEFAULT_ENGINES, GROWTH
    from benchmarks.threads import default_threads

    src = p.add_mutually_exclusive_group()
    src.add_argument("--random", action="store_true", help="uniformly random codes and Gaussian features (default)")
    src.add_argument("--method", action="append", default=None, metavar="M",
                     help="hashing method whose trained codes are searched (needs --dataset); repeatable with "
                          "--end-to-end")
    p.add_argument("--dataset", default=None, help="dataset the method is trained on (needs --method)")
    p.add_argument("--end-to-end", action="store_true",
                   help="time a query from raw image/text to top-k: frozen encoder + method encode + search, for "
                        "every --method and real-valued (needs --dataset with raw images and texts)")
    p.add_argument("--task", choices=("i2t", "t2i", "i2i", "t2t"), default="i2t",
                   help="query/database modalities for trained codes (default: i2t; --end-to-end times i2t and t2i)")
    p.add_argument("--bits", nargs="+", type=int, default=None,
                   help="code lengths K >= 8 (default: 16 32 64; 16 with --end-to-end)")
    p.add_argument("--db-sizes", nargs="+", type=parse_size, default=list(DEFAULT_DB_SIZES), metavar="N",
                   help="database sizes, e.g. 1e3 1e4 1e5 1e6 (default)")
    p.add_argument("--k", type=int, default=100, help="neighbours per query (default: 100)")
    p.add_argument("--engines", nargs="+", default=None, metavar="SPEC",
                   help="engine specs (see `list engines`; BHash<m>x<b>f<r>, BHashTablef<r> accepted); default: "
                        + " ".join(DEFAULT_ENGINES) + " (--end-to-end: popcount hash-ball numpy-ip FlatIP)")
    p.add_argument("--feature-dims", nargs="+", type=int, default=None, metavar="D",
                   help="Gaussian float feature dimensions (default: 512; with --method the real-valued method's "
                        "embeddings are measured too)")
    p.add_argument("--growth", choices=GROWTH, default="replicate",
                   help="how trained codes grow to the largest size: replicate the real codes with fresh ids "
                        "(default) or draw from their bit frequencies")
    p.add_argument("--n-queries", type=int, default=None,
                   help="single-query latency samples (default: 50; 30 per stage with --end-to-end)")
    p.add_argument("--batch-size", type=int, default=100, help="queries per batch call (default: 100)")
    p.add_argument("--repeats", type=int, default=5, help="timed batch calls (default: 5)")
    p.add_argument("--encoder-batch", type=int, default=32,
                   help="batch size of the batched encoder figure with --end-to-end (default: 32)")
    p.add_argument("--bandwidth-mib", type=int, default=256,
                   help="MiB read to measure sequential read bandwidth (0: skip; default: 256)")
    p.add_argument("--model-dir", default=None,
                   help="folder where fitted models are saved and reloaded (default: OUT/efficiency/models)")
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


def _check(args: argparse.Namespace) -> dict[str, str]:
    """Refuse bad combinations up front (one-line :class:`UsageError`); return the loader options."""
    from benchmarks.commands._args import parse_key_values

    if (args.method is None) != (args.dataset is None):
        raise UsageError("--method and --dataset go together (or use --random)")
    if args.end_to_end and args.method is None:
        raise UsageError("--end-to-end needs --method M (repeatable) and --dataset D")
    if args.method and len(args.method) > 1 and not args.end_to_end:
        raise UsageError(f"the engine study takes one --method, got {args.method}; several go with --end-to-end")
    bad_bits = [b for b in args.bits or [] if b < 8]
    if bad_bits:
        raise UsageError(f"--bits must all be >= 8 (any K >= 8 works, e.g. 12 or 24), got {bad_bits}")
    if args.seed < 0:
        raise UsageError(f"--seed must be >= 0, got {args.seed}")
    if args.bandwidth_mib < 0:
        raise UsageError(f"--bandwidth-mib must be >= 0, got {args.bandwidth_mib}")
    dataset_options = parse_key_values(args.dataset_option, "--dataset-option")
    for key, what in (("label_scheme", "label scheme"), ("seed", "data seed (0)")):
        if key in dataset_options:  # keywords of the loader itself, not options (efficiency has no flag for them)
            raise UsageError(f"--dataset-option {key}=... is not a loader option; efficiency uses the dataset's "
                             f"default {what}")
    return dataset_options


def main(args: argparse.Namespace) -> int:
    from benchmarks.commands.run import check_writable, parse_param_values
    from medhash_datasets.base import resolve_data_root

    dataset_options = _check(args)
    out = Path(args.out)
    check_writable(out)
    common = dict(
        k=args.k, threads=args.threads, clock=args.clock, seed=args.seed, out=out,
        data_root=resolve_data_root(args.data_root), encoder=args.encoder,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None, device=resolve_device(args.device),
        dataset_options=dataset_options, params=parse_param_values(args.param),
        model_dir=Path(args.model_dir) if args.model_dir else out / "efficiency" / "models",
        command="python -m benchmarks " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    if args.end_to_end:
        return _end_to_end(args, common)
    return _engines(args, common)


def _engines(args: argparse.Namespace, common: dict) -> int:
    from benchmarks.search.study import EfficiencySpec, run_efficiency
    from benchmarks.search.summary import (
        bandwidth_line,
        engine_table,
        format_ratio_table,
        format_targets,
        memory_ratio_table,
        speedup_over_reference,
    )
    from benchmarks.search.workload import DEFAULT_ENGINES

    spec = EfficiencySpec(
        bits=list(dict.fromkeys(args.bits or [16, 32, 64])), db_sizes=sorted(set(args.db_sizes)),
        engines=list(dict.fromkeys(args.engines or DEFAULT_ENGINES)),
        feature_dims=None if args.feature_dims is None else list(dict.fromkeys(args.feature_dims)),
        method=args.method[0] if args.method else None, dataset=args.dataset, task=args.task, growth=args.growth,
        n_queries=args.n_queries or 50, batch_size=args.batch_size, repeats=args.repeats,
        bandwidth_bytes=args.bandwidth_mib << 20, **common,
    )
    try:
        spec.validate()
    except ValueError as err:
        raise UsageError(str(err)) from None
    result = run_efficiency(spec)
    print()
    print(bandwidth_line(result.rows))
    print()
    print(f"Engines ({args.threads} thread(s), {args.clock} clock, k={args.k}):")
    print(engine_table(result.rows))
    print()
    print("Speed-up over the exhaustive popcount engine (per query):")
    print(speedup_over_reference(result.rows))
    print()
    print("Index memory, 64 vs 16 bits:")
    print(memory_ratio_table(result.rows))
    print()
    print("Hash engine vs real-valued search at the same database size:")
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


def _end_to_end(args: argparse.Namespace, common: dict) -> int:
    from benchmarks.search.e2e_table import findings, format_end_to_end
    from benchmarks.search.end_to_end import EndToEndSpec, run_end_to_end
    from benchmarks.search.registry import create_engine

    engines = args.engines or ["popcount", "hash-ball", "numpy-ip", "FlatIP"]
    try:
        binary = [e for e in engines if create_engine(e).binary]
        floats = [e for e in engines if not create_engine(e).binary]
        spec = EndToEndSpec(
            methods=list(dict.fromkeys(args.method)), dataset=args.dataset, bits=list(dict.fromkeys(args.bits or [16])),
            db_sizes=sorted(set(args.db_sizes)), engines=binary, float_engines=floats,
            n_queries=args.n_queries or 30, encoder_batch=args.encoder_batch, **common,
        )
        spec.validate()
    except ValueError as err:
        raise UsageError(str(err)) from None
    result = run_end_to_end(spec)
    print()
    print(f"End-to-end latency per query ({result.encoder} encoder, {args.threads} thread(s), {args.clock} clock):")
    print(format_end_to_end(result.frame))
    print()
    for line in findings(result.frame):
        print(f"- {line}")
    print()
    print(f"{len(result.rows)} rows under {result.out_dir}")
    for path in result.figures:
        print(f"figure: {path}")
    print(f"table: {result.out_dir / 'end_to_end.md'}")
    return 0
