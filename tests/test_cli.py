"""The CLI: listing, one-line errors, the run command's rows, resume, and kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.cli import main
from benchmarks.results import ROW_FIELDS, iter_rows

ROOT = Path(__file__).resolve().parent.parent
SMALL = ["--dataset-option", "n_train=120", "--dataset-option", "n_validation=40", "--dataset-option", "n_query=40"]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_list_shows_registries(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("random", "cca-itq", "real-valued", "synthetic"):
        assert name in out
    assert main(["list", "methods", "cca*"]) == 0
    out = capsys.readouterr().out
    assert "cca-itq" in out and "random" not in out


@pytest.mark.parametrize(
    "args,message",
    [
        (["run", "--methods", "nope"], "unknown method 'nope'; valid methods: "),
        (["run", "--datasets", "nope"], "unknown dataset 'nope'; valid datasets: "),
        (["run", "--bits", "4", "16"], "--bits must all be >= 8, got [4]"),
        (["run", "--seeds"], "--seeds needs at least one seed"),
        (["run", "--param", "itq_iterations=-3", "--methods", "cca-itq"], "itq_iterations = -3 is outside"),
        (["run", "--param", "novalue", "--methods", "cca-itq"], "--param expects KEY=VALUE"),
        (["run", "--param", "bogus=1", "--methods", "random", "cca-itq"], "--param ['bogus'] is not a config field of random, cca-itq"),
    ],
)
def test_bad_input_gives_one_line_error(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err


def test_unwritable_output_folder(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "--methods", "random", "--out", str(blocker / "sub")]) == 2
    err = capsys.readouterr().err
    # a file where the folder should be is named as such (issue 16.11: not a bare "File exists")
    assert f"{blocker} is a file, not a folder" in err and str(blocker / "sub") in err and err.count("\n") == 1


def test_subprocess_error_has_no_traceback():
    res = cli("run", "--methods", "nope")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and res.stderr.strip().count("\n") == 0
    res = cli("run", "--protocols", "weird")
    assert res.returncode == 2 and "Traceback" not in res.stderr and res.stderr.strip().count("\n") == 0


def test_device_cuda_without_gpu_is_a_clear_error(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["run", "--methods", "random", "--device", "cuda"]) == 2
    assert "no CUDA device is available" in capsys.readouterr().err


def test_run_writes_complete_rows_then_skips_then_forces(tmp_path, capsys):
    args = ["run", "--methods", "random", "cca-itq", "real-valued", "--bits", "8", "16", "--seeds", "0", "1",
            "--out", str(tmp_path), "--no-progress", "--device", "cpu", *SMALL]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "10 cell(s) run, 0 already finished" in out  # 2 hashing methods × 2 bits × 2 seeds + real-valued × 2 seeds
    assert "(chance)" in out and "i2t mAP (aware)" in out
    files = sorted((tmp_path / "cells").rglob("*.jsonl"))
    assert len(files) == 10
    rows = list(iter_rows(tmp_path))
    for row in rows:
        assert set(ROW_FIELDS) <= set(row)
    maps = [r for r in rows if r["metric"] == "map"]
    # 2 protocols × 2 tasks × 2 tie policies per cell.
    assert len(maps) == 10 * 8
    assert {r["protocol"] for r in maps} == {"unimodal", "paired"} and {r["tie"] for r in maps} == {"index", "aware"}
    for r in maps:
        assert r["n_queries"] == 40 and r["n_database"] == 160 and r["db_includes_train"] is True
        assert 0.0 <= r["value"] <= 1.0 and 0.0 < r["chance"] < 1.0
    assert {r["bits"] for r in rows if r["method"] == "real-valued"} == {None}
    effs = {r["metric"] for r in rows if r["method"] == "cca-itq"}
    assert {"encode_ms_per_item", "search_ms_per_query", "search_ms_per_query_real", "bytes_per_item", "bytes_per_item_real"} <= effs
    bytes16 = [r["value"] for r in rows if r["metric"] == "bytes_per_item" and r["bits"] == 16]
    assert set(bytes16) == {2.0}
    mtimes = {f: f.stat().st_mtime_ns for f in files}

    assert main(args) == 0
    assert "0 cell(s) run, 10 already finished" in capsys.readouterr().out
    assert {f: f.stat().st_mtime_ns for f in files} == mtimes

    assert main([*args, "--force", "--methods", "random"]) == 0
    assert "4 cell(s) run, 0 already finished" in capsys.readouterr().out
    assert len(list((tmp_path / "cells").rglob("*.jsonl"))) == 10


def test_killed_run_resumes_without_losing_or_duplicating_cells(tmp_path):
    args = ["run", "--methods", "cca-itq", "--bits", "8", "16", "24", "32", "--seeds", "0", "1",
            "--protocols", "unimodal", "--out", str(tmp_path), "--no-progress", "--device", "cpu",
            "--dataset-option", "n_train=3000", "--dataset-option", "image_dim=256", "--dataset-option", "text_dim=128"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cells = tmp_path / "cells"
    deadline = time.time() + 240
    while time.time() < deadline and not (cells.exists() and any(cells.rglob("*.jsonl"))):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = sorted(cells.rglob("*.jsonl"))
    assert 1 <= len(first) < 8, "the run must be killed after its first cell and before its last"
    before = {f: f.read_bytes() for f in first}

    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert f"{8 - len(first)} cell(s) run, {len(first)} already finished" in res.stdout
    files = sorted(cells.rglob("*.jsonl"))
    assert len(files) == 8
    assert all(f.read_bytes() == before[f] for f in first)  # finished cells were not redone
    keys = [(r["bits"], r["seed"], r["task"], r["tie"], r["metric"], r["k"], r["protocol"]) for r in iter_rows(tmp_path)]
    assert len(keys) == len(set(keys))
    assert {(r["bits"], r["seed"]) for r in iter_rows(tmp_path)} == {(b, s) for b in (8, 16, 24, 32) for s in (0, 1)}
    json.loads(next((tmp_path / "runs").iterdir()).read_text())


def test_damaged_cell_is_run_again_and_params_are_type_checked(tmp_path, capsys):
    args = ["run", "--methods", "cca-itq", "--bits", "8", "--seeds", "0", "--protocols", "unimodal",
            "--out", str(tmp_path), "--no-progress", "--device", "cpu", *SMALL]
    assert main(args) == 0
    capsys.readouterr()
    (cell,) = list((tmp_path / "cells").rglob("*.jsonl"))
    good = cell.read_text()
    assert oct(cell.stat().st_mode & 0o777) != oct(0o600)  # results are readable by others
    for damage in ("", good[: len(good) // 2], "[1, 2, 3]\n"):
        cell.write_text(damage)
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "1 cell(s) run, 0 already finished" in out
        assert cell.read_text().count("\n") == good.count("\n")
    rows = list(iter_rows(cell))
    assert rows[0]["dataset_options"] == {"n_query": "40", "n_train": "120", "n_validation": "40"}
    assert rows[0]["dataset_seed"] == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["--param", "itq_iterations=abc"], "CCAITQConfig.itq_iterations expects int, got 'abc' (str)"),
        (["--param", "itq_iterations=1.5"], "expects int, got 1.5"),
        (["--param", "itq_iterations=true"], "expects int, got True"),
        (["--seeds", "-1"], "seeds must be >= 0"),
        (["--out", ""], "--out must name a folder"),
        (["--dataset-option", "label_scheme=x"], "use --label-scheme"),
    ],
)
def test_more_bad_input(args, message, capsys):
    assert main(["run", "--methods", "cca-itq", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
