"""``report``: paper tables (Markdown / LaTeX) and figures (PNG / PDF) from a run folder's saved rows.

The report folder is written as a whole (a new report replaces an earlier one, never mixes with it) and ships
with the rows it used (``rows.jsonl.gz``): ``report reports/medpix --out reports/medpix`` regenerates it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.cli import UsageError

NAME = "report"
HELP = "build tables (Markdown, LaTeX booktabs) and figures (PNG, PDF) from saved result rows; no retraining"


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """RUN_DIR and the row selection shared by ``report`` and ``show``."""
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="run folder written by `run` / `efficiency` (its own rows only, not nested run folders), "
                             "a report folder (reads its rows.jsonl.gz) or a rows file")
    parser.add_argument("--recursive", action="store_true",
                        help="also read the run folders nested below RUN_DIR (default: RUN_DIR's own rows only)")
    parser.add_argument("--run-id", dest="run_ids", nargs="+", default=[], metavar="ID",
                        help="only the rows of these runs (RUN_DIR/runs/<ID>.json; a resumed run includes the "
                             "cells it skipped)")
    parser.add_argument("--label", dest="labels", nargs="+", default=[], metavar="LABEL",
                        help="only the rows of runs with this label (row field run_label or the run manifest's label)")


def add_table_arguments(parser: argparse.ArgumentParser) -> None:
    """What the tables show, shared by ``report`` and ``show``."""
    parser.add_argument("--headline", default="mcmfh", help="method compared with every other one (default mcmfh)")
    parser.add_argument("--metric", default="map", help="accuracy metric of the tables, e.g. map, map@50 (default map)")
    parser.add_argument("--tie", choices=("aware", "index"), default="aware", help="tie policy (default aware)")
    parser.add_argument("--protocols", nargs="+", choices=("unimodal", "paired"), default=None,
                        help="protocols to report (default: every protocol in the rows)")
    parser.add_argument("--split-configs", action="store_true",
                        help="report each configuration of a method as its own row ('ddbh (tuned)', "
                             "'ddbh (config 2)') instead of refusing a folder that mixes them")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m benchmarks report``."""
    add_source_arguments(parser)
    parser.add_argument("--format", nargs="+", choices=("md", "latex"), default=["md", "latex"],
                        help="table formats (default: md latex)")
    parser.add_argument("--out", default=None,
                        help="report folder, replaced as a whole (default reports/<RUN_DIR name>)")
    add_table_arguments(parser)
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument("--study", default=None, help="also plot this Optuna study's history and importances")
    parser.add_argument("--storage", default=None, help="the study's storage (default results/optuna/journal.log)")


def check_run_dir(path: str) -> Path:
    """RUN_DIR as a path.

    Raises
    ------
    UsageError
        If it is neither a folder nor a rows file (``.jsonl`` / ``.jsonl.gz``).
    """
    run_dir = Path(path)
    if not (run_dir.is_dir() or (run_dir.is_file() and run_dir.name.endswith((".jsonl", ".jsonl.gz")))):
        raise UsageError(f"RUN_DIR {run_dir} is not a folder")
    return run_dir


def main(args: argparse.Namespace) -> int:
    """Build the report and print the main tables; warnings (rows left out) go to stderr as one line each.

    Raises
    ------
    UsageError
        If RUN_DIR is not a folder or holds no rows (of the selected runs), ``--out`` is (below) an existing file or
        holds files a report does not write, the requested metric / tie / protocols have no rows (the message
        lists those present), or rows of one method and code length come from several configurations (the
        message names the keys that differ).
    """
    from benchmarks.report.build import build_report
    from benchmarks.report.rows import ReportError

    run_dir = check_run_dir(args.run_dir)
    out = Path(args.out) if args.out else Path("reports") / (run_dir.resolve().name or "report")
    try:
        report = build_report(run_dir, out, formats=args.format, headline=args.headline, metric=args.metric,
                              tie=args.tie, protocols=args.protocols, figures=not args.no_figures,
                              study=args.study, storage=args.storage, recursive=args.recursive,
                              run_ids=args.run_ids, labels=args.labels, split_configs=args.split_configs)
    except ReportError as err:
        raise UsageError(" ".join(str(err).split())) from None
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for table in report.tables:
        if table.name.startswith("main_"):
            print(table.to_markdown())
    for reason in report.skipped:
        print(f"note: {reason}")
    print(f"wrote {len(report.files)} files under {report.out}")
    return 0
