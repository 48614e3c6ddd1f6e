"""``list``: registered methods, datasets, encoders and search engines (wildcards accepted)."""

from __future__ import annotations

import argparse

NAME = "list"
HELP = "list registered methods, datasets, encoders and search engines"

KINDS = ("methods", "datasets", "encoders", "engines")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", nargs="?", choices=KINDS + ("all",), default="all", help="what to list (default: all)")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style wildcard, e.g. 'mcmfh*'")


def _registries() -> dict[str, object]:
    from benchmarks.search.registry import ENGINES
    from medhash_datasets.encoders import ENCODERS
    from medhash_datasets.loaders import DATASETS
    from methods import METHODS

    return {"methods": METHODS, "datasets": DATASETS, "encoders": ENCODERS, "engines": ENGINES}


def main(args: argparse.Namespace) -> int:
    regs = _registries()
    for kind in KINDS if args.kind == "all" else (args.kind,):
        reg = regs[kind]
        names = reg.names(args.pattern)  # type: ignore[attr-defined]
        print(f"{kind}:")
        for name in names:
            tags = sorted(reg.tags(name))  # type: ignore[attr-defined]
            obj = reg.get(name)  # type: ignore[attr-defined]
            desc = getattr(obj, "description", "") or (getattr(obj, "__doc__", "") or "").strip().split("\n")[0]
            print(f"  {name:<22} {('[' + ', '.join(tags) + '] ') if tags else ''}{desc}")
        if not names:
            print("  (none match)")
    return 0
