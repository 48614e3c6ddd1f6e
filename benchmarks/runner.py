"""The ``run`` grid: every (dataset, method, bits, seed) cell, serially in this process or on the workers
of a Dask cluster, each cell claimed once across the ``run`` processes sharing the output folder.

A cell's rows are written at once, atomically, by this process (the driver), to a file named by the hash of
the cell's full config (:mod:`benchmarks.results`); a finished cell is skipped on a re-run (``force=False``),
so a killed run resumes without losing or duplicating rows.

Execution
---------
Serial (default)
    Cells run one after another in this process, in grid order.
Dask (``workers > 1`` or ``scheduler``)
    Cells run on the workers of a local cluster or of the cluster at ``scheduler``
    (:mod:`benchmarks.distributed`), the most expensive first, no more at once than the cluster has slots; the
    features are sent to the workers once per dataset. Cells are seeded, so rows equal a serial run's apart
    from timings. A cell whose worker dies is reported as lost (named) and the others finish; its claim is
    released, and a re-run computes exactly the missing cells.

Claims (:mod:`benchmarks.claims`)
    A cell is claimed (kernel file lock) before it is dispatched and released once its rows are written or it
    is lost. A cell claimed by another process is put aside and taken up at the end if that claim is gone
    and the cell is still unfinished; a cell another process finished meanwhile is reported as such.
"""

from __future__ import annotations

import datetime as _dt
import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.cell import RunSpec, cell_config, cell_selections, describe_inputs, prepare_features, run_cell
from benchmarks.claims import CellClaim, claim_path
from benchmarks.progress import CostModel, GridProgress, console_logs
from benchmarks.results import cell_path, config_hash, write_cell
from methods import METHODS, method_config

Echo = Callable[[str], None]


@dataclass
class CellJob:
    """One cell of the grid and where its rows and claim live."""

    dataset: str
    method: str
    base: str  # base method (for costs): the variant's base, else the method itself
    bits: int | None
    seed: int
    cell_id: str
    path: Path
    state: tuple[int, int] | None = None  # (mtime_ns, size) of the cell file when the run started
    #: Protocol the cell's model is selected under and the only one it evaluates (``None``: every protocol of
    #: the run; :func:`benchmarks.cell.cell_selections`).
    select: str | None = None

    @property
    def key(self) -> str:
        """Unique key of the cell in this run."""
        return f"{self.dataset}/{self.method}/{self.cell_id}"

    @property
    def label(self) -> str:
        """``"synthetic/mcmfh 16b seed 0"`` (``float`` for real-valued methods; ``" paired-selected"`` appended
        for a cell selected under one protocol)."""
        bits = f"{self.bits}b" if self.bits is not None else "float"
        selected = f" {self.select}-selected" if self.select is not None else ""
        return f"{self.dataset}/{self.method} {bits} seed {self.seed}{selected}"


@dataclass
class CellOutcome:
    """One cell's fate in this invocation.

    ``status``: ``"done"`` (ran now), ``"skipped"`` (finished before this run), ``"elsewhere"`` (finished by
    another ``run`` process during this run) or ``"lost"`` (its worker died; no rows, re-run to complete it).
    """

    cell_id: str
    path: Path
    status: str
    seconds: float = 0.0
    worker: str = ""
    label: str = ""
    error: str = ""


@dataclass
class CellResult:
    """What a cell's execution sends back to the driver: its rows, seconds, and the worker that ran it."""

    rows: list[dict[str, Any]]
    seconds: float
    worker: str = "main"
    extra: dict[str, Any] = field(default_factory=dict)


def damaged_cell(path: Path) -> str | None:
    """Why the cell file at ``path`` cannot be trusted as finished (empty, not JSON lines, rows lacking
    fields or a numeric value), or ``None`` when every line is a complete row."""
    import json

    from benchmarks.results import ROW_FIELDS

    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        return f"unreadable: {err}"
    if not lines:
        return "empty file"
    for lineno, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            return f"line {lineno} is not JSON"
        if not isinstance(row, dict):
            return f"line {lineno} is not a JSON object"
        missing = [f for f in ROW_FIELDS if f not in row]
        if missing:
            return f"line {lineno} lacks {missing[:3]}"
        if not isinstance(row["value"], (int, float)) or isinstance(row["value"], bool):
            return f"line {lineno} has a non-numeric value"
    return None


