"""One tuning study: its spec, its identity (the objective settings it records), its pruner and sampler.

A study is made for exactly one objective: method, dataset, code length, label scheme, loader options,
dataset seed, encoder (requested and resolved), tuning seeds, protocol and metric. They are stored as the
study's user attributes when it is created (:func:`study_settings`), and a later call whose settings differ
is **refused** with a one-line error naming every differing setting (:func:`check_study_settings`): trials
scored under other seeds or data are not comparable, so mixing them would let the sampler and the pruner
compare unlike numbers. Give another study name (or storage) to tune under new settings.

Pruning
-------
Each trial fits the method once per tuning seed (a *sub-run*) and reports the running mean of the
validation mAP after each sub-run (step = sub-run index). :func:`make_pruner` builds Optuna's
:class:`~optuna.pruners.MedianPruner` with ``n_min_trials = 2`` (a median needs at least two completed
trials that reported at that step, never one trial's evidence) and ``n_startup_trials`` complete trials
before any pruning (default 5, Optuna's own default). A pruned trial records, and logs, how many completed
trials informed the decision and their median (:func:`prune_evidence`).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.cli import UsageError
from benchmarks.tuning.storage import describe_storage, is_url, journal_path, open_storage

#: What the objective measures; stored in every study's user attributes (key ``objective``).
OBJECTIVE_DESCRIPTION = (
    "validation mAP (tie-aware AP, mean of i2t and t2i; validation split as queries, train split as database)"
)

#: Default objective factory (``module:function`` taking a :class:`TuneSpec`).
DEFAULT_OBJECTIVE = "benchmarks.tuning:validation_objective"

#: Fewest completed trials whose values at a step form the pruning median.
PRUNER_MIN_TRIALS = 2

logger = logging.getLogger("benchmarks.tuning")


@dataclass
class TuneSpec:
    """Everything a tuning worker needs; plain values only, so it can be sent to a spawned process.

    Attributes
    ----------
    method, dataset : str
        Registry names (a method variant name is allowed).
    bits : int
        Code length K >= 8.
    n_trials : int
        Finished (complete + pruned) trials the study should hold after the call (the budget).
    storage : str | None
        ``None`` (default journal file), ``"journal:PATH"``, a path, or an SQLAlchemy URL.
    study_name : str | None
        Defaults to ``f"{method}-{dataset}-{bits}"``.
    seeds : tuple[int, ...]
        Tuning seeds; one sub-run (fit + validation score) per seed, the objective is their mean.
    data_root, encoder, encoder_options, device, dataset_options, cache_dir, label_scheme, dataset_seed
        Passed to ``benchmarks.cell.prepare_features`` (``label_scheme`` ``None`` = the loader's default;
        ``dataset_seed`` seeds generated data / seeded splits). ``dataset_options`` must not hold
        ``label_scheme`` or ``seed``: they have their own fields.
    protocol : str
        ``"unimodal"`` or ``"paired"``, passed to ``benchmarks.cell.validation_score``.
    sampler_seed : int
        Seed of the TPE sampler (mixed with the worker index and the study's trial count).
    objective : str
        ``"module:function"`` building the objective from this spec (tests plug in cheap objectives).
    heartbeat_interval : int | None
        Seconds between trial heartbeats with an SQL storage (``None`` disables); unused for journals.
    pruner_startup_trials : int
        Complete trials before any pruning (>= 1; default 5).
    threads : int | None
        CPU threads every trial runs with (torch, BLAS, faiss), whichever process runs it: float reductions, hence
        scores, depend on the count (4th digit of the MedPix validation mAP), so a study's trials are only
        comparable at one count. ``None``: the process's own setting. Recorded on each trial (``threads``).
    """

    method: str
    dataset: str
    bits: int
    n_trials: int
    storage: str | None = None
    study_name: str | None = None
    seeds: tuple[int, ...] = (0, 1)
    data_root: str | None = None
    encoder: str = "auto"
    device: str = "cpu"
    dataset_options: dict[str, Any] = field(default_factory=dict)
    cache_dir: str | None = None
    label_scheme: str | None = None
    dataset_seed: int = 0
    protocol: str = "unimodal"
    sampler_seed: int = 0
    objective: str = DEFAULT_OBJECTIVE
    heartbeat_interval: int | None = 60
    pruner_startup_trials: int = 5
    encoder_options: dict[str, str] = field(default_factory=dict)
    threads: int | None = None

    @property
    def name(self) -> str:
        """The study name (explicit, or the default ``method-dataset-bits``)."""
        return self.study_name or default_study_name(self.method, self.dataset, self.bits)

    def validate(self) -> None:
        """Raise :class:`~benchmarks.cli.UsageError` for an impossible value (naming the field)."""
        if int(self.bits) < 8:
            raise UsageError(f"--bits must be >= 8, got {self.bits}")
        if int(self.n_trials) < 1:
            raise UsageError(f"--trials must be >= 1, got {self.n_trials}")
        if not self.seeds:
            raise UsageError("--seeds needs at least one seed")
        if self.protocol not in ("unimodal", "paired"):
            raise UsageError(f"--protocol must be 'unimodal' or 'paired', got {self.protocol!r}")
        if ":" not in self.objective:
            raise UsageError(f"objective {self.objective!r} must look like 'module:function'")
        bad_seeds = [s for s in self.seeds if int(s) < 0]
        if bad_seeds:
            raise UsageError(f"--seeds must be >= 0, got {bad_seeds}")
        if len(set(self.seeds)) != len(self.seeds):
            raise UsageError(f"--seeds must be distinct, got {list(self.seeds)}")
        if int(self.dataset_seed) < 0:
            raise UsageError(f"--dataset-seed must be >= 0, got {self.dataset_seed}")
        if int(self.pruner_startup_trials) < 1:
            raise UsageError(f"pruner_startup_trials must be >= 1, got {self.pruner_startup_trials}")
        for key, flag in (("label_scheme", "--label-scheme"), ("seed", "--dataset-seed")):
            if key in (self.dataset_options or {}):
                raise UsageError(f"--dataset-option {key}=... is not a loader option; use {flag}")


def default_study_name(method: str, dataset: str, bits: int) -> str:
    """``f"{method}-{dataset}-{bits}"``, e.g. ``"mcmfh-medpix-16"``."""
    return f"{method}-{dataset}-{int(bits)}"


def grid_study_name(method: str, dataset: str, bits: int, prefix: str | None = None) -> str:
    """Deterministic study name of a grid cell: ``method-dataset-bits`` (the ``tune`` default), or
    ``prefix-method-dataset-bits`` with a prefix."""
    name = default_study_name(method, dataset, bits)
    return f"{prefix}-{name}" if prefix else name


def study_settings(spec: TuneSpec) -> dict[str, Any]:
    """The objective settings a study records (JSON values) and a resumed call must match.

    ``encoder`` is the requested name (``auto`` included); the encoder the features actually came from is
    recorded separately by the worker as ``features_encoder`` (see :func:`check_study_settings`).
    """
    return {
        "method": spec.method,
        "dataset": spec.dataset,
        "bits": int(spec.bits),
        "label_scheme": spec.label_scheme,
        "dataset_options": {str(k): str(v) for k, v in sorted((spec.dataset_options or {}).items())},
        "dataset_seed": int(spec.dataset_seed),
        "encoder": spec.encoder,
        "encoder_options": {str(k): str(v) for k, v in sorted((spec.encoder_options or {}).items())},
        "seeds": [int(s) for s in spec.seeds],
        "protocol": spec.protocol,
        "objective": OBJECTIVE_DESCRIPTION,
        "objective_function": spec.objective,
    }


def _show(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else repr(value)


def check_study_settings(study: Any, wanted: Mapping[str, Any], *, where: str, record: bool = True) -> list[str]:
    """Record the settings a study lacks; refuse settings that differ from the recorded ones.

    Parameters
    ----------
    study : optuna.Study
    wanted : mapping
        Setting name → JSON value (e.g. :func:`study_settings`).
    where : str
        The storage, for messages.
    record : bool
        Write the missing settings (``False``: only check, e.g. before a long grid starts).

    Returns
    -------
    list[str]
        Settings that were missing and have now been recorded (all of them for a new study; a study made by
        an older harness records fewer).

    Raises
    ------
    UsageError
        One line naming every differing setting with the study's value and the requested one.
    """
    have = study.user_attrs
    differ = [f"{key} {_show(have[key])} (now {_show(value)})" for key, value in wanted.items()
              if key in have and have[key] != value]
    if differ:
        raise UsageError(f"study {study.study_name!r} in {where} was tuned with other settings: {'; '.join(differ)}; "
                         "resume it with its own settings, or give another study name or storage")
    missing = [key for key in wanted if key not in have]
    for key in missing if record else ():
        study.set_user_attr(key, wanted[key])
    return missing


def _probe_search_space(method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(overrides, optuna_params)`` that ``method``'s ``search_space`` gives on a throw-away in-memory trial."""
    import optuna

    from methods import METHODS, variant_search_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(storage=optuna.storages.InMemoryStorage()).ask()
    fixed = METHODS.get(method).overrides  # a variant's own settings are not searched (methods.variant_search_space)
    overrides = variant_search_space(method, trial)
    return overrides, {k: v for k, v in trial.params.items() if k not in fixed}


def searched_params(method: str) -> set[str]:
    """Config fields ``method``'s search space sets (probed on a throw-away trial; a variant's fixed settings
    excluded)."""
    return set(_probe_search_space(method)[0])


def search_space_is_empty(method: str) -> bool:
    """Whether ``method``'s :meth:`~methods.base.HashingMethod.search_space` suggests nothing (probed on a
    throw-away in-memory Optuna trial)."""
    overrides, params = _probe_search_space(method)
    return not overrides and not params


def default_params(method: str) -> dict[str, Any] | None:
    """The method's default configuration as values of its Optuna search space, or ``None`` when a searched
    parameter is not a config field (its default cannot be named), the space is empty, or ``method`` is not
    registered.

    Probed on a throw-away in-memory trial: the parameter names ``search_space`` suggests, each mapped to the
    default config's value of the field of that name (``methods.create_method(method).config``).
    """
    from methods import METHODS, create_method

    if method not in METHODS.names():  # a custom objective may tune something that is not a registered method
        return None
    _, params = _probe_search_space(method)
    config = create_method(method, {}).config
    if not params or any(not hasattr(config, name) for name in params):
        return None
    return {name: getattr(config, name) for name in params}


def enqueue_defaults(study: Any, method: str, budget: int) -> bool:
    """Queue the method's defaults (:func:`default_params`) as the study's next trial, once per study.

    So a study's best trial is never worse on the validation split than the untuned defaults, whatever the
    budget: the defaults count as one of the ``budget`` trials. Skipped when the study already holds a trial
    with those parameters (any state; Optuna's ``skip_if_exists``), when ``budget`` finished trials exist, or
    when the defaults cannot be named. The trial carries the user attribute ``defaults = True``.

    Returns
    -------
    bool
        Whether a trial was queued (or already waiting).
    """
    import optuna

    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
    trials = study.get_trials(deepcopy=False)
    if any(t.user_attrs.get("defaults") for t in trials):
        return any(t.user_attrs.get("defaults") and t.state == optuna.trial.TrialState.WAITING for t in trials)
    if sum(t.state in finished for t in trials) >= int(budget):
        return False
    params = default_params(method)
    if params is None:
        return False
    with warnings.catch_warnings():  # a default outside the searched range is still the default
        warnings.simplefilter("ignore")
        study.enqueue_trial(params, user_attrs={"defaults": True}, skip_if_exists=True)
    return True


def defaults_value(study: Any) -> float | None:
    """Validation mAP of the study's trial of the method's untuned defaults: the trial queued by
    :func:`enqueue_defaults` (user attribute ``defaults``), else the first complete trial whose parameters equal
    the defaults of the study's method (a sampled trial may have drawn them, and then none is queued);
    ``None`` when there is no such complete trial."""
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    for t in complete:
        if t.user_attrs.get("defaults"):
            return float(t.value)
    method = study.user_attrs.get("method")
    params = default_params(str(method)) if method else None
    for t in complete if params else ():
        if {k: t.params.get(k) for k in params} == params:  # a variant's trials also hold its fixed settings
            return float(t.value)
    return None


def make_pruner(n_startup_trials: int = 5) -> Any:
    """Optuna's median pruner with ``n_min_trials = 2`` (:data:`PRUNER_MIN_TRIALS`) and no warm-up steps.

    Parameters
    ----------
    n_startup_trials : int
        Complete trials before any pruning.

    Returns
    -------
    optuna.pruners.MedianPruner
    """
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=int(n_startup_trials), n_warmup_steps=0,
                                       n_min_trials=PRUNER_MIN_TRIALS)


