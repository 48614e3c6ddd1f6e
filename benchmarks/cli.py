"""Command-line interface: ``python -m benchmarks {run,list,evaluate,extract,efficiency,tune,report,data}``.

Each sub-command lives in its own module under :mod:`benchmarks.commands`; this file only discovers them,
parses the arguments, and turns user errors into one-line messages (exit code 2) instead of tracebacks.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence

import benchmarks.commands as commands_pkg


class UsageError(Exception):
    """A user error (bad flag value, unwritable folder, ...); printed as ``error: <message>``, exit 2."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    """Exception types shown as one-line errors. ``methods`` (which imports torch, seconds) is only consulted
    when it was imported: a ``ConfigError`` cannot have been raised otherwise, and a typo stays instant."""
    from medhash_datasets.base import DatasetError
    from medhash_datasets.registry import RegistryError

    types: tuple[type[BaseException], ...] = (UsageError, RegistryError, DatasetError, FileNotFoundError, PermissionError)
    if "methods.base" in sys.modules:
        types += (sys.modules["methods.base"].ConfigError,)
    return types


class OneLineErrorParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``error: ...``, exit 2) without the usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The full parser with one sub-parser per module in :mod:`benchmarks.commands`."""
    parser = OneLineErrorParser(
        prog="python -m benchmarks",
        description="Benchmark harness for medical cross-modal hashing retrieval.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=OneLineErrorParser)
    for info in sorted(pkgutil.iter_modules(commands_pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"benchmarks.commands.{info.name}")
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda`` for commands that train or encode (auto = CUDA when available)."""
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="compute device (default: auto)")


def resolve_device(name: str) -> str:
    """Map ``auto`` to ``cuda`` when available else ``cpu``.

    Raises
    ------
    UsageError
        If ``cuda`` is asked for but not available.
    """
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda requested but no CUDA device is available")
    return name


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._main(args) or 0)
    except _user_error_types() as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
