"""A small name → factory registry shared by datasets, encoders, methods and search engines.

Modelled on timm's ``@register_model`` / ``list_models("pattern*")``: a plugin registers itself with a
decorator, the CLI resolves strings, and every choice is a plain string recorded in results.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """Raised for an unknown or duplicate registry name; the message is one readable line."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class Registry(Generic[T]):
    """Map unique names to registered objects (classes or factory functions).

    Parameters
    ----------
    kind : str
        What the registry holds ("method", "dataset", "encoder", "engine"); used in error messages.

    Examples
    --------
    >>> METHODS = Registry("method")
    >>> @METHODS.register("random")
    ... class RandomCodes: ...
    >>> METHODS.get("random") is RandomCodes
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._tags: dict[str, frozenset[str]] = {}

    def register(self, name: str, *, tags: tuple[str, ...] = ()) -> Callable[[T], T]:
        """Decorator registering ``obj`` under ``name``.

        Raises
        ------
        RegistryError
            If ``name`` is already registered (two plugins must never shadow each other silently).
        """

        def decorator(obj: T) -> T:
            self.add(name, obj, tags=tags)
            return obj

        return decorator

    def add(self, name: str, obj: T, *, tags: tuple[str, ...] = ()) -> None:
        """Register ``obj`` under ``name`` (non-decorator form); duplicate names raise ``RegistryError``."""
        if not name or name != name.strip() or " " in name:
            raise RegistryError(f"invalid {self.kind} name {name!r}: use a non-empty name without spaces")
        if name in self._items:
            raise RegistryError(f"duplicate {self.kind} name {name!r}: already registered by {self._items[name]!r}")
        self._items[name] = obj
        self._tags[name] = frozenset(tags)

    def get(self, name: str) -> T:
        """Return the object registered as ``name``.

        Raises
        ------
        RegistryError
            If ``name`` is unknown; the message suggests the closest names (``difflib``, case-insensitive) and
            lists every valid name.
        """
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none registered)"
            lowered = {n.lower(): n for n in self._items}
            close = [lowered[c] for c in difflib.get_close_matches(str(name).lower(), list(lowered), n=3, cutoff=0.75)]
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RegistryError(f"unknown {self.kind} {name!r}{hint}; valid {self.kind}s: {valid}") from None

    def names(self, pattern: str = "*", *, tag: str | None = None) -> list[str]:
        """Sorted registered names matching the shell-style ``pattern`` (and carrying ``tag`` if given)."""
        return sorted(
            n for n in self._items if fnmatch.fnmatchcase(n, pattern) and (tag is None or tag in self._tags[n])
        )

    def tags(self, name: str) -> frozenset[str]:
        """Tags given at registration (e.g. ``"ablation"``, ``"baseline"``)."""
        self.get(name)
        return self._tags[name]

    def resolve(self, requested: list[str], *, all_excludes_tag: str | None = None) -> list[str]:
        """Expand a user's list of names: ``all`` → every name (minus ``all_excludes_tag`` ones), wildcards
        → matching names; order kept, duplicates removed.

        Raises
        ------
        RegistryError
            For a name or pattern that matches nothing; the message lists the valid names.
        """
        out: list[str] = []
        for item in requested:
            if item == "all":
                found = [n for n in self.names() if all_excludes_tag is None or all_excludes_tag not in self._tags[n]]
            elif any(ch in item for ch in "*?["):
                found = self.names(item)
                if not found:
                    self.get(item)  # raises with the valid names
            else:
                self.get(item)
                found = [item]
            out.extend(n for n in found if n not in out)
        return out

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)


#: The dataset registry. Loaders register here; import :mod:`medhash_datasets.loaders` (not this module) to get
#: it filled with every loader of the project.
DATASETS: Registry = Registry("dataset")
