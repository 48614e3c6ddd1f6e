"""Parallel grids: rows equal to a serial run's, threads and device in every row and in each cell's identity,
cell claims shared by two real ``run`` processes (a dead process's claim taken over), a Dask worker killed
with SIGKILL mid-cell (only that cell lost, named; a re-run computes exactly it), per-cell lines naming the
worker, worker log lines forwarded to the driver, and the cost-weighted ETA."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from distributed import LocalCluster

from benchmarks.cell import RunSpec, cell_config, prepare_features
from benchmarks.claims import CellClaim, claim_path
from benchmarks.cli import UsageError
from benchmarks.cli import main as cli_main
from benchmarks.distributed import WORKERS_ENV, resolve_threads, resolve_workers, thread_env
from benchmarks.progress import CostModel, GridProgress
from benchmarks.report.console import summary_tables
from benchmarks.results import config_hash, iter_rows
from benchmarks.runner import run

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
SMALL = {"n_train": "120", "n_validation": "40", "n_query": "40"}
SMALL_FLAGS = [f for k, v in SMALL.items() for f in ("--dataset-option", f"{k}={v}")]
#: Fields that time something, or name the invocation: everything else must be equal serial vs parallel
#: (``method_info`` entries ending in ``seconds`` are timings too).
TIMING_FIELDS = {"wall_time_s", "timestamp", "run_id"}
TIMING_METRICS = {"encode_ms_per_item", "search_ms_per_query", "search_ms_per_query_real"}
#: A driver process that knows the test-only method ``test-stall`` (tests/parallel_methods.py) and runs the CLI.
DRIVER = ("import sys, parallel_methods; from benchmarks.catalog import method_names; "
          "method_names().add('test-stall', None, tags=('test',)); "
          "from benchmarks.cli import main; sys.exit(main(sys.argv[1:]))")


def driver_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDHASH_TEST_")}
    env.update(PYTHONPATH=os.pathsep.join([str(ROOT), str(TESTS)]), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1",
               DASK_DISTRIBUTED__WORKER__PRELOAD='["parallel_methods"]', **extra)
    return env


def start_driver(*args: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, *args], cwd=ROOT, env=driver_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def comparable(rows: list[dict]) -> dict[tuple, dict]:
    """Rows keyed by what identifies them, without timing fields and timing values."""
    out = {}
    for row in rows:
        key = (row["cell_id"], row["protocol"], row["task"], row["metric"], row["k"], row["tie"])
        assert key not in out, f"duplicate row {key}"
        kept = {k: v for k, v in row.items() if k not in TIMING_FIELDS}
        kept["method_info"] = {k: v for k, v in (row.get("method_info") or {}).items() if not k.endswith("seconds")}
        if row["metric"] in TIMING_METRICS:
            kept["value"] = None
        out[key] = kept
    return out


# ---- identity ---------------------------------------------------------------------------------------
def test_threads_and_device_are_part_of_the_cell_identity():
    dataset, features = prepare_features("synthetic", data_root=None, dataset_options=SMALL, progress=False)
    spec = RunSpec(methods=["cca-itq"], datasets=["synthetic"], bits=[8], seeds=[0], dataset_options=SMALL)
    ids = set()
    for threads, device in ((1, "cpu"), (2, "cpu"), (1, "cuda")):
        spec.threads, spec.device = threads, device
        config = cell_config(spec, dataset, features, "cca-itq", 8, 0)
        assert (config["cell_threads"], config["device"]) == (threads, device)
        ids.add(config_hash(config))
    assert len(ids) == 3  # cells computed under other settings are never mixed with these


def test_thread_settings_default_to_one_per_process_and_are_checked(capsys):
    assert resolve_threads(None, workers=8) == 1
    assert resolve_threads(3, workers=8) == 3
    assert resolve_threads("auto", workers=10_000) == 1
    assert thread_env(2)["OMP_NUM_THREADS"] == "2" and thread_env(2)["MKL_NUM_THREADS"] == "2"
    with pytest.raises(UsageError, match="with --scheduler give --threads T"):
        resolve_threads("auto", scheduler="tcp://127.0.0.1:8786")
    for bad, message in ((["--workers", "0"], "expected a number of worker processes >= 1 or 'auto', got 0"),
                         (["--threads", "two"], "expected a thread count >= 1 or 'auto', got 'two'")):
        with pytest.raises(SystemExit) as exit_:
            cli_main(["run", "--methods", "random", *bad])
        assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_workers_default_to_one_per_core_from_the_environment_or_the_flag(monkeypatch):
    monkeypatch.setattr("benchmarks.distributed.default_threads", lambda: 6)
    monkeypatch.delenv(WORKERS_ENV, raising=False)
    assert resolve_workers(None) == 6  # fresh install: one single-threaded worker per core
    assert resolve_workers(None, threads=2) == 3 and resolve_workers("auto", threads="2") == 3
    assert resolve_workers(None, threads="auto") == 6
    assert resolve_workers(4) == 4 and resolve_workers(None, scheduler="tcp://h:8786") == 1
    monkeypatch.setenv(WORKERS_ENV, "2")
    assert resolve_workers(None) == 2 and resolve_workers(5) == 5  # the flag wins over the environment
    monkeypatch.setenv(WORKERS_ENV, "auto")
    assert resolve_workers(None) == 6
    monkeypatch.setenv(WORKERS_ENV, "many")
    with pytest.raises(UsageError, match=r"\$MEDHASH_WORKERS must be a number of worker processes or 'auto', got 'many'"):
        resolve_workers(None)


def test_no_cluster_for_a_single_cell_left_to_run(tmp_path):
    spec = RunSpec(methods=["random"], datasets=["synthetic"], bits=[8], seeds=[0], dataset_options=SMALL,
                   out=tmp_path, progress=False)
    (outcome,) = run(spec, workers=4, echo=lambda line: None)
    assert outcome.status == "done"
    (manifest,) = (tmp_path / "runs").glob("*.json")
    execution = json.loads(manifest.read_text())["execution"]
    assert (execution["pool"], execution["workers"], execution["slots"]) == ("SerialPool", 1, 1)


def test_worker_setup_pins_threads_one_gpu_per_worker_and_labels_log_records(monkeypatch):
    import logging
    import types

    from benchmarks.distributed import WorkerSetup

    for name in (*thread_env(1), "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(name, raising=False)
    import torch

    previous, torch_threads = logging.getLogRecordFactory(), torch.get_num_threads()
    worker = types.SimpleNamespace(name=5, address="tcp://127.0.0.1:1")
    try:
        WorkerSetup(3, gpus=["0", "1", "2", "3"], loggers=("methods",)).setup(worker)
        assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "3"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "1"  # worker 5 of a local cluster, 4 GPUs: 5 % 4
        record = logging.getLogger("methods.x").makeRecord("methods.x", logging.INFO, "f", 1, "m", (), None)
        assert record.worker_label == "worker 5"
        assert logging.getLogger("methods").level == logging.INFO
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(torch_threads)
        logging.setLogRecordFactory(previous)
        logging.getLogger("methods").setLevel(logging.NOTSET)


# ---- serial == parallel -----------------------------------------------------------------------------
def test_parallel_rows_and_summary_equal_the_serial_run(tmp_path):
    spec = dict(methods=["cca-itq", "real-valued", "dscph"], datasets=["synthetic"], bits=[8], seeds=[0, 1], protocols=["unimodal"], dataset_options=SMALL, params={"dscph": {"epochs": 2}},
                progress=False, threads=1)
    serial = run(RunSpec(out=tmp_path / "serial", **spec), echo=lambda _: None)
    lines: list[str] = []
    # an existing cluster of 2 worker processes, joined by address as with --scheduler
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        parallel = run(RunSpec(out=tmp_path / "parallel", **spec), scheduler=cluster.scheduler_address,
                       echo=lines.append)

    assert [o.status for o in serial] == [o.status for o in parallel] == ["done"] * 6
    assert [o.path.name for o in serial] == [o.path.name for o in parallel]  # same cell ids, same grid order
    rows_s = list(iter_rows(tmp_path / "serial" / "cells"))
    rows_p = list(iter_rows(tmp_path / "parallel" / "cells"))
    a, b = comparable(rows_s), comparable(rows_p)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], f"row {key} differs serial vs parallel"
    assert {r["cell_threads"] for r in rows_p} == {1} and {r["device"] for r in rows_p} == {"cpu"}

    def table(outcomes):  # summary of the rows, with the timing columns blanked
        rows = [dict(r, value=0.0) if r["metric"] in TIMING_METRICS else r for o in outcomes for r in iter_rows(o.path)]
        return summary_tables(rows)

    assert table(serial) == table(parallel)
    # per-cell lines name the worker; the workers' per-epoch log lines reach the driver, labelled with the worker
    assert sum(" s on worker " in line for line in lines) == 6
    assert any(line.startswith("[worker ") and "methods.supervised" in line and "epoch" in line for line in lines)
    manifest = json.loads(next((tmp_path / "parallel" / "runs").iterdir()).read_text())
    assert manifest["execution"]["scheduler"] == cluster.scheduler_address and manifest["execution"]["threads"] == 1
    assert all(c["worker"].startswith("worker ") for c in manifest["cells"])


# ---- claims -----------------------------------------------------------------------------------------
def test_claim_is_exclusive_and_dies_with_its_process(tmp_path):
    path = claim_path(tmp_path, "synthetic", "cca-itq", "abc")
    first, second = CellClaim(path), CellClaim(path)
    assert first.try_acquire() and not second.try_acquire()
    assert str(os.getpid()) in second.holder()
    first.release()
    assert second.try_acquire()
    second.release()

    code = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from benchmarks.claims import CellClaim; "
            f"c = CellClaim({str(path)!r}); assert c.try_acquire(); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not CellClaim(path).try_acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        taker = CellClaim(path)
        assert taker.try_acquire()  # the kernel released the lock with its process
        taker.release()
    finally:
        holder.kill()


@pytest.mark.slow
def test_two_run_processes_share_the_grid_and_take_over_a_dead_claim(tmp_path):
    """A and B run the same grid on one --out at the same time (a barrier in the first fit of each proves it);
    A stalls on its second cell and is killed while B waits for that claim; B then computes it. Every cell
    is computed exactly once."""
    markers = tmp_path / "markers"
    markers.mkdir()
    args = ["run", "--methods", "test-stall", "--bits", "8", "--seeds", "0", "1", "2", "3", "4", "5",
            "--protocols", "unimodal", "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu", *SMALL_FLAGS]
    a = start_driver(*args, MEDHASH_TEST_DIR=str(markers), MEDHASH_TEST_BARRIER="2", MEDHASH_TEST_STALL_AFTER="1")
    b = start_driver(*args, MEDHASH_TEST_DIR=str(markers), MEDHASH_TEST_BARRIER="2")
    b_lines: list[str] = []
    stalled = markers / f"stall-{a.pid}"

    def read_b() -> None:
        assert b.stdout is not None
        for line in b.stdout:
            b_lines.append(line)

    reader = threading.Thread(target=read_b, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not (
                stalled.exists() and any(f"seed {stalled.read_text().split()[1]}: claimed by" in x for x in b_lines)):
            assert b.poll() is None and a.poll() is None, "".join(b_lines)
            time.sleep(0.1)
        seed = int(stalled.read_text().split()[1])  # A holds this cell's claim, and B has seen it claimed
        a.send_signal(signal.SIGKILL)
        a.wait(timeout=30)
        assert b.wait(timeout=240) == 0, "".join(b_lines)
        reader.join(timeout=10)
    finally:
        a.kill()
        b.kill()
    out_b = "".join(b_lines)
    started = {p.name.split("-")[0] for p in markers.iterdir() if not p.name.startswith("stall")}
    assert started == {str(a.pid), str(b.pid)}  # both processes ran cells at the same time
    rows = list(iter_rows(tmp_path / "out" / "cells"))
    run_of = {}
    for r in rows:
        assert run_of.setdefault(r["seed"], r["run_id"]) == r["run_id"]
    assert sorted(run_of) == [0, 1, 2, 3, 4, 5] and len(set(run_of.values())) == 2  # each cell once, by one run
    b_run = run_of[seed]  # the dead process's claim was taken over by B
    assert sum(rid == b_run for rid in run_of.values()) == 5  # A finished only its first cell
    assert "5 cell(s) run, 0 already finished (skipped), 1 finished by another process" in out_b
    assert f"test-stall 8b seed {seed}: claimed by " in out_b


# ---- faults -----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_worker_killed_mid_cell_loses_only_that_cell_and_a_rerun_completes_it(tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    args = ["run", "--methods", "test-stall", "--bits", "8", "--seeds", "0", "1", "2",
            "--protocols", "unimodal", "--out", str(tmp_path / "out"), "--no-progress", "--device", "cpu", *SMALL_FLAGS]
    driver = start_driver(*args, "--workers", "2", MEDHASH_TEST_DIR=str(markers), MEDHASH_TEST_STALL_SEED="1")
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not list(markers.glob("stall-*")) and driver.poll() is None:
            time.sleep(0.1)
        (stall,) = markers.glob("stall-*")
        worker_pid = int(stall.read_text().split()[0])
        assert worker_pid != driver.pid
        os.kill(worker_pid, signal.SIGKILL)
        out, _ = driver.communicate(timeout=240)
    finally:
        driver.kill()
    assert driver.returncode == 1, out
    assert re.search(r"LOST synthetic/test-stall 8b seed 1: worker \d \(tcp://[\d.:]+\) died while running it", out), out
    assert "2 cell(s) run, 0 already finished (skipped), 1 lost with their worker" in out
    assert "incomplete: 1 cell(s) lost with their worker (synthetic/test-stall 8b seed 1)" in out
    assert out.count(" s on worker ") == 2
    cells = sorted((tmp_path / "out" / "cells").rglob("*.jsonl"))
    assert len(cells) == 2
    before = {f: f.read_bytes() for f in cells}

    rerun = subprocess.run([sys.executable, "-c", DRIVER, *args], cwd=ROOT, env=driver_env(),
                           capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "1 cell(s) run, 2 already finished (skipped)" in rerun.stdout
    assert "synthetic/test-stall 8b seed 1: " in rerun.stdout
    after = sorted((tmp_path / "out" / "cells").rglob("*.jsonl"))
    assert len(after) == 3 and all(f.read_bytes() == before[f] for f in cells)


# ---- progress ---------------------------------------------------------------------------------------
def test_cost_model_weights_methods_by_prior_then_by_measured_times():
    costs = CostModel({"slow": 40.0, "fast": 1.0})
    assert costs.expected("slow") == 40.0 and costs.expected("fast") == 1.0
    costs.observe("fast", 3.0)
    costs.observe("fast", 5.0)
    assert costs.expected("fast") == 4.0
    assert costs.expected("slow") == 160.0  # prior 40 × measured/prior ratio 4 of the measured method
    assert costs.expected("unknown") == 40.0  # default prior 10 × 4


def test_eta_counts_pending_and_running_cells_by_cost_over_slots():
    costs = CostModel({"slow": 100.0, "fast": 1.0})
    progress = GridProgress(4, slots=2, costs=costs, show_bar=False, echo=lambda _: None)
    for key, method in (("a", "slow"), ("b", "slow"), ("c", "fast"), ("d", "fast")):
        progress.pending(key, method)
    assert progress.eta() == pytest.approx((100 + 100 + 1 + 1) / 2)
    progress.finished("c", "c done", method="fast", seconds=2.0)  # fast cells now cost 2 s, slow ones 200 s
    assert progress.eta() == pytest.approx((200 + 200 + 2) / 2)
    progress.started("a", "a", "slow")
    assert progress.eta() <= (200 + 200 + 2) / 2
    progress.close()
