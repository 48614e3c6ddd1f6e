"""Fill a study up to its budget with one or more worker processes; recover dead workers' trials; print a
line per finished trial.

``n_trials`` is the number of finished (complete or pruned) trials the study should hold: re-running the
same call after a crash runs only the missing ones. Each trial records the host and process id of its
worker; a trial left ``RUNNING`` by a dead local process is marked ``FAIL`` and its parameters are queued
again.
"""

from __future__ import annotations

import contextlib
import importlib
import multiprocessing
import os
import socket
import sys
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.cli import UsageError
from benchmarks.tuning.storage import describe_storage, open_storage
from benchmarks.tuning.study import (
    TuneSpec,
    check_study_settings,
    create_or_load_study,
    defaults_value,
    make_pruner,
    make_sampler,
)

#: Trial states that count toward a study's budget.
FINISHED_STATES = ("COMPLETE", "PRUNED")

Echo = Callable[[str], None]


def split_trials(remaining: int, workers: int) -> list[int]:
    """Divide ``remaining`` trials among ``workers`` as evenly as possible (no zero shares).

    >>> split_trials(7, 3)
    [3, 2, 2]
    """
    workers = max(1, min(int(workers), int(remaining)))
    if remaining <= 0:
        return []
    base, extra = divmod(int(remaining), workers)
    return [base + (i < extra) for i in range(workers)]


def count_trials(study: Any, states: tuple[str, ...]) -> int:
    """Number of the study's trials in the named states (``"COMPLETE"``, ``"PRUNED"``, ``"FAIL"``, ...)."""
    import optuna

    return len(study.get_trials(deepcopy=False, states=tuple(optuna.trial.TrialState[s] for s in states)))


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host is alive (a zombie counts as dead)."""
    if pid <= 0:
        return True  # unknown: never treat as dead
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def recover_stale_trials(study: Any) -> list[int]:
    """Fail the ``RUNNING`` trials whose worker process on this host is dead, and queue their parameters again.

    Returns
    -------
    list[int]
        Numbers of the trials marked ``FAIL``.
    """
    import optuna

    host = socket.gethostname()
    failed: list[int] = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker") or {}
        if worker.get("host") != host or _pid_alive(int(worker.get("pid", -1))):
            continue
        with contextlib.suppress(RuntimeError):  # another process finished it meanwhile
            study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL)
            failed.append(t.number)
            if t.params:
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
    return failed


def format_params(params: Mapping[str, Any]) -> str:
    """``{"lr": 0.00123456, "moe": True}`` → ``"lr=0.001235 moe=True"`` (floats to 4 significant digits)."""
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()) or "(none)"


def trial_line(study: Any, trial: Any, budget: int) -> str:
    """One line about a finished trial: number, state, value (or why it was pruned), best so far, progress
    toward the budget and the trial's parameters (the method config overrides it was fitted with).

    Parameters
    ----------
    study : optuna.Study
    trial : optuna.trial.FrozenTrial
    budget : int
        Finished trials the study should hold.
    """
    state = trial.state.name
    if state == "COMPLETE":
        what = f"value {trial.value:.4f}"
    elif state == "PRUNED" and trial.user_attrs.get("pruned"):
        ev = trial.user_attrs["pruned"]
        median = "–" if ev.get("median") is None else f"{ev['median']:.4f}"
        what = (f"after {ev['sub_runs']}/{ev['of']} sub-run(s): running {ev['running']:.4f} < median {median} "
                f"of {ev['n_trials']} completed trial(s)")
    elif state == "PRUNED" and trial.intermediate_values:
        step = max(trial.intermediate_values)
        what = f"pruned at step {step} (reported {trial.intermediate_values[step]:.4f})"
    elif state == "FAIL":
        what = f"failed ({trial.system_attrs.get('fail_reason', 'no reason recorded')})".splitlines()[0]
    else:
        what = "no value"
    try:
        best = study.best_trial
        best_text = f"best {best.value:.4f} (trial {best.number})"
    except ValueError:  # no complete trial yet
        best_text = "best –"
    finished = count_trials(study, FINISHED_STATES)
    params = trial.user_attrs.get("config", trial.params)
    return f"trial {trial.number} {state}: {what}; {best_text}; {finished}/{budget} finished; {format_params(params)}"


@dataclass
class TrialPrinter:
    """Optuna callback echoing :func:`trial_line` after each finished trial (``study.optimize(callbacks=)``)."""

    budget: int
    echo: Echo = print
    prefix: str = ""

    def __call__(self, study: Any, trial: Any) -> None:
        self.echo(self.prefix + trial_line(study, trial, self.budget))


def _load_objective(path: str) -> Callable[[TuneSpec], Callable[[Any], float]]:
    module, _, func = path.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as err:
        raise UsageError(f"cannot import objective {path!r}: {err}") from None


def _work(spec: TuneSpec, n_trials: int, worker_index: int, echo: Echo | None = None, prefix: str = "") -> None:
    """One worker: load the study, check the objective's resolved settings, run exactly ``n_trials`` trials."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(spec.storage, heartbeat_interval=spec.heartbeat_interval)
    probe = optuna.load_study(study_name=spec.name, storage=storage)
    study = optuna.load_study(
        study_name=spec.name,
        storage=storage,
        sampler=make_sampler(spec, worker_index, len(probe.get_trials(deepcopy=False))),
        pruner=make_pruner(spec.pruner_startup_trials),
    )
    objective = _load_objective(spec.objective)(spec)
    check_study_settings(study, getattr(objective, "settings", {}), where=describe_storage(spec.storage))
    worker = {"host": socket.gethostname(), "pid": os.getpid(), "index": worker_index}

    def wrapped(trial: Any) -> float:
        trial.set_user_attr("worker", worker)
        return objective(trial)

    callbacks = [TrialPrinter(int(spec.n_trials), echo, prefix)] if echo is not None else []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # the queued trial of the method's defaults may hold a default outside the searched range, on purpose
        warnings.filterwarnings("ignore", message=r"Fixed parameter .* is out of range for distribution")
        study.optimize(wrapped, n_trials=int(n_trials), catch=(), callbacks=callbacks)


