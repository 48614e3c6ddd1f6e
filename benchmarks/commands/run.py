"""``run``: train and evaluate methods on datasets at several code lengths and seeds; print and save results."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.cli import UsageError, add_device_argument, resolve_device
from benchmarks.commands._args import loader_options, nonnegative_int, parse_key_values
from benchmarks.exports import EXPORT_KINDS

NAME = "run"
HELP = "train and evaluate methods × datasets × bits × seeds; write result rows and print a summary table"


def parse_param_values(items: list[str] | None) -> dict[str, Any]:
    """``--param lr=0.001 --param moe=false`` → typed values (JSON parsing, falling back to the string)."""
    out: dict[str, Any] = {}
    for key, raw in parse_key_values(items, "--param").items():
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def params_per_method(methods: list[str], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Give each method the ``--param`` keys its config has (so ``--methods all --param epochs=5`` works).

    Raises
    ------
    UsageError
        If a key belongs to none of the selected methods' configs (listing their fields).
    """
    import dataclasses

    from methods import METHODS

    fields = {m: {f.name for f in dataclasses.fields(METHODS.get(m).cls.config_class)} for m in methods}
    unknown = sorted(k for k in params if not any(k in f for f in fields.values()))
    if unknown:
        valid = sorted(set().union(*fields.values()))
        raise UsageError(f"--param {unknown} is not a config field of {', '.join(methods)}; valid fields: {', '.join(valid)}")
    return {m: {k: v for k, v in params.items() if k in fields[m]} for m in methods if any(k in fields[m] for k in params)}


