"""Progress of a grid: one bar (cells done / total, running cells, an ETA weighted by each cell's expected
cost), one line per finished cell naming the worker, and the ``methods`` loggers' INFO lines on the console.

The ETA is not tqdm's rate (which averages over cheap and expensive cells alike, e.g. "00:50 left" before a
20-minute fusion fit): every pending cell is given its expected seconds by :class:`CostModel` (a per-method
prior, replaced by measured cell times as they arrive), and the remaining work is divided by the number of
cells that run at once.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

#: Relative cost of one cell per base method (seconds of one cell of the synthetic default on 2 cores, one
#: thread, before the fusion speed-ups): fusion transformers >> supervised MLPs >> closed-form baselines.
#: Only the ratios matter once one cell has been measured (:meth:`CostModel.expected`).
COST_PRIOR: dict[str, float] = {
    "mcmfh": 40.0,
    "ucmfh": 30.0,
    "dscph": 4.0,
    "ddbh": 4.0,
    "cca-itq": 1.0,
    "real-valued": 1.0,
    "random": 0.5,
}
#: Prior of a method missing from :data:`COST_PRIOR`.
DEFAULT_COST = 10.0

Echo = Callable[[str], None]


class CostModel:
    """Expected seconds of a cell of a method: the mean of the measured cells of that method, else its prior
    (:data:`COST_PRIOR`) times the median measured/prior ratio of the methods measured so far (1 before any).

    Parameters
    ----------
    prior : dict[str, float] | None
        Relative cost per base method (default :data:`COST_PRIOR`).
    """

    def __init__(self, prior: dict[str, float] | None = None) -> None:
        self.prior = dict(COST_PRIOR if prior is None else prior)
        self._seconds: dict[str, list[float]] = {}

    def observe(self, method: str, seconds: float) -> None:
        """Record one measured cell of base method ``method`` (``seconds`` > 0; others are ignored)."""
        if seconds > 0:
            self._seconds.setdefault(method, []).append(float(seconds))

    def _prior(self, method: str) -> float:
        return self.prior.get(method, DEFAULT_COST)

    def expected(self, method: str) -> float:
        """Expected seconds of one cell of base method ``method`` (> 0)."""
        if method in self._seconds:
            return statistics.fmean(self._seconds[method])
        ratios = [statistics.fmean(v) / self._prior(m) for m, v in self._seconds.items()]
        return self._prior(method) * (statistics.median(ratios) if ratios else 1.0)


def format_seconds(seconds: float) -> str:
    """``75.3`` → ``"01:15"``, ``3725`` → ``"1:02:05"`` (rounded to whole seconds)."""
    s = int(round(max(0.0, seconds)))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


@dataclass
class _Running:
    label: str
    method: str
    since: float


class GridProgress:
    """The grid's progress bar and per-cell lines (thread-safe; on a terminal the bar is refreshed once a
    second, so the ETA counts down during a long cell).

    Parameters
    ----------
    total : int
        Cells in the grid, finished ones included.
    slots : int
        Cells that run at once (workers × threads of a cluster, 1 when serial); divides the ETA.
    costs : CostModel
        Expected seconds per method (measured times of finished cells may be observed before).
    show_bar : bool
        Draw the bar (``False``: only the lines, through ``echo``).
    echo : callable
        Where lines go when the bar is hidden (the bar's ``tqdm.write`` otherwise, so lines never tear it).
    """

    def __init__(self, total: int, *, slots: int, costs: CostModel, show_bar: bool = True, echo: Echo = print) -> None:
        from tqdm import tqdm

        self.costs = costs
        self.slots = max(1, int(slots))
        self._echo = echo
        self._lock = threading.RLock()
        self._running: dict[str, _Running] = {}
        self._pending: dict[str, str] = {}  # cell key -> method, not yet started
        self._bar = tqdm(total=total, unit="cell", disable=not show_bar, dynamic_ncols=True,
                         bar_format="{desc}{n_fmt}/{total_fmt} cells |{bar}| {elapsed} elapsed{postfix}", desc="grid ")
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if show_bar and sys.stderr.isatty():  # a log file gets a line per event, not one per second
            self._ticker = threading.Thread(target=self._tick, name="grid-progress", daemon=True)
            self._ticker.start()

    # -- events --------------------------------------------------------------------------------------
    def pending(self, key: str, method: str) -> None:
        """A cell of base method ``method`` waits to run (counted in the ETA)."""
        with self._lock:
            self._pending[key] = method

    def started(self, key: str, label: str, method: str) -> None:
        """Cell ``key`` (shown as ``label``) starts running."""
        with self._lock:
            self._pending.pop(key, None)
            self._running[key] = _Running(label, method, time.monotonic())
            self._refresh()

    def finished(self, key: str, line: str | None, *, method: str | None = None, seconds: float | None = None) -> None:
        """Cell ``key`` is over (done, skipped, lost): one bar step and ``line`` (none when ``None``);
        ``seconds`` of a measured run refine the cost of ``method``."""
        with self._lock:
            self._pending.pop(key, None)
            self._running.pop(key, None)
            if method is not None and seconds is not None:
                self.costs.observe(method, seconds)
            self._bar.update(1)
            if line is not None:
                self.write(line)
            self._refresh()

    def write(self, line: str) -> None:
        """Print ``line`` above the bar (or through ``echo`` when the bar is hidden)."""
        if self._bar.disable:
            self._echo(line)
        else:
            self._bar.write(line)

    # -- ETA -----------------------------------------------------------------------------------------
    def eta(self) -> float:
        """Seconds left: expected cost of pending cells plus the expected remainder of running ones, divided
        by the number of slots."""
        with self._lock:
            now = time.monotonic()
            work = sum(self.costs.expected(m) for m in self._pending.values())
            work += sum(max(0.0, self.costs.expected(r.method) - (now - r.since)) for r in self._running.values())
            return work / self.slots

    def _refresh(self) -> None:
        if self._bar.disable:
            return
        running = sorted(self._running.values(), key=lambda r: r.since)
        names = ", ".join(r.label for r in running[:3]) + (", ..." if len(running) > 3 else "")
        text = f"{len(running)} running" + (f" ({names})" if names else "")
        if self._pending or running:
            text += f", ETA ~{format_seconds(self.eta())}"
        self._bar.set_postfix_str(text, refresh=True)

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                self._refresh()

    def close(self) -> None:
        """Stop the refresher and close the bar."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)
        self._bar.close()


class _LineHandler(logging.Handler):
    """Writes log records as ``[worker] logger: message`` lines through a callable (e.g. the bar's write)."""

    def __init__(self, write: Echo) -> None:
        super().__init__(logging.INFO)
        self._write = write

    def emit(self, record: logging.LogRecord) -> None:
        try:
            where = getattr(record, "worker_label", None) or getattr(record, "worker", None)
            self._write(f"[{where or 'main'}] {record.name}: {record.getMessage()}")
        except Exception:  # noqa: BLE001 - a log line must never break the run
            self.handleError(record)


@contextlib.contextmanager
def console_logs(names: Iterable[str], write: Echo) -> Iterator[None]:
    """Show INFO records of the loggers ``names`` (and their children, e.g. ``methods.mcmfh``) through
    ``write`` while the block runs; records forwarded from Dask workers carry the worker's address.

    The loggers' levels are restored afterwards (records still propagate to the root logger's handlers).
    """
    saved = []
    handler = _LineHandler(write)
    for name in names:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level))
        if logger.level == logging.NOTSET or logger.level > logging.INFO:
            logger.setLevel(logging.INFO)
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger, level in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)


__all__ = ["COST_PRIOR", "DEFAULT_COST", "CostModel", "GridProgress", "console_logs", "format_seconds"]
