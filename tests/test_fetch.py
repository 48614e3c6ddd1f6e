"""``data fetch``: download, resume, verification and unpacking against archives served on 127.0.0.1.

A small threaded ``http.server`` serves archives built in ``tmp_path``; it honours ``Range`` requests
(206 + ``Content-Range``), or ignores them, or cuts a response short, as each test asks. No test touches
the network beyond the loopback address.
"""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from medhash_datasets.fetch import ARCHIVES, NO_ARCHIVE, Archive, FetchError, download, fetch_dataset, unpack


class _Server:
    """State shared with the handler: files by path, behaviour switches, received Range headers."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.ignore_range = False
        self.cut_after: int | None = None  # send only this many body bytes, then close
        self.ranges: list[str | None] = []
        self.port = 0


def _handler(state: _Server) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep pytest output clean
            pass

        def do_GET(self) -> None:
            data = state.files.get(self.path)
            state.ranges.append(self.headers.get("Range"))
            if data is None:
                self.send_error(404)
                return
            start = 0
            rng = self.headers.get("Range")
            if rng and not state.ignore_range:
                start = int(rng.split("=", 1)[1].split("-", 1)[0])
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            body = data[start:]
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if state.cut_after is not None:
                self.wfile.write(body[: state.cut_after])
                self.wfile.flush()
                self.close_connection = True
                return
            self.wfile.write(body)

    return Handler


@pytest.fixture
def server() -> Iterator[_Server]:
    state = _Server()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def _medpix_like_zip() -> bytes:
    """A zip laid out like the GitHub archive: MedPix-2.0-main/MedPix-2-0/{Descriptions.json, images/...}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("MedPix-2.0-main/README.md", "repo readme")
        zf.writestr("MedPix-2.0-main/MedPix-2-0/Descriptions.json", json.dumps([{"image": "MPX1_a"}]))
        zf.writestr("MedPix-2.0-main/MedPix-2-0/images/MPX1_a.png", b"\x89PNG fake" + bytes(range(256)) * 40)
        zf.writestr("MedPix-2.0-main/MedPix-2-0/splitted_dataset/uid_list.json", "{}")
    return buf.getvalue()


def _archive(server: _Server, path: str, data: bytes, **kw) -> Archive:
    server.files[path] = data
    defaults = {"filename": Path(path).name, "dest": "medpix-2.0", "marker": "Descriptions.json"}
    return Archive(url=f"http://127.0.0.1:{server.port}{path}", **(defaults | kw))


def _quiet(*_args) -> None:
    pass