def make_sampler(spec: TuneSpec, worker_index: int, n_existing: int) -> Any:
    """TPE sampler seeded from ``spec.sampler_seed``, the worker index and the study's trial count (so a
    resumed study does not replay the start-up suggestions of the first run)."""
    import optuna

    seed = (int(spec.sampler_seed) * 1_000_003 + worker_index * 7919 + n_existing) % (2**31)
    return optuna.samplers.TPESampler(seed=seed)


def prune_evidence(study: Any, step: int) -> dict[str, Any]:
    """The completed trials' values at ``step`` that a median pruner compares against.

    Returns
    -------
    dict
        ``n_trials`` (completed trials that reported at ``step``) and ``median`` (their median, ``None`` when
        there are none), as :class:`optuna.pruners.MedianPruner` computes it (50th percentile).
    """
    import numpy as np
    import optuna

    values = [t.intermediate_values[step]
              for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
              if step in t.intermediate_values]
    return {"n_trials": len(values), "median": float(np.nanpercentile(values, 50)) if values else None}


def score_subruns(trial: Any, subruns: Sequence[Callable[[], float]]) -> float:
    """Run sub-runs in order, reporting the running mean after each and pruning between them.

    Parameters
    ----------
    trial : optuna.Trial
    subruns : sequence of callables
        Each returns one validation score (float, higher is better), e.g. one per seed.

    Returns
    -------
    float
        Mean of all sub-run scores (the trial's objective value).

    Raises
    ------
    optuna.TrialPruned
        After sub-run ``i < len(subruns) - 1`` when the pruner says the running mean is not promising; the
        scores so far stay in the trial's ``subrun_scores`` user attribute, and ``pruned`` records the step,
        the running mean and how many completed trials informed the median (also logged on
        ``benchmarks.tuning``).
    ValueError
        If ``subruns`` is empty.
    """
    import optuna

    if not subruns:
        raise ValueError("score_subruns needs at least one sub-run")
    scores: list[float] = []
    for step, run in enumerate(subruns):
        scores.append(float(run()))
        trial.set_user_attr("subrun_scores", scores)
        running = math.fsum(scores) / len(scores)
        trial.report(running, step=step)
        if step < len(subruns) - 1 and trial.should_prune():
            evidence = {"step": step, "sub_runs": step + 1, "of": len(subruns), "running": running,
                        **prune_evidence(trial.study, step)}
            trial.set_user_attr("pruned", evidence)
            message = (f"trial {trial.number} pruned after {step + 1}/{len(subruns)} sub-run(s): running validation "
                       f"mAP {running:.4f} below the median {evidence['median']:.4f} of {evidence['n_trials']} "
                       "completed trial(s) at that step")
            logger.info(message)
            raise optuna.TrialPruned(message)
    return math.fsum(scores) / len(scores)


