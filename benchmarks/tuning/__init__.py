"""Optuna hyper-parameter sweeps on a shared study store (journal file or SQL database).

One study per (method, dataset, bits), named ``f"{method}-{dataset}-{bits}"`` by default. The search space is
the method's own :meth:`methods.base.HashingMethod.search_space` (define-by-run); this package knows nothing
method-specific. The objective is the **validation** mAP (tie-aware, mean of i2t and t2i, validation split as
queries against the train split as database): the query split is never seen while tuning.

Modules
-------
:mod:`~benchmarks.tuning.storage`
    Journal / SQL storages from a user string; a torn journal tail is repaired before anything is written.
:mod:`~benchmarks.tuning.study`
    :class:`TuneSpec`, the settings a study records (a resume with other settings is refused), the median
    pruner (``n_min_trials = 2``) and the sub-run scoring that reports to it.
:mod:`~benchmarks.tuning.objective`
    The real objective (fit on train, ``benchmarks.cell.validation_score`` on validation).
:mod:`~benchmarks.tuning.workers`
    :func:`run_study`: fill a study to its budget with worker processes, recover dead workers' trials, one
    line per finished trial.
:mod:`~benchmarks.tuning.grid`
    :func:`tune_grid`: an equal budget for every (method, dataset, bits) study (``run --tune N``).
:mod:`~benchmarks.tuning.best`
    :func:`resolve_best_params` (one study per method, ``run --params best``) and :func:`tuning_table`.

Storage
-------
``None`` (default)
    A journal file, ``results/optuna/journal.log`` (:class:`optuna.storages.journal.JournalFileBackend`):
    several worker processes on one machine share it through a file lock (a lock left by a killed worker is
    released after Optuna's grace period).
``"journal:PATH"`` or a plain path
    Another journal file.
An SQLAlchemy URL (``postgresql+psycopg2://user@host:5432/db``, ``sqlite:///file.db``)
    :class:`optuna.storages.RDBStorage`, for workers on many machines; trials send a heartbeat so a trial
    whose worker died is failed (and re-queued) by the next worker.

Resuming
--------
``n_trials`` is the number of finished (complete or pruned) trials the study should hold: re-running the same
command after a crash runs only the missing ones.
"""

from __future__ import annotations

from benchmarks.tuning.best import (
    TUNING_COLUMNS,
    BestTrial,
    best_params,
    best_trial,
    resolve_best_params,
    tuning_table,
)
from benchmarks.tuning.grid import grid_specs, tune_grid
from benchmarks.tuning.objective import validation_objective
from benchmarks.tuning.storage import (
    DEFAULT_JOURNAL,
    TornJournalWarning,
    check_journal_file,
    load_study,
    open_storage,
    repair_journal,
    scan_journal,
)
from benchmarks.tuning.study import (
    DEFAULT_OBJECTIVE,
    OBJECTIVE_DESCRIPTION,
    PRUNER_MIN_TRIALS,
    TuneSpec,
    check_study_settings,
    create_or_load_study,
    default_params,
    default_study_name,
    defaults_value,
    enqueue_defaults,
    grid_study_name,
    make_pruner,
    prune_evidence,
    score_subruns,
    search_space_is_empty,
    searched_params,
    study_settings,
)
from benchmarks.tuning.workers import (
    TrialPrinter,
    TuneSummary,
    recover_stale_trials,
    run_study,
    split_trials,
    trial_line,
)

__all__ = [
    "DEFAULT_JOURNAL",
    "DEFAULT_OBJECTIVE",
    "OBJECTIVE_DESCRIPTION",
    "PRUNER_MIN_TRIALS",
    "TUNING_COLUMNS",
    "BestTrial",
    "TornJournalWarning",
    "TrialPrinter",
    "TuneSpec",
    "TuneSummary",
    "best_params",
    "best_trial",
    "check_journal_file",
    "check_study_settings",
    "create_or_load_study",
    "default_params",
    "defaults_value",
    "enqueue_defaults",
    "default_study_name",
    "grid_specs",
    "grid_study_name",
    "load_study",
    "make_pruner",
    "open_storage",
    "prune_evidence",
    "recover_stale_trials",
    "repair_journal",
    "resolve_best_params",
    "run_study",
    "scan_journal",
    "score_subruns",
    "search_space_is_empty",
    "searched_params",
    "split_trials",
    "study_settings",
    "trial_line",
    "tune_grid",
    "tuning_table",
    "validation_objective",
]