def test_fetch_downloads_verifies_and_unpacks_zip(server, tmp_path):
    data = _medpix_like_zip()
    arc = _archive(server, "/medpix.zip", data, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    out = fetch_dataset("medpix", tmp_path, archives={"medpix": (arc,)}, log=_quiet, progress=None)
    dest = tmp_path / "medpix-2.0"
    assert out == [dest]
    assert json.loads((dest / "Descriptions.json").read_text()) == [{"image": "MPX1_a"}]
    assert (dest / "images" / "MPX1_a.png").read_bytes().startswith(b"\x89PNG fake")
    assert (dest / "splitted_dataset" / "uid_list.json").is_file()
    assert not (dest / "README.md").exists()  # the repository root is not the dataset folder
    # nothing left behind: archive deleted, no temporary folders, no .downloads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["medpix-2.0"]
    assert server.ranges == [None]
    # a second run finds the folder and downloads nothing
    logs: list[str] = []
    assert fetch_dataset("medpix", tmp_path, archives={"medpix": (arc,)}, log=logs.append, progress=None) == [dest]
    assert server.ranges == [None] and "already present" in logs[0]


def test_resume_from_truncated_part_sends_range(server, tmp_path):
    data = _medpix_like_zip()
    arc = _archive(server, "/medpix.zip", data, sha256=hashlib.sha256(data).hexdigest())
    downloads = tmp_path / ".downloads"
    downloads.mkdir()
    k = len(data) // 3
    (downloads / "medpix.zip.part").write_bytes(data[:k])
    (downloads / "medpix.zip.part.json").write_text(json.dumps({"url": arc.url, "size": len(data)}))
    path = download(arc, downloads, progress=None)
    assert server.ranges == [f"bytes={k}-"]
    assert path == downloads / "medpix.zip" and path.read_bytes() == data
    assert not (downloads / "medpix.zip.part").exists() and not (downloads / "medpix.zip.part.json").exists()


def test_interrupted_download_keeps_part_and_next_run_resumes(server, tmp_path):
    data = _medpix_like_zip()
    arc = _archive(server, "/medpix.zip", data)  # no size, no checksum: size comes from Content-Length
    downloads = tmp_path / ".downloads"
    server.cut_after = 1000
    with pytest.raises(FetchError, match=r"(stopped at 1000 of \d+ bytes|interrupted).*run the command again"):
        download(arc, downloads, progress=None)
    part = downloads / "medpix.zip.part"
    assert part.read_bytes() == data[:1000]
    assert json.loads((downloads / "medpix.zip.part.json").read_text()) == {"url": arc.url, "size": len(data)}
    server.cut_after = None
    path = download(arc, downloads, progress=None)
    assert server.ranges == [None, "bytes=1000-"]
    assert path.read_bytes() == data


def test_server_ignoring_range_restarts_download(server, tmp_path):
    data = _medpix_like_zip()
    arc = _archive(server, "/medpix.zip", data, size=len(data))
    downloads = tmp_path / ".downloads"
    downloads.mkdir()
    (downloads / "medpix.zip.part").write_bytes(b"garbage that is not the start of the file")
    (downloads / "medpix.zip.part.json").write_text(json.dumps({"url": arc.url, "size": len(data)}))
    server.ignore_range = True
    path = download(arc, downloads, progress=None)
    assert server.ranges == ["bytes=41-"]  # asked to resume, got 200: the file was rewritten from byte 0
    assert path.read_bytes() == data


def test_checksum_mismatch_removes_part_and_fails(server, tmp_path):
    data = _medpix_like_zip()
    arc = _archive(server, "/medpix.zip", data, sha256="0" * 64)
    with pytest.raises(
        FetchError, match=r"checksum mismatch for medpix.zip.part: expected sha256 0{64}, got [0-9a-f]{64}"
    ):
        fetch_dataset("medpix", tmp_path, archives={"medpix": (arc,)}, log=_quiet, progress=None)
    assert not (tmp_path / "medpix-2.0").exists()
    assert list((tmp_path / ".downloads").iterdir()) == []


def test_size_mismatch_is_an_error(server, tmp_path):
    data = _medpix_like_zip()
    arc = _archive(server, "/medpix.zip", data, size=len(data) - 5)  # the table's size is wrong
    with pytest.raises(
        FetchError, match=rf"size mismatch for medpix.zip.part: expected {len(data) - 5} bytes, got {len(data)}"
    ):
        download(arc, tmp_path / ".downloads", progress=None)


def test_tgz_archives_unpack_to_their_folders(server, tmp_path):
    """Open-i style: reports tgz (ecgen-radiology/*.xml) and an images tgz with flat PNGs."""

    def tgz(members: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tf:
            for name, payload in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
        return buf.getvalue()

    reports = _archive(
        server,
        "/NLMCXR_reports.tgz",
        tgz({"ecgen-radiology/1.xml": b"<eCitation/>", "ecgen-radiology/2.xml": b"<eCitation/>"}),
        dest="openi/ecgen-radiology",
        marker="*.xml",
    )
    images = _archive(
        server,
        "/NLMCXR_png.tgz",
        tgz({"CXR1_1_IM-0001-4001.png": b"png1", "CXR2_IM-0652-1001.png": b"png2"}),
        dest="openi/NLMCXR_png",
        marker="*.png",
    )
    out = fetch_dataset("openi", tmp_path, archives={"openi": (reports, images)}, log=_quiet, progress=None)
    assert out == [tmp_path / "openi" / "ecgen-radiology", tmp_path / "openi" / "NLMCXR_png"]
    assert sorted(p.name for p in out[0].iterdir()) == ["1.xml", "2.xml"]
    assert (out[1] / "CXR2_IM-0652-1001.png").read_bytes() == b"png2"


def test_unsafe_archive_members_are_refused(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../outside/Descriptions.json", "[]")
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(FetchError, match=r"would unpack outside"):
        unpack(
            evil,
            root,
            Archive(url="http://x/evil.zip", filename="evil.zip", dest="medpix-2.0", marker="Descriptions.json"),
        )
    assert not (tmp_path / "outside").exists()
    assert list(root.iterdir()) == []  # temporary folder removed
    wrong = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong, "w") as zf:
        zf.writestr("a/readme.txt", "no marker here")
    with pytest.raises(FetchError, match=r"holds no file matching 'Descriptions.json'"):
        unpack(
            wrong,
            root,
            Archive(url="http://x/w.zip", filename="wrong.zip", dest="medpix-2.0", marker="Descriptions.json"),
        )


def test_unreachable_host_fails_at_once_with_one_line(tmp_path):
    with socket.socket() as s:  # a port on 127.0.0.1 with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    arc = Archive(url=f"http://127.0.0.1:{port}/m.zip", filename="m.zip", dest="medpix-2.0", marker="Descriptions.json")
    with pytest.raises(FetchError) as err:
        fetch_dataset("medpix", tmp_path, archives={"medpix": (arc,)}, log=_quiet, progress=None, connect_timeout=2)
    msg = str(err.value)
    assert msg.startswith("cannot reach 127.0.0.1: no network access; download http://127.0.0.1:")
    assert msg.endswith(f"manually and place it under {tmp_path / 'medpix-2.0'}") and "\n" not in msg
    assert not (tmp_path / ".downloads").exists()


def test_table_and_cli_messages(tmp_path, capsys):
    from benchmarks.cli import main

    assert set(ARCHIVES) == {"medpix", "openi"}
    assert ARCHIVES["medpix"][0].url.startswith("https://github.com/CHILab1/MedPix-2.0/")
    assert {a.dest for a in ARCHIVES["openi"]} == {"openi/ecgen-radiology", "openi/NLMCXR_png"}
    assert "scripts/fetch.py" in NO_ARCHIVE["roco"]
    assert main(["data", "fetch", "roco", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no download for 'roco': ROCO has no image archive") and err.count("\n") == 1
    assert main(["data", "fetch", "nonesuch", "--data-root", str(tmp_path)]) == 2
    assert "unknown dataset 'nonesuch' for fetch; fetchable: medpix, openi" in capsys.readouterr().err
    with pytest.raises(FetchError, match=r"needs a data root"):
        fetch_dataset("medpix", None, log=_quiet, progress=None)


def test_data_info_command_on_synthetic(capsys):
    from benchmarks.cli import main

    assert main(["data", "info", "synthetic", "--dataset-option", "n_train=50", "--dataset-option", "n_query=20"]) == 0
    out = capsys.readouterr().out
    assert "dataset synthetic: 270 items" in out  # 50 train + 200 validation (default) + 20 query
    assert "| train      |      50 |" in out and "| query      |      20 |" in out
    assert main(["data", "info", "synthetic", "--dataset-option", "n_train"]) == 2
    assert "--dataset-option expects KEY=VALUE, got 'n_train'" in capsys.readouterr().err


@pytest.mark.realdata
def test_data_info_command_on_real_text_only_roco(data_root, capsys):
    from benchmarks.cli import main

    if not (data_root / "roco").is_dir():
        pytest.skip(f"dataset folder {data_root / 'roco'} absent")
    from medhash_datasets.loaders import DATASETS

    ds = DATASETS.get("roco")(data_root, label_scheme="cuis", require_images="false")
    assert main(["data", "info", "roco", "--data-root", str(data_root), "--label-scheme", "cuis", "--top", "3"]) == 0
    out = capsys.readouterr().out
    assert f"dataset roco: {len(ds)} items, label scheme cuis-top20, 20 labels" in out
    assert f"| no label          | {ds.skipped['no label']:>9} |" in out
    top = ds.label_names[0]
    assert f"| {top} | {int(ds.labels[:, 0].sum()):>7} |" in out  # most frequent CUI listed first
    assert f"missing_images: {len(ds)}" in out  # metadata mode: absent images counted, not skipped
    assert main(["data", "info", "roco", "--data-root", str(data_root), "--check-images"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: roco: none of the") and "images is present" in err


def test_fetch_into_a_file_is_a_one_line_error(tmp_path, capsys):
    from benchmarks.cli import main

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["data", "fetch", "medpix", "--data-root", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --data-root {blocker} is a file") and err.count("\n") == 1
    assert main(["data", "fetch", "medpix", "--data-root", str(blocker / "sub")]) == 2  # a file above the root
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write") and err.count("\n") == 1
    assert blocker.read_text() == "x"


def test_data_info_label_scheme_flag_and_reserved_options(capsys):
    from benchmarks.cli import main

    base = ["data", "info", "synthetic", "--dataset-option", "n_train=50", "--dataset-option", "n_query=20"]
    assert main([*base, "--label-scheme", "location"]) == 2  # reaches the loader: synthetic has one scheme
    assert "unknown label scheme 'location'" in capsys.readouterr().err
    for option, flag in (("label_scheme=location", "--label-scheme"), ("seed=2", "--seed")):
        assert main([*base, "--dataset-option", option]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --dataset-option") and f"use {flag}" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main([*base, "--seed", "-1"])
    assert "--seed" in capsys.readouterr().err
