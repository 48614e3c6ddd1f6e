"""``run --tune N`` / ``--params best`` (issue 14.4) and grid files / manifest replay (issue 16.10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks.cli import main

SMALL = ["--dataset-option", "n_train=120", "--dataset-option", "n_validation=40", "--dataset-option", "n_query=40"]


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted((out / "cells").rglob("*.jsonl")) for line in p.read_text().splitlines()]


def _journal_study(path: Path, name: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tuned")
    argv = ["run", "--methods", "random", "cca-itq", "--bits", "16", "--seeds", "0", "--tune", "2", "--tune-seeds", "0",
            "--storage", str(out / "journal.log"), "--out", str(out), "--no-progress", *SMALL]
    assert main(argv) == 0
    return out


def test_tuned_rows_name_their_study_and_best_trial(tuned_run: Path) -> None:
    rows = _rows(tuned_run)
    cca = [r for r in rows if r["variant"] == "cca-itq"]
    study = _journal_study(tuned_run / "journal.log", "cca-itq-synthetic-16")  # independent read of the storage
    best = study.best_trial
    assert {r["tuning"]["study"] for r in cca} == {"cca-itq-synthetic-16"}
    assert {r["tuning"]["trial"] for r in cca} == {best.number}
    assert cca[0]["tuning"]["budget"] == 2 and cca[0]["tuning"]["best_value"] == pytest.approx(best.value)
    assert len([t for t in study.trials if t.state.is_finished()]) == 2
    for key, value in best.params.items():
        if key in cca[0]["method_config"]:
            assert cca[0]["method_config"][key] == pytest.approx(value)
    assert all(r["tuning"] is None for r in rows if r["variant"] == "random")  # nothing to tune: defaults


def test_tune_resumes_without_new_trials(tuned_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--methods", "random", "cca-itq", "--bits", "16", "--seeds", "0", "--tune", "2", "--tune-seeds", "0",
            "--storage", str(tuned_run / "journal.log"), "--out", str(tuned_run), "--no-progress", *SMALL]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "trial 2" not in out and "0 cell(s) run, 2 already finished" in out
    assert len(_journal_study(tuned_run / "journal.log", "cca-itq-synthetic-16").trials) == 2


def test_params_best_refuses_a_study_of_another_method(tuned_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--methods", "real-valued", "--seeds", "0", "--params", "best", "--study", "cca-itq-synthetic-16",
            "--storage", str(tuned_run / "journal.log"), "--out", str(tuned_run / "other"), "--no-progress", *SMALL]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "tuned method cca-itq" in err and "only go to cca-itq" in err


def test_params_best_by_default_study_names(tuned_run: Path) -> None:
    out = tuned_run / "best"
    argv = ["run", "--methods", "cca-itq", "--bits", "16", "--seeds", "0", "--params", "best",
            "--storage", str(tuned_run / "journal.log"), "--out", str(out), "--no-progress", *SMALL]
    assert main(argv) == 0
    tuned = {r["cell_id"] for r in _rows(tuned_run) if r["variant"] == "cca-itq"}
    again = {r["cell_id"] for r in _rows(out)}
    assert again == tuned  # the same parameters make the same cell


def test_grid_file_and_manifest_replay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text('methods = ["random"]\nbits = [16, 32]\nseeds = [0]\nno-progress = true\n'
                    f'out = "{tmp_path / "out"}"\n[dataset_option]\nn_train = 120\nn_validation = 40\nn_query = 40\n')
    assert main(["run", "--config", str(grid)]) == 0
    assert "2 cell(s) run" in capsys.readouterr().out
    manifest = next((tmp_path / "out" / "runs").glob("*.json"))
    assert main(["run", "--config", str(manifest)]) == 0
    assert "0 cell(s) run, 2 already finished" in capsys.readouterr().out
    # the command line wins over the file
    assert main(["run", "--config", str(grid), "--bits", "64"]) == 0
    assert "1 cell(s) run" in capsys.readouterr().out


def test_grid_file_unknown_key_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grid = tmp_path / "grid.toml"
    grid.write_text('methodz = ["random"]\n')
    assert main(["run", "--config", str(grid)]) == 2
    assert "unknown key 'methodz'" in capsys.readouterr().err


def test_ablations_inherit_the_base_study_without_overriding_their_own_setting(monkeypatch) -> None:
    import benchmarks.tuning as tuning
    from benchmarks.tuned import tune_then_params
    from benchmarks.tuning.workers import TuneSummary

    calls = []

    def fake_grid(methods, datasets, bits, n_trials, **kw):
        calls.append((list(methods), list(bits)))
        return [TuneSummary(f"{m}-synthetic-{b}", "mem", 3, 1, 0, 4, [], 0.5, {"gate_weight": 0.05, "lr_heads": 1e-3},
                            method=m, dataset="synthetic", bits=b, budget=4, best_trial=2) for m in methods for b in bits]

    monkeypatch.setattr(tuning, "tune_grid", fake_grid)
    tuned = tune_then_params(["mcmfh", "mcmfh-no-gate"], ["synthetic"], [16, 32], 4, storage=None, seeds=[0],
                             tune_bits=16, echo=lambda _: None)
    assert calls == [(["mcmfh"], [16])]  # the ablation is not tuned on its own; one code length when tune_bits
    full, ablation = tuned["mcmfh|synthetic|32"], tuned["mcmfh-no-gate|synthetic|32"]
    assert full["params"] == {"gate_weight": 0.05, "lr_heads": 1e-3} and full["tuning"]["shared_across_bits"]
    assert ablation["params"] == {"lr_heads": 1e-3}  # gate_weight = 0 is what the ablation is about
    assert ablation["tuning"]["inherited_from"] == "mcmfh" and ablation["tuning"]["study"] == "mcmfh-synthetic-16"

    # a float method's one study is at --tune-bits too, so a run over other code lengths reuses it
    calls.clear()
    tuned = tune_then_params(["real-valued"], ["synthetic"], [32, 64], 4, storage=None, seeds=[0], tune_bits=16,
                             echo=lambda _: None)
    assert calls == [(["real-valued"], [16])]
    assert tuned["real-valued|synthetic|None"]["tuning"]["study"] == "real-valued-synthetic-16"


def test_the_manifest_exists_before_any_cell_runs_and_replays(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A run killed during its first cell still leaves a manifest that ``run --config`` replays."""
    import benchmarks.runner as runner

    real, seen = runner.execute_cell, []

    def spy(*args, **kwargs):
        seen.append([json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*.json")])
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "execute_cell", spy)
    assert main(["run", "--methods", "random", "--bits", "16", "--seeds", "0", "--out", str(tmp_path), "--no-progress",
                 *SMALL]) == 0
    (first,) = seen[0]  # what a kill at that moment would leave behind
    assert first["cells"] == [] and first["spec"]["command"]["methods"] == ["random"]
    assert first["datasets"]["synthetic"]["split_sizes"]["query"] == 40
    monkeypatch.undo()
    for cell in (tmp_path / "cells").rglob("*.jsonl"):
        cell.unlink()  # as if the kill had come before the cell file was written
    replay = tmp_path / "interrupted.json"
    replay.write_text(json.dumps(first))
    assert main(["run", "--config", str(replay)]) == 0
    assert "1 cell(s) run" in capsys.readouterr().out
