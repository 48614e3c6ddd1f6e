"""Registered frozen encoders (``biomedclip``, ``offline``) and :func:`create_encoder`.

An encoder registers its class (a subclass of :class:`~medhash_datasets.encoders.base.Encoder` whose constructor
takes ``device=`` plus string options) in :data:`ENCODERS`. The pseudo-name ``auto`` resolves to
``biomedclip`` when its weights are available locally, else ``offline`` (:func:`resolve_encoder_name`).
"""

from __future__ import annotations

from medhash_datasets.encoders.base import Encoder, EncoderError, load_rgb
from medhash_datasets.registry import Registry, RegistryError

ENCODERS: Registry[type[Encoder]] = Registry("encoder")

from medhash_datasets.encoders.biomedclip import BiomedCLIPEncoder, biomedclip_available  # noqa: E402
from medhash_datasets.encoders.offline import OfflineEncoder  # noqa: E402

ENCODERS.add("biomedclip", BiomedCLIPEncoder)
ENCODERS.add("offline", OfflineEncoder)

AUTO = "auto"

#: Pseudo-name for features shipped with a dataset (handled by :mod:`medhash_datasets.features`, not an encoder).
PRECOMPUTED = "precomputed"


def resolve_encoder_name(name: str, **options: str) -> str:
    """Map ``auto`` to ``biomedclip`` (weights available locally, see
    :func:`~medhash_datasets.encoders.biomedclip.biomedclip_available`) or ``offline``; other names pass through.

    Parameters
    ----------
    name : str
        ``"auto"`` or a registered encoder name.
    **options : str
        Encoder options; ``path`` is consulted for ``auto``.

    Raises
    ------
    RegistryError
        If ``name`` is neither ``auto`` nor registered (the message lists the valid names, including the
        pseudo-names ``auto`` and ``precomputed``).
    """
    if name == AUTO:
        return "biomedclip" if biomedclip_available(options.get("path")) else "offline"
    if name not in ENCODERS.names():
        valid = ", ".join([AUTO, *ENCODERS.names(), PRECOMPUTED])
        raise RegistryError(
            f"unknown encoder {name!r}; valid encoders: {valid} (auto = biomedclip when its weights are local, "
            f"else offline; {PRECOMPUTED} = features shipped with the dataset)"
        )
    return name


def create_encoder(name: str, *, device: str = "cpu", **options: str) -> Encoder:
    """Build the encoder registered as ``name`` (``auto`` allowed).

    Parameters
    ----------
    name : str
        ``"biomedclip"``, ``"offline"``, ``"auto"`` or a name a plugin registered.
    device : str
        Torch device the networks run on.
    **options : str
        Encoder-specific options (``biomedclip``: ``path``); unknown options raise.

    Returns
    -------
    Encoder
        Networks are loaded lazily on the first ``encode_*`` call.

    Raises
    ------
    RegistryError
        Unknown name.
    EncoderError
        Missing weights or bad options (e.g. BiomedCLIP without a local folder and without network: the
        message says how to supply the weights).
    """
    resolved = resolve_encoder_name(name, **options)
    if name == AUTO and resolved == "offline":
        options = {k: v for k, v in options.items() if k != "path"}
    return ENCODERS.get(resolved)(device=device, **options)


__all__ = [
    "ENCODERS",
    "Encoder",
    "EncoderError",
    "create_encoder",
    "load_rgb",
    "resolve_encoder_name",
]
