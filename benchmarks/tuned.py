"""The tuned protocol of ``run``: every selected method tuned with the same Optuna budget on the validation
split, then the test grid run with each study's best parameters (``run --tune N``), or the best trials of
existing studies (``run --params best [--study ...]``).

What reaches a cell is :attr:`benchmarks.cell.RunSpec.tuned`, keyed by (method, dataset, bits): the best
trial's parameters and the ``tuning`` record written into every row of the cell::

    {"study": str, "trial": int, "budget": int, "n_complete": int | None, "n_pruned": int | None,
     "n_finished": int, "best_value": float, "params": {...}, "protocol": str, "seeds": [...],
     "shared_across_bits": bool, "defaults_value": float | None, "inherited_from": str (ablations only)}

``defaults_value`` is the validation mAP of the study's trial of the method's untuned defaults (every study runs
them as one of its budget's trials), so the gain from tuning is visible beside ``best_value``.

A study's parameters only ever reach the method the study tuned (:func:`benchmarks.tuning.resolve_best_params`
refuses a mismatch, naming both). Methods without a search space (``random``) run with their defaults and get
no record.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.cell import tuned_key


def _record(*, study: str, trial: int | None, budget: int | None, best_value: float | None, params: dict[str, Any],
            n_complete: int | None, n_pruned: int | None, n_finished: int, protocol: str | None, seeds: Sequence[int],
            shared_across_bits: bool, defaults_value: float | None) -> dict[str, Any]:
    return {"study": study, "trial": trial, "budget": budget, "n_complete": n_complete, "n_pruned": n_pruned,
            "n_finished": n_finished, "best_value": best_value, "params": dict(params), "protocol": protocol,
            "seeds": list(seeds), "shared_across_bits": shared_across_bits, "defaults_value": defaults_value}


#: :class:`benchmarks.tuning.TuneSpec` fields that :func:`benchmarks.cell.prepare_features` takes too.
_PREPARE_FIELDS = ("data_root", "encoder", "device", "dataset_options", "cache_dir", "label_scheme", "dataset_seed",
                   "encoder_options")


def inheriting_variants(methods: Sequence[str]) -> dict[str, str]:
    """``{ablation: base}`` for the selected ablation variants whose base method is selected too: they are not
    tuned themselves but take the base method's tuned parameters (the ablation question is "the tuned full model
    without this component")."""
    from methods import METHODS

    return {m: str(METHODS.get(m).base) for m in methods
            if METHODS.get(m).base in methods and "ablation" in METHODS.tags(m)}


def inherit_tuned(tuned: dict[str, dict[str, Any]], inherit: dict[str, str]) -> None:
    """Give every variant of ``inherit`` its base's entries of ``tuned`` (in place): the base's parameters minus
    the settings the variant fixes, and its record with ``inherited_from`` naming the base."""
    from methods import METHODS

    for variant, base in inherit.items():
        own = METHODS.get(variant).overrides  # the ablation's own setting always wins over a tuned value
        for key in [k for k in tuned if k.split("|")[0] == base]:
            _, dataset, b = key.split("|")
            entry = tuned[key]
            params = {k: v for k, v in entry["params"].items() if k not in own}
            tuned[tuned_key(variant, dataset, None if b == "None" else int(b))] = {
                "params": params, "tuning": {**entry["tuning"], "params": params, "inherited_from": base}}


def refuse_tuned_param_overrides(params: dict[str, dict[str, Any]]) -> None:
    """Refuse ``run --param`` keys that the tuned protocol would set: the rows would record the tuned value while
    the cell ran with the user's.

    Parameters
    ----------
    params : dict
        ``--param`` values per method (:func:`benchmarks.commands.run.params_per_method`).

    Raises
    ------
    UsageError
        Naming each key and the methods whose search space sets it.
    """
    from benchmarks.cli import UsageError
    from benchmarks.tuning import searched_params

    clash: dict[str, list[str]] = {}
    for method, given in params.items():
        for key in sorted(set(given) & searched_params(method)):
            clash.setdefault(key, []).append(method)
    if clash:
        named = "; ".join(f"{key} (tuned for {', '.join(ms)})" for key, ms in clash.items())
        raise UsageError(f"--param {named}: with --tune / --params best the tuned value is used and recorded; drop "
                         "that --param, or run without tuning to set it by hand")


