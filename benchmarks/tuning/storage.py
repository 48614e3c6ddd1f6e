"""Optuna storages from a user string: journal files (checked, torn tail repaired) and SQL databases.

A journal file (:class:`optuna.storages.journal.JournalFileBackend`) is a list of JSON records, one per line,
each written by one ``append`` under the journal's file lock. A worker killed in the middle of an append
leaves a *torn* last record: bytes without the closing end of line. Optuna skips such a tail when it reads,
but its next append lands on the same line, and from then on every read of the journal fails with a bare
``JSONDecodeError``. :func:`check_journal_file` therefore inspects a journal **before anything is written to
it**: a torn last record is cut off (its bytes saved beside the journal, a :class:`TornJournalWarning` naming
the file and line), every complete record is kept; any other unreadable line stops with a one-line
:class:`~benchmarks.cli.UsageError` naming the file and line, and the file is left as it is.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.cli import UsageError

#: Default journal file (relative to the working directory, like ``--out results/``).
DEFAULT_JOURNAL = Path("results") / "optuna" / "journal.log"


class TornJournalWarning(UserWarning):
    """A journal's torn last record was cut off (the message names the file, the line and the saved bytes)."""


@dataclass(frozen=True)
class JournalScan:
    """What a scan of a journal file found.

    Attributes
    ----------
    n_records : int
        Complete, readable records (lines ending in ``\\n`` that parse as a journal record).
    torn_line : int | None
        1-based line number of a torn last record (bytes without an end of line), else ``None``.
    torn_offset : int
        Byte offset where the torn record starts (= size of the complete part); the file size when not torn.
    bad_line : int | None
        1-based number of the first complete line that is not a journal record, else ``None``.
    bad_reason : str
        Why ``bad_line`` is unreadable (empty when it is ``None``).
    """

    n_records: int
    torn_line: int | None
    torn_offset: int
    bad_line: int | None = None
    bad_reason: str = ""


def is_url(storage: str) -> bool:
    """Whether a storage string is an SQLAlchemy URL (contains ``://``) rather than a journal path."""
    return "://" in storage


def journal_path(storage: str | None) -> Path:
    """The journal file of a non-URL storage string (``None`` → :data:`DEFAULT_JOURNAL`; ``journal:PATH``)."""
    if storage and storage.startswith("journal:"):
        return Path(storage[len("journal:") :])
    return Path(storage or DEFAULT_JOURNAL)


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (plain paths unchanged)."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user}{':***' if ':' in creds else ''}@{host}"


def describe_storage(storage: str | None) -> str:
    """Where a storage string points, for messages: the journal path, or the URL without its password."""
    if storage and is_url(storage):
        return redact(storage)
    return str(journal_path(storage))


def _is_record(line: bytes) -> str:
    """``""`` if ``line`` (without its end of line) is a journal record, else the reason it is not."""
    try:
        record = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError:
        return "not UTF-8 text"
    except ValueError as err:
        return f"not JSON: {str(err).splitlines()[0]}"
    if not isinstance(record, dict) or "op_code" not in record:
        return "JSON without an op_code"
    return ""


def _could_be_record_start(data: bytes) -> bool:
    """Whether a torn first line starts like an Optuna record (``{"op_code":``, or a cut prefix of it)."""
    head = b'{"op_code":'
    return data.startswith(head) or head.startswith(data)


def scan_journal(path: Path) -> JournalScan:
    """Read every line of a journal file and classify it (nothing is written).

    Parameters
    ----------
    path : Path
        An existing journal file.

    Returns
    -------
    JournalScan
        Complete records, the torn last record if any, and the first unreadable complete line if any.
    """
    n_records, offset = 0, 0
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.endswith(b"\n"):  # only the last line can lack its end of line
                return JournalScan(n_records, torn_line=number, torn_offset=offset)
            reason = _is_record(line.rstrip(b"\r\n"))
            if reason:
                return JournalScan(n_records, None, offset, bad_line=number, bad_reason=reason)
            n_records += 1
            offset += len(line)
    return JournalScan(n_records, torn_line=None, torn_offset=offset)


def _cut_torn_tail(path: Path, scan: JournalScan) -> Path:
    """Save the torn bytes beside the journal and truncate the journal to its complete records.

    Returns
    -------
    Path
        The file holding the removed bytes (``PATH.torn-<ns>``).
    """
    with path.open("rb") as fh:
        fh.seek(scan.torn_offset)
        torn = fh.read()
    saved = path.with_name(f"{path.name}.torn-{time.time_ns()}")
    saved.write_bytes(torn)
    with path.open("r+b") as fh:
        fh.truncate(scan.torn_offset)
        fh.flush()
        os.fsync(fh.fileno())
    return saved


