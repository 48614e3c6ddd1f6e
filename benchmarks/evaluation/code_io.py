"""Raw arrays of code files: read ``.npz`` and MATLAB ``.mat`` (v5/v7 and v7.3 HDF5), write atomically.

MATLAB v7.3 files are HDF5 (read with :mod:`h5py`). MATLAB stores arrays column-major, so an ``(n, K)``
MATLAB matrix appears in HDF5 as ``(K, n)``; every array is transposed back here so that keys have the same
orientation as with :func:`scipy.io.loadmat` (v5/v7) and ``.npz``. Structs, cells and MATLAB's ``#refs#``
group are skipped (they are not code or label matrices); ``logical`` arrays are read as bool and ``char``
arrays as text (which the code-file validation refuses by dtype).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from medhash_datasets.cache_io import atomic_save_npz, atomic_write_bytes

__all__ = ["read_arrays", "write_arrays"]


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz code file (not a zip archive as written by numpy.savez)")
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):  # a plain .npy saved under a .npz name
                raise ValueError("it holds a single array, not named arrays")
            return {k: np.asarray(z[k]) for k in z.files}
    except ValueError as err:
        msg = _first_line(err)
        if "pickle" in msg.lower():
            msg = "it holds object (pickled) arrays, which are not loaded for safety; save numeric arrays"
        raise ValueError(f"{path}: not a readable .npz code file ({msg})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"{path}: not a readable .npz code file ({type(err).__name__}: {err})") from None


def _attr_text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_mat73(path: Path) -> dict[str, np.ndarray]:
    """Top-level matrices of a MATLAB v7.3 (HDF5) file, transposed to MATLAB's (row, column) orientation."""
    import h5py

    out: dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            for key, obj in f.items():
                if key.startswith("#") or not isinstance(obj, h5py.Dataset):
                    continue
                cls = _attr_text(obj.attrs.get("MATLAB_class", b""))
                if obj.attrs.get("MATLAB_empty", 0):
                    out[key] = np.zeros((0, 0))
                    continue
                data = np.asarray(obj[()])
                if cls == "logical":
                    data = data.astype(bool)
                elif cls == "char":
                    data = np.vectorize(chr, otypes=[str])(data) if data.size else data.astype(str)
                out[key] = data.T
    except OSError as err:
        raise ValueError(f"{path}: not a readable MATLAB v7.3 (HDF5) .mat code file ({_first_line(err)})") from None
    return out


def _read_mat(path: Path) -> dict[str, np.ndarray]:
    import h5py
    import scipy.io

    if h5py.is_hdf5(path):
        return _read_mat73(path)
    try:
        raw = scipy.io.loadmat(path)
    except Exception as err:  # MatReadError, IndexError, ValueError, ...: scipy's errors on junk input vary
        raise ValueError(f"{path}: not a readable MATLAB .mat code file ({_first_line(err)})") from None
    return {k: np.asarray(v) for k, v in raw.items() if not k.startswith("__")}


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Named arrays of a ``.npz`` or ``.mat`` file (v5/v7 with scipy, v7.3 HDF5 with h5py).

    Parameters
    ----------
    path : Path
        An existing file; the type is chosen by its suffix.

    Returns
    -------
    dict of str -> np.ndarray
        Every array of the file by key (MATLAB's ``__header__``-style entries left out), in the orientation
        MATLAB shows (v7.3 arrays transposed back from HDF5's column-major layout).

    Raises
    ------
    ValueError
        Unsupported suffix, or a file that cannot be read as its type (object/pickled ``.npz`` arrays
        included); the message names the file.
    """
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _read_npz(path)
    if suffix == ".mat":
        return _read_mat(path)
    raise ValueError(f"{path}: unsupported code file type {suffix!r} (expected .mat or .npz)")


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write named arrays atomically as ``.npz`` (:func:`numpy.savez`) or ``.mat`` (v5, :func:`scipy.io.savemat`).

    Raises
    ------
    ValueError
        If the suffix is neither ``.npz`` nor ``.mat``.
    OSError
        If the folder cannot be created or written.
    """
    suffix = path.suffix.lower()
    if suffix == ".npz":
        atomic_save_npz(path, **arrays)
    elif suffix == ".mat":
        import scipy.io

        buf = io.BytesIO()
        scipy.io.savemat(buf, arrays, do_compression=True)
        atomic_write_bytes(path, buf.getvalue())
    else:
        raise ValueError(f"{path}: unsupported code file type {suffix!r} (expected .mat or .npz)")
