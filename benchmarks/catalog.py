"""Registered method names read from the source of ``methods/`` (no import of torch), for fast name checks.

Importing :mod:`methods` imports torch (several seconds, more on a busy machine). Commands check the method
names a user typed against :func:`method_names` first, so a typo is a one-line error (with "did you mean")
at once, before anything heavy is imported. The catalogue is read from the ``register_method("name",
tags=(...))`` decorators and ``register_variant("name", "base", ...)`` calls of every module of the package;
``tests/test_catalog.py`` checks it equals the real registry.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

from medhash_datasets.registry import Registry

#: Tags of a ``register_variant`` call that names none (its default in :func:`methods.register_variant`).
VARIANT_DEFAULT_TAGS = ("ablation",)


def _literal_tags(call: ast.Call, default: tuple[str, ...]) -> tuple[str, ...]:
    for kw in call.keywords:
        if kw.arg == "tags":
            return tuple(ast.literal_eval(kw.value))
    return default


@functools.cache
def method_names() -> Registry[None]:
    """A :class:`~medhash_datasets.registry.Registry` holding every registered method name and its tags
    (objects are ``None``): the same ``resolve``/``get`` behaviour and error messages as ``methods.METHODS``.

    Raises
    ------
    RuntimeError
        If the ``methods`` package cannot be located.
    """
    spec = importlib.util.find_spec("methods")  # locates the package without executing it
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("cannot locate the methods package")
    registry: Registry[None] = Registry("method")
    for path in sorted(Path(spec.submodule_search_locations[0]).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args):
                continue
            first = node.args[0]
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                continue
            if node.func.id == "register_method":
                registry.add(first.value, None, tags=_literal_tags(node, ()))
            elif node.func.id == "register_variant":
                registry.add(first.value, None, tags=_literal_tags(node, VARIANT_DEFAULT_TAGS))
    return registry


def resolve_methods(requested: list[str]) -> list[str]:
    """Method names for ``--methods`` (wildcards, ``all`` = every method not tagged ``ablation``), checked
    without importing torch.

    Raises
    ------
    RegistryError
        For an unknown name (with the closest names and the list of valid ones).
    """
    return method_names().resolve(requested, all_excludes_tag="ablation")
