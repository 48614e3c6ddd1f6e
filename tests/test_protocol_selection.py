"""Model selection under the protocol being evaluated (issue 14, item 3; methods spec, "Common ground").

UCMFH and MCMFH choose their epochs by validation mAP under one protocol (``select_protocol``). The harness gives
such a method one cell per evaluated protocol, each scoring only the model selected under it; ``tune`` selects
under the protocol the study scores; the report treats the two cells of one (method, bits, seed) as one
configuration, while a user-pinned ``select_protocol`` stays a setting of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from benchmarks.cell import PROTOCOLS, RunSpec, cell_config, encode_split, prepare_features, run_cell
from benchmarks.cli import main as cli_main
from benchmarks.evaluation import evaluate_hamming
from benchmarks.report.rows import ReportError, check_one_configuration, normalise_rows
from benchmarks.results import config_hash, iter_rows
from benchmarks.runner import plan, run
from medhash_datasets.base import feature_split
from methods import create_method

SMALL = {"n_train": "120", "n_validation": "40", "n_query": "40"}
#: Small widths so a fusion fit takes a fraction of a second (the default slot is 512 wide).
TINY = {"slot_dim": 16, "n_heads": 2, "dim_feedforward": 32, "head_hidden": 32, "epochs": 6, "batch_size": 32}


@pytest.fixture(scope="module")
def small() -> tuple[Any, Any]:
    return prepare_features("synthetic", data_root=None, encoder="precomputed", dataset_options=SMALL, progress=False)


def _spec(out: Path, methods: list[str], **kwargs: Any) -> RunSpec:
    params = {m: dict(TINY) for m in methods if m in ("ucmfh", "mcmfh", "mcmfh-no-gate")}
    for method, extra in kwargs.pop("extra_params", {}).items():
        params[method].update(extra)
    kwargs.setdefault("seeds", [0])
    return RunSpec(methods=methods, datasets=["synthetic"], bits=[16], out=out, progress=False,
                   dataset_options=dict(SMALL), params=params, **kwargs)


def test_a_method_selecting_under_a_protocol_gets_one_cell_per_protocol(tmp_path: Path, small) -> None:
    dataset, features = small
    spec = _spec(tmp_path, ["ucmfh", "mcmfh-no-gate", "cca-itq"], seeds=[0, 1])
    jobs = plan(spec, {"synthetic": small})
    selections: dict[tuple[str, int], list[str | None]] = {}
    for job in jobs:
        selections.setdefault((job.method, job.seed), []).append(job.select)
    assert selections == {("ucmfh", 0): ["unimodal", "paired"], ("ucmfh", 1): ["unimodal", "paired"],
                          ("mcmfh-no-gate", 0): ["unimodal", "paired"], ("mcmfh-no-gate", 1): ["unimodal", "paired"],
                          ("cca-itq", 0): [None], ("cca-itq", 1): [None]}
    assert len({job.cell_id for job in jobs}) == len(jobs) == 10
    for job in jobs:
        config = cell_config(spec, dataset, features, job.method, job.bits, job.seed, job.select)
        assert config_hash(config) == job.cell_id
        if job.select is None:
            assert config["protocols"] == ["unimodal", "paired"] and "select_per_protocol" not in config
        else:
            assert config["protocols"] == [job.select] and config["select_per_protocol"] is True
            assert config["method_config"]["select_protocol"] == job.select
            assert job.label.endswith(f"seed {job.seed} {job.select}-selected")
    # a cell of a method without protocol selection keeps the id it had before this option existed
    cca = next(j for j in jobs if j.method == "cca-itq" and j.seed == 0)
    old_style = cell_config(spec, dataset, features, "cca-itq", 16, 0)
    assert config_hash(old_style) == cca.cell_id

    pinned = _spec(tmp_path, ["ucmfh"], extra_params={"ucmfh": {"select_protocol": "paired"}})
    (job,) = plan(pinned, {"synthetic": small})
    config = cell_config(pinned, dataset, features, "ucmfh", 16, 0, job.select)
    assert job.select is None and config["protocols"] == ["unimodal", "paired"]
    assert config["method_config"]["select_protocol"] == "paired"

    only_paired = _spec(tmp_path, ["ucmfh"], protocols=["paired"])
    assert [j.select for j in plan(only_paired, {"synthetic": small})] == ["paired"]


def test_each_protocol_is_scored_on_the_model_selected_under_it(tmp_path: Path, small) -> None:
    """The cell's mAP equals an independent fit selected under that protocol, evaluated under it."""
    dataset, features = small
    spec = _spec(tmp_path, ["ucmfh"])
    split = {name: feature_split(dataset, features, name) for name in ("train", "validation", "query", "database")}
    best: dict[str, Any] = {}
    for select in PROTOCOLS:
        rows = run_cell(spec, dataset, features, "ucmfh", 16, 0, run_id="r", select=select)
        accuracy = [r for r in rows if r["metric"] == "map"]
        assert {r["protocol"] for r in accuracy} == {select}
        assert all(r["select_per_protocol"] is True and r["method_config"]["select_protocol"] == select for r in rows)
        assert rows[0]["method_info"]["selection"].startswith(f"validation mAP, {select} protocol")
        best[select] = rows[0]["method_info"]["best_val_map_per_stage"]

        model = create_method("ucmfh", {**TINY, "select_protocol": select}).fit(split["train"], split["validation"],
                                                                               16, 0)
        q, db = encode_split(model, split["query"], select), encode_split(model, split["database"], select)
        for task, (qs, ds) in (("i2t", ("image", "text")), ("t2i", ("text", "image"))):
            expected = evaluate_hamming(q[qs], db[ds], split["query"].labels, split["database"].labels, tie="aware",
                                        shuffle_seed=0, convention="relaxed").get("map")
            (row,) = [r for r in accuracy if r["task"] == task and r["tie"] == "aware"]
            assert row["value"] == pytest.approx(expected, abs=1e-12)
    # the two cells really selected on different scores (the validation mAP under each protocol)
    assert best["unimodal"] != best["paired"]