def create_or_load_study(spec: TuneSpec) -> Any:
    """Create the study (maximise) or load it, refusing one made for other objective settings; while it holds
    fewer than ``spec.n_trials`` finished trials, the method's defaults are queued as a trial once
    (:func:`enqueue_defaults`).

    Raises
    ------
    UsageError
        If a study of that name exists but records another method, dataset, bits, seeds, protocol, ... (all
        differing settings named), or the storage is unreadable.
    """
    import optuna

    storage = open_storage(spec.storage, heartbeat_interval=spec.heartbeat_interval)
    try:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            sampler=make_sampler(spec, 0, 0),
            pruner=make_pruner(spec.pruner_startup_trials),
        )
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError) as err:
        if spec.storage is not None and is_url(spec.storage):
            raise
        raise UsageError(f"journal storage {journal_path(spec.storage)} is not a readable Optuna journal "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else err!r}); "
                         "give a new file or an existing journal") from None
    made_before = bool(study.user_attrs)
    missing = check_study_settings(study, study_settings(spec), where=describe_storage(spec.storage))
    if made_before and missing:
        warnings.warn(f"study {spec.name!r} did not record {', '.join(missing)} (made by an older harness); "
                      "recorded this call's values", UserWarning, stacklevel=2)
    enqueue_defaults(study, spec.method, spec.n_trials)
    return study


__all__ = [
    "DEFAULT_OBJECTIVE",
    "OBJECTIVE_DESCRIPTION",
    "PRUNER_MIN_TRIALS",
    "TuneSpec",
    "check_study_settings",
    "create_or_load_study",
    "default_params",
    "default_study_name",
    "defaults_value",
    "enqueue_defaults",
    "grid_study_name",
    "make_pruner",
    "make_sampler",
    "prune_evidence",
    "score_subruns",
    "search_space_is_empty",
    "study_settings",
]
