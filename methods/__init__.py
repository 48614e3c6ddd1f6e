"""Hashing methods and reference baselines, in a registry (second stage of the one-way data flow).

Register a method class with :func:`register_method`; an ablation or other variant is a registered name
that maps to the same class with config overrides (:func:`register_variant`), never a copied file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from medhash_datasets.registry import Registry, RegistryError
from methods.base import ConfigError, EncodedBatch, HashingMethod, MethodConfig


@dataclass(frozen=True)
class MethodEntry:
    """What a registry name stands for: a method class plus config overrides (empty for the default)."""

    cls: type[HashingMethod]
    overrides: dict[str, Any] = field(default_factory=dict)
    base: str | None = None  # name of the method this is a variant of
    description: str = ""


METHODS: Registry[MethodEntry] = Registry("method")


def register_method(name: str, *, tags: tuple[str, ...] = (), description: str = ""):
    """Class decorator: register a :class:`HashingMethod` subclass under ``name``."""

    def decorator(cls: type[HashingMethod]) -> type[HashingMethod]:
        METHODS.add(name, MethodEntry(cls, {}, None, description or (cls.__doc__ or "").strip().split("\n")[0]), tags=tags)
        return cls

    return decorator


def register_variant(name: str, base: str, *, description: str, tags: tuple[str, ...] = ("ablation",), **overrides: Any) -> None:
    """Register ``name`` as method ``base`` with config ``overrides`` (e.g. an ablation).

    Raises
    ------
    RegistryError
        If ``base`` is unknown or ``name`` is taken.
    ConfigError
        If an override is not a field of the base method's config.
    """
    entry = METHODS.get(base)
    entry.cls.config_class.from_dict({**entry.overrides, **overrides})  # validates the field names
    METHODS.add(name, MethodEntry(entry.cls, {**entry.overrides, **overrides}, base, description), tags=tags)


def method_config(name: str, params: dict[str, Any] | None = None) -> MethodConfig:
    """The validated config of registry entry ``name`` with user ``params`` applied on top.

    Raises
    ------
    ConfigError
        Unknown or out-of-range parameter, or a parameter that would undo a setting the variant ``name`` is
        defined by (``mcmfh-no-gate`` with ``gate_weight=0.05`` is full MCMFH, not the ablation): the message
        names the setting and the base method to run instead.
    """
    entry = METHODS.get(name)
    params = dict(params or {})
    undone = {k: v for k, v in params.items() if k in entry.overrides and v != entry.overrides[k]}
    if undone:
        settings = ", ".join(f"{k}={entry.overrides[k]!r} (given {v!r})" for k, v in sorted(undone.items()))
        raise ConfigError(f"{name} is {entry.base} with {settings}: a parameter cannot undo the setting that defines "
                          f"the variant; run {entry.base} to choose it")
    return entry.cls.config_class.from_dict({**entry.overrides, **params})


def variant_search_space(name: str, trial: Any) -> dict[str, Any]:
    """Config overrides registry entry ``name`` is tuned over: its class's ``search_space(trial)`` without the
    settings the variant fixes (tuning ``mcmfh-no-gate`` never samples ``gate_weight``; its ablation stays one).

    Parameters
    ----------
    name : str
        Registry name.
    trial : optuna.trial.Trial
        The trial to suggest on (a fixed setting may still be suggested on it, but never reaches the method).
    """
    entry = METHODS.get(name)
    return {k: v for k, v in (entry.cls.search_space(trial) or {}).items() if k not in entry.overrides}


def create_method(name: str, params: dict[str, Any] | None = None, *, device: str = "cpu") -> HashingMethod:
    """Instantiate registry entry ``name`` (variant overrides, then ``params``) on ``device``.

    Raises
    ------
    RegistryError
        Unknown name (the message lists the valid names).
    ConfigError
        Unknown or out-of-range parameter.
    """
    entry = METHODS.get(name)
    return entry.cls(method_config(name, params), device=device)


#: How reports and figures name a registry entry (registry name → display name, as the papers write it).
DISPLAY_NAMES: dict[str, str] = {
    "random": "Random", "cca-itq": "CCA-ITQ", "real-valued": "Real-valued", "ddbh": "DDBH", "dscph": "DScPH",
    "dscph-raw-ip": "DScPH (raw IP)",
    "ucmfh": "UCMFH", "mcmfh": "MCMFH", "mcmfh-no-moe": "MCMFH w/o MoE", "mcmfh-no-dv": "MCMFH w/o DV-MLP",
    "mcmfh-no-gate": "MCMFH w/o gating loss", "mcmfh-no-stage1": "MCMFH w/o stage 1",
}


def display_name(name: str) -> str:
    """Display name of registry entry ``name`` (``"mcmfh"`` → ``"MCMFH"``); other names are returned unchanged."""
    return DISPLAY_NAMES.get(name, name)


# Importing the modules registers the methods (order = listing order of variants' bases).
from methods import baselines, ddbh, dscph, mcmfh, ucmfh  # noqa: E402,F401

__all__ = [
    "DISPLAY_NAMES",
    "METHODS",
    "ConfigError",
    "EncodedBatch",
    "HashingMethod",
    "MethodConfig",
    "MethodEntry",
    "RegistryError",
    "create_method",
    "display_name",
    "method_config",
    "register_method",
    "register_variant",
    "variant_search_space",
]
