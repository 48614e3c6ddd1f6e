"""Report folders and row selection (issue 16 items 2, 4, 5) and the tuning table (issue 14 item 4).

A report ships with its rows and regenerates from them; its folder holds one report only; ``report RUN_DIR``
reads that run folder's own rows (``--recursive``, ``--run-id``, ``--label`` to widen or narrow); mixed
configurations are refused with the keys that differ, or reported as separate rows; ``show`` writes nothing.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest
from report_helpers import accuracy_rows, efficiency_rows, write_run

from benchmarks.cli import main as cli_main
from benchmarks.report.build import build_tables
from benchmarks.report.rows import ReportError
from benchmarks.report.source import load_source, read_export, write_export
from benchmarks.report.tables import budget_note, main_table, tuning_table


def three_seed_rows(methods=("mcmfh", "ucmfh"), **fields) -> list[dict]:
    values = {(m, b, s): 0.5 + 0.1 * i + 0.01 * s for i, m in enumerate(methods) for b in (16, 32) for s in range(3)}
    return accuracy_rows(values, **fields) + [r for m in methods for s in range(3)
                                              for r in efficiency_rows(m, 16, s, **fields)]


def err(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.strip().splitlines()


# ---- 16.2: regenerable, one report per folder, the run asked for -----------------------------------------
def test_report_regenerates_from_its_own_rows_export(tmp_path: Path) -> None:
    run = write_run(tmp_path / "run", three_seed_rows())
    out, again = tmp_path / "rep", tmp_path / "rep2"
    assert cli_main(["report", str(run), "--out", str(out), "--no-figures"]) == 0
    assert cli_main(["report", str(out), "--out", str(again), "--no-figures"]) == 0
    texts = sorted(p.name for p in out.iterdir() if p.suffix in (".md", ".tex"))
    assert texts and texts == sorted(p.name for p in again.iterdir() if p.suffix in (".md", ".tex"))
    for name in texts:
        assert (out / name).read_text() == (again / name).read_text(), name
    assert (out / "rows.jsonl.gz").read_bytes() == (again / "rows.jsonl.gz").read_bytes()
    manifest = json.loads((again / "report.json").read_text())
    assert manifest["source"] == str(run) and manifest["rows"] == len(three_seed_rows())
    # regenerating in place works too (rows are read before the folder is replaced)
    assert cli_main(["report", str(out), "--out", str(out), "--no-figures"]) == 0
    assert (out / "tables.md").read_text() == (again / "tables.md").read_text()


def test_export_stores_each_shared_value_once_and_reads_back_exactly(tmp_path: Path) -> None:
    audit = {"n_train": 1653, "classes": ["ct", "mr"]}
    rows = [{"metric": m, "value": v, "dataset_audit": audit, "bit_balance_query": [0.5, 0.25],
             "method_config": {"lr": lr}, "k": None} for m, v, lr in
            (("map", 0.5, 1e-3), ("p@10", 0.25, 1e-3), ("map", float("nan"), 3e-4))]
    path = tmp_path / "rows.jsonl.gz"
    write_export(path, rows)
    lines = [json.loads(line) for line in gzip.decompress(path.read_bytes()).decode().splitlines()]
    assert lines[0] == {"medhash_rows_export": 2}
    defines = [line for line in lines if "$define" in line]
    # the balance list, the audit, the two distinct method configs and the NaN record of the third row, each
    # once, numbered in order of first use (rows in order, fields in key order)
    assert [(d["$define"], d["value"]) for d in defines] == [(0, [0.5, 0.25]), (1, audit), (2, {"lr": 1e-3}),
                                                             (3, {"lr": 3e-4}), (4, {"value": "NaN"})]
    packed = [line for line in lines[1:] if "$define" not in line]
    assert [r["dataset_audit"] for r in packed] == [{"$ref": 1}] * 3
    assert [r["method_config"] for r in packed] == [{"$ref": 2}, {"$ref": 2}, {"$ref": 3}]
    back = read_export(path)
    expected = [dict(r) for r in rows]
    expected[2].update(value=None, non_finite={"value": "NaN"})  # strict JSON, as every row file
    assert back == expected
    write_export(tmp_path / "again.jsonl.gz", back)  # same rows, same bytes
    assert (tmp_path / "again.jsonl.gz").read_bytes() == path.read_bytes()


def test_export_reads_format_one_and_names_a_bad_file(tmp_path: Path) -> None:
    rows = [{"metric": "map", "value": 0.5, "dataset_audit": {"n": 3}}, {"metric": "p@1", "value": 1.0}]
    old = tmp_path / "old.jsonl.gz"  # format 1: one full row per line, no header
    old.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    assert read_export(old) == rows
    future = tmp_path / "future.jsonl.gz"
    future.write_bytes(gzip.compress(b'{"medhash_rows_export": 3}\n{"metric": "map"}\n'))
    with pytest.raises(ReportError, match=r"future\.jsonl\.gz:1: rows export format 3; this version reads formats 1 and 2"):
        read_export(future)
    dangling = tmp_path / "dangling.jsonl.gz"
    dangling.write_bytes(gzip.compress(b'{"medhash_rows_export": 2}\n{"$define": 0, "value": {"n": 1}}\n'
                                       b'{"audit": {"$ref": 0}}\n{"audit": {"$ref": 7}}\n'))
    with pytest.raises(ReportError, match=r"dangling\.jsonl\.gz:4: reference 7 has no earlier \$define line"):
        read_export(dangling)


def test_report_folder_holds_one_report_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = write_run(tmp_path / "run", three_seed_rows())
    out = tmp_path / "rep"
    (out / "figures").mkdir(parents=True)
    for stale in ("ablation_medpix_unimodal.md", "figures/map_vs_bits_old_32bits.png", "tables.aux"):
        (out / stale).write_text("old run")
    assert cli_main(["report", str(run), "--out", str(out), "--no-figures"]) == 0
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == json.loads((out / "report.json").read_text())["files"]
    assert "ablation_medpix_unimodal.md" not in files and not (out / "figures").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    # a folder holding something a report never writes is refused and left as it was
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert cli_main(["report", str(run), "--out", str(out), "--no-figures"]) == 2
    assert err(capsys) == [f"error: --out {out} holds notes.txt, which a report does not write; a report replaces "
                           "its folder as a whole: choose an empty folder or an earlier report's folder"]
    assert (out / "notes.txt").read_text() == "mine" and (out / "tables.md").exists()
    assert cli_main(["report", str(run), "--out", str(run), "--no-figures"]) == 2  # never over a run folder


def test_report_reads_only_the_run_folder_asked_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    results = write_run(tmp_path / "results", three_seed_rows(("ucmfh",)))
    write_run(results / "medpix_full", three_seed_rows(("mcmfh", "cca-itq")))
    own = load_source(results)
    assert set(own.rows["method"]) == {"ucmfh"} and own.nested == [results / "medpix_full"]
    assert set(load_source(results, recursive=True).rows["method"]) == {"ucmfh", "mcmfh", "cca-itq"}
    assert cli_main(["show", str(results)]) == 0
    printed = capsys.readouterr().out
    assert "| ucmfh" in printed and "mcmfh" not in printed.split("note:")[0]
    assert "1 run folder(s) nested" in printed
    only_nested = tmp_path / "outer"
    write_run(only_nested / "a", three_seed_rows(("ucmfh",)))
    with pytest.raises(ReportError, match=r"no result rows directly in .*outer; it holds 1 run folder\(s\) of their "
                                          r"own \(a\): report one of them, or pass --recursive"):
        load_source(only_nested)


def test_run_id_and_label_select_runs(tmp_path: Path) -> None:
    first = three_seed_rows(("ucmfh",), run_id="run-a")
    second = three_seed_rows(("cca-itq",), run_id="run-b")
    run = write_run(tmp_path / "run", first + second)
    # run-b was resumed: its manifest also lists one finished ucmfh cell it skipped (rows carry run-a)
    skipped_cell = first[0]["cell_id"]
    (run / "runs").mkdir()
    (run / "runs" / "run-b.json").write_text(json.dumps({"run_id": "run-b", "label": "baselines", "cells": [
        {"cell_id": skipped_cell, "status": "skipped"}]}))
    a = load_source(run, run_ids=["run-a"]).rows
    assert set(a["method"]) == {"ucmfh"} and len(a) == len(first)
    b = load_source(run, run_ids=["run-b"]).rows
    assert set(b["cell_id"]) == {r["cell_id"] for r in second} | {skipped_cell}
    labelled = load_source(run, labels=["baselines"]).rows
    assert set(labelled["cell_id"]) == {skipped_cell} and len(labelled) == sum(r["cell_id"] == skipped_cell for r in first)
    with pytest.raises(ReportError, match="no rows of run id 'run-c'; run ids present: run-a, run-b"):
        load_source(run, run_ids=["run-c"])
    with pytest.raises(ReportError, match="no rows of run label 'x'; labels present: baselines"):
        load_source(run, labels=["x"])


# ---- 16.4: configurations named, or reported apart ---------------------------------------------------------
LONG = {"adapter": "auto", "batch_size": 256, "dropout": 0.1, "epochs": 50, "hidden": 1024, "lr": 0.001,
        "temperature": 0.07, "weight_decay": 0.0001}


def test_config_mismatch_names_every_differing_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = (accuracy_rows({("ddbh", 16, s): 0.5 for s in range(3)}, method_config=LONG)
            + accuracy_rows({("ddbh", 16, s): 0.6 for s in range(3, 5)}, method_config={**LONG, "lr": 0.01, "epochs": 100},
                            timestamp="2025-03-01T00:00:00"))  # the later configuration is named second
    run = write_run(tmp_path / "run", rows)
    assert cli_main(["report", str(run), "--out", str(tmp_path / "o"), "--no-figures"]) == 2
    (line,) = err(capsys)
    assert ("come from 2 configurations (differing in method_config.epochs: 50 vs 100; method_config.lr: 0.001 vs "
            "0.01); seeds are only averaged within one configuration") in line
    assert "--split-configs" in line and "--run-id" in line


def test_split_configs_reports_each_configuration_as_a_row(tmp_path: Path) -> None:
    tuning = {"study": "ddbh-medpix-16", "trial": 7, "budget": 20, "n_complete": 17, "n_pruned": 3,
              "best_value": 0.4123, "params": {"lr": 0.0021, "epochs": 80}, "shared_across_bits": False}
    rows = (accuracy_rows({("ddbh", 16, s): 0.50 for s in range(3)})
            + accuracy_rows({("ddbh", 16, s): 0.55 for s in range(3)}, method_config={"lr": 0.0021}, tuning=tuning)
            + accuracy_rows({("cca-itq", 16, s): 0.40 for s in range(3)}, timestamp="2025-01-01")
            + accuracy_rows({("cca-itq", 16, s): 0.45 for s in range(3)}, method_config={"reg": 0.1},
                            timestamp="2025-02-01"))
    tables, _ = build_tables(pd.DataFrame(rows), headline="ddbh", split_configs=True)
    main = tables[0]
    means = {r[0]: r[1].mean for r in main.rows if r[0] != "chance"}
    assert means == pytest.approx({"ddbh": 0.50, "ddbh (tuned)": 0.55, "cca-itq (config 1)": 0.40,
                                   "cca-itq (config 2)": 0.45})
    assert any(n.startswith("cca-itq (config 1..2) on medpix differ in method_config.reg: 0.0001 vs 0.1")
               for n in main.notes)
    run = write_run(tmp_path / "run", rows)
    assert cli_main(["report", str(run), "--out", str(tmp_path / "o"), "--no-figures", "--split-configs",
                     "--headline", "ddbh"]) == 0


# ---- 14.4: tuning table and the budget under the main table -----------------------------------------------
def test_tuning_table_and_budget_note() -> None:
    def rec(method: str, bits: int, budget: int = 20) -> dict:
        return {"study": f"{method}-medpix-{bits}", "trial": bits // 8, "budget": budget, "n_complete": budget - 2,
                "n_pruned": 2, "best_value": 0.4 + bits / 1000, "params": {"lr": 0.001 * bits, "epochs": 50},
                "shared_across_bits": False, **({"defaults_value": 0.39 + bits / 1000} if method == "mcmfh" else {})}

    rows = []
    for m in ("ddbh", "mcmfh"):
        for b in (16, 32):
            rows += accuracy_rows({(m, b, s): 0.5 for s in range(2)}, tuning=rec(m, b))
    rows += accuracy_rows({("random", b, s): 0.2 for b in (16, 32) for s in range(2)})
    df = pd.DataFrame(rows)
    table = tuning_table(df, dataset="medpix")
    line = {(r[0], r[1]): dict(zip(table.header_labels(), r)) for r in table.rows}
    assert sorted(line) == [("ddbh", "16"), ("ddbh", "32"), ("mcmfh", "16"), ("mcmfh", "32")]
    assert line[("mcmfh", "32")] == {
        "method": "mcmfh", "bits": "32", "study": "mcmfh-medpix-32", "trials budget": "20", "trials complete": "18",
        "trials pruned": "2", "defaults validation mAP": "0.422", "best validation mAP": "0.432", "best trial": "4",
        "chosen parameters": "epochs=50, lr=0.032", "shared across bits": "no"}
    assert line[("ddbh", "16")]["defaults validation mAP"] == "–"  # a record without the defaults' value
    note = "Each method tuned with 20 Optuna trials per (method, bits) on the validation split."
    assert note in main_table(df, dataset="medpix", headline="ddbh").notes
    untuned = pd.DataFrame(accuracy_rows({("ddbh", 16, 0): 0.5}))
    assert budget_note(main_table(untuned, dataset="medpix").data.assign(tuning=None)) == (
        "Untuned: hand-set defaults (no Optuna study).")
    assert "Untuned: hand-set defaults" in " ".join(main_table(untuned, dataset="medpix").notes)
    mixed = pd.DataFrame({"variant": ["ddbh", "mcmfh", "cca-itq", "random"],
                          "tuning": [rec("ddbh", 16), rec("mcmfh", 16, budget=5), None, None]})
    assert budget_note(mixed) == ("Optuna trials per (method, bits) on the validation split: ddbh: 20; mcmfh: 5. "
                                  "Untuned (hand-set defaults): cca-itq. Budgets differ: differences between methods "
                                  "may reflect tuning effort.")
    shared = {**rec("ddbh", 16, budget=5), "shared_across_bits": True}
    every_shared = pd.DataFrame({"variant": ["ddbh", "mcmfh", "random"],
                                 "tuning": [shared, {**shared, "study": "mcmfh-medpix-16"}, None]})
    assert budget_note(every_shared) == ("Each method tuned with 5 Optuna trials per method (one study per method, "
                                         "shared across code lengths) on the validation split.")
    some_shared = pd.DataFrame({"variant": ["ddbh", "mcmfh"], "tuning": [shared, rec("mcmfh", 16, budget=5)]})
    assert budget_note(some_shared) == ("Each method tuned with 5 Optuna trials per (method, bits) on the validation "
                                        "split. One study shared across code lengths: ddbh.")
    # an ablation that inherits its base's study is named as such, in the note and in the tuning table
    heir = {**shared, "study": "mcmfh-medpix-16", "params": {"lr": 0.016}, "inherited_from": "mcmfh"}
    with_heir = pd.DataFrame({"variant": ["mcmfh", "mcmfh-no-gate", "random"],
                              "tuning": [{**shared, "study": "mcmfh-medpix-16"}, heir, None]})
    assert budget_note(with_heir) == (
        "Each method tuned with 5 Optuna trials per method (one study per method, shared across code lengths) on the "
        "validation split. Not tuned themselves (each runs mcmfh's best parameters minus its own setting): "
        "mcmfh-no-gate.")
    heir_rows = accuracy_rows({("mcmfh-no-gate", 16, 0): 0.5}, tuning=heir)
    (heir_line,) = tuning_table(pd.DataFrame(heir_rows), dataset="medpix").rows
    assert heir_line[2] == "mcmfh-medpix-16 (inherited from mcmfh)"


# ---- 16.5: show writes nothing -------------------------------------------------------------------------------
def test_show_prints_tables_without_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    run = write_run(tmp_path / "run", three_seed_rows())
    monkeypatch.chdir(tmp_path)

    def snapshot() -> dict[str, float]:
        return {str(p): p.stat().st_mtime_ns for p in tmp_path.rglob("*")}

    before = snapshot()
    capsys.readouterr()
    assert cli_main(["show", str(run), "--tables", "all"]) == 0
    out = capsys.readouterr().out
    assert "**medpix: mAP@all (tie-aware), unimodal protocol, mean ± std over 3 seeds**" in out
    assert "**medpix: accuracy, search latency and memory**" in out and "paired significance" in out
    assert snapshot() == before  # no file written, none touched
