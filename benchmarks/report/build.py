"""Report assembly: check the request, build every table, write Markdown/LaTeX files and figures."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks.report.rows import (
    ReportError,
    _is_number,
    check_one_configuration,
    invalid_values,
    metric_choices,
    normalise_rows,
    select,
)
from benchmarks.report.significance import significance_table
from benchmarks.report.table import Table, latex_document
from benchmarks.report.tables import ablation_table, efficiency_table, engine_table, main_table


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
    protocols: Sequence[str] | None = None,
) -> tuple[list[Table], list[str]]:
    """Every table the rows allow, per dataset and protocol; also the reasons a table was left out.

    Raises
    ------
    ReportError
        If a requested protocol, the metric or the tie policy has no rows (:func:`check_request`), or one
        (dataset, variant, bits) holds several configurations (:func:`check_one_configuration`).
    """
    df = normalise_rows(rows)
    check_request(df, metric=metric, tie=tie, protocols=protocols)
    check_one_configuration(df[df["protocol"] != "efficiency"])
    acc = df[df["protocol"].isin(("unimodal", "paired"))]
    protocols = list(protocols) if protocols else [p for p in ("unimodal", "paired") if p in set(acc["protocol"])]
    tables: list[Table] = []
    skipped: list[str] = []
    for dataset in sorted(set(df.loc[df["protocol"] != "efficiency", "dataset"].dropna())):
        for protocol in protocols:
            try:
                tables.append(main_table(df, dataset=dataset, protocol=protocol, metric=metric, tie=tie, headline=headline))
            except ReportError as err:
                skipped.append(f"main table: {err}")
                continue
            abl = ablation_table(df, dataset=dataset, protocol=protocol, metric=metric, tie=tie, headline=headline)
            if abl is None:
                skipped.append(f"ablation table {dataset}/{protocol}: no variants of {headline!r} in the rows")
            else:
                tables.append(abl)
            sig = significance_table(df, dataset=dataset, protocol=protocol, metric=metric, tie=tie, headline=headline)
            if sig is None:
                skipped.append(f"significance {dataset}/{protocol}: no rows of headline method {headline!r}")
            else:
                tables.append(sig)
        try:
            tables.append(efficiency_table(df, dataset=dataset, protocol=protocols[0] if protocols else "unimodal",
                                           metric=metric, tie=tie))
        except ReportError as err:
            skipped.append(f"efficiency table: {err}")
    eng = engine_table(df)
    if eng is not None:
        tables.append(eng)
    return tables, skipped


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
) -> Report:
    """Build tables (and figures) from the rows saved under ``run_dir``; nothing is retrained.

    Writes ``out/tables.md`` (all tables) and ``out/<table>.md`` when ``"md"`` is in ``formats``;
    ``out/<table>.tex`` fragments plus a standalone ``out/tables.tex`` when ``"latex"`` is; figures as PNG and
    PDF under ``out/figures/``; with ``study``, that Optuna study's history and parameter importances.

    Rows whose ``value`` is missing or not a number are left out and counted in :attr:`Report.warnings`.

    Raises
    ------
    FileNotFoundError
        If ``run_dir`` does not exist.
    ReportError
        If it holds no result rows, a line is not a JSON row, ``out`` (or a folder above it) is an existing file,
        a request cannot be answered (:func:`build_tables`), or no table can be built.
    """
    from benchmarks.results import load_rows
    from medhash_datasets.cache_io import atomic_write_text

    out = Path(out)
    blocker = next((q for q in (out, *out.parents) if q.exists() and not q.is_dir()), None)
    if blocker is not None:
        raise ReportError(f"output path {out} cannot be a folder: {blocker} is an existing file (choose another --out)")
    try:
        rows = load_rows(Path(run_dir))
    except ValueError as err:  # a damaged line: the message names file and line
        raise ReportError(str(err)) from None
    if rows.empty:
        raise ReportError(f"no result rows under {run_dir} (expected cells/**/*.jsonl written by `run`)")
    notes: list[str] = []
    n_bad = int(invalid_values(rows).sum())
    if n_bad:
        example = _file_with_invalid_value(Path(run_dir))
        notes.append(f"{n_bad} result row{'s' if n_bad != 1 else ''} without a numeric 'value' left out"
                     + (f" (e.g. in {example})" if example else ""))
    tables, skipped = build_tables(rows, headline=headline, metric=metric, tie=tie, protocols=protocols)
    if not tables:
        raise ReportError(f"no table could be built from {run_dir}: " + "; ".join(skipped))
    files: list[Path] = []
    if "md" in formats:
        for t in tables:
            files.append(out / f"{t.name}.md")
            atomic_write_text(files[-1], t.to_markdown())
        files.append(out / "tables.md")
        atomic_write_text(files[-1], f"# Report for {Path(run_dir)}\n\n" + "\n".join(t.to_markdown() for t in tables))
    if "latex" in formats:
        for t in tables:
            files.append(out / f"{t.name}.tex")
            atomic_write_text(files[-1], t.to_latex())
        files.append(out / "tables.tex")
        atomic_write_text(files[-1], latex_document(tables))
    if figures or study:
        from benchmarks.report import figures as figs

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if figures:
                made, why = figs.all_figures(normalise_rows(rows), out / "figures", headline=headline, metric=metric,
                                             tie=tie, protocols=protocols)
                files.extend(made)
                skipped.extend(why)
            if study:
                made, why = figs.study_figures(study, storage, out / "figures")
                files.extend(made)
                skipped.extend(why)
    return Report(out=out, tables=tables, files=files, skipped=skipped, warnings=notes)


def _file_with_invalid_value(run_dir: Path) -> Path | None:
    """The first ``*.jsonl`` file under ``run_dir`` holding a row without a numeric ``value`` (or ``None``)."""
    for path in sorted(run_dir.rglob("*.jsonl")):
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if not _is_number(row.get("value") if isinstance(row, dict) else None):
                    return path
    return None
