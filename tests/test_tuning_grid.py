"""Tuned protocol (issue 14 item 4): the follow-up command ``tune`` prints works verbatim with ``run``'s own
parser; ``tune_grid`` gives every (method, dataset, bits) study the same budget and resumes; ``--params
best`` resolves exactly one study per method; the tuning table equals an independent read of the storage."""

from __future__ import annotations

import json
import math
import shlex
import sqlite3
from pathlib import Path

import optuna
import pytest

from benchmarks.cli import UsageError, build_parser
from benchmarks.cli import main as cli_main
from benchmarks.commands._args import loader_options, parse_key_values
from benchmarks.tuning import (
    TUNING_COLUMNS,
    grid_study_name,
    open_storage,
    resolve_best_params,
    tune_grid,
    tuning_table,
)
from tests.tuning_toys import TOY, read_log

State = optuna.trial.TrialState


@pytest.fixture
def toy_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The toy objective's environment (trials with x < -1 are pruned); returns its log path."""
    monkeypatch.setenv("TOY_LOG", str(tmp_path / "evals.jsonl"))
    monkeypatch.setenv("TOY_DELAY", "0")
    monkeypatch.setenv("TOY_PRUNE_BELOW", "-1.0")
    monkeypatch.delenv("TOY_ENCODER", raising=False)
    return tmp_path / "evals.jsonl"


# ---- (a) the printed follow-up command -------------------------------------------------------------------
def _tune_and_capture_follow_up(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> tuple[list[str], object]:
    import benchmarks.tuning as tuning

    seen = []

    def fake_run_study(spec: tuning.TuneSpec, *, workers: int = 1, echo=None) -> tuning.TuneSummary:
        seen.append(spec)
        return tuning.TuneSummary(spec.name, "x", 1, 0, 0, 1, [], 0.5, {"lr": 0.01}, best_trial=0)

    monkeypatch.setattr(tuning, "run_study", fake_run_study)
    assert cli_main(argv) == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("use it: ")]
    return shlex.split(line.removeprefix("use it: ")), seen[0]


