"""Argument helpers shared by the sub-commands (not a command itself: the leading underscore hides it)."""

from __future__ import annotations

import argparse

from benchmarks.cli import UsageError


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}`` (keys and values stripped).

    Raises
    ------
    UsageError
        For an item without ``=`` or with an empty key, or a key given twice (names the flag).
    """
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"{flag} expects KEY=VALUE, got {item!r}")
        if key in out:
            raise UsageError(f"{flag} {key} given twice")
        out[key] = value.strip()
    return out

#: Loader keywords that have their own flags (``--dataset-option KEY=...`` is refused for them).
_RESERVED_LOADER_KEYS = ("label_scheme", "seed")


def loader_options(items: list[str] | None, *, seed_flag: str = "--dataset-seed") -> dict[str, str]:
    """Parse ``--dataset-option KEY=VALUE`` items, refusing the loader keywords that have their own flags.

    Parameters
    ----------
    items : list of str or None
        Raw ``KEY=VALUE`` strings.
    seed_flag : str
        The command's flag for the loader seed, named in the error message.

    Raises
    ------
    UsageError
        Malformed item, a key given twice, or ``label_scheme``/``seed`` (use ``--label-scheme`` / ``seed_flag``).
    """
    options = parse_key_values(items, "--dataset-option")
    flags = {"label_scheme": "--label-scheme", "seed": seed_flag}
    for key in _RESERVED_LOADER_KEYS:
        if key in options:
            raise UsageError(f"--dataset-option {key}=... is not a loader option; use {flags[key]} {options[key] or 'VALUE'}")
    return options


def nonnegative_int(text: str) -> int:
    """``argparse`` type: an integer >= 0 (seeds)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value
