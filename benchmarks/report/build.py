"""Report assembly: check the request, build every table, write Markdown/LaTeX files, figures, the rows export
and a manifest into one report folder.

A report folder holds one report's output only: everything is written into a temporary sibling folder that then
replaces ``out`` (the old folder is removed after the swap), so no stale table or figure of an earlier report
survives. ``out`` is refused when it holds files a report never writes (e.g. a run folder's ``*.jsonl``).
The folder ships with :data:`~benchmarks.report.source.EXPORT_NAME`, the rows the report used, so
``report OUT --out OUT2`` regenerates the same tables.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks.report.rows import (
    NoTable,
    ReportError,
    _is_number,
    check_one_configuration,
    invalid_values,
    metric_choices,
    normalise_rows,
    select,
    split_configurations,
)
from benchmarks.report.significance import significance_table
from benchmarks.report.source import EXPORT_NAME, MANIFEST_NAME, Source, load_source, write_export
from benchmarks.report.table import Table, latex_document
from benchmarks.report.tables import ablation_table, efficiency_table, engine_table, main_table, tuning_table

#: File kinds a report folder may hold (what reports and pdflatex runs on ``tables.tex`` write).
REPORT_SUFFIXES = (".md", ".tex", ".png", ".pdf", ".json", ".gz", ".aux", ".log", ".out")


@dataclass
class Report:
    """What :func:`build_report` wrote."""

    out: Path
    tables: list[Table]
    files: list[Path]
    skipped: list[str]
    #: One-line warnings (e.g. rows left out for a missing / non-numeric ``value``).
    warnings: list[str] = field(default_factory=list)


def check_request(df: pd.DataFrame, *, metric: str, tie: str, protocols: Sequence[str] | None) -> None:
    """Refuse a ``protocols`` / ``metric`` / ``tie`` request the normalised rows cannot answer.

    Raises
    ------
    ReportError
        Naming the protocols, metrics or tie policies present.
    """
    acc = df[df["protocol"].isin(("unimodal", "paired"))]
    present = [p for p in ("unimodal", "paired") if p in set(acc["protocol"])]
    missing = [p for p in (protocols or ()) if p not in present]
    if missing:
        raise ReportError(f"no rows of protocol {', '.join(map(repr, missing))} in the run folder; protocols present: "
                          + (", ".join(present) or "none (only efficiency rows)"))
    if acc.empty:
        return
    if protocols:
        acc = acc[acc["protocol"].isin(protocols)]
    found = select(acc, metric=metric)
    if found.empty:
        raise ReportError(f"no rows of metric {metric!r}; metrics found: {', '.join(metric_choices(acc))}")
    if not (found["tie"] == tie).any():
        raise ReportError(f"no rows of metric {metric!r} with tie policy {tie!r}; tie policies found: "
                          + ", ".join(sorted(set(found["tie"]))))


def build_tables(
    rows: pd.DataFrame, *, headline: str = "mcmfh", metric: str = "map", tie: str = "aware",
    protocols: Sequence[str] | None = None, split_configs: bool = False,
) -> tuple[list[Table], list[str]]:
    """Every table the rows allow, per dataset and protocol; also the reasons a table was left out.

    With ``split_configs`` each configuration of a method is its own row
    (:func:`~benchmarks.report.rows.split_configurations`; what differs is noted under the main tables) instead
    of a refusal.

    Raises
    ------
    ReportError
        If a requested protocol, the metric or the tie policy has no rows (:func:`check_request`), or one
        (dataset, variant, bits) holds several configurations (:func:`check_one_configuration`).
    """
    df = normalise_rows(rows)
    split_notes: list[str] = []
    if split_configs:
        df, split_notes = split_configurations(df)
    check_request(df, metric=metric, tie=tie, protocols=protocols)
    check_one_configuration(df[df["protocol"] != "efficiency"])
    acc = df[df["protocol"].isin(("unimodal", "paired"))]
    protocols = list(protocols) if protocols else [p for p in ("unimodal", "paired") if p in set(acc["protocol"])]
    tables: list[Table] = []
    skipped: list[str] = []
    kw = {"metric": metric, "tie": tie}
    for dataset in sorted(set(df.loc[df["protocol"] != "efficiency", "dataset"].dropna())):
        for protocol in protocols:
            try:
                main = main_table(df, dataset=dataset, protocol=protocol, headline=headline, **kw)
            except ReportError as err:
                skipped.append(f"main table: {err}")
                continue
            main.notes += [n for n in split_notes if f" on {dataset} " in n]
            tables.append(main)
            for make, extra in ((ablation_table, {}), (significance_table, {}),
                                (significance_table, {"ablations": True})):
                try:
                    tables.append(make(df, dataset=dataset, protocol=protocol, headline=headline, **kw, **extra))
                except NoTable as why:
                    skipped.append(str(why))
        try:
            tables.append(efficiency_table(df, dataset=dataset, protocol=protocols[0] if protocols else "unimodal", **kw))
        except ReportError as err:
            skipped.append(f"efficiency table: {err}")
        try:
            tables.append(tuning_table(df, dataset=dataset))
        except NoTable as why:
            skipped.append(str(why))
    eng = engine_table(df)
    if eng is not None:
        tables.append(eng)
    return tables, skipped


def _blocker(out: Path) -> Path | None:
    return next((q for q in (out, *out.parents) if q.exists() and not q.is_dir()), None)


def check_out(out: Path) -> None:
    """Refuse an ``out`` that cannot become a report folder.

    Raises
    ------
    ReportError
        If ``out`` (or a folder above it) is an existing file, or ``out`` holds a file a report never writes
        (anything but :data:`REPORT_SUFFIXES`, or a hidden file): replacing it would lose that file.
    """
    blocker = _blocker(out)
    if blocker is not None:
        raise ReportError(f"output path {out} cannot be a folder: {blocker} is an existing file (choose another --out)")
    if not out.is_dir():
        return
    for path in sorted(out.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(out)
        if any(part.startswith(".") for part in rel.parts) or not path.name.endswith(REPORT_SUFFIXES):
            raise ReportError(f"--out {out} holds {rel}, which a report does not write; a report replaces its "
                              "folder as a whole: choose an empty folder or an earlier report's folder")


def _swap_in(tmp: Path, out: Path) -> None:
    """Make ``tmp`` the folder ``out`` (an existing ``out`` is moved aside, then removed)."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{secrets.token_hex(4)}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_report(
    run_dir: str | Path,
    out: str | Path,
    *,
    formats: Sequence[str] = ("md", "latex"),
    headline: str = "mcmfh",
    metric: str = "map",
    tie: str = "aware",
    protocols: Sequence[str] | None = None,
    figures: bool = True,
    study: str | None = None,
    storage: str | None = None,
    recursive: bool = False,
    run_ids: Sequence[str] = (),
    labels: Sequence[str] = (),
    split_configs: bool = False,
) -> Report:
    """Build tables (and figures) from the rows of ``run_dir`` (:func:`~benchmarks.report.source.load_source`);
    nothing is retrained.

    Writes into ``out`` (replacing it as a whole): ``tables.md`` (all tables) and ``<table>.md`` when ``"md"`` is
    in ``formats``; ``<table>.tex`` fragments plus a standalone ``tables.tex`` when ``"latex"`` is; figures as PNG
    and PDF under ``figures/`` (page and ``_col`` column width); with ``study``, that Optuna study's history and
    parameter importances; always :data:`EXPORT_NAME` (the rows used) and :data:`MANIFEST_NAME` (source,
    selection, options, files).

    Rows whose ``value`` is missing or not a number are left out and counted in :attr:`Report.warnings`.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` does not exist.
    ReportError
        If it holds no result rows (or only in nested run folders, without ``recursive``), a line is not a JSON
        row, a run id / label matches nothing, ``out`` cannot be replaced (:func:`check_out`), a request cannot be
        answered (:func:`build_tables`), or no table can be built.
    """
    from medhash_datasets.cache_io import atomic_write_json

    out = Path(out)
    check_out(out)
    src = load_source(run_dir, recursive=recursive, run_ids=run_ids, labels=labels)
    rows = src.rows
    notes = invalid_note(src)
    tables, skipped = build_tables(rows, headline=headline, metric=metric, tie=tie, protocols=protocols,
                                   split_configs=split_configs)
    if not tables:
        raise ReportError(f"no table could be built from {run_dir}: " + "; ".join(skipped))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.building-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        written = _write_all(tmp, src, tables, skipped, formats=formats, headline=headline, metric=metric, tie=tie,
                             protocols=protocols, figures=figures, study=study, storage=storage,
                             split_configs=split_configs)
        used = [r for r in src.records if _is_number(r.get("value"))]
        digest = write_export(tmp / EXPORT_NAME, used)
        written.append(tmp / EXPORT_NAME)
        manifest = {
            "source": src.label, "selection": src.selection, "rows": len(used), "export": EXPORT_NAME,
            "export_sha256": digest, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "options": {"formats": list(formats), "headline": headline, "metric": metric, "tie": tie,
                        "protocols": list(protocols) if protocols else None, "figures": figures,
                        "split_configs": split_configs, "study": study},
            "regenerate": f"python -m benchmarks report {out} --out {out}",
            "files": sorted(str(p.relative_to(tmp)) for p in [*written, tmp / MANIFEST_NAME]),
            "skipped": skipped, "warnings": notes,
        }
        atomic_write_json(tmp / MANIFEST_NAME, manifest)
        written.append(tmp / MANIFEST_NAME)
        _swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    files = [out / p.relative_to(tmp) for p in written]
    return Report(out=out, tables=tables, files=files, skipped=skipped, warnings=notes)


