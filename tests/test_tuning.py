"""Tuning sweeps: shared journal / PostgreSQL stores, exact trial counts, pruning, resume after a kill."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from benchmarks.cli import UsageError
from benchmarks.cli import main as cli_main
from benchmarks.tuning import (
    TuneSpec,
    best_params,
    default_study_name,
    open_storage,
    run_study,
    score_subruns,
    split_trials,
)
from tests.tuning_toys import read_log, toy_spec, toy_value

PROJECT_ROOT = Path(__file__).resolve().parent.parent
State = optuna.trial.TrialState


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The toy objective's environment (restored after the test): log file and no delay."""
    monkeypatch.setenv("TOY_LOG", str(tmp_path / "evals.jsonl"))
    monkeypatch.setenv("TOY_DELAY", "0")
    return tmp_path


def check_every_trial_once(storage: str, name: str, log: Path, n: int, workers: int) -> None:
    """The study holds exactly ``n`` complete trials numbered 0..n-1, each evaluated (logged) exactly once,
    with the logged value, by ``workers`` distinct processes."""
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    trials = study.get_trials()
    assert [t.state for t in trials] == [State.COMPLETE] * n
    assert sorted(t.number for t in trials) == list(range(n))
    logged = read_log(log)
    assert sorted(e["number"] for e in logged) == list(range(n))  # once each, none lost
    by_number = {e["number"]: e for e in logged}
    for t in trials:
        x, y = t.params["x"], t.params["y"]
        assert t.value == pytest.approx(toy_value(x, y))
        assert t.value == by_number[t.number]["value"]
        assert t.user_attrs["worker"]["pid"] == by_number[t.number]["pid"]
    assert len({e["pid"] for e in logged}) == workers


# ---- small pieces ------------------------------------------------------------------------------------------
def test_split_trials_is_exact_and_even() -> None:
    assert split_trials(7, 3) == [3, 2, 2]
    assert split_trials(2, 4) == [1, 1]
    assert split_trials(0, 3) == []
    assert split_trials(-2, 3) == []
    for remaining in range(0, 20):
        for workers in range(1, 6):
            shares = split_trials(remaining, workers)
            assert sum(shares) == max(0, remaining) and all(s > 0 for s in shares)
            assert not shares or max(shares) - min(shares) <= 1


def test_default_study_name_and_spec_validation() -> None:
    assert default_study_name("mcmfh", "medpix", 16) == "mcmfh-medpix-16"
    assert TuneSpec(method="mcmfh", dataset="medpix", bits=32, n_trials=1).name == "mcmfh-medpix-32"
    with pytest.raises(UsageError, match="--bits"):
        TuneSpec(method="m", dataset="d", bits=4, n_trials=1).validate()
    with pytest.raises(UsageError, match="--trials"):
        TuneSpec(method="m", dataset="d", bits=16, n_trials=0).validate()


def test_open_storage_journal_path_and_bad_url(tmp_path: Path) -> None:
    journal = tmp_path / "deep" / "j.log"
    storage = open_storage(f"journal:{journal}")
    assert isinstance(storage, optuna.storages.JournalStorage) and journal.exists()
    with pytest.raises(UsageError, match=r"cannot open storage postgresql\+psycopg2://u:\*\*\*@127\.0\.0\.1:1/x"):
        open_storage("postgresql+psycopg2://u:secret@127.0.0.1:1/x")


def test_score_subruns_reports_running_mean_and_prunes_between_subruns() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(n_startup_trials=1))
    calls: list[str] = []

    def run(tag: str, value: float):
        def fn() -> float:
            calls.append(tag)
            return value

        return fn

    study.optimize(lambda t: score_subruns(t, [run("a0", 0.8), run("a1", 0.6)]), n_trials=1)
    study.optimize(lambda t: score_subruns(t, [run("b0", 0.1), run("b1", 0.9)]), n_trials=1)
    study.optimize(lambda t: score_subruns(t, [run("c0", 0.9), run("c1", 0.5)]), n_trials=1)
    a, b, c = study.get_trials()
    assert a.state == State.COMPLETE and a.value == pytest.approx(0.7)
    assert a.intermediate_values == {0: pytest.approx(0.8), 1: pytest.approx(0.7)}
    # 0.1 < median 0.8 of the earlier trial at step 0: pruned, the second sub-run never runs.
    assert b.state == State.PRUNED and b.user_attrs["subrun_scores"] == [0.1]
    assert c.state == State.COMPLETE and c.value == pytest.approx(0.7)
    assert calls == ["a0", "a1", "b0", "c0", "c1"]
    with pytest.raises(ValueError):
        score_subruns(None, [])


