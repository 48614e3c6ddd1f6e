"""Grid files for ``run --config FILE``: a TOML file of ``run``'s flags, or a run manifest to replay.

A TOML grid names ``run``'s long flags without the dashes (``-`` or ``_`` both work)::

    methods = ["mcmfh", "ucmfh", "cca-itq"]
    datasets = ["medpix"]
    bits = [16, 32, 64]
    seeds = [0, 1, 2]
    data_root = "../shared/data"
    tune = 20
    export = ["codes"]
    [param]            # --param KEY=VALUE (applied to each method that has the field)
    epochs = 50
    [dataset_option]   # --dataset-option KEY=VALUE
    append_findings = true

A run manifest (``OUT/runs/RUN_ID.json``, written when a run starts and updated as cells finish, so an
interrupted run has one too) holds the flags of the run under ``"spec"."command"``; ``run --config`` on it replays
that run (finished cells are skipped). Flags given on the command line win over the file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.cli import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

#: Flags whose value is a list of ``KEY=VALUE`` strings on the command line and a table in a grid file.
KEY_VALUE_FLAGS = ("param", "dataset_option", "encoder_option")


def _flag_defaults(add_arguments: Callable[[argparse.ArgumentParser], None]) -> dict[str, Any]:
    probe = argparse.ArgumentParser(add_help=False)
    add_arguments(probe)
    defaults = vars(probe.parse_args([]))
    defaults.pop("config", None)
    return defaults


def command_record(args: argparse.Namespace, add_arguments: Callable[[argparse.ArgumentParser], None]) -> dict[str, Any]:
    """The flags of a ``run`` invocation (those ``add_arguments`` declares) as plain JSON values: what a run
    manifest stores so that ``run --config MANIFEST`` replays the run."""
    flags = _flag_defaults(add_arguments)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k in flags}


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"--config {path}: cannot read ({err.strerror or err})") from None
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"--config {path}: not JSON (line {err.lineno}: {err.msg})") from None
        command = data.get("spec", {}).get("command") if isinstance(data, dict) else None
        if not isinstance(command, dict) or not command:
            raise UsageError(f"--config {path}: a run manifest needs spec.command (the run's flags, written by run "
                             "since this version); give a TOML grid file or a newer manifest")
        return command
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise UsageError(f"--config {path}: not TOML ({err})") from None


def apply_config(args: argparse.Namespace, add_arguments: Callable[[argparse.ArgumentParser], None]) -> argparse.Namespace:
    """Fill the flags of ``args`` left at their defaults from ``args.config`` (TOML grid or run manifest).

    Raises
    ------
    UsageError
        Unreadable or malformed file, or a key that is not a flag of the command (named, with the valid keys).
    """
    if not getattr(args, "config", None):
        return args
    path = Path(args.config)
    data = _read(path)
    defaults = _flag_defaults(add_arguments)
    out = argparse.Namespace(**vars(args))
    for raw_key, value in data.items():
        key = raw_key.replace("-", "_")
        if key not in defaults:
            raise UsageError(f"--config {path}: unknown key {raw_key!r}; valid keys: {', '.join(sorted(defaults))}")
        if key in KEY_VALUE_FLAGS and isinstance(value, dict):
            value = [f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in value.items()]
        if getattr(out, key) == defaults[key]:  # the command line did not set it: the file decides
            setattr(out, key, value)
    return out