def check_writable(out: Path) -> None:
    """Create ``out`` and prove a file can be written there, else raise :class:`UsageError` (naming a file
    where a folder is needed, or the OS reason)."""
    for parent in (out, *out.parents):
        if parent.exists() and not parent.is_dir():
            raise UsageError(f"--out {out}: {parent} is a file, not a folder; name a folder for the results")
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(fd)
        os.unlink(tmp)
    except OSError as err:
        raise UsageError(f"output folder {out} is not writable ({err.strerror or err})") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", nargs="+", default=["all"], metavar="NAME",
                   help="method names, wildcards, or 'all' (every registered method except ablation variants)")
    p.add_argument("--datasets", nargs="+", default=["synthetic"], metavar="NAME", help="dataset names (default: synthetic)")
    p.add_argument("--bits", nargs="*", type=int, default=[16, 32, 64], help="code lengths K >= 8 (default: 16 32 64)")
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2], help="method seeds (default: 0 1 2)")
    p.add_argument("--protocols", nargs="+", choices=("unimodal", "paired"), default=["unimodal", "paired"])
    p.add_argument("--tasks", nargs="+", choices=("i2t", "t2i", "i2i", "t2t"), default=["i2t", "t2i"])
    p.add_argument("--data-root", default=None, help="folder holding the datasets (else $MEDHASH_DATA_ROOT)")
    p.add_argument("--out", default="results", help="output folder (default: results/)")
    p.add_argument("--encoder", default="auto", help="feature encoder: auto, offline, biomedclip, precomputed")
    p.add_argument("--encoder-option", action="append", metavar="KEY=VALUE",
                   help="encoder option (repeatable), e.g. path=DIR for a local BiomedCLIP folder")
    p.add_argument("--cache-dir", default=None, help="feature cache folder (else $MEDHASH_CACHE_DIR or ~/.cache/medhash-bench)")
    p.add_argument("--dataset-option", action="append", metavar="KEY=VALUE", help="loader option (repeatable)")
    p.add_argument("--label-scheme", default=None, help="label scheme of the dataset loader")
    p.add_argument("--dataset-seed", type=int, default=0, help="seed of generated data / seeded splits (default 0)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="method config override (repeatable; JSON values); applied to each selected method that has the field")
    p.add_argument("--params", choices=("default", "best"), default="default",
                   help="'best': each method takes the best trial of the study that tuned it (--study, or the default "
                        "study names METHOD-DATASET-BITS that tune and --tune write)")
    p.add_argument("--study", nargs="+", default=None, metavar="NAME",
                   help="Optuna studies for --params best, one per tuned method (a study feeds only the method it tuned)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage (journal file path or SQL URL); default OUT/optuna/journal.log for --tune, "
                        "results/optuna/journal.log (tune's default) for --params best")
    p.add_argument("--tune", type=nonnegative_int, default=0, metavar="N",
                   help="tuned protocol: first tune every selected method with N Optuna trials per (method, dataset, "
                        "bits) on the validation split (equal budget, resumable), then run the grid with each study's "
                        "best parameters; rows name study and trial")
    p.add_argument("--tune-bits", type=int, default=None, metavar="K",
                   help="with --tune: tune at this one code length and use its best parameters at every code length "
                        "(the tuning table says so); default: one study per code length")
    p.add_argument("--tune-seeds", nargs="+", type=nonnegative_int, default=[0, 1], metavar="SEED",
                   help="seeds of the tuning fits (objective = mean validation mAP; default 0 1)")
    p.add_argument("--export", nargs="+", default=[], choices=EXPORT_KINDS, metavar="KIND",
                   help="also write per cell under OUT/exports/: codes (the evaluate file layout), model, per-query "
                        "(per-query AP, CSV)")
    p.add_argument("--config", default=None, metavar="FILE",
                   help="grid file (TOML with run's flags as keys) or a run manifest OUT/runs/RUN_ID.json to replay; "
                        "flags on the command line win")
    p.add_argument("--force", action="store_true", help="rerun cells that already have results")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    add_device_argument(p)
    add_parallel_arguments(p)


def _threads_value(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a thread count >= 1 or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a thread count >= 1 or 'auto', got {value}")
    return value


def _workers_value(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of worker processes >= 1 or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of worker processes >= 1 or 'auto', got {value}")
    return value


def add_parallel_arguments(p: argparse.ArgumentParser) -> None:
    """``--workers N``, ``--scheduler ADDRESS`` and ``--threads T|auto`` (shared by ``run`` and ``tune``)."""
    p.add_argument("--workers", type=_workers_value, default=None, metavar="N|auto",
                   help="worker processes of a local Dask cluster; 1 = serial, in this process (default: "
                        "$MEDHASH_WORKERS, else auto = this machine's cores // --threads, never more than the "
                        "cells left to run)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on the workers of an existing Dask cluster, e.g. tcp://10.0.0.5:8786 (see README)")
    p.add_argument("--threads", type=_threads_value, default=None, metavar="T",
                   help="torch/BLAS/OpenMP threads per worker process (default 1; 'auto' = this machine's cores "
                        "// --workers); recorded in every row and part of each cell's identity")


def main(args: argparse.Namespace) -> int:
    from benchmarks.catalog import resolve_methods
    from benchmarks.commands._config import apply_config, command_record
    from medhash_datasets.base import resolve_data_root
    from medhash_datasets.loaders import DATASETS

    args = apply_config(args, add_arguments)
    if not args.bits:
        raise UsageError("--bits needs at least one code length")
    bad = [b for b in args.bits if b < 8]
    if bad:
        raise UsageError(f"--bits must all be >= 8, got {bad}")
    if not args.seeds:
        raise UsageError("--seeds needs at least one seed")
    if min(args.seeds) < 0 or args.dataset_seed < 0:
        raise UsageError(f"seeds must be >= 0, got --seeds {args.seeds} --dataset-seed {args.dataset_seed}")
    if not str(args.out).strip():
        raise UsageError("--out must name a folder (got an empty string)")
    # names first, checked without importing torch, so a typo is a one-line error at once
    methods = resolve_methods(args.methods)
    datasets = DATASETS.resolve(args.datasets)
    out = Path(args.out)
    check_writable(out)
    data_root = resolve_data_root(args.data_root)

    from benchmarks.cell import RunSpec
    from benchmarks.distributed import resolve_threads, resolve_workers
    from benchmarks.report.console import summary_tables
    from benchmarks.results import iter_rows
    from benchmarks.runner import run

    workers = resolve_workers(args.workers, threads=args.threads, scheduler=args.scheduler)
    threads = resolve_threads(args.threads, workers=workers, scheduler=args.scheduler)
    params = parse_param_values(args.param)
    if args.tune and args.params == "best":
        raise UsageError("--tune already uses each study's best trial; drop --params best")
    if args.study and args.params != "best":
        raise UsageError("--study only applies with --params best")
    spec = RunSpec(
        methods=methods, datasets=datasets, bits=sorted(set(args.bits)), seeds=list(dict.fromkeys(args.seeds)),
        protocols=args.protocols, tasks=args.tasks, out=out, data_root=data_root,
        encoder=args.encoder, encoder_options=parse_key_values(args.encoder_option, "--encoder-option"),
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
        device=resolve_device(args.device), dataset_options=loader_options(args.dataset_option),
        label_scheme=args.label_scheme, dataset_seed=args.dataset_seed,
        params=params_per_method(methods, params), force=args.force, progress=not args.no_progress,
        exports=list(args.export), command=command_record(args, add_arguments), threads=threads,
    )
    if args.tune or args.params == "best":
        from benchmarks.tuned import best_of_studies, refuse_tuned_param_overrides, tune_then_params

        refuse_tuned_param_overrides(spec.params)
        if args.tune:
            storage = args.storage or str(out / "optuna" / "journal.log")  # studies beside the run they feed
            spec.tuned = tune_then_params(
                methods, datasets, spec.bits, args.tune, storage=storage, seeds=args.tune_seeds, tune_bits=args.tune_bits,
                workers=workers,
                data_root=str(data_root) if data_root else None, encoder=spec.encoder,
                encoder_options=spec.encoder_options, device=spec.device, dataset_options=spec.dataset_options,
                cache_dir=args.cache_dir, label_scheme=spec.label_scheme, dataset_seed=spec.dataset_seed,
                threads=threads, echo=lambda line: print(line, flush=True),
            )
        else:
            spec.tuned = best_of_studies(methods, datasets, spec.bits, studies=args.study, storage=args.storage)
    outcomes = run(spec, workers=workers, scheduler=args.scheduler)
    count = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "elsewhere", "lost")}
    extra = "".join(f", {count[s]} {what}" for s, what in (("elsewhere", "finished by another process"),
                                                            ("lost", "lost with their worker")) if count[s])
    print(f"{count['done']} cell(s) run, {count['skipped']} already finished (skipped){extra}; results in {out}/cells")
    rows = [r for o in outcomes if o.status != "lost" for r in iter_rows(o.path)]
    for title, text in summary_tables(rows):
        print(f"\n{title}\n{text}")
    if count["lost"]:
        lost = "; ".join(o.label for o in outcomes if o.status == "lost")
        print(f"incomplete: {count['lost']} cell(s) lost with their worker ({lost}); re-run the same command to "
              "compute exactly those")
        return 1
    return 0
