"""Study identity and pruning (issue 13 item 6) and trial-by-trial lines (issue 16 item 5).

A resume with other objective settings (seeds, data, protocol, encoder, ...) is refused naming every
differing setting; the median pruner needs two completed trials (never one trial's evidence) and each prune
records and logs how many trials informed it; ``run_study`` reports one line per finished trial.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import optuna
import pytest

from benchmarks.cli import UsageError
from benchmarks.tuning import (
    PRUNER_MIN_TRIALS,
    TuneSpec,
    make_pruner,
    open_storage,
    run_study,
    score_subruns,
    study_settings,
    trial_line,
)
from tests.tuning_toys import toy_spec

State = optuna.trial.TrialState


@pytest.fixture
def toy_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The toy objective's environment (restored after the test); returns its log path."""
    monkeypatch.setenv("TOY_LOG", str(tmp_path / "evals.jsonl"))
    monkeypatch.setenv("TOY_DELAY", "0")
    monkeypatch.delenv("TOY_ENCODER", raising=False)
    monkeypatch.delenv("TOY_PRUNE_BELOW", raising=False)
    return tmp_path / "evals.jsonl"


def fixed(value: float):
    return lambda: value


def test_one_earlier_trial_never_prunes_and_each_prune_names_its_evidence(caplog: pytest.LogCaptureFixture) -> None:
    """The issue's case: after one complete trial (0.8 at step 0) a trial at 0.1 is not pruned, even with no
    start-up trials; with two complete trials (0.8, 0.1 → median 0.45) a trial at 0.05 is pruned, and the
    prune records and logs that 2 trials informed it."""
    assert PRUNER_MIN_TRIALS == 2 and TuneSpec(method="m", dataset="d", bits=16, n_trials=9).pruner_startup_trials == 5
    study = optuna.create_study(direction="maximize", pruner=make_pruner(n_startup_trials=1))
    study.optimize(lambda t: score_subruns(t, [fixed(0.8), fixed(0.6)]), n_trials=1)
    study.optimize(lambda t: score_subruns(t, [fixed(0.1), fixed(0.9)]), n_trials=1)
    with caplog.at_level(logging.INFO, logger="benchmarks.tuning"):
        study.optimize(lambda t: score_subruns(t, [fixed(0.05), fixed(0.9)]), n_trials=1)
    a, b, c = study.get_trials()
    assert (a.state, a.value) == (State.COMPLETE, pytest.approx(0.7))
    assert (b.state, b.value) == (State.COMPLETE, pytest.approx(0.5))  # one trial's evidence: not pruned
    assert c.state == State.PRUNED and c.user_attrs["subrun_scores"] == [0.05]
    assert c.user_attrs["pruned"] == {"step": 0, "sub_runs": 1, "of": 2, "running": 0.05, "n_trials": 2,
                                      "median": pytest.approx(0.45)}
    assert ["trial 2 pruned after 1/2 sub-run(s): running validation mAP 0.0500 below the median 0.4500 of 2 "
            "completed trial(s) at that step"] == [r.getMessage() for r in caplog.records]
    line = trial_line(study, c, budget=3)
    assert line == ("trial 2 PRUNED: after 1/2 sub-run(s): running 0.0500 < median 0.4500 of 2 completed trial(s); "
                    "best 0.7000 (trial 0); 3/3 finished; (none)")


def test_resume_with_other_settings_is_refused_naming_each(toy_env: Path, tmp_path: Path) -> None:
    storage = str(tmp_path / "j.log")
    run_study(toy_spec(storage, toy_env, 2, seeds=(0,)))
    study = optuna.load_study(study_name="toy-synthetic-16", storage=open_storage(storage))
    spec = toy_spec(storage, toy_env, 2, seeds=(0,))
    assert {k: study.user_attrs[k] for k in study_settings(spec)} == study_settings(spec)
    assert study.user_attrs["budget"] == 2

    with pytest.raises(UsageError) as err:
        run_study(toy_spec(storage, toy_env, 4, seeds=(0, 1)))
    assert str(err.value) == (f"study 'toy-synthetic-16' in {storage} was tuned with other settings: seeds [0] "
                              "(now [0, 1]); resume it with its own settings, or give another study name or storage")
    changed = toy_spec(storage, toy_env, 4, seeds=(1,), protocol="paired", label_scheme="location",
                       dataset_options={"n_train": "50"}, encoder="offline", dataset_seed=3)
    with pytest.raises(UsageError) as err:
        run_study(changed)
    message = str(err.value)
    assert "\n" not in message
    for part in ("label_scheme None (now 'location')", 'dataset_options {} (now {"n_train": "50"})',
                 "dataset_seed 0 (now 3)", "encoder 'auto' (now 'offline')", "seeds [0] (now [1])",
                 "protocol 'unimodal' (now 'paired')"):
        assert part in message
    trials = optuna.load_study(study_name="toy-synthetic-16", storage=open_storage(storage)).get_trials()
    assert len(trials) == 2  # nothing ran under the other settings
    assert run_study(toy_spec(storage, toy_env, 3, seeds=(0,))).ran == 1  # its own settings resume


