"""Result rows: one JSON object per metric value, one atomically written JSONL file per finished cell.

Layout under the output folder ``OUT`` (``--out``, default ``results/``)::

    OUT/cells/<dataset>/<method>/<config_hash>.jsonl   one file per finished cell (atomic)
    OUT/runs/<run_id>.json                             what each invocation asked for and finished

A cell is one (method, variant config, dataset, label scheme, encoder, bits, seed, protocols) combination;
its key is :func:`config_hash` of that full config, so a finished cell is never redone (ann-benchmarks style)
and a killed run resumes without losing or duplicating rows.

Rows are strict JSON (RFC 8259): a NaN or infinite value, in any field, is written as ``null`` and the field
is named in the row's ``non_finite`` object with the value it had (``{"value": "NaN"}``), so jq, browsers and
strict parsers read every file (:func:`strict_row`, :func:`dumps_strict`).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import subprocess
from collections.abc import Iterable, Iterator
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from medhash_datasets.cache_io import atomic_write_text

#: Fields every row carries (evaluation spec, "Result rows"). ``k`` is ``None`` for metrics without a cut-off;
#: for curves (``p@n``, ``pr_radius_precision``, ``pr_radius_recall``) there is one row per point with the
#: point in ``k`` (n, or the Hamming radius r). Efficiency rows use task ``"-"`` when they are not per task.
ROW_FIELDS: tuple[str, ...] = (
    "run_id",
    "cell_id",
    "method",
    "variant",
    "method_config",
    "dataset",
    "label_scheme",
    "encoder",
    "bits",
    "seed",
    "protocol",
    "task",
    "metric",
    "k",
    "tie",
    "value",
    "chance",
    "n_queries",
    "n_queries_without_relevant",
    "n_database",
    "n_train",
    "n_validation",
    "n_query",
    "db_includes_train",
    "config_hash",
    "versions",
    "git_commit",
    "wall_time_s",
    "timestamp",
)

PACKAGES = ("numpy", "scipy", "torch", "faiss-cpu", "open_clip_torch", "timm", "sentence-transformers", "optuna")


def config_hash(config: dict[str, Any]) -> str:
    """First 16 hex digits of the SHA-256 of ``config`` as canonical JSON (sorted keys)."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def package_versions() -> dict[str, str]:
    """Installed versions of the packages that change numbers (absent ones omitted), plus Python."""
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """Commit of the project checkout (with ``-dirty`` when it has changes), or ``None`` outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def cell_path(out: Path, dataset: str, method: str, cell_id: str) -> Path:
    """Where the rows of one cell live."""
    return Path(out) / "cells" / dataset / method / f"{cell_id}.jsonl"


def write_cell(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write all rows of a finished cell at once, atomically (never a partial cell on disk).

    Raises
    ------
    ValueError
        If a row lacks one of :data:`ROW_FIELDS`.
    """
    lines = []
    for row in rows:
        missing = [f for f in ROW_FIELDS if f not in row]
        if missing:
            raise ValueError(f"result row for metric {row.get('metric')!r} lacks fields {missing}")
        lines.append(dumps_strict(strict_row(row), sort_keys=True))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _nulled(obj: Any, where: str, found: dict[str, str]) -> Any:
    """``obj`` with non-finite floats (also numpy scalars/arrays, nested) replaced by None, recorded in ``found``."""
    import numpy as np

    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    if isinstance(obj, (float, np.floating)) and not math.isfinite(obj):
        found[where] = "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
        return None
    if isinstance(obj, dict):
        return {k: _nulled(v, f"{where}.{k}" if where else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nulled(v, f"{where}[{i}]", found) for i, v in enumerate(obj)]
    return obj


def strict_row(row: dict[str, Any]) -> dict[str, Any]:
    """Copy of ``row`` that is strict JSON: every NaN/inf becomes None and is named in ``non_finite``.

    Parameters
    ----------
    row : dict
        A result row (any nesting of dicts, lists, tuples, numpy scalars and arrays).

    Returns
    -------
    dict
        The row with non-finite floats replaced by ``None``; when any was found, ``non_finite`` maps each
        field path (``"value"``, ``"method_info.loss"``, ``"bit_balance_query[3]"``) to ``"NaN"``,
        ``"Infinity"`` or ``"-Infinity"`` (merged with a ``non_finite`` the row already had).

    Examples
    --------
    >>> strict_row({"metric": "map", "value": float("nan")})
    {'metric': 'map', 'value': None, 'non_finite': {'value': 'NaN'}}
    """
    found: dict[str, str] = {}
    out = _nulled({k: v for k, v in row.items() if k != "non_finite"}, "", found)
    if found or row.get("non_finite"):
        out["non_finite"] = {**(row.get("non_finite") or {}), **found}
    return out


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that never writes ``NaN``/``Infinity`` (``allow_nan=False``; numpy scalars converted).

    Raises
    ------
    ValueError
        If ``obj`` holds a non-finite float; pass rows through :func:`strict_row` first.
    """
    return json.dumps(obj, allow_nan=False, default=_json_default, **kwargs)


def iter_rows(out: Path) -> Iterator[dict[str, Any]]:
    """Every row of every finished cell below ``out`` (a run folder, any folder holding ``cells/``, or one
    cell file).

    Raises
    ------
    FileNotFoundError
        If ``out`` does not exist.
    ValueError
        If a line is not valid JSON (the message names the file and line).
    """
    out = Path(out)
    if not out.exists():
        raise FileNotFoundError(f"result folder {out} does not exist")
    for path in [out] if out.is_file() else sorted(out.rglob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: not a JSON result row ({err.msg})") from None


def load_rows(out: Path):
    """All rows below ``out`` as a pandas DataFrame (columns :data:`ROW_FIELDS` plus any extra)."""
    import pandas as pd

    rows = list(iter_rows(out))
    return pd.DataFrame(rows, columns=None if rows else list(ROW_FIELDS))
