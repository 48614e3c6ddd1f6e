"""``report``: paper tables (Markdown / LaTeX) and figures (PNG / PDF) from a run folder's saved rows."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.cli import UsageError

NAME = "report"
HELP = "build tables (Markdown, LaTeX booktabs) and figures (PNG, PDF) from saved result rows; no retraining"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m benchmarks report``."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="folder written by `run` / `efficiency` (holds cells/)")
    parser.add_argument("--format", nargs="+", choices=("md", "latex"), default=["md", "latex"],
                        help="table formats (default: md latex)")
    parser.add_argument("--out", default=None, help="output folder (default reports/<RUN_DIR name>)")
    parser.add_argument("--headline", default="mcmfh", help="method compared with every other one (default mcmfh)")
    parser.add_argument("--metric", default="map", help="accuracy metric of the tables, e.g. map, map@50 (default map)")
    parser.add_argument("--tie", choices=("aware", "index"), default="aware", help="tie policy (default aware)")
    parser.add_argument("--protocols", nargs="+", choices=("unimodal", "paired"), default=None,
                        help="protocols to report (default: every protocol in the rows)")
    parser.add_argument("--no-figures", action="store_true", help="tables only")
    parser.add_argument("--study", default=None, help="also plot this Optuna study's history and importances")
    parser.add_argument("--storage", default=None, help="the study's storage (default results/optuna/journal.log)")


def main(args: argparse.Namespace) -> int:
    """Build the report and print the main tables; warnings (rows left out) go to stderr as one line each.

    Raises
    ------
    UsageError
        If RUN_DIR is not a folder or holds no rows, ``--out`` is (below) an existing file, the requested
        metric / tie / protocols have no rows (the message lists those present), or rows of one method and code
        length come from several configurations.
    """
    from benchmarks.report.build import build_report
    from benchmarks.report.rows import ReportError

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"RUN_DIR {run_dir} is not a folder")
    out = Path(args.out) if args.out else Path("reports") / (run_dir.resolve().name or "report")
    try:
        report = build_report(run_dir, out, formats=args.format, headline=args.headline, metric=args.metric,
                              tie=args.tie, protocols=args.protocols, figures=not args.no_figures,
                              study=args.study, storage=args.storage)
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