def _file_state(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


def _cell_seconds(path: Path) -> float | None:
    """``wall_time_s`` of a finished cell file (its first row), for the cost model; ``None`` if unreadable."""
    import json

    try:
        with path.open(encoding="utf-8") as fh:
            return float(json.loads(fh.readline())["wall_time_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# ---- executing one cell -----------------------------------------------------------------------------
def execute_cell(spec: RunSpec, dataset: Any, features: Any, method: str, bits: int | None, seed: int, *,
                 run_id: str, select: str | None = None) -> CellResult:
    """Run one cell with ``spec.threads`` torch/BLAS/OpenMP threads (:class:`benchmarks.threads.ThreadSettings`);
    ``select`` as in :func:`benchmarks.cell.run_cell`."""
    from benchmarks.threads import ThreadSettings

    t0 = time.perf_counter()
    with ThreadSettings(spec.threads):
        rows = run_cell(spec, dataset, features, method, bits, seed, run_id=run_id, select=select)
    return CellResult(rows, time.perf_counter() - t0)


def dask_cell(spec: RunSpec, payload: tuple[Any, Any], method: str, bits: int | None, seed: int, run_id: str,
              select: str | None = None) -> CellResult:
    """Dask task: :func:`execute_cell` on a worker, ``payload`` = (dataset, features) sent once per dataset."""
    from benchmarks.distributed import worker_label

    result = execute_cell(spec, payload[0], payload[1], method, bits, seed, run_id=run_id, select=select)
    result.worker = worker_label()
    return result


class SerialPool:
    """Runs each submitted cell at once, in this process."""

    def __init__(self, spec: RunSpec, prepared: dict[str, tuple[Any, Any]], run_id: str) -> None:
        self.spec, self.prepared, self.run_id = spec, prepared, run_id
        self._done: list[tuple[CellJob, CellResult | None, BaseException | None]] = []

    def slots(self) -> int:
        return 1

    def busy(self) -> int:
        return len(self._done)  # run but not yet collected

    def submit(self, job: CellJob) -> None:
        dataset, features = self.prepared[job.dataset]
        self._done.append((job, execute_cell(self.spec, dataset, features, job.method, job.bits, job.seed,
                                             run_id=self.run_id, select=job.select), None))

    def wait(self, timeout: float) -> list[tuple[CellJob, CellResult | None, BaseException | None]]:
        done, self._done = self._done, []
        return done


class DaskPool:
    """Runs cells as tasks on a Dask cluster (features scattered to every worker once per dataset)."""

    def __init__(self, client: Any, spec: RunSpec, prepared: dict[str, tuple[Any, Any]], run_id: str) -> None:
        from benchmarks.distributed import client_slots

        self.client, self.spec, self.run_id = client, spec, run_id
        self._slots = client_slots(client)
        self.payload = {name: client.scatter([data], broadcast=True, hash=False)[0] for name, data in prepared.items()}
        self.inflight: dict[Any, CellJob] = {}

    def slots(self) -> int:
        return max(1, sum(self.client.nthreads().values()) or self._slots)

    def busy(self) -> int:
        return len(self.inflight)

    def submit(self, job: CellJob) -> None:
        future = self.client.submit(dask_cell, self.spec, self.payload[job.dataset], job.method, job.bits, job.seed,
                                    self.run_id, job.select, key=f"cell-{job.cell_id}-{self.run_id}", pure=False)
        self.inflight[future] = job

    def wait(self, timeout: float) -> list[tuple[CellJob, CellResult | None, BaseException | None]]:
        import asyncio

        from distributed import wait

        if not self.inflight:
            return []
        try:
            wait(list(self.inflight), timeout=timeout, return_when="FIRST_COMPLETED")
        except (TimeoutError, asyncio.TimeoutError):  # distinct classes before Python 3.11
            return []
        out = []
        for future in [f for f in self.inflight if f.done()]:
            job = self.inflight.pop(future)
            if future.status == "finished":
                out.append((job, future.result(), None))
            else:
                out.append((job, None, future.exception()))
        return out


# ---- the grid ---------------------------------------------------------------------------------------
def plan(spec: RunSpec, prepared: dict[str, tuple[Any, Any]]) -> list[CellJob]:
    """Every cell of ``spec`` in grid order (dataset, method, bits, seed, selection protocol) with its id and file
    (a method selecting its model under a protocol has one cell per protocol: :func:`benchmarks.cell.cell_selections`)."""
    jobs = []
    for dataset_name, (dataset, features) in prepared.items():
        for m in spec.methods:
            entry = METHODS.get(m)
            for b in spec.bits if entry.cls.binary else [None]:
                for s in spec.seeds:
                    for select in cell_selections(spec, m):
                        cid = config_hash(cell_config(spec, dataset, features, m, b, s, select))
                        path = cell_path(spec.out, dataset.name, m, cid)
                        jobs.append(CellJob(dataset_name, m, entry.base or m, b, s, cid, path, _file_state(path),
                                            select))
    return jobs


def run(spec: RunSpec, *, echo: Echo = print, workers: int = 1, scheduler: str | None = None,
        client: Any = None) -> list[CellOutcome]:
    """Run every cell of ``spec`` (skipping finished ones unless ``spec.force``); returns their outcomes.

    Parameters
    ----------
    spec : RunSpec
        The grid; ``spec.threads`` threads per cell process (part of every cell's identity).
    workers : int
        ``> 1``: a local Dask cluster of that many worker processes, at most one per cell left to run (``1``,
        or a single cell left: serial, in this process).
    scheduler : str | None
        Address of a running Dask scheduler whose workers run the cells.
    client : distributed.Client | None
        An existing client to run the cells on (takes precedence over ``workers`` / ``scheduler``).

    Raises
    ------
    RegistryError, DatasetError, ConfigError
        For unknown names, missing data or bad parameters — before any training starts.
    UsageError
        Unreachable scheduler.
    Exception
        What a cell raised (claims released; finished cells kept).
    """
    import contextlib

    for m in spec.methods:  # validate every method config up front
        method_config(m, spec.params.get(m))
    run_id = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)
    with contextlib.ExitStack() as stack:
        prepared = {}
        for dataset_name in spec.datasets:
            dataset, features = prepare_features(
                dataset_name, data_root=spec.data_root, encoder=spec.encoder, device=spec.device,
                dataset_options=spec.dataset_options, cache_dir=spec.cache_dir, label_scheme=spec.label_scheme,
                dataset_seed=spec.dataset_seed, progress=spec.progress, encoder_options=spec.encoder_options,
            )
            for line in describe_inputs(dataset, features, spec.encoder, spec.encoder_options):
                echo(line)
            prepared[dataset_name] = (dataset, features)
        jobs = plan(spec, prepared)
        # a local cluster never has more workers than cells left to run (one cell or none: serial, no cluster)
        workers = min(int(workers), sum(1 for j in jobs if j.state is None or spec.force))
        if client is None and (workers > 1 or scheduler):
            from benchmarks.distributed import dask_client

            client = stack.enter_context(dask_client(workers=workers, scheduler=scheduler, threads=spec.threads,
                                                     device=spec.device, echo=echo))
        elif client is not None:
            from benchmarks.distributed import prepare_client

            prepare_client(client, threads=spec.threads)
        pool: SerialPool | DaskPool = DaskPool(client, spec, prepared, run_id) if client is not None else \
            SerialPool(spec, prepared, run_id)
        execution = {"workers": workers, "scheduler": scheduler, "threads": spec.threads, "device": spec.device,
                     "pool": type(pool).__name__, "slots": pool.slots()}
        grid = _Grid(spec, jobs, pool, run_id, execution, echo)
        # every skipped item and leakage finding, once per run (rows carry the counts)
        grid.manifest["datasets"] = {name: ds.audit() for name, (ds, _) in prepared.items()}
        return grid.run()


class _Grid:
    """The dispatch loop of one invocation: skip, claim, submit, collect, write, report."""

    def __init__(self, spec: RunSpec, jobs: list[CellJob], pool: SerialPool | DaskPool, run_id: str,
                 execution: dict[str, Any], echo: Echo) -> None:
        self.spec, self.jobs, self.pool, self.run_id, self.echo = spec, jobs, pool, run_id, echo
        self.outcomes: list[CellOutcome] = []
        self.claims: dict[str, CellClaim] = {}
        self.manifest = {"run_id": run_id, "execution": execution,
                         "spec": {k: str(v) if isinstance(v, Path) else v for k, v in vars(spec).items()}, "cells": []}
        self.costs = CostModel()
        self.progress: GridProgress | None = None

    def _record(self, job: CellJob, outcome: CellOutcome) -> None:
        outcome.label = job.label
        self.outcomes.append(outcome)
        self.manifest["cells"].append({"cell_id": outcome.cell_id, "path": str(outcome.path), "status": outcome.status,
                                       "seconds": round(outcome.seconds, 3), "worker": outcome.worker,
                                       "cell": job.label, **({"error": outcome.error} if outcome.error else {})})
        self._write_manifest()

    def _write_manifest(self) -> None:
        """Write the run manifest (atomic); first before any cell runs, so an interrupted run can be replayed
        with ``run --config OUT/runs/RUN_ID.json``."""
        from medhash_datasets.cache_io import atomic_write_json

        atomic_write_json(Path(self.spec.out) / "runs" / f"{self.run_id}.json", self.manifest)

    def _finished_elsewhere(self, job: CellJob) -> bool:
        """The cell file changed since the run started and is now a complete cell."""
        state = _file_state(job.path)
        return state is not None and state != job.state and damaged_cell(job.path) is None

    def _claim(self, job: CellJob, *, announce: bool) -> bool | None:
        """Claim ``job`` and submit it: ``True`` submitted, ``None`` finished elsewhere, ``False`` claimed by
        another process (announced once)."""
        claim = CellClaim(claim_path(self.spec.out, job.dataset, job.method, job.cell_id))
        if not claim.try_acquire():
            if announce:
                assert self.progress is not None
                self.progress.write(f"{job.label}: claimed by {claim.holder()}; taken up at the end if still unfinished")
            return False
        if self._finished_elsewhere(job):
            claim.release()
            return None
        self.claims[job.key] = claim
        assert self.progress is not None
        self.progress.started(job.key, job.label, job.base)
        try:
            self.pool.submit(job)
        except BaseException:
            self.claims.pop(job.key).release()
            raise
        return True

    def _elsewhere(self, job: CellJob) -> None:
        assert self.progress is not None
        self.progress.finished(job.key, f"{job.label}: finished by another process")
        self._record(job, CellOutcome(job.cell_id, job.path, "elsewhere"))

    def _collect(self, job: CellJob, result: CellResult | None, err: BaseException | None) -> None:
        assert self.progress is not None
        claim = self.claims.pop(job.key)
        try:
            if err is not None:
                from benchmarks.distributed import is_worker_loss, loss_text

                if not is_worker_loss(err):
                    raise err
                why = loss_text(err)
                self.progress.finished(job.key, f"LOST {job.label}: {why}; re-run the command to complete it")
                self._record(job, CellOutcome(job.cell_id, job.path, "lost", error=why))
                return
            assert result is not None
            write_cell(job.path, result.rows)
        finally:
            claim.release()
        self.progress.finished(job.key, f"{job.label}: {result.seconds:.1f} s on {result.worker}",
                               method=job.base, seconds=result.seconds)
        self._record(job, CellOutcome(job.cell_id, job.path, "done", result.seconds, result.worker))

    def run(self) -> list[CellOutcome]:
        spec = self.spec
        pending: list[CellJob] = []
        finished: list[CellJob] = []
        for job in self.jobs:
            if job.state is not None and not spec.force:
                problem = damaged_cell(job.path)
                if problem is None:
                    finished.append(job)
                    seconds = _cell_seconds(job.path)
                    if seconds is not None:
                        self.costs.observe(job.base, seconds)
                    continue
                self.echo(f"warning: {job.path} is damaged ({problem}); running the cell again")
            pending.append(job)
        if isinstance(self.pool, DaskPool):  # most expensive first: the last cells to finish are short ones
            pending.sort(key=lambda j: -self.costs.expected(j.base))
        self._write_manifest()
        self.progress = GridProgress(len(self.jobs), slots=self.pool.slots(), costs=self.costs,
                                     show_bar=spec.progress, echo=self.echo)
        try:
            with console_logs(("methods",), self.progress.write):
                for job in finished:
                    self.progress.finished(job.key, None)
                    self._record(job, CellOutcome(job.cell_id, job.path, "skipped"))
                for job in pending:
                    self.progress.pending(job.key, job.base)
                self._loop(deque(pending))
        finally:
            for claim in self.claims.values():
                claim.release()
            self.progress.close()
        order = {job.cell_id: i for i, job in enumerate(self.jobs)}
        return sorted(self.outcomes, key=lambda o: order[o.cell_id])  # grid order, whatever finished first

    def _loop(self, queue: deque[CellJob]) -> None:
        deferred: list[CellJob] = []
        while queue or deferred or self.pool.busy():
            while queue and self.pool.busy() < self.pool.slots():
                job = queue.popleft()
                taken = self._claim(job, announce=True)
                if taken is None:
                    self._elsewhere(job)
                elif not taken:
                    deferred.append(job)
            if not queue:  # the end: take up cells whose claims are gone, or note them finished elsewhere
                for job in list(deferred):
                    if self.pool.busy() >= self.pool.slots():
                        break
                    taken = self._claim(job, announce=False)
                    if taken is False and not self._finished_elsewhere(job):
                        continue
                    deferred.remove(job)
                    if not taken:
                        self._elsewhere(job)
            results = self.pool.wait(timeout=1.0)
            for job, result, err in results:
                self._collect(job, result, err)
            if not results and not self.pool.busy() and deferred and not queue:
                time.sleep(0.5)  # every remaining cell is claimed by another process: poll
