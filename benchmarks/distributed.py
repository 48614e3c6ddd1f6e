"""Dask distributed set-up shared by ``run`` and ``tune``: a local cluster of worker processes or a client of
an existing cluster, each worker pinned to a number of CPU threads and (on local GPU machines) one device,
and the workers' ``methods`` / ``benchmarks.tuning`` log lines forwarded to the driver's console.

Why Dask distributed: a pure-Python install (no separate runtime or object store), a
:class:`~distributed.LocalCluster` of real worker processes for one machine, and the same client for a
cluster started with ``dask scheduler`` / ``dask worker ADDRESS``. A task whose worker process dies is
reported to the client as :class:`~distributed.KilledWorker` (the local cluster is made with
``allowed_failures=0``: no silent retry), and the nanny starts a fresh worker in its place.

Thread policy
-------------
A worker runs one cell at a time (``threads_per_worker=1``) with ``threads`` torch/BLAS/OpenMP threads:
``OMP_NUM_THREADS`` and friends are set before the worker imports torch (local cluster environment, and again
by :class:`WorkerSetup` on joining workers), ``torch.set_num_threads`` and threadpoolctl afterwards. The
default is one thread: on a shared or busy machine more intra-op threads than free cores spin against each
other (measured: a 1024-2048-1024 training loop took 3x longer with 2 threads than with 1 while the two cores
were busy), and cells scale across processes almost linearly, so N workers x 1 thread is the fast layout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from benchmarks.cli import UsageError
from benchmarks.threads import default_threads

#: Environment variables that fix the thread pools of OpenMP, MKL, OpenBLAS, numexpr, BLIS and Apple Accelerate.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
                   "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS")

#: Loggers whose INFO records workers forward to the driver (per-epoch lines, trial lines).
FORWARDED_LOGGERS = ("methods", "benchmarks.tuning")

_PLUGIN_NAME = "medhash-worker-setup"


def thread_env(threads: int) -> dict[str, str]:
    """``{"OMP_NUM_THREADS": "T", "MKL_NUM_THREADS": "T", ...}`` for ``threads`` = T (:data:`THREAD_ENV_VARS`)."""
    return {name: str(int(threads)) for name in THREAD_ENV_VARS}


#: Environment variable giving ``run``'s default ``--workers`` (a count or ``auto``; unset: ``auto``).
WORKERS_ENV = "MEDHASH_WORKERS"


def resolve_workers(workers: int | str | None, *, threads: int | str | None = None, scheduler: str | None = None) -> int:
    """Worker processes of ``run``'s local cluster: an explicit count, or ``"auto"`` = this machine's cores //
    threads per worker (``threads`` ``None``/``"auto"`` count as 1), at least 1. ``None`` (the flag's default)
    reads ``$MEDHASH_WORKERS`` and falls back to ``"auto"``. With ``scheduler`` the count is unused (returns 1).

    Raises
    ------
    UsageError
        For a count < 1 or a ``$MEDHASH_WORKERS`` that is neither a count nor ``auto``.
    """
    if workers is None:
        env = os.environ.get(WORKERS_ENV, "").strip()
        workers = env or "auto"
        if env and env != "auto":
            try:
                workers = int(env)
            except ValueError:
                raise UsageError(f"${WORKERS_ENV} must be a number of worker processes or 'auto', got {env!r}") from None
    if scheduler:
        return 1
    if workers == "auto":
        per = int(threads) if isinstance(threads, int) or (isinstance(threads, str) and threads.isdigit()) else 1
        return max(1, default_threads() // max(1, per))
    if int(workers) < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    return int(workers)


def resolve_threads(threads: int | str | None, *, workers: int = 1, scheduler: str | None = None) -> int:
    """Threads per cell process: an explicit count, ``None`` (default: 1), or ``"auto"`` (this machine's cores
    // ``workers``, at least 1).

    Raises
    ------
    UsageError
        For a count < 1, or ``"auto"`` with ``scheduler`` (the cluster's cores are not known here).
    """
    if threads is None:
        return 1
    if threads == "auto":
        if scheduler:
            raise UsageError("--threads auto needs a local cluster; with --scheduler give --threads T "
                             "(e.g. the cores of a host divided by the workers started on it)")
        return max(1, default_threads() // max(1, int(workers)))
    if int(threads) < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")
    return int(threads)


def cuda_devices() -> list[str]:
    """Indices of the CUDA devices visible to this process (``CUDA_VISIBLE_DEVICES`` order), ``[]`` without CUDA."""
    try:
        import torch

        count = torch.cuda.device_count()
    except ImportError:  # pragma: no cover - torch is a dependency
        return []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip():
        return [d.strip() for d in visible.split(",") if d.strip()][:count]
    return [str(i) for i in range(count)]


def worker_label() -> str:
    """:func:`worker_label_of` the Dask worker running the caller, or ``"main"`` outside a worker."""
    from distributed import get_worker

    try:
        return worker_label_of(get_worker())
    except ValueError:
        return "main"


class WorkerSetup(WorkerPlugin):
    """Dask worker plugin: pins the worker's threads (and GPU), labels its log records with the worker's name
    and lets its forwarded loggers pass INFO records.

    Parameters
    ----------
    threads : int
        torch/BLAS/OpenMP threads of the worker process.
    gpus : sequence of str | None
        Device indices; worker ``i`` of a local cluster (named ``i``) gets ``gpus[i % len(gpus)]`` as its only
        visible device (``CUDA_VISIBLE_DEVICES``, set before CUDA starts). ``None`` leaves the devices as the
        worker was started with.
    loggers : sequence of str
        Loggers set to pass INFO records.
    """

    name = _PLUGIN_NAME

    def __init__(self, threads: int, gpus: Sequence[str] | None = None, loggers: Sequence[str] = FORWARDED_LOGGERS):
        self.threads = int(threads)
        self.gpus = list(gpus) if gpus else None
        self.loggers = tuple(loggers)

    def setup(self, worker: Any) -> None:
        os.environ.update(thread_env(self.threads))
        if self.gpus:
            try:
                index = int(worker.name)
            except (TypeError, ValueError):
                index = 0
            os.environ["CUDA_VISIBLE_DEVICES"] = self.gpus[index % len(self.gpus)]
        if "torch" in sys.modules:
            sys.modules["torch"].set_num_threads(self.threads)
        label = worker_label_of(worker)
        previous = logging.getLogRecordFactory()
        if not getattr(previous, "_medhash_worker", False):
            def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
                record = previous(*args, **kwargs)
                record.worker_label = label  # ("worker" itself is overwritten with the address by the scheduler)
                return record

            factory._medhash_worker = True  # type: ignore[attr-defined]
            logging.setLogRecordFactory(factory)
        for name in self.loggers:
            logger = logging.getLogger(name)
            if logger.level == logging.NOTSET or logger.level > logging.INFO:
                logger.setLevel(logging.INFO)


def worker_label_of(worker: Any) -> str:
    """``"worker NAME"`` of a :class:`distributed.Worker`, or its address when it has no other name."""
    return str(worker.address) if str(worker.name) == str(worker.address) else f"worker {worker.name}"


def is_worker_loss(err: BaseException | None) -> bool:
    """Whether a task failed because its worker process died (:class:`distributed.KilledWorker`), not because
    the task raised."""
    from distributed import KilledWorker

    return isinstance(err, KilledWorker)


def loss_text(err: BaseException) -> str:
    """``"worker 1 (tcp://127.0.0.1:33877) died while running it"`` from a :class:`distributed.KilledWorker`."""
    try:
        worker = err.last_worker  # type: ignore[attr-defined]
        label = worker_label_of(worker)
        return f"{label}{'' if label == worker.address else f' ({worker.address})'} died while running it"
    except AttributeError:
        return f"its worker died while running it ({err})"


def prepare_client(client: Any, *, threads: int, gpus: Sequence[str] | None = None,
                   loggers: Sequence[str] = FORWARDED_LOGGERS) -> None:
    """Pin every worker of ``client``'s cluster (present and future) to ``threads`` threads and, with
    ``gpus``, one of those devices each; forward the INFO records of ``loggers`` to this process."""
    client.register_plugin(WorkerSetup(threads, gpus, loggers), name=_PLUGIN_NAME)
    for name in loggers:
        client.forward_logging(name, level=logging.INFO)


def client_slots(client: Any, *, wait_s: float = 60.0) -> int:
    """Tasks the cluster runs at once (sum of its workers' threads), waiting up to ``wait_s`` for a first worker.

    Raises
    ------
    UsageError
        If no worker joined the scheduler within ``wait_s`` seconds.
    """
    slots = sum(client.nthreads().values())
    if slots:
        return slots
    try:
        client.wait_for_workers(1, timeout=wait_s)
    except (TimeoutError, asyncio.TimeoutError):  # distinct classes before Python 3.11
        raise UsageError(f"no Dask worker joined scheduler {client.scheduler.address} within {wait_s:.0f} s; "
                         "start workers with `dask worker ADDRESS --nthreads 1`") from None
    return max(1, sum(client.nthreads().values()))


@contextlib.contextmanager
def dask_client(*, workers: int = 1, scheduler: str | None = None, threads: int = 1, device: str = "cpu",
                loggers: Sequence[str] = FORWARDED_LOGGERS, echo: Any = None) -> Iterator[Any]:
    """A ready :class:`distributed.Client`: of the cluster at ``scheduler``, else of a new local cluster of
    ``workers`` processes (one task each, ``allowed_failures=0``, no dashboard, no memory limit, Dask's own
    warnings silenced: lost cells are reported by the caller), closed on exit.

    Parameters
    ----------
    workers : int
        Local worker processes (ignored with ``scheduler``).
    scheduler : str | None
        Address of a running scheduler, e.g. ``tcp://10.0.0.5:8786``.
    threads : int
        torch/BLAS/OpenMP threads per worker (:func:`resolve_threads`).
    device : str
        ``"cuda"``: local workers take one visible GPU each (round robin when there are more workers than GPUs).
    echo : callable | None
        Receives one line describing the cluster.

    Raises
    ------
    UsageError
        Unreachable scheduler, or ``workers`` < 1.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as err:
            raise UsageError(f"cannot reach Dask scheduler {scheduler} ({err}); start one with `dask scheduler`") from None
        with client:
            prepare_client(client, threads=threads, loggers=loggers)
            if echo is not None:
                nthreads = client.nthreads()
                echo(f"joined Dask scheduler {scheduler}: {len(nthreads)} worker(s), {threads} thread(s) each")
                shared = sorted(str(a) for a, n in nthreads.items() if n > 1)
                if shared:
                    echo(f"warning: worker(s) {', '.join(shared[:3])} run several tasks at once in one process, which "
                         "share its thread settings; start workers with `dask worker ADDRESS --nthreads 1`")
            yield client
        return
    if int(workers) < 1:
        raise UsageError(f"--workers must be >= 1, got {workers}")
    gpus = cuda_devices() if device.startswith("cuda") else []
    if device.startswith("cuda") and not gpus:
        raise UsageError("--device cuda asked for but no CUDA device is visible")
    with LocalCluster(n_workers=int(workers), processes=True, threads_per_worker=1, env=thread_env(threads),
                      dashboard_address=None, memory_limit=0, scheduler_kwargs={"allowed_failures": 0},
                      silence_logs=logging.ERROR) as cluster, \
            Client(cluster) as client:
        prepare_client(client, threads=threads, gpus=gpus or None, loggers=loggers)
        if echo is not None:
            where = f", GPUs {','.join(gpus)} one per worker" if gpus else ""
            echo(f"local Dask cluster: {workers} worker process(es) x {threads} thread(s){where}")
        yield client


__all__ = ["FORWARDED_LOGGERS", "THREAD_ENV_VARS", "WorkerSetup", "client_slots", "cuda_devices", "dask_client",
           "is_worker_loss", "loss_text", "prepare_client", "resolve_threads", "resolve_workers", "thread_env", "worker_label",
           "worker_label_of"]
