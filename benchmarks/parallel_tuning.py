"""Tuning trials in parallel on Dask workers (``tune --workers N`` / ``tune --scheduler ADDRESS``).

Optuna coordinates the trials through the study's shared storage; Dask only places the work: each Dask task
runs ``study.optimize(objective, n_trials=share)`` (:func:`benchmarks.tuning.workers` does the Optuna side)
against the same storage, so the shares add up to exactly the trials the study misses. Storage: the default
journal file works for workers on one machine (a file lock serialises writes); workers on several machines
need an SQL storage they can all reach (``--storage postgresql+psycopg2://user@host:5432/optuna``), whose
heartbeats fail, and re-queue, the trial of a worker that died.

Each trial's line (number, state, value, best so far, parameters) is logged on the ``benchmarks.tuning``
logger in the worker and forwarded to the driver's console, labelled with the worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import secrets
from collections.abc import Callable
from typing import Any

import benchmarks.tuning as tuning
from benchmarks.tuning import TuneSpec, TuneSummary, recover_stale_trials, split_trials

Echo = Callable[[str], None]


def trials_task(spec: TuneSpec, n_trials: int, worker_index: int, threads: int) -> int:
    """Dask task: run exactly ``n_trials`` trials of ``spec``'s study in this worker with ``threads`` threads;
    one forwarded log line per finished trial. Returns ``n_trials``."""
    from benchmarks.threads import ThreadSettings
    from benchmarks.tuning.workers import _work  # the tuning package's one-worker loop (load study, optimize)

    with ThreadSettings(threads):
        _work(spec, n_trials, worker_index, logging.getLogger("benchmarks.tuning.trials").info)
    return n_trials


def _warm_features(spec: TuneSpec) -> None:
    """Build the objective once here so that features are extracted and cached before workers share the cache."""
    module, _, func = spec.objective.partition(":")
    getattr(importlib.import_module(module), func)(spec)


def fill_on_cluster(spec: TuneSpec, client: Any, *, threads: int = 1, echo: Echo | None = None) -> TuneSummary:
    """Fill ``spec``'s study to ``spec.n_trials`` finished trials with the workers of ``client``.

    The missing trials are split evenly over the cluster's slots (:func:`benchmarks.tuning.split_trials`), one
    Dask task per share. The summary is the tuning package's own (:func:`benchmarks.tuning.run_study` on the
    full study, which then has nothing left to run).

    Raises
    ------
    UsageError
        Bad spec, unreadable storage, or a study made for other settings (before any task starts).
    RuntimeError
        If a worker died during its share (its finished trials are kept; re-run to resume).
    Exception
        What the objective raised in a worker.
    """
    from distributed import wait

    from benchmarks.distributed import client_slots, is_worker_loss, loss_text
    from benchmarks.progress import console_logs
    from benchmarks.tuning import create_or_load_study
    from benchmarks.tuning.workers import FINISHED_STATES, count_trials

    spec.validate()
    study = create_or_load_study(spec)
    study.set_user_attr("budget", int(spec.n_trials))
    recovered = recover_stale_trials(study)
    shares = split_trials(int(spec.n_trials) - count_trials(study, FINISHED_STATES), client_slots(client))
    if shares:
        _warm_features(spec)
    token = secrets.token_hex(3)
    futures = [client.submit(trials_task, spec, n, i, threads, key=f"trials-{spec.name}-{i}-{token}", pure=False)
               for i, n in enumerate(shares)]
    with console_logs(("benchmarks.tuning.trials",), echo) if echo is not None else contextlib.nullcontext():
        wait(futures)
    lost = [loss_text(f.exception()) for f in futures if f.status == "error" and is_worker_loss(f.exception())]
    if lost:
        raise RuntimeError(f"tuning study {spec.name}: {'; '.join(lost)}; finished trials are kept, re-run to resume")
    for f in futures:
        f.result()  # re-raises what an objective raised
    summary = tuning.run_study(spec, workers=1, echo=echo)
    return dataclasses.replace(summary, ran=sum(shares), recovered=recovered + list(summary.recovered))


def run_study_parallel(spec: TuneSpec, *, workers: int = 1, scheduler: str | None = None, threads: int = 1,
                       echo: Echo | None = None) -> TuneSummary:
    """``tune``'s entry point: serial in this process (``workers == 1`` and no ``scheduler``), else on a local
    Dask cluster of ``workers`` processes or on the cluster at ``scheduler``; ``threads`` threads per process.

    Raises
    ------
    As :func:`fill_on_cluster` (and :func:`benchmarks.tuning.run_study` when serial).
    """
    from benchmarks.threads import ThreadSettings

    if workers <= 1 and not scheduler:
        with ThreadSettings(threads):
            return tuning.run_study(spec, workers=1, echo=echo)
    from benchmarks.distributed import dask_client

    with dask_client(workers=workers, scheduler=scheduler, threads=threads, device=spec.device, echo=echo) as client:
        return fill_on_cluster(spec, client, threads=threads, echo=echo)


__all__ = ["fill_on_cluster", "run_study_parallel", "trials_task"]
