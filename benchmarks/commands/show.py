"""``show``: print the results tables of a run folder (or a report's rows) without writing any file."""

from __future__ import annotations

import argparse
import sys

from benchmarks.cli import UsageError
from benchmarks.commands.report import add_source_arguments, add_table_arguments, check_run_dir

NAME = "show"
HELP = "print the results tables of a run folder (main tables by default); writes nothing"
#: Table kinds ``--tables`` can ask for (file-name prefixes of :func:`benchmarks.report.build.build_tables`).
KINDS = ("main", "ablation", "significance", "efficiency", "tuning", "engines")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m benchmarks show``."""
    add_source_arguments(parser)
    add_table_arguments(parser)
    parser.add_argument("--tables", nargs="+", choices=(*KINDS, "all"), default=["main", "tuning"],
                        help="table kinds to print (default: main tuning)")


def main(args: argparse.Namespace) -> int:
    """Print the chosen tables as Markdown to stdout; warnings go to stderr. Nothing is written to disk.

    Raises
    ------
    UsageError
        As ``report``: no rows, an unknown run id / label, a metric / tie / protocol without rows, or mixed
        configurations (without ``--split-configs``).
    """
    from benchmarks.report.build import build_tables, invalid_note
    from benchmarks.report.rows import ReportError
    from benchmarks.report.source import load_source

    run_dir = check_run_dir(args.run_dir)
    kinds = KINDS if "all" in args.tables else tuple(args.tables)
    try:
        src = load_source(run_dir, recursive=args.recursive, run_ids=args.run_ids, labels=args.labels)
        tables, skipped = build_tables(src.rows, headline=args.headline, metric=args.metric, tie=args.tie,
                                       protocols=args.protocols, split_configs=args.split_configs)
    except ReportError as err:
        raise UsageError(" ".join(str(err).split())) from None
    for warning in invalid_note(src):
        print(f"warning: {warning}", file=sys.stderr)
    if src.nested:
        print(f"note: {len(src.nested)} run folder(s) nested in {run_dir} not shown (--recursive to include)")
    shown = [t for t in tables if t.name.split("_", 1)[0] in kinds]
    for table in shown:
        print(table.to_markdown())
    if not shown:
        print(f"no {'/'.join(kinds)} table for these rows")
    for reason in skipped:
        if reason.split(" ", 1)[0] in kinds:
            print(f"note: {reason}")
    return 0
