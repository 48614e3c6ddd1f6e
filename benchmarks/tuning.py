"""Optuna hyper-parameter sweeps on a shared study store (journal file or SQL database).

One study per (method, dataset, bits), named ``f"{method}-{dataset}-{bits}"`` by default. The search space is
the method's own :meth:`methods.base.HashingMethod.search_space` (define-by-run); this module knows nothing
method-specific. The objective is the **validation** mAP (tie-aware, mean of i2t and t2i, validation split as
queries against the train split as database): the query split is never seen while tuning.

Storage
-------
``None`` (default)
    A journal file, ``results/optuna/journal.log`` (:class:`optuna.storages.journal.JournalFileBackend`):
    several worker processes on one machine share it through a file lock.
``"journal:PATH"`` or a plain path
    Another journal file.
An SQLAlchemy URL (``postgresql+psycopg2://user@host:5432/db``, ``sqlite:///file.db``)
    :class:`optuna.storages.RDBStorage`, for workers on many machines; trials send a heartbeat so a trial
    whose worker died is failed (and re-queued) by the next worker.

Pruning
-------
Each trial fits the method once per tuning seed (a *sub-run*) and reports the running mean of the validation
mAP after each sub-run (step = sub-run index); a :class:`optuna.pruners.MedianPruner` stops a trial whose
running mean after a sub-run is below the median of earlier trials at the same step, so the remaining seeds
are skipped. Epoch-level validation *losses* are deliberately not used for pruning: they are not comparable
across trials whose parameters rescale the loss (temperature, loss weights).

Resuming
--------
``n_trials`` is the number of finished (complete or pruned) trials the study should hold: re-running the same
command after a crash runs only the missing ones. Each trial records the host and process id of its worker;
a trial left ``RUNNING`` by a dead local process is marked ``FAIL`` and its parameters are queued again.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import math
import multiprocessing
import os
import socket
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.cli import UsageError

#: Default journal file (relative to the working directory, like ``--out results/``).
DEFAULT_JOURNAL = Path("results") / "optuna" / "journal.log"

#: What the objective measures; stored in every study's user attributes.
OBJECTIVE_DESCRIPTION = (
    "validation mAP (tie-aware AP, mean of i2t and t2i; validation split as queries, train split as database)"
)

#: Default objective factory (``module:function`` taking a :class:`TuneSpec`).
DEFAULT_OBJECTIVE = "benchmarks.tuning:validation_objective"

_FINISHED = ("COMPLETE", "PRUNED")


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
        Finished (complete + pruned) trials the study should hold after the call.
    storage : str | None
        ``None`` (default journal file), ``"journal:PATH"``, a path, or an SQLAlchemy URL.
    study_name : str | None
        Defaults to ``f"{method}-{dataset}-{bits}"``.
    seeds : tuple[int, ...]
        Tuning seeds; one sub-run (fit + validation score) per seed, the objective is their mean.
    data_root, encoder, device, dataset_options, cache_dir, label_scheme, dataset_seed
        Passed to ``benchmarks.runner.prepare_features`` (``label_scheme`` ``None`` = the loader's default;
        ``dataset_seed`` seeds generated data / seeded splits). ``dataset_options`` must not hold
        ``label_scheme`` or ``seed``: they have their own fields.
    protocol : str
        ``"unimodal"`` or ``"paired"``, passed to ``benchmarks.runner.validation_score``.
    sampler_seed : int
        Seed of the TPE sampler (mixed with the worker index and the study's trial count).
    objective : str
        ``"module:function"`` building the objective from this spec (tests plug in cheap objectives).
    heartbeat_interval : int | None
        Seconds between trial heartbeats with an SQL storage (``None`` disables); unused for journals.
    pruner_startup_trials : int
        Trials that finish before any pruning.
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
    pruner_startup_trials: int = 3

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
        if int(self.dataset_seed) < 0:
            raise UsageError(f"--dataset-seed must be >= 0, got {self.dataset_seed}")
        for key, flag in (("label_scheme", "--label-scheme"), ("seed", "--dataset-seed")):
            if key in (self.dataset_options or {}):
                raise UsageError(f"--dataset-option {key}=... is not a loader option; use {flag}")


def default_study_name(method: str, dataset: str, bits: int) -> str:
    """``f"{method}-{dataset}-{bits}"``, e.g. ``"mcmfh-medpix-16"``."""
    return f"{method}-{dataset}-{int(bits)}"


def _is_url(storage: str) -> bool:
    return "://" in storage


def open_storage(storage: str | None = None, *, heartbeat_interval: int | None = None) -> Any:
    """Open an Optuna storage from a user string.

    Parameters
    ----------
    storage : str | None
        ``None`` → :data:`DEFAULT_JOURNAL`; ``"journal:PATH"`` or a path → that journal file (parent folders
        created); a string containing ``://`` → :class:`optuna.storages.RDBStorage` on that SQLAlchemy URL.
    heartbeat_interval : int | None
        Heartbeat period in seconds for an SQL storage (grace period = 2 × interval); ignored for journals.

    Returns
    -------
    optuna.storages.BaseStorage

    Raises
    ------
    UsageError
        If the journal folder cannot be created or the database cannot be reached (one line, URL without
        password).
    """
    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if storage is None or not _is_url(storage):
        path = _journal_path(storage)
        check_journal_file(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise UsageError(f"cannot open journal storage {path}: {err.strerror or err}") from None
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna's terms
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            kwargs: dict[str, Any] = {}
            if heartbeat_interval:
                # Optuna 4.9 renamed failed_trial_callback / RetryFailedTrialCallback (deprecated: FutureWarning)
                # to heartbeat_stale_trial_callback / RetryHeartbeatStaleTrialCallback; use what this Optuna has.
                params = inspect.signature(optuna.storages.RDBStorage).parameters
                if "heartbeat_stale_trial_callback" in params and hasattr(
                    optuna.storages, "RetryHeartbeatStaleTrialCallback"
                ):
                    callback_kw, callback = "heartbeat_stale_trial_callback", optuna.storages.RetryHeartbeatStaleTrialCallback
                else:
                    callback_kw, callback = "failed_trial_callback", optuna.storages.RetryFailedTrialCallback
                kwargs = {
                    "heartbeat_interval": int(heartbeat_interval),
                    "grace_period": 2 * int(heartbeat_interval),
                    callback_kw: callback(max_retry=1),
                }
            return optuna.storages.RDBStorage(storage, engine_kwargs={"pool_pre_ping": True}, **kwargs)
    except Exception as err:  # sqlalchemy / driver errors have many types
        raise UsageError(f"cannot open storage {_redact(storage)}: {type(err).__name__}: {str(err).splitlines()[0]}") from None


def _journal_path(storage: str | None) -> Path:
    """The journal file of a non-URL storage string (``None`` → :data:`DEFAULT_JOURNAL`)."""
    if storage and storage.startswith("journal:"):
        return Path(storage[len("journal:") :])
    return Path(storage or DEFAULT_JOURNAL)


def check_journal_file(path: Path) -> None:
    """Refuse a path that is not a new/empty file or an Optuna journal (JSON lines with an ``op_code``).

    Only the first record is read, so the check is cheap on a large journal.

    Raises
    ------
    UsageError
        If ``path`` is a folder, cannot be read, or its first line is not an Optuna journal record.
    """
    if not path.exists():
        return
    if path.is_dir():
        raise UsageError(f"journal storage {path} is a folder; give a journal file path (e.g. {path / 'journal.log'})")
    try:
        with path.open("rb") as fh:
            first = fh.readline(1 << 20)
    except OSError as err:
        raise UsageError(f"cannot read journal storage {path}: {err.strerror or err}") from None
    if not first.strip():
        return  # empty file: a new journal
    try:
        record = json.loads(first.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        record = None
    if not isinstance(record, dict) or "op_code" not in record:
        raise UsageError(f"--storage {path} exists and is not an Optuna journal file (its first line is not a "
                         "journal record); give a new file path, an existing journal, or an SQL URL")


def _redact(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"


def load_study(study_name: str, storage: str | None = None) -> Any:
    """Load an existing study.

    Raises
    ------
    UsageError
        If no study of that name exists in ``storage``; the message lists the studies it holds.
    """
    import optuna

    store = open_storage(storage)
    try:
        return optuna.load_study(study_name=study_name, storage=store)
    except KeyError:
        names = sorted(optuna.get_all_study_names(store))
        where = _redact(storage) if storage else str(DEFAULT_JOURNAL)
        raise UsageError(f"no study {study_name!r} in {where}; studies there: {', '.join(names) or '(none)'}") from None


def best_params(study_name: str, storage: str | None = None) -> dict[str, Any]:
    """Config overrides of the best finished trial of a study (what ``run --params best`` uses).

    The overrides are what the method's ``search_space`` returned (stored as the trial's ``config`` user
    attribute), not Optuna's raw suggestion names, so transformed parameters round-trip.

    Raises
    ------
    UsageError
        If the study does not exist or has no completed trial.
    """
    import optuna

    study = load_study(study_name, storage)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise UsageError(f"study {study_name!r} has no completed trial yet (run `tune` first)")
    best = study.best_trial
    return dict(best.user_attrs.get("config", best.params))


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
        scores so far stay in the trial's ``subrun_scores`` user attribute.
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
            raise optuna.TrialPruned(f"running validation mAP {running:.4f} after {step + 1} sub-run(s)")
    return math.fsum(scores) / len(scores)


def validation_objective(spec: TuneSpec) -> Callable[[Any], float]:
    """The real objective: fit ``spec.method`` on train and score it on validation, once per tuning seed.

    Features are prepared once per worker (``benchmarks.runner.prepare_features``, cached on disk); every
    trial builds the method from its search space with ``methods.create_method`` and scores it with
    ``benchmarks.runner.validation_score`` (labels of the validation and train splits only).

    Returns
    -------
    callable
        ``objective(trial) -> float``, the mean validation mAP over ``spec.seeds`` (pruned between seeds).
    """
    from benchmarks.runner import prepare_features, validation_score
    from medhash_datasets.base import feature_split
    from methods import METHODS, create_method

    dataset, features = prepare_features(
        spec.dataset,
        data_root=Path(spec.data_root) if spec.data_root else None,
        encoder=spec.encoder,
        device=spec.device,
        dataset_options=spec.dataset_options or None,
        cache_dir=Path(spec.cache_dir) if spec.cache_dir else None,
        label_scheme=spec.label_scheme,
        dataset_seed=int(spec.dataset_seed),
        progress=False,
    )
    train = feature_split(dataset, features, "train")
    validation = feature_split(dataset, features, "validation")
    cls = METHODS.get(spec.method).cls

    def objective(trial: Any) -> float:
        params = cls.search_space(trial)
        trial.set_user_attr("config", params)

        def subrun(seed: int) -> float:
            method = create_method(spec.method, params, device=spec.device)
            method.fit(train, validation, int(spec.bits), int(seed))
            return validation_score(method, dataset, features, protocol=spec.protocol)

        return score_subruns(trial, [lambda s=s: subrun(s) for s in spec.seeds])

    return objective


def _load_objective(path: str) -> Callable[[TuneSpec], Callable[[Any], float]]:
    module, _, func = path.partition(":")
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as err:
        raise UsageError(f"cannot import objective {path!r}: {err}") from None


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


def _sampler(spec: TuneSpec, worker_index: int, n_existing: int) -> Any:
    import optuna

    # Mix in the trial count so a resumed study does not replay the start-up suggestions of the first run.
    seed = (int(spec.sampler_seed) * 1_000_003 + worker_index * 7919 + n_existing) % (2**31)
    return optuna.samplers.TPESampler(seed=seed)


def _pruner(spec: TuneSpec) -> Any:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=int(spec.pruner_startup_trials), n_warmup_steps=0)


def create_or_load_study(spec: TuneSpec) -> Any:
    """Create the study (maximise) or load it, checking it was made for the same method, dataset and bits.

    Raises
    ------
    UsageError
        If a study of that name exists but records another method, dataset or bits.
    """
    import optuna

    storage = open_storage(spec.storage, heartbeat_interval=spec.heartbeat_interval)
    try:
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            direction="maximize",
            load_if_exists=True,
            sampler=_sampler(spec, 0, 0),
            pruner=_pruner(spec),
        )
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError) as err:
        if spec.storage is not None and _is_url(spec.storage):
            raise
        raise UsageError(f"journal storage {_journal_path(spec.storage)} is not a readable Optuna journal "
                         f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else err!r}); "
                         "give a new file or an existing journal") from None
    wanted = {"method": spec.method, "dataset": spec.dataset, "bits": int(spec.bits), "label_scheme": spec.label_scheme}
    have = study.user_attrs
    if not have:
        for key, value in {**wanted, "objective": OBJECTIVE_DESCRIPTION, "seeds": list(spec.seeds),
                           "protocol": spec.protocol}.items():
            study.set_user_attr(key, value)
    else:
        clash = {k: have.get(k) for k, v in wanted.items() if k in have and have[k] != v}
        if clash:
            raise UsageError(f"study {spec.name!r} was created for {clash}, not {wanted}; choose another --study name")
    return study


def _count(study: Any, states: Sequence[str]) -> int:
    import optuna

    return len(study.get_trials(deepcopy=False, states=tuple(optuna.trial.TrialState[s] for s in states)))


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


def _work(spec: TuneSpec, n_trials: int, worker_index: int) -> None:
    """One worker: load the study and run exactly ``n_trials`` trials of the objective."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(spec.storage, heartbeat_interval=spec.heartbeat_interval)
    probe = optuna.load_study(study_name=spec.name, storage=storage)
    study = optuna.load_study(
        study_name=spec.name,
        storage=storage,
        sampler=_sampler(spec, worker_index, len(probe.get_trials(deepcopy=False))),
        pruner=_pruner(spec),
    )
    objective = _load_objective(spec.objective)(spec)
    worker = {"host": socket.gethostname(), "pid": os.getpid(), "index": worker_index}

    def wrapped(trial: Any) -> float:
        trial.set_user_attr("worker", worker)
        return objective(trial)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.optimize(wrapped, n_trials=int(n_trials), catch=())


