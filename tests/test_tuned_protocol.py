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


def test_the_report_tuning_table_reproduces_an_independent_read_of_the_storage(tuned_run: Path) -> None:
    import optuna
    import pandas as pd

    from benchmarks.report.tables import tuning_table

    table = tuning_table(pd.DataFrame(_rows(tuned_run)), dataset="synthetic")
    (line,) = [dict(zip(table.header_labels(), r)) for r in table.rows]  # random has nothing to tune
    study = _journal_study(tuned_run / "journal.log", "cca-itq-synthetic-16")  # optuna itself, not our reader
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    best = max(complete, key=lambda t: (t.value, -t.number))
    defaults = next(t for t in complete if t.user_attrs.get("defaults"))
    assert line == {
        "method": "cca-itq", "bits": "16", "study": "cca-itq-synthetic-16", "trials budget": "2",
        "trials complete": str(len(complete)), "trials pruned": str(len(pruned)),
        "defaults validation mAP": f"{defaults.value:.3f}", "best validation mAP": f"{best.value:.3f}",
        "best trial": str(best.number),
        "chosen parameters": ", ".join(f"{k}={v}" for k, v in sorted(best.params.items())),
        "shared across bits": "no"}


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

    # an ablation selected without its base is tuned on its own, and the run says so (and how to inherit instead)
    calls.clear()
    said: list[str] = []
    tune_then_params(["mcmfh-no-gate"], ["synthetic"], [16], 4, storage=None, seeds=[0], echo=said.append)
    assert calls == [(["mcmfh-no-gate"], [16])]
    assert [line for line in said if "tuned as a method of its own because mcmfh is not selected" in line]

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


# ---- a variant's defining setting survives every path: --param, tuning, inherited or stored parameters ----------
def test_a_parameter_cannot_undo_the_setting_that_defines_a_variant() -> None:
    import optuna

    from methods import ConfigError, create_method, variant_search_space

    assert create_method("mcmfh-no-gate", {"gate_weight": 0.0}).config.gate_weight == 0.0  # the same value is fine
    with pytest.raises(ConfigError, match=r"mcmfh-no-gate is mcmfh with gate_weight=0\.0 \(given 0\.05\).*run mcmfh"):
        create_method("mcmfh-no-gate", {"gate_weight": 0.05})
    with pytest.raises(ConfigError, match=r"neg_pair_similarity='dot' \(given 'cosine'\)"):
        create_method("dscph-raw-ip", {"neg_pair_similarity": "cosine"})
    def space(name: str) -> set[str]:
        return set(variant_search_space(name, optuna.create_study().ask()))

    assert space("mcmfh") - space("mcmfh-no-gate") == {"gate_weight"}
    assert space("dscph") - space("dscph-raw-ip") == {"neg_pair_similarity"}


def test_tuning_a_variant_on_its_own_keeps_its_setting(tmp_path: Path) -> None:
    from benchmarks.tuning import default_params, defaults_value

    assert "neg_pair_similarity" in default_params("dscph")
    assert "neg_pair_similarity" not in default_params("dscph-raw-ip")
    argv = ["run", "--methods", "dscph-raw-ip", "--bits", "16", "--seeds", "0", "--tune", "2", "--tune-seeds", "0",
            "--workers", "1", "--threads", "1",
            "--storage", str(tmp_path / "journal.log"), "--out", str(tmp_path), "--no-progress", *SMALL]
    assert main(argv) == 0
    study = _journal_study(tmp_path / "journal.log", "dscph-raw-ip-synthetic-16")
    finished = [t for t in study.trials if t.state.is_finished()]
    assert len(finished) == 2 and all("neg_pair_similarity" not in t.user_attrs["config"] for t in finished)
    assert {t.user_attrs["threads"] for t in finished} == {1}  # as asked (--threads 1): scores depend on it
    assert defaults_value(study) == pytest.approx(next(t.value for t in finished if t.user_attrs.get("defaults")))
    rows = _rows(tmp_path)
    assert rows and {r["method_config"]["neg_pair_similarity"] for r in rows} == {"dot"}
    assert {r["method_info"]["neg_pair_similarity"] for r in rows} == {"dot"}


def test_a_hand_set_parameter_that_tuning_sets_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "--methods", "cca-itq", "random", "--bits", "16", "--seeds", "0", "--tune", "2",
            "--param", "itq_iterations=5", "--out", str(tmp_path), "--no-progress", *SMALL]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == (
        "error: --param itq_iterations (tuned for cca-itq): with --tune / --params best the tuned value is used and "
        "recorded; drop that --param, or run without tuning to set it by hand")
    assert not (tmp_path / "cells").exists()  # refused before any tuning or cell


def _best(method: str, dataset: str = "synthetic", **fields):
    from benchmarks.tuning.best import BestTrial

    return BestTrial(method=method, study_name=f"{method}-{dataset}-16", trial_number=3,
                     params={"gate_weight": 0.05, "lr_heads": 1e-3}, value=0.5, dataset=dataset, bits=16, budget=5,
                     n_finished=5, **fields)


def test_params_best_gives_ablations_the_base_study_and_checks_the_dataset(monkeypatch) -> None:
    import benchmarks.tuning as tuning
    from benchmarks.cli import UsageError
    from benchmarks.tuned import best_of_studies

    asked = []

    def fake_resolve(methods, studies, storage, **kw):
        asked.append(list(methods))
        return {"mcmfh": _best("mcmfh", dataset=studies[0].split("-")[1])}

    monkeypatch.setattr(tuning, "resolve_best_params", fake_resolve)
    tuned = best_of_studies(["mcmfh", "mcmfh-no-gate"], ["synthetic"], [16, 32], studies=["mcmfh-synthetic-16"],
                            storage=None)
    assert asked == [["mcmfh"]]  # the ablation needs no study of its own
    ablation = tuned["mcmfh-no-gate|synthetic|32"]
    assert ablation["params"] == {"lr_heads": 1e-3} and ablation["tuning"]["inherited_from"] == "mcmfh"
    assert ablation["tuning"]["study"] == "mcmfh-synthetic-16" and ablation["tuning"]["protocol"] is None  # not 'None'
    with pytest.raises(UsageError, match=r"study 'mcmfh-medpix-16' tuned mcmfh on medpix, but this run is on synthetic"):
        best_of_studies(["mcmfh"], ["synthetic"], [16], studies=["mcmfh-medpix-16"], storage=None)