def test_printed_run_command_round_trips_through_the_run_parser(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    data_root = tmp_path / "data root"  # a space: the command must quote it
    data_root.mkdir()
    storage, cache = str(tmp_path / "my journal.log"), str(tmp_path / "cache")
    argv = ["tune", "--method", "dscph", "--dataset", "medpix", "--bits", "32", "--trials", "3",
            "--storage", storage, "--study", "dscph tuned", "--seeds", "3", "4", "--protocol", "paired",
            "--data-root", str(data_root), "--encoder", "biomedclip", "--encoder-option", "path=/w x/clip",
            "--label-scheme", "location", "--dataset-seed", "2", "--dataset-option", "append_findings=true",
            "--dataset-option", "min_count=3", "--cache-dir", cache, "--device", "cpu"]
    cmd, spec = _tune_and_capture_follow_up(argv, monkeypatch, capsys)
    assert cmd[:4] == ["python", "-m", "benchmarks", "run"]
    run = build_parser().parse_args(cmd[3:])  # the real `run` parser
    assert run.command == "run"
    assert (run.methods, run.datasets, run.bits) == (["dscph"], ["medpix"], [32])
    studies = run.study if isinstance(run.study, list) else [run.study]  # one name or one per method
    assert (run.params, studies, run.storage) == ("best", ["dscph tuned"], storage)
    assert run.protocols == ["paired"]  # the protocol the parameters were tuned under
    assert run.data_root == str(data_root.resolve()) == spec.data_root
    assert (run.encoder, parse_key_values(run.encoder_option, "--encoder-option")) == ("biomedclip", {"path": "/w x/clip"})
    assert parse_key_values(run.encoder_option, "-") == spec.encoder_options
    assert (run.label_scheme, run.dataset_seed, run.cache_dir, run.device) == ("location", 2, cache, "cpu")
    assert loader_options(run.dataset_option) == {"append_findings": "true", "min_count": "3"} == spec.dataset_options


def test_printed_command_names_the_data_root_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MEDHASH_DATA_ROOT", str(tmp_path))
    cmd, _ = _tune_and_capture_follow_up(["tune", "--method", "ddbh", "--dataset", "synthetic", "--bits", "16",
                                          "--trials", "1"], monkeypatch, capsys)
    run = build_parser().parse_args(cmd[3:])
    assert run.data_root == str(tmp_path.resolve()) and run.storage is None and run.encoder == "auto"
    assert run.dataset_seed == 0 and run.dataset_option is None and run.label_scheme is None


# ---- (c) an equal budget per study, resumable ------------------------------------------------------------
def test_tune_grid_gives_every_study_the_same_budget_and_resumes(toy_env: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "j.log")
    lines: list[str] = []
    grid = dict(storage=storage, objective=TOY, seeds=(0,))
    out = tune_grid(["dscph", "random", "ddbh"], ["synthetic"], [16, 32], 3, echo=lines.append, **grid)
    assert [(s.method, s.bits, s.study_name) for s in out] == [
        (m, b, grid_study_name(m, "synthetic", b)) for m in ("dscph", "random", "ddbh") for b in (16, 32)]
    assert [s.skipped is not None for s in out] == [False, False, True, True, False, False]
    store = open_storage(storage)
    assert sorted(optuna.get_all_study_names(store)) == ["ddbh-synthetic-16", "ddbh-synthetic-32",
                                                          "dscph-synthetic-16", "dscph-synthetic-32"]
    n_pruned = 0
    for s in out:
        if s.skipped:
            continue
        trials = optuna.load_study(study_name=s.study_name, storage=store).get_trials()
        states = [t.state for t in trials]
        assert len(trials) == 3 and set(states) <= {State.COMPLETE, State.PRUNED}  # pruned trials count
        assert (s.ran, s.n_complete + s.n_pruned, s.budget) == (3, 3, 3)
        n_pruned += s.n_pruned
    assert len(read_log(toy_env)) == 12 and sum(ln.startswith("trial ") for ln in lines) == 12
    assert n_pruned == sum(ln.startswith("trial ") and " PRUNED:" in ln for ln in lines)

    again = tune_grid(["dscph", "random", "ddbh"], ["synthetic"], [16, 32], 3, **grid)
    assert [s.ran for s in again if not s.skipped] == [0, 0, 0, 0] and len(read_log(toy_env)) == 12
    more = tune_grid(["dscph", "ddbh"], ["synthetic"], [16, 32], 4, **grid)
    assert [(s.ran, s.n_complete + s.n_pruned) for s in more] == [(1, 4)] * 4
    with pytest.raises(UsageError, match=r"study 'ddbh-synthetic-32' .* seeds \[0\] \(now \[0, 1\]\)"):
        tune_grid(["ddbh", "dscph"], ["synthetic"], [32, 16], 5, **{**grid, "seeds": (0, 1)})
    assert len(read_log(toy_env)) == 16  # refused before any trial ran (the first study in grid order named)
    assert grid_study_name("dscph", "medpix", 16, "tuned") == "tuned-dscph-medpix-16"


# ---- (b) one study per method --------------------------------------------------------------------------
def test_best_params_reach_only_the_method_their_study_tuned(toy_env: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "j.log")
    tune_grid(["dscph", "ddbh"], ["synthetic"], [16, 32], 3, storage=storage, objective=TOY, seeds=(0,))
    store = open_storage(storage)

    def best_of(name: str) -> tuple[int, dict]:
        complete = [t for t in optuna.load_study(study_name=name, storage=store).get_trials()
                    if t.state == State.COMPLETE]
        top = max(complete, key=lambda t: (t.value, -t.number))
        return top.number, top.user_attrs["config"]

    got = resolve_best_params(["ddbh", "dscph", "random"], ["dscph-synthetic-16", "ddbh-synthetic-32"], storage)
    assert sorted(got) == ["ddbh", "dscph"]  # random has nothing to tune: defaults
    for method, name in (("ddbh", "ddbh-synthetic-32"), ("dscph", "dscph-synthetic-16")):
        assert (got[method].method, got[method].study_name) == (method, name)
        assert (got[method].trial_number, got[method].params) == best_of(name)
    assert got["ddbh"].bits == 32 and got["ddbh"].dataset == "synthetic" and got["ddbh"].budget == 3
    assert got["ddbh"].protocol == "unimodal" and got["ddbh"].seeds == (0,) and got["ddbh"].n_finished == 3
    defaults = resolve_best_params(["dscph", "ddbh"], None, storage, dataset="synthetic", bits=16)
    assert {m: b.study_name for m, b in defaults.items()} == {"dscph": "dscph-synthetic-16", "ddbh": "ddbh-synthetic-16"}

    with pytest.raises(UsageError, match=r"^study 'ddbh-synthetic-16' tuned method ddbh, which is not among the "
                                         r"selected methods \(dscph\); its parameters only go to ddbh$"):
        resolve_best_params(["dscph"], ["ddbh-synthetic-16"], storage)
    with pytest.raises(UsageError, match=r"^study 'ddbh-synthetic-16' tuned method ddbh, not dscph"):
        resolve_best_params(["dscph", "ddbh"], {"dscph": "ddbh-synthetic-16"}, storage)
    with pytest.raises(UsageError, match=r"no study for method\(s\) dscph \(studies given: ddbh-synthetic-16 tuned ddbh\)"):
        resolve_best_params(["ddbh", "dscph"], ["ddbh-synthetic-16"], storage)
    with pytest.raises(UsageError, match=r"studies 'ddbh-synthetic-16' and 'ddbh-synthetic-32' both tuned method ddbh"):
        resolve_best_params(["ddbh"], ["ddbh-synthetic-16", "ddbh-synthetic-32"], storage)
    tune_grid(["ddbh"], ["synthetic"], [16], 2, storage=storage, objective=TOY, seeds=(0,), study_prefix="p")
    prefixed = resolve_best_params(["ddbh"], None, storage, dataset="synthetic", bits=16, study_prefix="p")
    assert prefixed["ddbh"].study_name == "p-ddbh-synthetic-16" and prefixed["ddbh"].n_finished == 2
    optuna.create_study(study_name="foreign", storage=store)
    with pytest.raises(UsageError, match="study 'foreign' .* records no method"):
        resolve_best_params(["ddbh"], ["foreign"], storage)


# ---- (d) the tuning table --------------------------------------------------------------------------------
def _independent_read(db: Path) -> list[dict]:
    """The tuning table straight from Optuna's SQL tables (no Optuna, no harness code)."""
    con = sqlite3.connect(db)
    rows = []
    for study_id, name in con.execute("SELECT study_id, study_name FROM studies ORDER BY study_name"):
        attrs = {k: json.loads(v) for k, v in con.execute(
            "SELECT key, value_json FROM study_user_attributes WHERE study_id = ?", (study_id,))}
        trials = con.execute("SELECT t.trial_id, t.number, t.state, v.value FROM trials t LEFT JOIN trial_values v "
                             "ON v.trial_id = t.trial_id WHERE t.study_id = ?", (study_id,)).fetchall()
        complete = [t for t in trials if t[2] == "COMPLETE"]
        best = max(complete, key=lambda t: (t[3], -t[1]))
        (config,) = con.execute("SELECT value_json FROM trial_user_attributes WHERE trial_id = ? AND key = 'config'",
                                (best[0],)).fetchone()
        defaults = [t for t in complete if con.execute(
            "SELECT value_json FROM trial_user_attributes WHERE trial_id = ? AND key = 'defaults'", (t[0],)).fetchone()]
        rows.append({"method": attrs["method"], "dataset": attrs["dataset"], "bits": attrs["bits"], "study": name,
                     "defaults_value": defaults[0][3] if defaults else None,
                     "budget": attrs["budget"], "n_complete": len(complete),
                     "n_pruned": sum(t[2] == "PRUNED" for t in trials), "n_failed": sum(t[2] == "FAIL" for t in trials),
                     "best_value": best[3], "best_trial": best[1], "params": json.loads(config),
                     "seeds": attrs["seeds"], "protocol": attrs["protocol"]})
    return sorted(rows, key=lambda r: (r["dataset"], r["method"], r["bits"]))


def test_tuning_table_equals_an_independent_read_of_the_storage(toy_env: Path, tmp_path: Path) -> None:
    db = tmp_path / "optuna.db"
    storage = f"sqlite:///{db}"
    tune_grid(["dscph", "ddbh"], ["synthetic"], [16], 4, storage=storage, objective=TOY, seeds=(0,),
              heartbeat_interval=None)
    table = tuning_table(storage)
    assert tuple(table.columns) == TUNING_COLUMNS
    expected = _independent_read(db)
    got = table.to_dict("records")
    assert [r["study"] for r in got] == [r["study"] for r in expected] == ["ddbh-synthetic-16", "dscph-synthetic-16"]
    for g, e in zip(got, expected):
        assert g == {**e, "best_value": pytest.approx(e["best_value"]), "defaults_value": pytest.approx(e["defaults_value"])}
        assert e["defaults_value"] is not None and g["best_value"] >= e["defaults_value"]  # defaults are a trial
        assert g["n_complete"] + g["n_pruned"] == 4 and math.isfinite(g["best_value"])
    assert tuning_table(storage, ["dscph-synthetic-16"])["study"].tolist() == ["dscph-synthetic-16"]