def test_the_two_cells_of_a_fit_are_one_configuration_and_a_pinned_selection_is_another() -> None:
    def row(protocol: str, select: str, per_protocol: bool | None) -> dict[str, Any]:
        out = {"method": "ucmfh", "variant": "ucmfh", "dataset": "synthetic", "bits": 16, "seed": 0, "metric": "map",
               "protocol": protocol, "task": "i2t", "tie": "aware", "value": 0.5, "encoder": "precomputed",
               "method_config": {"epochs": 6, "select_protocol": select}, "timestamp": "2026-12-01T00:00:00"}
        if per_protocol is not None:
            out["select_per_protocol"] = per_protocol
        return out

    per_protocol = [row("unimodal", "unimodal", True), row("paired", "paired", True)]
    df = normalise_rows(pd.DataFrame(per_protocol))
    assert df["config_key"].nunique() == 1
    check_one_configuration(df)
    assert json.loads(df["config_key"].iloc[0])["method_config"]["select_protocol"] == "evaluated"

    # rows written before this option (no field) and a pinned run (False) keep select_protocol as a setting
    for flag in (None, False):
        mixed = normalise_rows(pd.DataFrame([*per_protocol, row("unimodal", "paired", flag)]))
        with pytest.raises(ReportError, match=r"method_config\.select_protocol: \"evaluated\" vs \"paired\""):
            check_one_configuration(mixed)


def test_a_run_writes_both_cells_resumes_them_and_reports_one_row_per_protocol(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    spec = _spec(tmp_path / "run", ["ucmfh", "cca-itq"])
    outcomes = run(spec, echo=lambda line: None)
    assert [o.status for o in outcomes] == ["done"] * 3
    rows = list(iter_rows(tmp_path / "run"))
    ucmfh = {(r["protocol"], r["method_config"]["select_protocol"]) for r in rows
             if r["method"] == "ucmfh" and r["metric"] == "map"}
    assert ucmfh == {("unimodal", "unimodal"), ("paired", "paired")}
    assert [o.status for o in run(spec, echo=lambda line: None)] == ["skipped"] * 3

    assert cli_main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "rep"), "--no-figures"]) == 0
    for protocol in PROTOCOLS:
        table = (tmp_path / "rep" / f"main_synthetic_{protocol}.md").read_text()
        (line,) = [x for x in table.splitlines() if x.startswith("| ucmfh")]
        expected = np.mean([r["value"] for r in rows if r["method"] == "ucmfh" and r["metric"] == "map"
                            and r["protocol"] == protocol and r["task"] == "i2t" and r["tie"] == "aware"])
        assert f"{expected:.3f}" in line
        assert (f"Epochs selected by validation mAP under the {protocol} protocol (one model per protocol): ucmfh."
                in table)