def invalid_note(src: Source) -> list[str]:
    n_bad = int(invalid_values(src.rows).sum()) if len(src.rows) else 0
    if not n_bad:
        return []
    where = f" (e.g. in {src.invalid_example})" if src.invalid_example else ""
    return [f"{n_bad} result row{'s' if n_bad != 1 else ''} without a numeric 'value' left out{where}"]


def _write_all(
    folder: Path, src: Source, tables: list[Table], skipped: list[str], *, formats: Sequence[str], headline: str,
    metric: str, tie: str, protocols: Sequence[str] | None, figures: bool, study: str | None, storage: str | None,
    split_configs: bool,
) -> list[Path]:
    """Write the tables and figures of one report into ``folder``; returns the paths written."""
    from medhash_datasets.cache_io import atomic_write_text

    files: list[Path] = []
    if "md" in formats:
        for t in tables:
            files.append(folder / f"{t.name}.md")
            atomic_write_text(files[-1], t.to_markdown())
        head = (f"# Report for {src.label}\n\nRows used: [`{EXPORT_NAME}`]({EXPORT_NAME}) (regenerate this report "
                f"with `python -m benchmarks report <this folder> --out <folder>`).\n\n")
        files.append(folder / "tables.md")
        atomic_write_text(files[-1], head + "\n".join(t.to_markdown() for t in tables))
    if "latex" in formats:
        for t in tables:
            files.append(folder / f"{t.name}.tex")
            atomic_write_text(files[-1], t.to_latex())
        files.append(folder / "tables.tex")
        atomic_write_text(files[-1], latex_document(tables))
    if figures or study:
        from benchmarks.report import figures as figs

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if figures:
                df = normalise_rows(src.rows)
                df = split_configurations(df)[0] if split_configs else df
                made, why = figs.all_figures(df, folder / "figures", headline=headline, metric=metric, tie=tie,
                                             protocols=protocols)
                files.extend(made)
                skipped.extend(why)
            if study:
                made, why = figs.study_figures(study, storage, folder / "figures")
                files.extend(made)
                skipped.extend(why)
    return files
