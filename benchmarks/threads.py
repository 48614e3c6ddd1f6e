"""Thread settings of one process: the number of cores it may use and a context manager that applies a
thread count to faiss (OpenMP), BLAS (threadpoolctl) and torch and restores the previous ones."""

from __future__ import annotations

import os
from collections.abc import Callable


def default_threads() -> int:
    """Number of CPU cores this process may run on (``os.sched_getaffinity`` where available)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)



class ThreadSettings:
    """Apply ``threads`` to faiss (OpenMP), BLAS (threadpoolctl, when installed) and torch; restore after."""

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._restore: list[Callable[[], None]] = []

    def __enter__(self) -> ThreadSettings:
        import faiss

        prev = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(self.threads)
        self._restore.append(lambda: faiss.omp_set_num_threads(prev))
        try:
            import torch

            prev_t = torch.get_num_threads()
            torch.set_num_threads(self.threads)
            self._restore.append(lambda: torch.set_num_threads(prev_t))
        except ImportError:  # pragma: no cover
            pass
        try:
            from threadpoolctl import threadpool_limits

            limiter = threadpool_limits(limits=self.threads, user_api="blas")
            self._restore.append(limiter.restore_original_limits)
        except ImportError:  # pragma: no cover - BLAS then uses its own default
            pass
        return self

    def __exit__(self, *exc: object) -> None:
        for undo in reversed(self._restore):
            undo()
