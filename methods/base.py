"""The interface every hashing method implements (scikit-learn style: config in, ``fit``, ``encode``).

A method lives in one file of ``methods/`` with its config dataclass and its Optuna search space beside it,
and registers with :func:`methods.register_method`. Model selection may use the validation split only.
"""

from __future__ import annotations

import dataclasses
import io
import types
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from medhash_datasets.base import FeatureSplit


class ConfigError(ValueError):
    """A method config value is out of range; the message names the field and the allowed range."""


@dataclass
class MethodConfig:
    """Base class of method configs: a dataclass of hyper-parameters with defaults.

    Subclasses add fields and extend :meth:`validate`. ``epochs``/``batch_size`` style fields are
    plain ints; every field is JSON-serialisable so it can be hashed and recorded in results.
    """

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a value out of range (override and call ``super().validate()``)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view, recorded in results and hashed into the cell key."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MethodConfig:
        """Build a config from ``values`` with type checks against the field annotations.

        Ints are accepted for float fields (converted); bools are never accepted as numbers.

        Raises
        ------
        ConfigError
            For an unknown key (listing the valid fields), a value of the wrong type (naming the field, the
            expected type and the value), or an out-of-range value (:meth:`validate`).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__}: unknown parameter(s) {unknown}; valid: {sorted(names)}")
        hints = typing.get_type_hints(cls)
        checked = {name: _coerce(cls.__name__, name, hints.get(name, Any), value) for name, value in values.items()}
        cfg = cls(**checked)
        cfg.validate()
        return cfg


def _coerce(owner: str, name: str, annotation: Any, value: Any) -> Any:
    """Return ``value`` if it fits ``annotation`` (int → float allowed), else raise :class:`ConfigError`."""
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _coerce(owner, name, option, value)
            except ConfigError:
                continue
    elif origin is typing.Literal:
        if value in typing.get_args(annotation):
            return value
    elif annotation is type(None):
        if value is None:
            return value
    elif annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
    elif annotation is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin in (tuple, list) or annotation in (tuple, list):
        if isinstance(value, (tuple, list)):
            return type(value)(value) if origin is None else (origin or list)(value)
    else:
        return value  # an annotation this checker does not know: leave it to validate()
    expected = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    raise ConfigError(f"{owner}.{name} expects {expected}, got {value!r} ({type(value).__name__})")


def check_range(cfg: object, name: str, low: float | None = None, high: float | None = None) -> None:
    """Raise :class:`ConfigError` unless ``low <= cfg.name <= high`` (either bound may be ``None``)."""
    value = getattr(cfg, name)
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{type(cfg).__name__}.{name} = {value!r} is outside [{low}, {high}]")


class EncodedBatch(NamedTuple):
    """Relaxed codes (or real-valued embeddings) per modality.

    Attributes
    ----------
    image : np.ndarray | None, shape (n, K), float32 in [-1, 1]
        Image-side codes; binary bits are ``image >= 0``. For a paired encode (both modalities given)
        of a fusion method this is the image half of the fused code.
    text : np.ndarray | None, shape (n, K), float32 in [-1, 1]
    """

    image: np.ndarray | None
    text: np.ndarray | None


class HashingMethod(ABC):
    """Base class: ``fit`` on train features, ``encode`` either modality alone or both.

    Class attributes
    ----------------
    config_class : type[MethodConfig]
        The method's config dataclass.
    supervised : bool
        Whether ``fit`` reads ``train.labels`` (validation labels may be used for model selection only).
    binary : bool
        ``False`` for the real-valued reference: ``encode`` then returns float embeddings compared by cosine,
        and ``bits`` is ignored.
    uses_both_modalities_at_encode : bool
        ``True`` for fusion methods whose paired encode differs from two unimodal encodes.
    selects_under_protocol : bool
        ``True`` when ``fit`` selects its model (best epoch) by validation mAP under the protocol named by its
        config's ``select_protocol`` field. ``run`` and ``tune`` then set that field to the protocol being
        evaluated: one model per evaluated protocol (methods spec, "under the protocol being evaluated").
    """

    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    supervised: ClassVar[bool] = False
    binary: ClassVar[bool] = True
    uses_both_modalities_at_encode: ClassVar[bool] = False
    selects_under_protocol: ClassVar[bool] = False

    def __init__(self, config: MethodConfig | None = None, *, device: str = "cpu") -> None:
        self.config = config if config is not None else self.config_class()
        self.config.validate()
        self.device = device
        self.bits: int | None = None
        self.seed: int | None = None

    @abstractmethod
    def fit(self, train: FeatureSplit, validation: FeatureSplit, bits: int, seed: int) -> HashingMethod:
        """Learn the hash functions.

        Parameters
        ----------
        train : FeatureSplit
            Training features (n_train, d_img) / (n_train, d_txt) float32 and labels (n_train, C) uint8.
        validation : FeatureSplit
            For early stopping / model selection only.
        bits : int
            Code length K >= 8.
        seed : int
            Seeds every random choice; same seed ⇒ same codes on CPU.

        Returns
        -------
        self
        """

    @abstractmethod
    def encode(self, image: np.ndarray | None = None, text: np.ndarray | None = None) -> EncodedBatch:
        """Relaxed codes for images alone, texts alone, or pairs (both given, same row count).

        Raises
        ------
        RuntimeError
            If called before ``fit``.
        ValueError
            If neither modality is given, or shapes disagree.
        """

    @classmethod
    def search_space(cls, trial: Any) -> dict[str, Any]:
        """Optuna search space (define-by-run): call ``trial.suggest_*`` and return config overrides.

        The tuner knows nothing method-specific; a method without tunable parameters returns ``{}``.
        """
        return {}

    def info(self) -> dict[str, Any]:
        """Extra facts recorded with each result (e.g. MCMFH per-expert load). Default: none."""
        return {}

    # ---- persistence -------------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Learned state as a dict of tensors/arrays/plain values (override in subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement get_state")

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned (override in subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement set_state")

    def save(self, path: str | Path) -> None:
        """Write the fitted model (class, config, bits, seed, state) atomically to ``path`` (torch format)."""
        import torch

        from medhash_datasets.cache_io import atomic_write_bytes

        payload = {
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "config": self.config.to_dict(),
            "bits": self.bits,
            "seed": self.seed,
            "state": self.get_state(),
        }
        buf = io.BytesIO()
        torch.save(payload, buf)
        atomic_write_bytes(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | Path, *, device: str = "cpu") -> HashingMethod:
        """Load a model written by :meth:`save`.

        Raises
        ------
        ValueError
            If the file holds a different method class than ``cls``.
        """
        import importlib

        import torch

        payload = torch.load(Path(path), map_location=device, weights_only=False)
        module, _, qual = payload["class"].rpartition(".")
        klass = getattr(importlib.import_module(module), qual)
        if not issubclass(klass, cls):
            raise ValueError(f"{path}: holds a {payload['class']}, not a {cls.__name__}")
        obj = klass(klass.config_class.from_dict(payload["config"]), device=device)
        obj.bits, obj.seed = payload["bits"], payload["seed"]
        obj.set_state(payload["state"])
        return obj

    # ---- helpers for subclasses ---------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.bits is None:
            raise RuntimeError(f"{type(self).__name__}.encode called before fit")

    @staticmethod
    def _check_inputs(image: np.ndarray | None, text: np.ndarray | None) -> int:
        """Validate encode inputs; return the row count."""
        if image is None and text is None:
            raise ValueError("encode needs image features, text features, or both")
        for name, arr in (("image", image), ("text", text)):
            if arr is not None and (arr.ndim != 2):
                raise ValueError(f"encode: {name} must be 2-D (n, d), got shape {arr.shape}")
        if image is not None and text is not None and image.shape[0] != text.shape[0]:
            raise ValueError(f"encode: image has {image.shape[0]} rows, text has {text.shape[0]}")
        return int((image if image is not None else text).shape[0])


def check_bits(bits: int) -> None:
    """Raise ``ValueError`` unless ``bits`` is an int >= 8."""
    if not isinstance(bits, (int, np.integer)) or bits < 8:
        raise ValueError(f"bits must be an integer >= 8, got {bits!r}")
