"""Tune a grid of studies with an equal budget: one study per (method, dataset, bits), ``n`` trials each.

This is what ``run --tune N`` calls before its test grid. Study names are deterministic
(:func:`grid_study_name`), so a re-run resumes: finished (complete or pruned) trials are not run again and
count toward the budget; only failed trials are replaced. Methods whose search space is empty (nothing to
tune) are reported as skipped and run with their defaults.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from benchmarks.cli import UsageError
from benchmarks.tuning.storage import describe_storage, open_storage
from benchmarks.tuning.study import (
    TuneSpec,
    check_study_settings,
    grid_study_name,
    search_space_is_empty,
    study_settings,
)
from benchmarks.tuning.workers import Echo, TuneSummary, run_study


def grid_specs(methods: Sequence[str], datasets: Sequence[str], bits: Sequence[int], n_trials: int, *,
               study_prefix: str | None = None, **spec_fields: Any) -> list[TuneSpec]:
    """The :class:`TuneSpec` of every grid cell (dataset-major, then method, then bits), validated.

    Parameters
    ----------
    methods, datasets : sequence of str
        Registry names (methods already resolved: no wildcards).
    bits : sequence of int
        Code lengths.
    n_trials : int
        Budget: finished trials per study, equal for every study.
    study_prefix : str | None
        Prefix of the study names (:func:`grid_study_name`).
    **spec_fields
        Any other :class:`TuneSpec` field (``storage``, ``seeds``, ``data_root``, ``encoder``,
        ``encoder_options``, ``device``, ``dataset_options``, ``cache_dir``, ``label_scheme``,
        ``dataset_seed``, ``protocol``, ``sampler_seed``, ``objective``, ...), shared by every study.

    Raises
    ------
    UsageError
        Empty selection or an invalid field value (named).
    TypeError
        For a keyword that is not a :class:`TuneSpec` field.
    """
    if not methods or not datasets or not bits:
        raise UsageError("tuning needs at least one method, one dataset and one code length")
    if "seeds" in spec_fields:
        spec_fields["seeds"] = tuple(int(s) for s in spec_fields["seeds"])
    specs = [TuneSpec(method=m, dataset=d, bits=int(b), n_trials=int(n_trials),
                      study_name=grid_study_name(m, d, int(b), study_prefix), **spec_fields)
             for d in datasets for m in methods for b in bits]
    for spec in specs:
        spec.validate()
    return specs


def preflight(specs: Sequence[TuneSpec]) -> None:
    """Check every existing study of the grid against its settings before any trial runs (writes nothing).

    Raises
    ------
    UsageError
        The first study whose recorded settings differ (all differing settings named).
    """
    import optuna

    by_storage: dict[str | None, list[TuneSpec]] = {}
    for spec in specs:
        by_storage.setdefault(spec.storage, []).append(spec)
    for storage, group in by_storage.items():
        store = open_storage(storage)
        existing = set(optuna.get_all_study_names(store))
        for spec in group:
            if spec.name in existing:
                study = optuna.load_study(study_name=spec.name, storage=store)
                check_study_settings(study, study_settings(spec), where=describe_storage(storage), record=False)


def tune_grid(methods: Sequence[str], datasets: Sequence[str], bits: Sequence[int], n_trials: int, *,
              workers: int = 1, echo: Echo | None = None, study_prefix: str | None = None,
              **spec_fields: Any) -> list[TuneSummary]:
    """Tune every (method, dataset, bits) study up to the same budget of ``n_trials`` finished trials.

    Parameters
    ----------
    methods, datasets, bits, n_trials, study_prefix, **spec_fields
        As :func:`grid_specs`.
    workers : int
        Worker processes per study.
    echo : callable | None
        Receives a header line per study and one line per finished trial.

    Returns
    -------
    list[TuneSummary]
        One per grid cell, in grid order; a method with an empty search space gets a summary with
        ``skipped`` set and no study.

    Raises
    ------
    UsageError
        Invalid values, unreadable storage, or an existing study tuned with other settings (checked for the
        whole grid before the first trial).
    """
    specs = grid_specs(methods, datasets, bits, n_trials, study_prefix=study_prefix, **spec_fields)
    untunable = {m for m in dict.fromkeys(methods) if search_space_is_empty(m)}
    preflight([s for s in specs if s.method not in untunable])
    summaries: list[TuneSummary] = []
    for i, spec in enumerate(specs, start=1):
        if spec.method in untunable:
            summaries.append(TuneSummary(spec.name, describe_storage(spec.storage), 0, 0, 0, 0, [], None, {},
                                         method=spec.method, dataset=spec.dataset, bits=int(spec.bits),
                                         budget=int(n_trials), skipped="no search space (runs with its defaults)"))
            if echo is not None:
                echo(f"[{i}/{len(specs)}] {spec.method} on {spec.dataset} at {spec.bits} bits: nothing to tune "
                     "(empty search space), defaults used")
            continue
        if echo is not None:
            echo(f"[{i}/{len(specs)}] tuning study {spec.name}: budget {n_trials} finished trials")
        summaries.append(run_study(spec, workers=workers, echo=echo))
    return summaries


__all__ = ["grid_specs", "preflight", "tune_grid"]