def _worker_entry(spec_dict: dict[str, Any], n_trials: int, worker_index: int, n_workers: int) -> None:
    """Entry point of a spawned worker process (CPU threads divided among the workers)."""
    spec_dict = dict(spec_dict, seeds=tuple(spec_dict["seeds"]))
    threads = str(max(1, (os.cpu_count() or 1) // max(1, n_workers)))
    os.environ.setdefault("OMP_NUM_THREADS", threads)  # read by torch when the objective imports it
    os.environ.setdefault("MKL_NUM_THREADS", threads)
    _work(TuneSpec(**spec_dict), n_trials, worker_index)


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


def run_study(spec: TuneSpec, *, workers: int = 1) -> TuneSummary:
    """Fill the study ``spec.name`` up to ``spec.n_trials`` finished trials with ``workers`` processes.

    The study is created (or loaded and checked) here; dead local workers' trials are recovered; the missing
    trials are divided among the workers (each runs exactly its share, so the total is exact). With one
    worker the trials run in this process; with more, in spawned processes sharing the storage.

    Raises
    ------
    UsageError
        Bad spec value, unreachable storage, or a study name made for another configuration.
    RuntimeError
        If a worker process exits with a non-zero code (its finished trials are kept).
    """
    import optuna

    spec.validate()
    if int(workers) < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    study = create_or_load_study(spec)
    recovered = recover_stale_trials(study)
    remaining = int(spec.n_trials) - _count(study, _FINISHED)
    shares = split_trials(remaining, workers)
    if len(shares) == 1:
        _work(spec, shares[0], 0)
    elif shares:
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=_worker_entry, args=(asdict(spec), n, i, len(shares)), name=f"tune-worker-{i}")
                 for i, n in enumerate(shares)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        bad = [(p.name, p.exitcode) for p in procs if p.exitcode != 0]
        if bad:
            raise RuntimeError(f"tuning worker(s) failed: {bad}; finished trials are kept, re-run to resume")
    study = optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage))
    has_best = _count(study, ("COMPLETE",)) > 0
    return TuneSummary(
        study_name=spec.name,
        storage=_redact(spec.storage) if spec.storage else str(DEFAULT_JOURNAL),
        n_complete=_count(study, ("COMPLETE",)),
        n_pruned=_count(study, ("PRUNED",)),
        n_failed=_count(study, ("FAIL",)),
        ran=sum(shares),
        recovered=recovered,
        best_value=float(study.best_value) if has_best else None,
        best_params=dict(study.best_trial.user_attrs.get("config", study.best_trial.params)) if has_best else {},
    )


__all__ = [
    "DEFAULT_JOURNAL",
    "OBJECTIVE_DESCRIPTION",
    "TuneSpec",
    "TuneSummary",
    "best_params",
    "create_or_load_study",
    "default_study_name",
    "load_study",
    "open_storage",
    "recover_stale_trials",
    "run_study",
    "score_subruns",
    "split_trials",
    "validation_objective",
]