def _print_flush(line: str) -> None:
    print(line, flush=True)


def _worker_entry(spec_dict: dict[str, Any], n_trials: int, worker_index: int, n_workers: int, progress: bool,
                  errors: Any) -> None:
    """Entry point of a spawned worker process (CPU threads divided among the workers); a user error is
    sent to the parent through ``errors`` (a queue) and ends the process with exit code 2."""
    from benchmarks.cli import _user_error_types

    spec_dict = dict(spec_dict, seeds=tuple(spec_dict["seeds"]))
    threads = str(max(1, (os.cpu_count() or 1) // max(1, n_workers)))
    os.environ.setdefault("OMP_NUM_THREADS", threads)  # read by torch when the objective imports it
    os.environ.setdefault("MKL_NUM_THREADS", threads)
    try:
        _work(TuneSpec(**spec_dict), n_trials, worker_index, _print_flush if progress else None,
              prefix=f"[worker {worker_index}] ")
    except _user_error_types() as err:
        errors.put(str(err))
        sys.exit(2)


@dataclass(frozen=True)
class TuneSummary:
    """What a tuning call left in the study.

    Attributes
    ----------
    study_name : str
    storage : str
        Where the study lives (URL with password hidden, or the journal path).
    n_complete, n_pruned, n_failed : int
        Trials per final state after the call.
    ran : int
        Trials this call asked its workers to run.
    recovered : list[int]
        Trials of dead workers marked ``FAIL`` (their parameters were queued again).
    best_value : float | None
        Best validation mAP so far.
    best_params : dict
        Config overrides of the best trial.
    method, dataset : str
    bits : int | None
    budget : int
        Finished trials asked for (``n_trials``).
    best_trial : int | None
        Number of the best trial.
    defaults_value : float | None
        Validation mAP of the trial of the method's untuned defaults (``None``: none complete).
    skipped : str | None
        Why no study was tuned (e.g. the method has no search space); ``None`` when it was.
    """

    study_name: str
    storage: str
    n_complete: int
    n_pruned: int
    n_failed: int
    ran: int
    recovered: list[int]
    best_value: float | None
    best_params: dict[str, Any]
    method: str = ""
    dataset: str = ""
    bits: int | None = None
    budget: int = 0
    best_trial: int | None = None
    skipped: str | None = field(default=None)
    defaults_value: float | None = None


def _spawn(spec: TuneSpec, shares: list[int], progress: bool) -> None:
    """Run ``shares`` trials in spawned worker processes; raise the first user error any of them sent."""
    ctx = multiprocessing.get_context("spawn")
    errors = ctx.SimpleQueue()
    procs = [ctx.Process(target=_worker_entry, args=(asdict(spec), n, i, len(shares), progress, errors),
                         name=f"tune-worker-{i}") for i, n in enumerate(shares)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    messages = []
    while not errors.empty():
        messages.append(errors.get())
    if messages:
        raise UsageError(messages[0])
    bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
    if bad:
        raise RuntimeError(f"tuning worker(s) failed: {bad}; finished trials are kept, re-run to resume")


def run_study(spec: TuneSpec, *, workers: int = 1, echo: Echo | None = None) -> TuneSummary:
    """Fill the study ``spec.name`` up to ``spec.n_trials`` finished trials with ``workers`` processes.

    The study is created (or loaded and its settings checked) here; dead local workers' trials are
    recovered; the missing trials are divided among the workers (each runs exactly its share, so the total is
    exact). With one worker the trials run in this process; with more, in spawned processes sharing the
    storage. The study records ``budget`` = ``spec.n_trials`` (the latest budget asked for).

    Parameters
    ----------
    spec : TuneSpec
    workers : int
        Worker processes (>= 1).
    echo : callable | None
        Receives one line per finished trial (:func:`trial_line`); spawned workers print theirs to stdout.

    Raises
    ------
    UsageError
        Bad spec value, unreachable or damaged storage, or a study name made for other settings.
    RuntimeError
        If a worker process exits with a non-zero code (its finished trials are kept).
    """
    import optuna

    spec.validate()
    if int(workers) < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    study = create_or_load_study(spec)
    study.set_user_attr("budget", int(spec.n_trials))
    recovered = recover_stale_trials(study)
    shares = split_trials(int(spec.n_trials) - count_trials(study, FINISHED_STATES), workers)
    if len(shares) == 1:
        _work(spec, shares[0], 0, echo)
    elif shares:
        _spawn(spec, shares, progress=echo is not None)
    study = optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage))
    best = study.best_trial if count_trials(study, ("COMPLETE",)) else None
    return TuneSummary(
        study_name=spec.name,
        storage=describe_storage(spec.storage),
        n_complete=count_trials(study, ("COMPLETE",)),
        n_pruned=count_trials(study, ("PRUNED",)),
        n_failed=count_trials(study, ("FAIL",)),
        ran=sum(shares),
        recovered=recovered,
        best_value=float(best.value) if best is not None else None,
        best_params=dict(best.user_attrs.get("config", best.params)) if best is not None else {},
        method=spec.method,
        dataset=spec.dataset,
        bits=int(spec.bits),
        budget=int(spec.n_trials),
        best_trial=best.number if best is not None else None,
        defaults_value=defaults_value(study),
    )


__all__ = [
    "FINISHED_STATES",
    "TrialPrinter",
    "TuneSummary",
    "count_trials",
    "format_params",
    "recover_stale_trials",
    "run_study",
    "split_trials",
    "trial_line",
]
