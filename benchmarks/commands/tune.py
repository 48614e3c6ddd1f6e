"""``tune``: an Optuna sweep of one method on one dataset at one code length (validation mAP objective).

One line is printed per finished trial (number, state, value or why it was pruned, best so far, parameters);
at the end, the ``run`` command that evaluates the best trial on the test grid, with every data flag this
sweep used, so that it works verbatim.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from benchmarks.cli import UsageError, add_device_argument, resolve_device
from benchmarks.commands._args import loader_options, nonnegative_int, parse_key_values

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
    """Whether ``method`` declares nothing to tune (see :func:`benchmarks.tuning.search_space_is_empty`)."""
    from benchmarks.tuning import search_space_is_empty as empty

    return empty(method)


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
    parser.add_argument("--workers", type=_positive_int, default=1,
                        help="worker processes of a local Dask cluster (default 1: trials run in this process)")
    parser.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="run trials on the workers of an existing Dask cluster (SQL --storage across machines)")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="torch/BLAS/OpenMP threads per worker process (default 1)")
    parser.add_argument("--study", default=None,
                        help="study name (default METHOD-DATASET-BITS); a resume must use the study's settings")
    parser.add_argument("--seeds", type=nonnegative_int, nargs="+", default=[0, 1],
                        help="tuning seeds: one fit per seed, objective = mean; pruning between seeds (default 0 1)")
    parser.add_argument("--protocol", choices=("unimodal", "paired"), default="unimodal",
                        help="encoding protocol of the validation score (default unimodal)")
    parser.add_argument("--data-root", default=None, help="folder holding the datasets (else MEDHASH_DATA_ROOT)")
    parser.add_argument("--encoder", default="auto", help="feature encoder registry name (default auto)")
    parser.add_argument("--encoder-option", action="append", default=[], metavar="KEY=VALUE",
                        help="encoder option (repeatable), e.g. path=DIR for a local BiomedCLIP folder")
    parser.add_argument("--label-scheme", default=None, help="label scheme of the dataset loader (default: its default)")
    parser.add_argument("--dataset-seed", type=nonnegative_int, default=0,
                        help="seed of generated data / seeded splits (default 0)")
    parser.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                        help="loader option, repeatable (e.g. append_findings=true for medpix, views=all for openi)")
    parser.add_argument("--cache-dir", default=None,
                        help="feature cache folder (else $MEDHASH_CACHE_DIR or ~/.cache/medhash-bench/features)")
    parser.add_argument("--sampler-seed", type=nonnegative_int, default=0, help="TPE sampler seed (default 0)")
    parser.add_argument("--quiet", action="store_true", help="no line per finished trial")
    add_device_argument(parser)


def follow_up_command(args: argparse.Namespace, study_name: str, data_root: str | None) -> list[str]:
    """The ``run`` command (argv, starting ``python -m benchmarks run``) that evaluates the study's best trial
    with exactly the data this sweep tuned on.

    It repeats every data flag of the sweep (``--data-root`` resolved, ``--encoder`` and its options,
    ``--label-scheme``, ``--dataset-seed``, ``--dataset-option``, ``--cache-dir``), the storage, the device
    when one was chosen, and ``--protocols`` restricted to the protocol the parameters were tuned under.
    ``run``'s method ``--seeds`` keep their default: tuning seeds are not test seeds.
    """
    cmd = ["python", "-m", "benchmarks", "run", "--methods", args.method, "--datasets", args.dataset,
           "--bits", str(args.bits), "--params", "best", "--study", study_name, "--protocols", args.protocol]
    if args.storage:
        cmd += ["--storage", args.storage]
    if data_root:
        cmd += ["--data-root", data_root]
    cmd += ["--encoder", args.encoder]
    for item in args.encoder_option or []:
        cmd += ["--encoder-option", item]
    if args.label_scheme:
        cmd += ["--label-scheme", args.label_scheme]
    cmd += ["--dataset-seed", str(args.dataset_seed)]
    for item in args.dataset_option or []:
        cmd += ["--dataset-option", item]
    if args.cache_dir:
        cmd += ["--cache-dir", args.cache_dir]
    if args.device != "auto":
        cmd += ["--device", args.device]
    return cmd


@contextmanager
def _warnings_as_lines() -> Iterator[None]:
    """Show Python warnings as ``warning: <message>`` lines on stderr while the sweep runs."""
    def show(message: Warning | str, category: type[Warning], *_: Any, **__: Any) -> None:
        print(f"warning: {message}", file=sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.showwarning = show  # restored by catch_warnings
        yield


def main(args: argparse.Namespace) -> int:
    """Run the sweep, printing one line per finished trial, then the best trial and how to use it."""
    from benchmarks.tuning import TuneSpec
    from medhash_datasets.base import resolve_data_root
    from methods import METHODS

    METHODS.get(args.method)  # unknown name → one-line error listing valid names
    if args.bits < 8:
        raise UsageError(f"--bits must be >= 8, got {args.bits}")
    dataset_options = loader_options(args.dataset_option)
    encoder_options = parse_key_values(args.encoder_option, "--encoder-option")
    if search_space_is_empty(args.method):
        raise UsageError(f"method {args.method} declares no search space: every trial would be identical; "
                         f"nothing to tune (run it with `run --methods {args.method}`)")
    data_root = resolve_data_root(args.data_root)
    data_root_text = str(data_root.resolve()) if data_root else None
    spec = TuneSpec(
        method=args.method,
        dataset=args.dataset,
        bits=args.bits,
        n_trials=args.trials,
        storage=args.storage,
        study_name=args.study,
        seeds=tuple(args.seeds),
        data_root=data_root_text,
        encoder=args.encoder,
        encoder_options=encoder_options,
        device=resolve_device(args.device),
        dataset_options=dataset_options,
        label_scheme=args.label_scheme,
        dataset_seed=args.dataset_seed,
        cache_dir=args.cache_dir,
        protocol=args.protocol,
        sampler_seed=args.sampler_seed,
    )
    with _warnings_as_lines():
        from benchmarks.parallel_tuning import run_study_parallel

        summary = run_study_parallel(spec, workers=args.workers, scheduler=args.scheduler, threads=args.threads,
                                     echo=None if args.quiet else lambda s: print(s, flush=True))
    print(f"study {summary.study_name} in {summary.storage}: {summary.n_complete} complete, "
          f"{summary.n_pruned} pruned, {summary.n_failed} failed ({summary.ran} run now)")
    if summary.recovered:
        print(f"trials {summary.recovered} of dead workers marked FAIL and queued again")
    if summary.best_value is not None:
        print(f"best validation mAP {summary.best_value:.4f} (trial {summary.best_trial}) with {summary.best_params}")
        print("use it: " + shlex.join(follow_up_command(args, summary.study_name, data_root_text)))
    return 0