def test_resolved_encoder_is_recorded_and_checked(toy_env: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """``--encoder auto`` may resolve differently later (weights appear): the features' encoder is part of
    the study's identity too."""
    storage = str(tmp_path / "j.log")
    monkeypatch.setenv("TOY_ENCODER", "offline")
    run_study(toy_spec(storage, toy_env, 1))
    study = optuna.load_study(study_name="toy-synthetic-16", storage=open_storage(storage))
    assert study.user_attrs["features_encoder"] == "offline"
    monkeypatch.setenv("TOY_ENCODER", "biomedclip")
    with pytest.raises(UsageError, match=r"features_encoder 'offline' \(now 'biomedclip'\)"):
        run_study(toy_spec(storage, toy_env, 2))
    # the same one-line error when the check fails inside spawned workers
    with pytest.raises(UsageError, match=r"^study 'toy-synthetic-16' .* features_encoder 'offline' \(now 'biomedclip'\)"):
        run_study(toy_spec(storage, toy_env, 3), workers=2)
    study = optuna.load_study(study_name="toy-synthetic-16", storage=open_storage(storage))
    assert [t.state for t in study.get_trials()] == [State.COMPLETE]  # no trial ran under the other encoder


def test_one_line_per_finished_trial(toy_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lines come as trials finish; each one's value, best-so-far, progress and parameters are re-derived
    from the stored trials."""
    monkeypatch.setenv("TOY_PRUNE_BELOW", "0.0")
    storage = str(tmp_path / "j.log")
    lines: list[str] = []
    summary = run_study(toy_spec(storage, toy_env, 6), echo=lines.append)
    trials = optuna.load_study(study_name="toy-synthetic-16", storage=open_storage(storage)).get_trials()
    assert summary.ran == 6 and len(lines) == 6 == len(trials)
    best: tuple[float, int] | None = None
    for k, (line, t) in enumerate(zip(lines, trials), start=1):
        x, y = t.user_attrs["config"]["x"], t.user_attrs["config"]["y"]
        params = f"x={x:.4g} y={y}"
        if t.state == State.COMPLETE:
            assert line.startswith(f"trial {t.number} COMPLETE: value {t.value:.4f}; ")
            best = max(best or (t.value, -t.number), (t.value, -t.number))
        else:
            assert t.state == State.PRUNED and x < 0 and line.startswith(f"trial {t.number} PRUNED: ")
        best_text = "best –" if best is None else f"best {best[0]:.4f} (trial {-best[1]})"
        assert line.endswith(f"; {best_text}; {k}/6 finished; {params}"), line
    assert any(t.state == State.PRUNED for t in trials) and any(t.state == State.COMPLETE for t in trials)


def test_tune_command_prints_trial_lines(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import benchmarks.tuning as tuning
    from benchmarks.cli import main as cli_main

    def fake_run_study(spec: TuneSpec, *, workers: int = 1, echo=None) -> tuning.TuneSummary:
        assert echo is not None
        echo("trial 0 COMPLETE: value 0.5000; best 0.5000 (trial 0); 1/1 finished; lr=0.001")
        return tuning.TuneSummary(spec.name, "j.log", 1, 0, 0, 1, [], 0.5, {"lr": 0.001}, best_trial=0)

    monkeypatch.setattr(tuning, "run_study", fake_run_study)
    assert cli_main(["tune", "--method", "dscph", "--dataset", "synthetic", "--bits", "16", "--trials", "1",
                     "--device", "cpu"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "trial 0 COMPLETE: value 0.5000; best 0.5000 (trial 0); 1/1 finished; lr=0.001"
    assert re.match(r"best validation mAP 0\.5000 \(trial 0\)", out[2])


def test_the_defaults_are_one_trial_of_every_budget(tmp_path: Path) -> None:
    """The method's defaults run as one of the budget's trials (once), so a study's best validation mAP is never
    below the untuned defaults'; values are the config's defaults even outside the searched range."""
    from benchmarks.tuning import default_params
    from methods import create_method

    config = create_method("dscph", {}).config
    params = default_params("dscph")
    assert params is not None and params["epochs"] == config.epochs == 30  # searched over 20..120 step 20
    assert params == {name: getattr(config, name) for name in params} and "neg_pair_similarity" in params
    assert default_params("random") is None and default_params("not-a-method") is None

    small = {"n_train": 120, "n_validation": 40, "n_query": 40}
    spec = TuneSpec(method="cca-itq", dataset="synthetic", bits=8, n_trials=2, storage=str(tmp_path / "j.log"),
                    seeds=(0,), dataset_options=small)
    run_study(spec)
    spec.n_trials = 3
    run_study(spec)
    study = optuna.load_study(study_name=spec.name, storage=open_storage(spec.storage))
    trials = study.get_trials()
    assert [t.state for t in trials] == [State.COMPLETE] * 3
    marked = [t for t in trials if t.user_attrs.get("defaults")]
    assert [t.number for t in marked] == [0] and marked[0].params == default_params("cca-itq")
    assert study.best_value >= marked[0].value

    # a sampled trial that drew the defaults counts as their trial (none is queued then)
    from benchmarks.tuning import defaults_value

    drawn = optuna.create_study(direction="maximize")
    drawn.set_user_attr("method", "real-valued")
    for space in ("cca", "auto"):  # as if sampled: no ``defaults`` attribute
        drawn.enqueue_trial({"space": space})
    drawn.optimize(lambda t: {"cca": 0.3, "auto": 0.6}[t.suggest_categorical("space", ["cca", "auto"])], n_trials=2)
    assert default_params("real-valued") == {"space": "auto"} and defaults_value(drawn) == 0.6