def repair_journal(path: Path) -> JournalScan:
    """Check a journal file; cut off a torn last record (under the journal's lock) or refuse a damaged line.

    The scan runs without the lock; only when it finds damage is Optuna's journal lock
    (:class:`~optuna.storages.journal.JournalFileSymlinkLock`, the one :class:`JournalFileBackend` writers
    take) acquired and the file scanned again, so a record another worker is appending right now is never
    taken for a torn one. A lock left by a killed worker is released by Optuna after its grace period
    (30 s; Optuna >= 4.3).

    Parameters
    ----------
    path : Path
        An existing journal file.

    Returns
    -------
    JournalScan
        The scan after any repair (``torn_line`` is ``None``).

    Warns
    -----
    TornJournalWarning
        When a torn last record was cut off (names the file, the line, the number of records kept and the
        file holding the cut bytes).

    Raises
    ------
    UsageError
        If a complete line is not a journal record (names the file and the line; the file is unchanged).
    """
    scan = scan_journal(path)
    if scan.torn_line is None and scan.bad_line is None:
        return scan
    from optuna.storages.journal import JournalFileSymlinkLock

    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        scan = scan_journal(path)  # under the lock: no append is in flight
        if scan.bad_line is not None:
            raise UsageError(
                f"journal storage {path} line {scan.bad_line} is not a journal record ({scan.bad_reason}); "
                f"the file was left unchanged: keep its first {scan.bad_line - 1} line(s) (e.g. `head -n "
                f"{scan.bad_line - 1}`) into a new file, or give another --storage"
            )
        if scan.torn_line is not None:
            saved = _cut_torn_tail(path, scan)
            warnings.warn(
                f"journal storage {path} line {scan.torn_line} was a torn record (cut by a crash, no end of line); "
                f"removed it and kept the {scan.n_records} complete record(s); the cut bytes are in {saved}",
                TornJournalWarning,
                stacklevel=3,
            )
            scan = JournalScan(scan.n_records, None, scan.torn_offset)
    finally:
        lock.release()
    return scan


def check_journal_file(path: Path) -> None:
    """Accept a new/empty file or an Optuna journal (repairing a torn last record); refuse anything else.

    Raises
    ------
    UsageError
        If ``path`` is a folder, cannot be read, its first line is not an Optuna journal record, or a later
        complete line is damaged (names the file and the line).
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
    complete = first.endswith(b"\n")
    if (complete and _is_record(first.rstrip(b"\r\n"))) or (not complete and not _could_be_record_start(first)):
        raise UsageError(f"--storage {path} exists and is not an Optuna journal file (its first line is not a "
                         "journal record); give a new file path, an existing journal, or an SQL URL")
    try:
        repair_journal(path)
    except OSError as err:
        raise UsageError(f"cannot repair journal storage {path}: {err.strerror or err}") from None


def open_storage(storage: str | None = None, *, heartbeat_interval: int | None = None) -> Any:
    """Open an Optuna storage from a user string.

    Parameters
    ----------
    storage : str | None
        ``None`` → :data:`DEFAULT_JOURNAL`; ``"journal:PATH"`` or a path → that journal file (parent folders
        created; checked and a torn tail repaired by :func:`check_journal_file` before Optuna writes to it);
        a string containing ``://`` → :class:`optuna.storages.RDBStorage` on that SQLAlchemy URL.
    heartbeat_interval : int | None
        Heartbeat period in seconds for an SQL storage (grace period = 2 × interval); ignored for journals.

    Returns
    -------
    optuna.storages.BaseStorage

    Raises
    ------
    UsageError
        If the journal folder cannot be created, the journal is damaged (file and line named), or the
        database cannot be reached (one line, URL without password).
    """
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if storage is None or not is_url(storage):
        path = journal_path(storage)
        check_journal_file(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(str(path)))
        except OSError as err:
            raise UsageError(f"cannot open journal storage {path}: {err.strerror or err}") from None
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError, KeyError) as err:  # damaged after the check
            raise UsageError(f"journal storage {path} is not a readable Optuna journal ({type(err).__name__}: "
                             f"{str(err).splitlines()[0] if str(err) else err!r})") from None
    return _open_rdb(storage, int(heartbeat_interval or 0))


@functools.lru_cache(maxsize=8)
def _open_rdb(storage: str, heartbeat_interval: int) -> Any:
    """One :class:`optuna.storages.RDBStorage` per (URL, heartbeat) in a process: building one (engine, schema
    check) costs about a second, and a grid of studies opens the same storage many times."""
    import optuna

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
        raise UsageError(f"cannot open storage {redact(storage)}: {type(err).__name__}: {str(err).splitlines()[0]}") from None


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
        raise UsageError(f"no study {study_name!r} in {describe_storage(storage)}; "
                         f"studies there: {', '.join(names) or '(none)'}") from None


__all__ = [
    "DEFAULT_JOURNAL",
    "JournalScan",
    "TornJournalWarning",
    "check_journal_file",
    "describe_storage",
    "is_url",
    "journal_path",
    "load_study",
    "open_storage",
    "redact",
    "repair_journal",
    "scan_journal",
]
