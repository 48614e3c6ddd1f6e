"""``data fetch``: download a public dataset archive into the data root, resumably and verified.

Steps for each archive of a dataset (:data:`ARCHIVES`):

1. Skip it when its destination folder already exists (nothing is overwritten).
2. Check the host is reachable (TCP connect, ``connect_timeout`` seconds, default 10): without network the
   command fails at once with one line naming the host, the URL and where to put a manual download.
3. Download into ``DATA_ROOT/.downloads/<file>.part`` with HTTP ``Range`` resume: an existing ``.part`` is
   continued from its length (a server answering 200 instead of 206 restarts it); the total size comes from
   the table or ``Content-Length`` / ``Content-Range`` and is kept in ``<file>.part.json`` across runs.
4. Verify the size and, where known, the SHA-256; a mismatch deletes the ``.part`` and raises.
5. Rename ``.part`` → ``<file>`` (atomic), unpack it (zip or tar, members confined to the target folder)
   into a temporary folder inside the data root, find the folder that holds the archive's marker file, and
   rename it to its destination (atomic on one file system), so a dataset folder is never half-written.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import socket
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from medhash_datasets.base import DatasetError
from medhash_datasets.cache_io import atomic_write_json


class FetchError(DatasetError):
    """A download, verification or unpacking failure; the message is one line saying what to do."""


@dataclass(frozen=True)
class Archive:
    """One downloadable archive of a dataset.

    Attributes
    ----------
    url : str
        HTTP(S) address of the archive.
    filename : str
        Local file name under ``DATA_ROOT/.downloads/``.
    dest : str
        Destination folder relative to the data root (e.g. ``"medpix-2.0"``).
    marker : str
        Glob pattern of a file that identifies the folder to keep (e.g. ``"Descriptions.json"``); the shallowest
        unpacked folder holding a match becomes ``dest``.
    size : int | None
        Expected size in bytes; ``None`` = taken from the server's ``Content-Length`` and checked.
    sha256 : str | None
        Expected SHA-256 (hex); ``None`` when the publisher gives none.
    note : str
        Shown before downloading (size, licence, what the archive holds).
    """

    url: str
    filename: str
    dest: str
    marker: str
    size: int | None = None
    sha256: str | None = None
    note: str = ""


#: Known public archives. Publishers give no checksums for these, so sizes are taken from Content-Length.
ARCHIVES: dict[str, tuple[Archive, ...]] = {
    "medpix": (
        Archive(
            url="https://github.com/CHILab1/MedPix-2.0/archive/refs/heads/main.zip",
            filename="MedPix-2.0-main.zip",
            dest="medpix-2.0",
            marker="Descriptions.json",
            note="MedPix 2.0 GitHub repository archive (JSON metadata, splits and the 2,050 PNG images)",
        ),
    ),
    "openi": (
        Archive(
            url="https://openi.nlm.nih.gov/imgs/collections/NLMCXR_reports.tgz",
            filename="NLMCXR_reports.tgz",
            dest="openi/ecgen-radiology",
            marker="*.xml",
            note="Open-i IU chest X-ray reports (3,955 XML files)",
        ),
        Archive(
            url="https://openi.nlm.nih.gov/imgs/collections/NLMCXR_png.tgz",
            filename="NLMCXR_png.tgz",
            dest="openi/NLMCXR_png",
            marker="*.png",
            note="Open-i IU chest X-ray images (7,470 PNG files, about 1.3 GB)",
        ),
    ),
}

#: Datasets without a public archive: what to do instead.
NO_ARCHIVE: dict[str, str] = {
    "roco": (
        "ROCO has no image archive: its repository (github.com/razorx89/roco-dataset) ships captions, concepts "
        "and download links only; clone it, copy its data/ folder to DATA_ROOT/roco/ and run its "
        "scripts/fetch.py, which downloads each image from PubMed Central"
    ),
    "mirflickr25k": (
        "the DCMH .mat release of MIRFlickr-25K is distributed through the DCMH authors' page "
        "(github.com/jiangqy/DCMH-CVPR2017), not a stable archive URL: download it by hand into "
        "DATA_ROOT/mirflickr25k/"
    ),
    "synthetic": "the synthetic dataset is generated and needs no download",
}

CHUNK = 1 << 20


def _default_progress(total: int | None, start: int, desc: str) -> Callable[[int], None]:
    from tqdm import tqdm

    bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024, desc=desc, leave=False)

    def update(n: int) -> None:
        if n < 0:
            bar.close()
        else:
            bar.update(n)

    return update


def check_reachable(url: str, dest_hint: str, *, timeout: float = 10.0) -> None:
    """Open a TCP connection to the URL's host and port, or raise at once.

    Raises
    ------
    FetchError
        ``"cannot reach HOST: no network access; download URL manually and place it under DEST"``.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError:
        raise FetchError(
            f"cannot reach {host}: no network access; download {url} manually and place it under {dest_hint}"
        ) from None


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def download(
    archive: Archive,
    downloads: Path,
    *,
    timeout: float = 10.0,
    progress: Callable[[int | None, int, str], Callable[[int], None]] | None = _default_progress,
) -> Path:
    """Download ``archive`` into ``downloads/<filename>``, resuming a ``.part`` file, then verify it.

    Parameters
    ----------
    archive : Archive
        What to fetch.
    downloads : Path
        Folder for the ``.part`` file, its ``.part.json`` sidecar (URL and total size) and the result.
    timeout : float
        Socket timeout in seconds for the connection and each read.
    progress : callable | None
        Factory ``(total, start, desc) -> update(n)`` (tqdm bar by default; ``update(-1)`` closes it).

    Returns
    -------
    Path
        The verified archive file (an already complete file is verified and returned without a download).

    Raises
    ------
    FetchError
        On an HTTP error, a size mismatch (the server sent more or fewer bytes than announced) or a SHA-256
        mismatch; on a mismatch the ``.part`` is deleted so the next run starts afresh.
    """
    downloads.mkdir(parents=True, exist_ok=True)
    final = downloads / archive.filename
    part = downloads / f"{archive.filename}.part"
    meta_path = downloads / f"{archive.filename}.part.json"
    if final.is_file():
        _verify(final, archive.size, archive.sha256, archive.url, part=None)
        return final
    meta = {}
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            meta = {}
    if meta.get("url") != archive.url:  # a .part from another URL is not resumable
        part.unlink(missing_ok=True)
        meta = {"url": archive.url}
    start = part.stat().st_size if part.is_file() else 0
    total = archive.size or meta.get("size")

    if total is None or start != total:  # else the .part is already complete: nothing to request
        request = urllib.request.Request(archive.url, headers={"User-Agent": "medhash-bench-fetch/1"})
        if start:
            request.add_header("Range", f"bytes={start}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as err:
            if err.code == 416 and total is not None and start >= total:
                response, status = None, 416  # nothing left to send: the size check below decides
            else:
                raise FetchError(f"download of {archive.url} failed: HTTP {err.code} {err.reason}") from None
        except (urllib.error.URLError, OSError) as err:
            raise FetchError(f"download of {archive.url} failed: {getattr(err, 'reason', err)}") from None
        else:
            status = response.status
        if response is not None:
            with response:
                if status == 206:
                    first, full = _content_range(response.headers.get("Content-Range", ""))
                    if first != start:
                        part.unlink(missing_ok=True)
                        meta_path.unlink(missing_ok=True)
                        raise FetchError(
                            f"download of {archive.url}: server resumed at byte {first}, not {start}; "
                            "the partial file was removed, run the command again"
                        )
                    total = total or full
                    mode = "ab"
                else:  # 200: the server ignored the Range header, start again
                    start = 0
                    length = response.headers.get("Content-Length")
                    total = total or (int(length) if length and length.isdigit() else None)
                    mode = "wb"
                meta["size"] = total
                atomic_write_json(meta_path, meta)
                update = progress(total, start, archive.filename) if progress else None
                try:
                    with part.open(mode) as out:
                        while True:
                            try:
                                block = response.read(CHUNK)
                            except (OSError, http.client.HTTPException) as err:
                                raise FetchError(
                                    f"download of {archive.url} interrupted ({err}); run the command again to resume"
                                ) from None
                            if not block:
                                break
                            out.write(block)
                            if update:
                                update(len(block))
                        out.flush()
                        os.fsync(out.fileno())
                finally:
                    if update:
                        update(-1)
    if total is not None and part.stat().st_size < total:
        raise FetchError(
            f"download of {archive.url} stopped at {part.stat().st_size} of {total} bytes; "
            "run the command again to resume"
        )
    _verify(part, total, archive.sha256, archive.url, part=part)
    os.replace(part, final)
    meta_path.unlink(missing_ok=True)
    return final


def _content_range(value: str) -> tuple[int | None, int | None]:
    """``"bytes 100-199/200"`` → ``(100, 200)``; ``None`` for parts that are absent or ``*``."""
    try:
        unit_range, _, full = value.strip().partition("/")
        first = unit_range.split()[-1].split("-")[0]
        return (int(first) if first.isdigit() else None), (int(full) if full.strip().isdigit() else None)
    except IndexError:
        return None, None


def _verify(path: Path, size: int | None, sha256: str | None, url: str, *, part: Path | None) -> None:
    actual = path.stat().st_size
    problem = None
    if size is not None and actual != size:
        problem = f"size mismatch for {path.name}: expected {size} bytes, got {actual}"
    elif sha256 is not None:
        digest = sha256_file(path)
        if digest.lower() != sha256.lower():
            problem = f"checksum mismatch for {path.name}: expected sha256 {sha256}, got {digest}"
    if problem is None:
        return
    path.unlink(missing_ok=True)
    if part is not None:
        Path(f"{part}.json").unlink(missing_ok=True)
    raise FetchError(f"{problem} (from {url}); the file was removed, run the command again to download it afresh")


def _safe_extract(archive_path: Path, target: Path) -> None:
    """Unpack a zip or tar archive into ``target``, refusing members that would land outside it."""
    target_resolved = target.resolve()
    if zipfile.is_zipfile(archive_path):
        with zipfile.ZipFile(archive_path) as zf:
            for name in zf.namelist():
                dest = (target / name).resolve()
                if dest != target_resolved and target_resolved not in dest.parents:
                    raise FetchError(f"{archive_path.name}: member {name!r} would unpack outside {target}")
            zf.extractall(target)
    elif tarfile.is_tarfile(archive_path):
        with tarfile.open(archive_path) as tf:
            try:
                tf.extractall(target, filter="data")
            except tarfile.FilterError as err:
                raise FetchError(f"{archive_path.name}: unsafe member refused ({err})") from None
    else:
        raise FetchError(f"{archive_path} is neither a zip nor a tar archive")


def _find_marker_dir(root: Path, marker: str) -> Path | None:
    """The shallowest folder under ``root`` (itself included) holding a file matching ``marker``."""
    best: Path | None = None
    for hit in root.rglob(marker):
        if hit.is_file():
            parent = hit.parent
            if (
                best is None
                or len(parent.parts) < len(best.parts)
                or (len(parent.parts) == len(best.parts) and str(parent) < str(best))
            ):
                best = parent
    return best


def unpack(archive_path: Path, data_root: Path, archive: Archive) -> Path:
    """Unpack ``archive_path`` and move the folder holding ``archive.marker`` to ``data_root / archive.dest``.

    Returns
    -------
    Path
        The destination folder.

    Raises
    ------
    FetchError
        If the archive is not zip/tar, holds unsafe paths, or has no file matching the marker.
    """
    dest = data_root / archive.dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=data_root))
    try:
        _safe_extract(archive_path, tmp)
        found = _find_marker_dir(tmp, archive.marker)
        if found is None:
            raise FetchError(f"{archive_path.name} holds no file matching {archive.marker!r}; is it the right archive?")
        os.replace(found, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def fetch_dataset(
    name: str,
    data_root: Path | None,
    *,
    archives: dict[str, tuple[Archive, ...]] | None = None,
    connect_timeout: float = 10.0,
    keep_archive: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable[[int | None, int, str], Callable[[int], None]] | None = _default_progress,
) -> list[Path]:
    """Download and unpack every archive of dataset ``name`` into ``data_root``.

    Parameters
    ----------
    name : str
        Dataset name (``medpix``, ``openi``; ``roco``/``mirflickr25k`` explain why there is no archive).
    data_root : Path | None
        Target data root (created if needed).
    archives : dict | None
        Archive table (default :data:`ARCHIVES`; tests pass a local one).
    connect_timeout : float
        Seconds allowed for the reachability check and for each socket read.
    keep_archive : bool
        Keep ``.downloads/<file>`` after unpacking (default: delete it).
    log : callable
        Receives one line per step.

    Returns
    -------
    list[Path]
        The destination folders (already present ones included).

    Raises
    ------
    FetchError
        Without a data root, for a dataset without an archive (saying what to do instead), without network,
        or on any download / verification / unpacking failure.
    """
    table = ARCHIVES if archives is None else archives
    if name not in table:
        if name in NO_ARCHIVE:
            raise FetchError(f"no download for {name!r}: {NO_ARCHIVE[name]}")
        raise FetchError(f"unknown dataset {name!r} for fetch; fetchable: {', '.join(sorted(table))}")
    if data_root is None:
        raise FetchError("data fetch needs a data root: pass --data-root DIR or set MEDHASH_DATA_ROOT")
    data_root = Path(data_root)
    data_root.mkdir(parents=True, exist_ok=True)
    downloads = data_root / ".downloads"
    out = []
    for archive in table[name]:
        dest = data_root / archive.dest
        if dest.exists():
            log(f"{archive.dest}: already present at {dest}, skipped")
            out.append(dest)
            continue
        check_reachable(archive.url, str(dest), timeout=connect_timeout)
        log(f"downloading {archive.url} ({archive.note})" if archive.note else f"downloading {archive.url}")
        path = download(archive, downloads, timeout=connect_timeout, progress=progress)
        log(f"unpacking {path.name} into {dest}")
        out.append(unpack(path, data_root, archive))
        if not keep_archive:
            path.unlink(missing_ok=True)
    if downloads.is_dir() and not any(downloads.iterdir()):
        downloads.rmdir()
    return out
