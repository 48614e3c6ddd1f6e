"""Which rows a report is about: the run folder asked for (not every folder below it), a run id or label in it,
or the compact export a report ships with (``rows.jsonl.gz``), and writing that export.

A *run folder* is a folder holding ``cells/`` (``run``), ``runs/`` (run manifests) or ``efficiency/``
(``efficiency``). Its own rows are the ``*.jsonl`` files below it that do not sit inside another run folder
nested in it: ``report results`` reads ``results/cells/…`` and ``results/efficiency/…`` but not
``results/medpix/cells/…``, unless ``recursive`` (``--recursive``) is given.

A *report folder* (written by :func:`benchmarks.report.build.build_report`) holds :data:`EXPORT_NAME`, the rows
the report used, and :data:`MANIFEST_NAME`; reading it back regenerates the same tables.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from benchmarks.report.rows import ReportError, _is_number

#: The rows a report used, one strict-JSON row per line, gzip-compressed; written into every report folder.
EXPORT_NAME = "rows.jsonl.gz"
#: The export format :func:`write_export` writes (its first line is ``{EXPORT_FORMAT_KEY: EXPORT_FORMAT}``).
EXPORT_FORMAT = 2
EXPORT_FORMAT_KEY = "medhash_rows_export"
#: What a report folder holds and where its rows came from.
MANIFEST_NAME = "report.json"
#: Sub-folders that make a folder a run folder.
RUN_MARKERS = ("cells", "runs", "efficiency")


@dataclass
class Source:
    """Rows selected for a report, and where they came from.

    Attributes
    ----------
    rows : pd.DataFrame
        The selected rows (columns: the union of the rows' fields).
    records : list[dict]
        The same rows as read (for the export: ``None`` stays ``None``).
    label : str
        The source as the report names it (the original run folder when read back from an export).
    files : list[Path]
        Row files read.
    selection : dict
        ``recursive``, ``run_ids``, ``labels`` as asked.
    nested : list[Path]
        Run folders below the source that were not read (``recursive`` off).
    invalid_example : Path | None
        A file holding a row without a numeric ``value`` (such rows are left out of the tables).
    """

    rows: pd.DataFrame
    records: list[dict[str, Any]]
    label: str
    files: list[Path] = field(default_factory=list)
    selection: dict[str, Any] = field(default_factory=dict)
    nested: list[Path] = field(default_factory=list)
    invalid_example: Path | None = None


def is_run_folder(path: Path) -> bool:
    """Whether ``path`` holds ``cells/``, ``runs/`` or ``efficiency/``."""
    return any((path / name).is_dir() for name in RUN_MARKERS)


def row_files(run_dir: Path, *, recursive: bool = False) -> tuple[list[Path], list[Path]]:
    """The ``*.jsonl`` row files of ``run_dir`` and the nested run folders left out.

    Returns
    -------
    (files, nested)
        Sorted row files; sorted run folders below ``run_dir`` that were skipped (empty when ``recursive``).
    """
    files: list[Path] = []
    nested: list[Path] = []
    for root, dirs, names in os.walk(run_dir):
        here = Path(root)
        if not recursive:
            for d in list(dirs):
                if is_run_folder(here / d):
                    nested.append(here / d)
                    dirs.remove(d)
        dirs.sort()
        files += [here / n for n in sorted(names) if n.endswith(".jsonl")]
    return sorted(files), sorted(nested)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    from benchmarks.results import iter_rows

    return [r for r in iter_rows(path) if isinstance(r, dict)]


def read_export(path: Path) -> list[dict[str, Any]]:
    """The rows of a ``rows.jsonl.gz`` export, in either format :func:`write_export` has written.

    Format 2 (a first line ``{"medhash_rows_export": 2}``) stores every dict- or list-valued field once, on a
    line ``{"$define": N, "value": ...}`` written before the first row that uses it, and the rows refer to it as
    ``{"$ref": N}``; the rows read back share those objects (treat them as read-only). Format 1 (no header) is
    one full row per line, as written before format 2 existed.

    Raises
    ------
    ReportError
        If the file is not gzip, a line is not a JSON object, a reference names no earlier definition, or the
        header names a format this version cannot read (each naming file and line).
    """
    rows: list[dict[str, Any]] = []
    shared: dict[int, Any] = {}
    version = 1
    try:
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ReportError(f"{path}:{lineno}: not a JSON result row ({err.msg})") from None
                if not isinstance(row, dict):
                    raise ReportError(f"{path}:{lineno}: not a JSON object")
                if lineno == 1 and EXPORT_FORMAT_KEY in row:
                    version = row[EXPORT_FORMAT_KEY]
                    if version != EXPORT_FORMAT:
                        raise ReportError(f"{path}:1: rows export format {version!r}; this version reads formats "
                                          f"1 and {EXPORT_FORMAT} (upgrade medhash to read it)")
                    continue
                if version == EXPORT_FORMAT and "$define" in row:
                    shared[int(row["$define"])] = row.get("value")
                    continue
                if version == EXPORT_FORMAT:
                    row = {key: _resolve(value, shared, path, lineno) for key, value in row.items()}
                rows.append(row)
    except (OSError, EOFError) as err:
        raise ReportError(f"{path}: not a readable gzip export of result rows ({err})") from None
    return rows


def _resolve(value: Any, shared: dict[int, Any], path: Path, lineno: int) -> Any:
    """A format-2 field value: the shared definition ``{"$ref": N}`` points to, else the value itself."""
    if isinstance(value, dict) and len(value) == 1 and "$ref" in value:
        try:
            return shared[int(value["$ref"])]
        except (KeyError, TypeError, ValueError):
            raise ReportError(f"{path}:{lineno}: reference {value['$ref']!r} has no earlier $define line") from None
    return value


def write_export(path: Path, rows: Sequence[dict[str, Any]]) -> str:
    """Write ``rows`` as :data:`EXPORT_NAME` in format :data:`EXPORT_FORMAT`; returns the SHA-256 of the file.

    Strict JSON lines with sorted keys, gzip with a fixed timestamp, so the same rows give the same bytes. A
    cell's rows repeat its configuration, audit and diagnostics (dicts and lists) on every metric row, so each
    distinct dict or list value is written once as ``{"$define": N, "value": ...}`` (numbered in order of first
    use, fields taken in key order) and the rows carry ``{"$ref": N}``; on the 50,412-row MedPix report this
    takes the file from 2.1 MB to 1.2 MB. :func:`read_export` restores the rows exactly.
    """
    import hashlib

    from benchmarks.results import dumps_strict, strict_row
    from medhash_datasets.cache_io import atomic_write_bytes

    def dumps(obj: Any) -> str:
        return dumps_strict(obj, sort_keys=True, separators=(",", ":"))

    numbers: dict[str, int] = {}
    lines = [dumps({EXPORT_FORMAT_KEY: EXPORT_FORMAT})]
    for row in rows:
        packed: dict[str, Any] = {}
        for key, value in sorted(strict_row(row).items()):
            if isinstance(value, (dict, list, tuple)):
                text = dumps(value)
                if text not in numbers:
                    numbers[text] = len(numbers)
                    lines.append(f'{{"$define":{numbers[text]},"value":{text}}}')
                value = {"$ref": numbers[text]}
            packed[key] = value
        lines.append(dumps(packed))
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(("\n".join(lines) + "\n").encode("utf-8"))
    data = buf.getvalue()
    atomic_write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()


def _manifests(folders: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Run manifests (``runs/<run_id>.json``) of ``folders`` by run id; unreadable ones are skipped."""
    out: dict[str, dict[str, Any]] = {}
    for folder in folders:
        for path in sorted((folder / "runs").glob("*.json")) if (folder / "runs").is_dir() else []:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                out[str(data.get("run_id") or path.stem)] = data
    return out


def _manifest_label(manifest: dict[str, Any]) -> str | None:
    label = manifest.get("label")
    spec = manifest.get("spec")
    if label is None and isinstance(spec, dict):
        label = spec.get("label")
    return None if label is None else str(label)


def select_runs(
    rows: list[dict[str, Any]], manifests: dict[str, dict[str, Any]], *, run_ids: Sequence[str] = (),
    labels: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """Rows of the runs named by id or label.

    A run id selects the rows written with that ``run_id`` and the cells its manifest lists (a resumed run's
    manifest also lists the finished cells it skipped, whose rows carry the earlier run id). A label selects
    rows whose ``run_label`` is that label and the cells of every manifest with that ``label``.

    Raises
    ------
    ReportError
        If a run id or label matches no row; the message lists those present.
    """
    if not run_ids and not labels:
        return rows
    keep_ids: set[str] = set()
    keep_cells: set[str] = set()
    for rid in run_ids:
        cells = {str(c.get("cell_id")) for c in manifests.get(rid, {}).get("cells", []) if isinstance(c, dict)}
        if rid not in manifests and not any(r.get("run_id") == rid for r in rows):
            present = sorted({str(r.get("run_id")) for r in rows if r.get("run_id")} | set(manifests))
            raise ReportError(f"no rows of run id {rid!r}; run ids present: {', '.join(present) or 'none'}")
        keep_ids.add(rid)
        keep_cells |= cells
    keep_labels = set(labels)
    for label in labels:
        matched = [m for m in manifests.values() if _manifest_label(m) == label]
        if not matched and not any(r.get("run_label") == label for r in rows):
            present = sorted({str(r["run_label"]) for r in rows if r.get("run_label")}
                             | {lab for m in manifests.values() if (lab := _manifest_label(m))})
            raise ReportError(f"no rows of run label {label!r}; labels present: {', '.join(present) or 'none'}")
        for m in matched:
            keep_cells |= {str(c.get("cell_id")) for c in m.get("cells", []) if isinstance(c, dict)}
    return [r for r in rows if r.get("run_id") in keep_ids or str(r.get("cell_id")) in keep_cells
            or (r.get("run_label") is not None and r.get("run_label") in keep_labels)]


def load_source(
    source: str | Path, *, recursive: bool = False, run_ids: Sequence[str] = (), labels: Sequence[str] = (),
) -> Source:
    """The rows a report is asked about.

    ``source`` is a run folder (its own rows; all below it with ``recursive``), a report folder holding
    :data:`EXPORT_NAME` (and no rows of its own), or a ``.jsonl`` / ``.jsonl.gz`` file.

    Raises
    ------
    FileNotFoundError
        If ``source`` does not exist.
    ReportError
        If it holds no rows (naming nested run folders and ``--recursive`` when those hold some), a line is not a
        JSON row, or a run id / label matches nothing.
    """
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"result folder {source} does not exist")
    selection = {"recursive": recursive, "run_ids": list(run_ids), "labels": list(labels)}
    label = str(source)
    nested: list[Path] = []
    folders: list[Path] = []
    tagged: list[tuple[dict[str, Any], Path]] = []
    if source.is_file():
        files = [source]
        rows = read_export(source) if source.name.endswith(".gz") else _read_jsonl(source)
        tagged = [(r, source) for r in rows]
    else:
        files, nested = row_files(source, recursive=recursive)
        if not files and (source / EXPORT_NAME).is_file():
            files = [source / EXPORT_NAME]
            tagged = [(r, files[0]) for r in read_export(files[0])]
            label = _original_source(source) or label
        else:
            folders = [source] + ([Path(r) for r, _, _ in os.walk(source) if is_run_folder(Path(r))] if recursive else [])
            try:
                tagged = [(r, path) for path in files for r in _read_jsonl(path)]
            except ValueError as err:  # a damaged line: the message names file and line
                raise ReportError(str(err)) from None
    if not tagged:
        if nested:
            names = ", ".join(str(p.relative_to(source)) for p in nested[:5]) + (" ..." if len(nested) > 5 else "")
            raise ReportError(f"no result rows directly in {source}; it holds {len(nested)} run folder(s) of their "
                              f"own ({names}): report one of them, or pass --recursive to report all")
        raise ReportError(f"no result rows under {source} (expected cells/**/*.jsonl written by `run`)")
    rows = select_runs([r for r, _ in tagged], _manifests(folders), run_ids=run_ids, labels=labels)
    kept = {id(r) for r in rows}
    invalid = next((p for r, p in tagged if id(r) in kept and not _is_number(r.get("value"))), None)
    frame = pd.DataFrame(rows) if rows else pd.DataFrame()
    return Source(frame, rows, label, files, selection, nested, invalid)


def _original_source(report_dir: Path) -> str | None:
    """The source named in a report folder's manifest (where its export's rows first came from)."""
    try:
        data = json.loads((report_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return str(data["source"]) if isinstance(data, dict) and data.get("source") else None
