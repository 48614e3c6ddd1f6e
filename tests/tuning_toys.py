"""Cheap tuning objectives for the tuning tests (importable by spawned workers as ``tests.tuning_toys``).

The toy's knobs are environment variables, so they are not objective settings of the study:
``TOY_LOG`` (a JSON-lines file, one line per evaluation), ``TOY_DELAY`` (seconds slept per trial),
``TOY_PRUNE_BELOW`` (trials with ``x`` below it are pruned after one sub-run) and ``TOY_ENCODER`` (the
``features_encoder`` the objective reports, as the real objective does after preparing features).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import optuna

from benchmarks.tuning import TuneSpec

#: Objective path of the toy (``module:function``).
TOY = "tests.tuning_toys:make"


def toy_value(x: float, y: int) -> float:
    """The toy's objective value: ``-(x - 0.5)² - 0.1·y`` (maximum 0 at x = 0.5, y = 0)."""
    return -((x - 0.5) ** 2) - 0.1 * y


def make(spec: TuneSpec) -> Any:
    """A known quadratic in ``x ∈ [-2, 2]`` and ``y ∈ {0..3}``, one log line per evaluation."""
    log = os.environ["TOY_LOG"]
    delay = float(os.environ.get("TOY_DELAY", "0"))
    prune_below = os.environ.get("TOY_PRUNE_BELOW")

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -2.0, 2.0)
        y = trial.suggest_int("y", 0, 3)
        trial.set_user_attr("config", {"x": x, "y": y})
        time.sleep(delay)
        value = toy_value(x, y)
        with open(log, "a") as fh:
            fh.write(json.dumps({"number": trial.number, "pid": os.getpid(), "value": value}) + "\n")
        if prune_below is not None and x < float(prune_below):
            trial.report(value, step=0)
            raise optuna.TrialPruned(f"x {x} < {prune_below}")
        return value

    if "TOY_ENCODER" in os.environ:
        objective.settings = {"features_encoder": os.environ["TOY_ENCODER"]}  # type: ignore[attr-defined]
    return objective


def toy_spec(storage: str, log: Path, n_trials: int, *, delay: float = 0.0, name: str | None = "toy-synthetic-16",
             **fields: Any) -> TuneSpec:
    """A toy study (method ``toy`` unless ``fields`` say otherwise); sets ``TOY_LOG``/``TOY_DELAY``."""
    os.environ["TOY_LOG"], os.environ["TOY_DELAY"] = str(log), str(delay)
    fields = {"method": "toy", "dataset": "synthetic", "bits": 16, "seeds": (0,), **fields}
    return TuneSpec(n_trials=n_trials, storage=storage, study_name=name, objective=TOY, **fields)


def read_log(log: Path) -> list[dict]:
    """The toy's evaluations, one dict per line."""
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
