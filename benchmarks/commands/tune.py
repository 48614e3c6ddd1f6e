"""``tune``: an Optuna sweep of one method on one dataset at one code length (validation mAP objective)."""

from __future__ import annotations

import argparse

from benchmarks.cli import UsageError, add_device_argument, resolve_device
from benchmarks.commands._args import loader_options, nonnegative_int

NAME = "tune"
HELP = "tune a method's hyper-parameters with Optuna on the validation split (journal file or SQL storage)"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {value}")
    return value


def search_space_is_empty(method: str) -> bool:
    """Whether ``method``'s :meth:`~methods.base.HashingMethod.search_space` suggests nothing (probed on a
    throw-away in-memory Optuna trial)."""
    import optuna

    from methods import METHODS

    cls = METHODS.get(method).cls
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(storage=optuna.storages.InMemoryStorage()).ask()
    overrides = cls.search_space(trial)
    return not overrides and not trial.params


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m benchmarks tune``."""
    parser.add_argument("--method", required=True, help="method or variant registry name, e.g. mcmfh")
    parser.add_argument("--dataset", required=True, help="dataset registry name, e.g. medpix")
    parser.add_argument("--bits", type=_positive_int, required=True, help="code length K (>= 8)")
    parser.add_argument("--trials", type=_positive_int, required=True,
                        help="finished (complete + pruned) trials the study should hold; a re-run resumes")
    parser.add_argument("--storage", default=None,
                        help="journal file path (default results/optuna/journal.log) or an SQLAlchemy URL, "
                             "e.g. postgresql+psycopg2://user@host:5432/optuna for workers on many machines")
    parser.add_argument("--workers", type=_positive_int, default=1, help="worker processes on this machine (default 1)")
    parser.add_argument("--study", default=None, help="study name (default METHOD-DATASET-BITS)")
    parser.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0, 1],
                        help="tuning seeds: one fit per seed, objective = mean; pruning between seeds (default 0 1)")
    parser.add_argument("--protocol", choices=("unimodal", "paired"), default="unimodal",
                        help="encoding protocol of the validation score (default unimodal)")
    parser.add_argument("--data-root", default=None, help="folder holding the datasets (else MEDHASH_DATA_ROOT)")
    parser.add_argument("--encoder", default="auto", help="feature encoder registry name (default auto)")
    parser.add_argument("--label-scheme", default=None, help="label scheme of the dataset loader (default: its default)")
    parser.add_argument("--dataset-seed", type=nonnegative_int, default=0,
                        help="seed of generated data / seeded splits (default 0)")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="loader option, repeatable (e.g. append_findings=true for medpix, views=all for openi)")
    parser.add_argument("--cache-dir", default=None,
                        help="feature cache folder (else $MEDHASH_CACHE_DIR or ~/.cache/medhash-bench/features)")
    parser.add_argument("--sampler-seed", type=nonnegative_int, default=0, help="TPE sampler seed (default 0)")
    add_device_argument(parser)


def main(args: argparse.Namespace) -> int:
    """Run the sweep and print the best trial."""
    from benchmarks.tuning import TuneSpec, run_study
    from medhash_datasets.base import resolve_data_root
    from methods import METHODS

    METHODS.get(args.method)  # unknown name → one-line error listing valid names
    if args.bits < 8:
        raise UsageError(f"--bits must be >= 8, got {args.bits}")
    dataset_options = loader_options(args.dataset_option)
    if search_space_is_empty(args.method):
        raise UsageError(f"method {args.method} declares no search space: every trial would be identical; "
                         f"nothing to tune (run it with `run --methods {args.method}`)")
    data_root = resolve_data_root(args.data_root)
    spec = TuneSpec(
        method=args.method,
        dataset=args.dataset,
        bits=args.bits,
        n_trials=args.trials,
        storage=args.storage,
        study_name=args.study,
        seeds=tuple(args.seeds),
        data_root=str(data_root) if data_root else None,
        encoder=args.encoder,
        device=resolve_device(args.device),
        dataset_options=dataset_options,
        label_scheme=args.label_scheme,
        dataset_seed=args.dataset_seed,
        cache_dir=args.cache_dir,
        protocol=args.protocol,
        sampler_seed=args.sampler_seed,
    )
    summary = run_study(spec, workers=args.workers)
    print(f"study {summary.study_name} in {summary.storage}: {summary.n_complete} complete, "
          f"{summary.n_pruned} pruned, {summary.n_failed} failed ({summary.ran} run now)")
    if summary.recovered:
        print(f"trials {summary.recovered} of dead workers marked FAIL and queued again")
    if summary.best_value is not None:
        print(f"best validation mAP {summary.best_value:.4f} with {summary.best_params}")
        print(f"use it: python -m benchmarks run --methods {args.method} --datasets {args.dataset} "
              f"--bits {args.bits} --params best --study {summary.study_name}"
              + (f" --storage {args.storage}" if args.storage else "")
              + (f" --label-scheme {args.label_scheme}" if args.label_scheme else ""))
    return 0
