"""Read tuned studies back: the best parameters per method (``run --params best``) and the tuning table.

A study records the method it tuned (user attribute ``method``, see :mod:`benchmarks.tuning.study`); its
parameters only ever reach that method. :func:`resolve_best_params` maps each selected method to exactly
one study and refuses, with both names in the message, a study given for another method, two studies for
one method, or a tunable method left without a study.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from benchmarks.cli import UsageError
from benchmarks.tuning.storage import describe_storage, load_study, open_storage
from benchmarks.tuning.study import defaults_value, grid_study_name, search_space_is_empty


@dataclass(frozen=True)
class BestTrial:
    """The best complete trial of one study, and what the study was tuned for.

    Attributes
    ----------
    method : str
        The method the study tuned (its ``method`` user attribute).
    study_name : str
    trial_number : int
    params : dict
        Config overrides the trial was fitted with (what the method's ``search_space`` returned).
    value : float
        Its validation mAP (the objective).
    dataset : str | None
    bits : int | None
        Dataset and code length the study tuned on.
    budget : int | None
        Finished trials last asked for (``None`` for a study made by an older harness).
    n_finished : int
        Complete + pruned trials the study holds.
    protocol : str | None
        Encoding protocol of the validation score the study maximised.
    seeds : tuple[int, ...]
        Tuning seeds of the study (empty when not recorded).
    defaults_value : float | None
        Validation mAP of the study's trial of the untuned defaults (``None``: no such complete trial).
    """

    method: str
    study_name: str
    trial_number: int
    params: dict[str, Any]
    value: float
    dataset: str | None = None
    bits: int | None = None
    budget: int | None = None
    n_finished: int = 0
    protocol: str | None = None
    seeds: tuple[int, ...] = ()
    defaults_value: float | None = None


def _states(study: Any) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for t in study.get_trials(deepcopy=False):
        out.setdefault(t.state.name, []).append(t)
    return out


def _best_complete(trials: Sequence[Any]) -> Any | None:
    """Highest value; ties go to the lowest trial number (the first one found)."""
    return max(trials, key=lambda t: (t.value, -t.number)) if trials else None


def best_trial(study_name: str, storage: str | None = None) -> BestTrial:
    """The best complete trial of a study.

    Raises
    ------
    UsageError
        If the study does not exist, records no method, or has no completed trial.
    """
    study = load_study(study_name, storage)
    method = study.user_attrs.get("method")
    if not method:
        raise UsageError(f"study {study_name!r} in {describe_storage(storage)} records no method (not made by "
                         "`tune`); its parameters cannot be given to a method")
    states = _states(study)
    best = _best_complete(states.get("COMPLETE", []))
    if best is None:
        raise UsageError(f"study {study_name!r} has no completed trial yet (run `tune` first)")
    return BestTrial(
        method=str(method), study_name=study_name, trial_number=best.number,
        params=dict(best.user_attrs.get("config", best.params)), value=float(best.value),
        dataset=study.user_attrs.get("dataset"), bits=study.user_attrs.get("bits"),
        budget=study.user_attrs.get("budget"),
        n_finished=len(states.get("COMPLETE", [])) + len(states.get("PRUNED", [])),
        protocol=study.user_attrs.get("protocol"), seeds=tuple(study.user_attrs.get("seeds") or ()),
        defaults_value=defaults_value(study),
    )


def best_params(study_name: str, storage: str | None = None) -> dict[str, Any]:
    """Config overrides of the best completed trial of one study (see :func:`resolve_best_params` to give
    them to methods: it checks the study tuned that method).

    Raises
    ------
    UsageError
        If the study does not exist or has no completed trial.
    """
    study = load_study(study_name, storage)
    best = _best_complete(_states(study).get("COMPLETE", []))
    if best is None:
        raise UsageError(f"study {study_name!r} has no completed trial yet (run `tune` first)")
    return dict(best.user_attrs.get("config", best.params))


def resolve_best_params(
    methods: Sequence[str],
    studies: str | Sequence[str] | Mapping[str, str] | None = None,
    storage: str | None = None,
    *,
    dataset: str | None = None,
    bits: int | None = None,
    study_prefix: str | None = None,
) -> dict[str, BestTrial]:
    """Map every selected method to the best trial of the one study that tuned it.

    Parameters
    ----------
    methods : sequence of str
        Selected method names (resolved, no wildcards).
    studies : str | sequence of str | mapping | None
        Study names (``--study A B``; each study's recorded method decides which method it feeds), a mapping
        method → study name, or ``None`` for the grid names ``[prefix-]method-dataset-bits`` (needs
        ``dataset`` and ``bits``; what ``tune`` and :func:`benchmarks.tuning.grid.tune_grid` create).
    storage : str | None
        The Optuna storage (``None`` = default journal).
    dataset, bits, study_prefix
        Only for grid names (:func:`benchmarks.tuning.study.grid_study_name`).

    Returns
    -------
    dict[str, BestTrial]
        One entry per selected method that has a search space; methods with nothing to tune are absent
        (they run with their defaults).

    Raises
    ------
    UsageError
        A study tuned a method that is not selected or is not the method it is given to (both named); two
        studies for one method; a selected tunable method without a study; a missing study or one without a
        completed trial.
    """
    methods = list(dict.fromkeys(methods))
    tunable = [m for m in methods if not search_space_is_empty(m)]
    if studies is None:
        if dataset is None or bits is None:
            raise UsageError("--params best needs --study NAME (or a dataset and code length for default names)")
        pairs = [(m, grid_study_name(m, dataset, int(bits), study_prefix)) for m in tunable]
    elif isinstance(studies, Mapping):
        pairs = list(studies.items())
    else:
        names = [studies] if isinstance(studies, str) else list(studies)
        pairs = [(None, n) for n in dict.fromkeys(names)]
    out: dict[str, BestTrial] = {}
    for wanted, name in pairs:
        best = best_trial(name, storage)
        if wanted is not None and best.method != wanted:
            raise UsageError(f"study {name!r} tuned method {best.method}, not {wanted}; its parameters only go to "
                             f"{best.method}")
        if best.method not in methods:
            raise UsageError(f"study {name!r} tuned method {best.method}, which is not among the selected methods "
                             f"({', '.join(methods)}); its parameters only go to {best.method}")
        if best.method in out:
            raise UsageError(f"studies {out[best.method].study_name!r} and {name!r} both tuned method "
                             f"{best.method}; give one study per method")
        out[best.method] = best
    missing = [m for m in tunable if m not in out]
    if missing:
        given = ", ".join(f"{b.study_name} tuned {m}" for m, b in out.items()) or "none"
        raise UsageError(f"--params best: no study for method(s) {', '.join(missing)} (studies given: {given}); "
                         "give one --study per tuned method, or select only the tuned methods")
    return out


#: Columns of :func:`tuning_table`.
TUNING_COLUMNS = ("method", "dataset", "bits", "study", "budget", "n_complete", "n_pruned", "n_failed",
                  "best_value", "best_trial", "defaults_value", "params", "seeds", "protocol")


def tuning_table(storage: str | None = None, studies: Sequence[str] | None = None) -> Any:
    """The tuning table read from the storage: one row per study (method × dataset × bits).

    Parameters
    ----------
    storage : str | None
        The Optuna storage.
    studies : sequence of str | None
        Study names; ``None`` = every study in the storage that records a method (made by ``tune``).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`TUNING_COLUMNS`: ``budget`` (finished trials asked for, ``None`` if not recorded),
        trial counts per state, ``best_value`` (validation mAP of the best complete trial, ``NaN`` if none),
        ``best_trial`` (its number, ``None`` if none), ``defaults_value`` (validation mAP of the trial of the
        method's defaults, ``None`` if none), ``params`` (its config overrides, a dict), the tuning
        ``seeds`` and ``protocol``. Sorted by dataset, method, bits.

    Raises
    ------
    UsageError
        Unreadable storage or a named study that does not exist.
    """
    import optuna
    import pandas as pd

    if studies is None:
        store = open_storage(storage)
        loaded = [optuna.load_study(study_name=n, storage=store) for n in optuna.get_all_study_names(store)]
        loaded = [s for s in loaded if s.user_attrs.get("method")]
    else:
        loaded = [load_study(n, storage) for n in studies]
    rows = []
    for study in loaded:
        attrs, states = study.user_attrs, _states(study)
        best = _best_complete(states.get("COMPLETE", []))
        rows.append({
            "method": attrs.get("method"), "dataset": attrs.get("dataset"), "bits": attrs.get("bits"),
            "study": study.study_name, "budget": attrs.get("budget"),
            "n_complete": len(states.get("COMPLETE", [])), "n_pruned": len(states.get("PRUNED", [])),
            "n_failed": len(states.get("FAIL", [])),
            "best_value": float(best.value) if best is not None else float("nan"),
            "best_trial": best.number if best is not None else None,
            "defaults_value": defaults_value(study),
            "params": dict(best.user_attrs.get("config", best.params)) if best is not None else {},
            "seeds": attrs.get("seeds"), "protocol": attrs.get("protocol"),
        })
    table = pd.DataFrame(rows, columns=list(TUNING_COLUMNS))
    if not table.empty:
        table = table.sort_values(["dataset", "method", "bits"], kind="stable").reset_index(drop=True)
    return table


__all__ = ["TUNING_COLUMNS", "BestTrial", "best_params", "best_trial", "resolve_best_params", "tuning_table"]