def tune_then_params(methods: Sequence[str], datasets: Sequence[str], bits: Sequence[int], n_trials: int, *,
                     storage: str | None, seeds: Sequence[int], protocol: str = "unimodal", workers: int = 1,
                     tune_bits: int | None = None, echo: Callable[[str], None] = print,
                     **spec_fields: Any) -> dict[str, dict[str, Any]]:
    """Tune every binary (method, dataset, bits) and float (method, dataset) study with ``n_trials`` finished
    trials (resumable: finished trials are kept), and return :attr:`RunSpec.tuned`.

    Float methods (``real-valued``) ignore ``bits``: they are tuned once per dataset, at ``tune_bits`` when given,
    else at the shortest code length, and their record says ``shared_across_bits``. With ``tune_bits``, binary methods too are tuned at that one
    code length and its best parameters serve every code length (``shared_across_bits``: the tuning table says
    so). Ablation variants whose base method is selected are not tuned: they take the base method's tuned
    parameters with their own override on top (the ablation question is "the tuned full model without this
    component"), and their record names the base study with ``inherited_from``.

    Parameters
    ----------
    spec_fields
        :class:`benchmarks.tuning.TuneSpec` fields shared by every study (``data_root``, ``encoder``,
        ``encoder_options``, ``device``, ``dataset_options``, ``cache_dir``, ``label_scheme``, ``dataset_seed``,
        ``threads``: ``run`` passes its per-cell thread count, so trials score as the cells run).

    Raises
    ------
    UsageError
        Invalid values, or an existing study tuned with other settings (checked before the first trial).
    """
    from benchmarks.cell import prepare_features
    from benchmarks.tuning import tune_grid
    from methods import METHODS

    for dataset in datasets:  # extract (or load) features once here, not in every tuning worker at once
        fields = {k: spec_fields[k] for k in _PREPARE_FIELDS if k in spec_fields}
        for key in ("data_root", "cache_dir"):
            fields[key] = Path(fields[key]) if fields.get(key) else None
        prepare_features(dataset, progress=True, **fields)
    inherit = inheriting_variants(methods)
    tuned_methods = [m for m in methods if m not in inherit]
    for name in [m for m in tuned_methods if "ablation" in METHODS.tags(m)]:  # selected without their base
        base = METHODS.get(name).base
        echo(f"note: {name} is tuned as a method of its own because {base} is not selected; select {base} too to "
             f"run it with {base}'s tuned parameters minus its own setting (the ablation question; finished cells "
             "are skipped)")
    binary = [m for m in tuned_methods if METHODS.get(m).cls.binary]
    floats = [m for m in tuned_methods if not METHODS.get(m).cls.binary]
    summaries = []
    if binary:
        summaries += tune_grid(binary, datasets, [tune_bits] if tune_bits else bits, n_trials, storage=storage,
                               seeds=tuple(seeds), protocol=protocol, workers=workers, echo=echo, **spec_fields)
    if floats:
        # one study per dataset: at --tune-bits when given (so runs over other code lengths find it), else the
        # run's shortest code length
        summaries += tune_grid(floats, datasets, [tune_bits or min(bits)], n_trials, storage=storage, seeds=tuple(seeds),
                               protocol=protocol, workers=workers, echo=echo, **spec_fields)
    tuned: dict[str, dict[str, Any]] = {}
    for s in summaries:
        if s.skipped or s.best_value is None:
            continue
        is_float = s.method in floats
        record = _record(study=s.study_name, trial=s.best_trial, budget=s.budget, best_value=s.best_value,
                         params=s.best_params, n_complete=s.n_complete, n_pruned=s.n_pruned,
                         n_finished=s.n_complete + s.n_pruned, protocol=protocol, seeds=seeds,
                         shared_across_bits=is_float or bool(tune_bits), defaults_value=s.defaults_value)
        for b in [None] if is_float else (bits if tune_bits else [s.bits]):
            tuned[tuned_key(s.method, s.dataset, b)] = {"params": dict(s.best_params), "tuning": record}
    inherit_tuned(tuned, inherit)
    return tuned


def best_of_studies(methods: Sequence[str], datasets: Sequence[str], bits: Sequence[int], *,
                    studies: Sequence[str] | None, storage: str | None) -> dict[str, dict[str, Any]]:
    """:attr:`RunSpec.tuned` from existing studies (``run --params best``).

    With ``studies`` (``--study A B``), each study feeds the one method it tuned, at every code length of the run
    (``shared_across_bits`` when the run has several code lengths), on the dataset it was tuned on. Without, the
    default study names ``method-dataset-bits`` written by ``tune`` / ``run --tune`` are looked up per cell
    group. As with ``--tune``, ablation variants whose base method is selected take the base study's parameters
    minus their own setting (:func:`inherit_tuned`) and need no study of their own.

    Raises
    ------
    UsageError
        A study that tuned another method, two studies for one method, a tunable method without a study, or a
        study tuned on another dataset than the run's (both named).
    """
    from benchmarks.cli import UsageError
    from benchmarks.tuning import resolve_best_params
    from methods import METHODS

    inherit = inheriting_variants(methods)
    own = [m for m in methods if m not in inherit]
    tuned: dict[str, dict[str, Any]] = {}

    def add(best: Any, dataset: str, key_bits: int | None, shared: bool) -> None:
        record = _record(study=best.study_name, trial=best.trial_number, budget=best.budget, best_value=best.value,
                         params=best.params, n_complete=None, n_pruned=None, n_finished=best.n_finished,
                         protocol=best.protocol, seeds=best.seeds, shared_across_bits=shared,
                         defaults_value=best.defaults_value)
        tuned[tuned_key(best.method, dataset, key_bits)] = {"params": dict(best.params), "tuning": record}

    if studies:
        chosen = resolve_best_params(own, list(studies), storage)
        for method, best in chosen.items():
            other = [d for d in datasets if best.dataset not in (None, d)]
            if other:
                raise UsageError(f"study {best.study_name!r} tuned {method} on {best.dataset}, but this run is on "
                                 f"{', '.join(other)}: tune on that dataset (`run --tune N`), or run "
                                 f"--datasets {best.dataset}")
            is_float = not METHODS.get(method).cls.binary
            for dataset in datasets:
                for b in ([None] if is_float else bits):
                    add(best, dataset, b, shared=is_float or len(bits) > 1 or best.bits not in (None, b))
    else:
        for dataset in datasets:
            for b in bits:
                chosen = resolve_best_params([m for m in own if METHODS.get(m).cls.binary], None, storage,
                                             dataset=dataset, bits=b)
                for best in chosen.values():
                    add(best, dataset, b, shared=False)
            floats = [m for m in own if not METHODS.get(m).cls.binary]
            if floats:
                for best in resolve_best_params(floats, None, storage, dataset=dataset, bits=min(bits)).values():
                    add(best, dataset, None, shared=True)
    inherit_tuned(tuned, inherit)
    return tuned