# ---- shared stores -----------------------------------------------------------------------------------------
def test_two_workers_fill_one_journal_study_exactly(toy: Path, tmp_path: Path) -> None:
    storage, log = f"journal:{tmp_path / 'journal.log'}", tmp_path / "evals.jsonl"
    summary = run_study(toy_spec(storage, log, 6, delay=0.05), workers=2)
    assert (summary.n_complete, summary.ran, summary.n_failed) == (6, 6, 0)
    check_every_trial_once(storage, "toy-synthetic-16", log, 6, workers=2)
    # Resumable by name: the same target runs nothing, a larger one only the missing trials.
    assert run_study(toy_spec(storage, log, 6), workers=2).ran == 0
    again = run_study(toy_spec(storage, log, 8), workers=1)
    assert (again.ran, again.n_complete) == (2, 8)
    study = optuna.load_study(study_name="toy-synthetic-16", storage=open_storage(storage))
    assert again.best_value == pytest.approx(max(t.value for t in study.get_trials()))
    assert best_params("toy-synthetic-16", storage) == study.best_trial.user_attrs["config"]


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory):
    """A PostgreSQL URL: ``MEDHASH_TEST_POSTGRES_URL`` (set by ``.ci/run``), else a throwaway server started
    with ``.ci/postgres.sh start --no-install``; skips with the reason when none can be started."""
    pytest.importorskip("psycopg2", reason="psycopg2 is not installed")
    url = os.environ.get("MEDHASH_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    script = PROJECT_ROOT / ".ci" / "postgres.sh"
    if shutil.which("bash") is None:
        pytest.skip("no bash to run .ci/postgres.sh")
    proc = subprocess.run(["bash", str(script), "start", "--no-install"], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        pytest.skip(f"no local PostgreSQL server could be started: {proc.stderr.strip().splitlines()[-1:]}")
    env = dict(line.removeprefix("export ").split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    try:
        yield env["MEDHASH_TEST_POSTGRES_URL"]
    finally:
        subprocess.run(["bash", str(script), "stop", env["MEDHASH_TEST_POSTGRES_DIR"]], capture_output=True, timeout=120)


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers_fill_one_postgres_study_exactly(toy: Path, tmp_path: Path, postgres_url: str) -> None:
    name = f"toy-pg-{os.getpid()}-{time.time_ns()}"
    log = tmp_path / "evals.jsonl"
    summary = run_study(toy_spec(postgres_url, log, 6, delay=0.05, name=name), workers=2)
    assert (summary.n_complete, summary.ran, summary.n_failed) == (6, 6, 0)
    assert summary.storage.startswith("postgresql")
    check_every_trial_once(postgres_url, name, log, 6, workers=2)
    assert isinstance(open_storage(postgres_url), optuna.storages.RDBStorage)


# ---- resume after a kill -----------------------------------------------------------------------------------
def test_study_resumed_after_kill_keeps_every_finished_trial(toy: Path, tmp_path: Path) -> None:
    journal, log = tmp_path / "journal.log", tmp_path / "evals.jsonl"
    storage = f"journal:{journal}"
    script = tmp_path / "worker.py"
    script.write_text(
        "import sys\n"
        f"sys.path[:0] = [{str(PROJECT_ROOT)!r}]\n"
        "from tests.tuning_toys import toy_spec\n"
        "from benchmarks.tuning import run_study\n"
        f"run_study(toy_spec({storage!r}, {str(log)!r}, 40, delay=0.5))\n"
    )
    env = {**os.environ, "TOY_LOG": str(log), "TOY_DELAY": "0.5"}
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 90
        while True:  # kill once 3 trials are finished and the next one is running (inside its 0.5 s sleep)
            assert proc.poll() is None, f"worker exited early: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "worker finished no trials in 90 s"
            if journal.exists() and journal.stat().st_size:
                trials = optuna.load_study(study_name="toy-synthetic-16", storage=open_storage(storage)).get_trials()
                running = [t for t in trials if t.state == State.RUNNING]
                complete = [t for t in trials if t.state == State.COMPLETE]
                if len(complete) >= 3 and len(running) == 1 and len(running[0].params) == 2:
                    break  # the running trial has recorded its worker and drawn its parameters
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    study = optuna.load_study(study_name="toy-synthetic-16", storage=open_storage(storage))
    before = {t.number: (t.params, t.value) for t in study.get_trials(states=(State.COMPLETE,))}
    stale = [t.number for t in study.get_trials(states=(State.RUNNING,))]
    assert len(before) >= 3 and len(stale) == 1

    target = len(before) + 2
    summary = run_study(toy_spec(storage, log, target), workers=1)
    assert summary.recovered == stale
    study = optuna.load_study(study_name="toy-synthetic-16", storage=open_storage(storage))
    after = {t.number: t for t in study.get_trials()}
    for number, (params, value) in before.items():  # every finished trial kept, unchanged
        assert after[number].state == State.COMPLETE
        assert (after[number].params, after[number].value) == (params, value)
    assert sum(t.state == State.COMPLETE for t in after.values()) == target == summary.n_complete
    for number in stale:  # the killed trial is failed and its parameters re-run
        assert after[number].state == State.FAIL
        retries = [t for t in after.values() if t.user_attrs.get("retry_of") == number]
        assert len(retries) == 1 and retries[0].state == State.COMPLETE
        assert retries[0].params == after[number].params


# ---- errors and the real objective -------------------------------------------------------------------------
def test_best_params_errors_and_name_clash(toy: Path, tmp_path: Path) -> None:
    storage, log = f"journal:{tmp_path / 'j.log'}", tmp_path / "evals.jsonl"
    run_study(toy_spec(storage, log, 1), workers=1)
    with pytest.raises(UsageError, match=r"no study 'nope' .* studies there: toy-synthetic-16"):
        best_params("nope", storage)
    clash = toy_spec(storage, log, 1)
    clash.bits = 32
    with pytest.raises(UsageError, match=r"was tuned with other settings: bits 16 \(now 32\);"):
        run_study(clash)


def test_tune_command_rejects_unknown_method(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["tune", "--method", "no-such-method", "--dataset", "synthetic", "--bits", "16", "--trials", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown method 'no-such-method'" in err[0]


@pytest.mark.slow
def test_validation_objective_scores_the_validation_split(tmp_path: Path) -> None:
    """The real objective on synthetic data equals an independent fit + ``validation_score`` per seed."""
    runner = pytest.importorskip("benchmarks.cell")
    from methods import create_method

    storage = f"journal:{tmp_path / 'j.log'}"
    opts = {"n_train": "200", "n_validation": "60", "n_query": "40"}
    spec = TuneSpec(method="cca-itq", dataset="synthetic", bits=16, n_trials=2, storage=storage, seeds=(0, 1),
                    dataset_options=opts)
    summary = run_study(spec)
    assert summary.n_complete == 2
    dataset, features = runner.prepare_features("synthetic", data_root=None, dataset_options=opts, progress=False)
    from medhash_datasets.base import feature_split

    train, val = feature_split(dataset, features, "train"), feature_split(dataset, features, "validation")
    study = optuna.load_study(study_name="cca-itq-synthetic-16", storage=open_storage(storage))
    for trial in study.get_trials():
        expected = []
        for seed in (0, 1):  # the trial's own config (its search-space draw), fitted independently
            method = create_method("cca-itq", trial.user_attrs["config"]).fit(train, val, 16, seed)
            expected.append(runner.validation_score(method, dataset, features))
        assert trial.user_attrs["subrun_scores"] == pytest.approx(expected)
        assert trial.value == pytest.approx(math.fsum(expected) / 2)
    assert study.user_attrs["objective"].startswith("validation mAP")


# ------------------------------------------------------------------------------------------ review fixes
def _one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


TUNE = ["tune", "--method", "mcmfh", "--dataset", "synthetic", "--bits", "16", "--trials", "1", "--device", "cpu"]


@pytest.mark.parametrize(("option", "flag"), [("label_scheme=location", "--label-scheme"), ("seed=3", "--dataset-seed")])
def test_tune_and_time_fit_refuse_reserved_dataset_options(option: str, flag: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    storage = str(tmp_path / "j.log")
    assert cli_main([*TUNE, "--storage", storage, "--dataset-option", option]) == 2
    assert flag in _one_line_error(capsys)
    time_fit = ["time-fit", "--method", "cca-itq", "--dataset", "synthetic", "--device", "cpu"]
    assert cli_main([*time_fit, "--dataset-option", option]) == 2
    assert flag in _one_line_error(capsys)
    with pytest.raises(UsageError, match=flag):
        TuneSpec(method="m", dataset="d", bits=16, n_trials=1, dataset_options={option.split("=")[0]: "x"}).validate()


def test_tune_command_passes_label_scheme_and_dataset_seed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    import benchmarks.tuning as tuning

    seen: list[TuneSpec] = []

    def fake_run_study(spec: TuneSpec, *, workers: int = 1, echo: object = None) -> tuning.TuneSummary:
        seen.append(spec)
        return tuning.TuneSummary(spec.name, "x", 0, 0, 0, 0, [], None, {})

    monkeypatch.setattr(tuning, "run_study", fake_run_study)
    assert cli_main([*TUNE, "--label-scheme", "location", "--dataset-seed", "4", "--dataset-option", "n_train=50"]) == 0
    assert seen[0].label_scheme == "location" and seen[0].dataset_seed == 4 and seen[0].dataset_options == {"n_train": "50"}
    from benchmarks.cli import build_parser

    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["tune"]
                         .format_help().split())
    assert "label_scheme=location" not in help_text and "--label-scheme" in help_text
    assert "MEDHASH_CACHE_DIR or ~/.cache/medhash-bench/features" in help_text


def test_validation_objective_gets_label_scheme_and_dataset_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.cell as runner
    from benchmarks.tuning import validation_objective

    class Seen(Exception):
        pass

    def fake_prepare(name: str, **kwargs: object) -> None:
        raise Seen(kwargs)

    monkeypatch.setattr(runner, "prepare_features", fake_prepare)
    spec = TuneSpec(method="mcmfh", dataset="medpix", bits=16, n_trials=1, label_scheme="location", dataset_seed=2)
    with pytest.raises(Seen) as exc:
        validation_objective(spec)
    kwargs = exc.value.args[0]
    assert kwargs["label_scheme"] == "location" and kwargs["dataset_seed"] == 2


@pytest.mark.parametrize("method", ["random"])
def test_tune_refuses_method_without_search_space(method: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from benchmarks.tuning import search_space_is_empty

    assert search_space_is_empty(method)
    cmd = ["tune", "--method", method, "--dataset", "synthetic", "--bits", "16", "--trials", "3",
           "--storage", str(tmp_path / "j.log")]
    assert cli_main(cmd) == 2
    assert f"method {method} declares no search space" in _one_line_error(capsys)
    assert not (tmp_path / "j.log").exists()


def test_journal_storage_refuses_non_journal_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a journal\n")
    other_json = tmp_path / "data.jsonl"
    other_json.write_text('{"a": 1}\n')
    for path in (text, other_json):
        with pytest.raises(UsageError, match="not an Optuna journal file"):
            open_storage(str(path))
        assert cli_main([*TUNE, "--storage", str(path)]) == 2
        assert "not an Optuna journal file" in _one_line_error(capsys)
        assert path.read_text() in ('hello, this is not a journal\n', '{"a": 1}\n')  # untouched
    with pytest.raises(UsageError, match="is a folder"):
        open_storage(str(tmp_path))
    empty = tmp_path / "empty.log"
    empty.write_text("")
    assert isinstance(open_storage(str(empty)), optuna.storages.JournalStorage)  # empty = new journal
    # a real journal is accepted and read back; one corrupted after its first record is a one-line error
    journal = tmp_path / "journal.log"
    optuna.create_study(study_name="s", storage=open_storage(str(journal)))
    assert optuna.get_all_study_names(open_storage(str(journal))) == ["s"]
    with journal.open("a") as fh:
        fh.write("garbage\n")
    spec = TuneSpec(method="toy", dataset="synthetic", bits=16, n_trials=1, storage=str(journal), study_name="s2")
    from benchmarks.tuning import create_or_load_study

    lines = journal.read_text().splitlines()
    with pytest.raises(UsageError, match=rf"journal storage {journal} line {len(lines)} is not a journal record"):
        create_or_load_study(spec)
    assert journal.read_text().splitlines() == lines  # refused, not changed


def test_sql_storage_with_heartbeat_emits_no_future_warning(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        storage = open_storage(f"sqlite:///{tmp_path / 'o.db'}", heartbeat_interval=60)
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]


def test_negative_seeds_are_refused_up_front(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli_main(["time-fit", "--method", "cca-itq", "--dataset", "synthetic", "--seed", "-1"])
    assert exc.value.code == 2 and "--seed" in _one_line_error(capsys)
    with pytest.raises(SystemExit):
        cli_main([*TUNE, "--seeds", "0", "-1"])
    assert "--seeds" in _one_line_error(capsys)
    with pytest.raises(UsageError, match="--seeds must be >= 0"):
        TuneSpec(method="m", dataset="d", bits=16, n_trials=1, seeds=(0, -1)).validate()


def test_time_fit_passes_label_scheme_and_documents_cache_dir(capsys: pytest.CaptureFixture[str]) -> None:
    code = cli_main(["time-fit", "--method", "cca-itq", "--dataset", "synthetic", "--label-scheme", "location",
                     "--device", "cpu"])
    assert code == 2 and "unknown label scheme 'location'" in _one_line_error(capsys)
    from benchmarks.cli import build_parser

    help_text = " ".join(build_parser()._subparsers._group_actions[0].choices["time-fit"].format_help().split())
    assert "MEDHASH_CACHE_DIR or ~/.cache/medhash-bench/features" in help_text and "--dataset-seed" in help_text