def test_tables_name_a_model_selected_under_another_protocol() -> None:
    from benchmarks.report.tables import selection_note

    sel = normalise_rows(pd.DataFrame([
        {"method": m, "variant": m, "dataset": "d", "metric": "map", "value": 0.5, "protocol": "paired",
         "method_config": config, **extra}
        for m, config, extra in (("ucmfh", {"select_protocol": "paired"}, {"select_per_protocol": True}),
                                 ("mcmfh", {"select_protocol": "unimodal"}, {"select_per_protocol": False}),
                                 ("ddbh", {"lr": 0.001}, {}))]))
    assert selection_note(sel, "paired") == (
        "Epochs selected by validation mAP under the paired protocol (one model per protocol): ucmfh. "
        "Models selected under another protocol than this table's: mcmfh (unimodal).")
    assert selection_note(sel[sel["variant"] == "ddbh"], "paired") is None


def test_tuning_selects_under_the_protocol_the_study_scores(monkeypatch: pytest.MonkeyPatch) -> None:
    import methods
    from benchmarks.tuning import TuneSpec, validation_objective

    optuna = pytest.importorskip("optuna")
    made: list[dict[str, Any]] = []
    real = methods.create_method

    def spy(name: str, params: dict[str, Any] | None = None, **kwargs: Any):
        made.append(dict(params or {}))
        return real(name, {**(params or {}), **TINY}, **kwargs)

    monkeypatch.setattr(methods, "create_method", spy)
    for protocol in PROTOCOLS:
        spec = TuneSpec(method="ucmfh", dataset="synthetic", bits=16, n_trials=1, seeds=(0,), protocol=protocol,
                        encoder="precomputed", dataset_options=dict(SMALL))
        study = optuna.create_study(direction="maximize")
        study.optimize(validation_objective(spec), n_trials=1)
        assert made[-1]["select_protocol"] == protocol
        assert "select_protocol" not in study.trials[0].user_attrs["config"]  # not a tuned parameter


def test_time_fit_marks_the_protocol_its_one_model_was_not_selected_under(capsys: pytest.CaptureFixture[str]) -> None:
    flags = [f for k, v in {**TINY, "select_protocol": "paired"}.items() for f in ("--param", f"{k}={v}")]
    options = [f for k, v in SMALL.items() for f in ("--dataset-option", f"{k}={v}")]
    assert cli_main(["time-fit", "--method", "ucmfh", "--dataset", "synthetic", "--encoder", "precomputed",
                     "--device", "cpu", "--quiet", *options, *flags]) == 0
    lines = {line.split(":")[0].strip(): line for line in capsys.readouterr().out.splitlines()
             if line.startswith("  unimodal") or line.startswith("  paired")}
    assert set(lines) == {"unimodal i2t", "unimodal t2i", "paired i2t", "paired t2i"}
    for key, line in lines.items():
        marked = "[model selected under the paired protocol; --param select_protocol=unimodal" in line
        assert marked == key.startswith("unimodal"), line


def test_expert_load_rows_name_the_model_they_measure_and_the_figure_shows_the_unimodal_one(
        tmp_path: Path, small, monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.report.figures as figures

    dataset, features = small
    spec = _spec(tmp_path, ["mcmfh"], extra_params={"mcmfh": {"epochs": 3, "epochs_stage1": 2}})
    loads = {}
    for select in PROTOCOLS:
        rows = run_cell(spec, dataset, features, "mcmfh", 16, 0, run_id="r", select=select)
        load = [r for r in rows if r["metric"] == "expert_load"]
        assert load and {r["protocol"] for r in load} == {select}
        assert sum(r["value"] for r in load) == pytest.approx(1.0, abs=1e-6)
        loads[select] = load
    class Chosen(Exception):
        """Raised by the spy once the figure has chosen its rows."""

    def spy(data: pd.DataFrame, keys: list[str]) -> None:
        raise Chosen(data)

    monkeypatch.setattr(figures, "summarise", spy)
    df = normalise_rows(pd.DataFrame(loads["unimodal"] + loads["paired"]))
    with pytest.raises(Chosen) as chosen:
        figures.plot_expert_load(df, tmp_path, dataset="synthetic")
    data = chosen.value.args[0]
    assert set(data["protocol"]) == {"unimodal"} and len(data) == len(loads["unimodal"])
