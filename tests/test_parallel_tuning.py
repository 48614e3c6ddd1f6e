"""Tuning trials on Dask workers: a journal study filled to exactly its budget by two worker processes, each
trial evaluated once, trial lines forwarded to the driver, and a re-run that runs nothing."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from benchmarks.parallel_tuning import run_study_parallel
from tests.tuning_toys import read_log, toy_spec, toy_value

State = optuna.trial.TrialState


@pytest.mark.slow
def test_dask_workers_fill_a_journal_study_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "evals.jsonl"
    storage = f"journal:{tmp_path / 'journal.log'}"
    monkeypatch.setenv("TOY_LOG", str(log))  # the workers inherit the toy's environment
    monkeypatch.setenv("TOY_DELAY", "0.2")
    lines: list[str] = []
    summary = run_study_parallel(toy_spec(storage, log, 6, delay=0.2), workers=2, echo=lines.append)
    assert (summary.n_complete, summary.n_failed, summary.ran, summary.budget) == (6, 0, 6, 6)

    study = optuna.load_study(study_name="toy-synthetic-16", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "journal.log"))))
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(6)) and {t.state for t in trials} == {State.COMPLETE}
    logged = read_log(log)
    assert sorted(e["number"] for e in logged) == list(range(6))  # each trial evaluated exactly once
    assert len({e["pid"] for e in logged}) == 2  # by both worker processes
    for t in trials:
        assert t.value == pytest.approx(toy_value(t.params["x"], t.params["y"]))
    assert summary.best_value == pytest.approx(max(t.value for t in trials))
    # one line per finished trial, forwarded from the worker that ran it
    trial_lines = [x for x in lines if "benchmarks.tuning.trials: trial " in x]
    assert len(trial_lines) == 6 and all(x.startswith("[worker ") for x in trial_lines)

    again = run_study_parallel(toy_spec(storage, log, 6), workers=1)
    assert (again.ran, again.n_complete) == (0, 6)
