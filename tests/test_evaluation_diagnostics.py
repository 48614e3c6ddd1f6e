"""Degenerate codes are flagged in every evaluation result (issue 13 item 2)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from benchmarks.cli import main as cli_main
from benchmarks.evaluation import (
    DIAGNOSTIC_FIELDS,
    code_diagnostics,
    evaluate_code_file,
    evaluate_hamming,
    evaluate_scores,
)

#: issue 13 item 2: every code [+1]*16, one query labelled [1, 0], four database items
Q = np.ones((1, 16))
DB = np.ones((4, 16))
QL = np.array([[1, 0]])
DL = np.array([[1, 0], [0, 1], [1, 0], [0, 1]])


def test_issue_input_aware_map_equals_chance_and_is_flagged():
    res = evaluate_hamming(Q, DB, QL, DL, tie="aware")
    # one bucket of n = 4 items, r = 2 relevant: E[AP] = (1/4)(H_4 + (1/3)(4 - H_4)) = 49/72 (spec, tie-aware AP)
    h4 = Fraction(25, 12)
    assert Fraction(1, 4) * (h4 + Fraction(1, 3) * (4 - h4)) == Fraction(49, 72)
    assert res.get("map") == pytest.approx(49 / 72, abs=1e-12)
    assert res.chance("map") == pytest.approx(49 / 72, abs=1e-12)
    assert res.degenerate
    assert res.degenerate_reason == "database codes: 1 distinct code among 4; all 16 bits constant"
    assert res.database_codes["n_distinct_codes"] == 1
    assert res.database_codes["bit_balance"] == [1.0] * 16
    assert res.database_codes["constant_bits"] == list(range(16))
    # a single query cannot be judged: not flagged by itself
    assert res.query_codes["n_codes"] == 1 and not res.query_codes["degenerate"]


def test_index_ties_give_one_yet_the_result_says_why():
    res = evaluate_hamming(Q, DB, QL, DL, tie="index", shuffle_seed=0)
    # all items tie, so the rank order is the seeded shuffle of the database alone
    order = np.random.default_rng(0).permutation(4)
    ranks = [t + 1 for t, j in enumerate(order) if DL[j, 0]]
    assert res.get("map") == pytest.approx(np.mean([m / t for m, t in enumerate(ranks, 1)]), abs=1e-15)
    assert res.get("map") == 1.0  # the value the issue saw printed
    rows = res.as_dicts()
    assert all(r["degenerate_codes"] is True for r in rows)
    assert {r["n_distinct_codes_database"] for r in rows} == {1}
    assert {r["n_constant_bits_database"] for r in rows} == {16}
    assert set(DIAGNOSTIC_FIELDS) <= set(rows[0])


def test_code_diagnostics_hand_worked():
    bits = np.array([[1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 1, 0]], dtype=bool)
    d = code_diagnostics(bits)
    assert d["n_codes"] == 3 and d["n_distinct_codes"] == 2
    assert d["bit_balance"] == pytest.approx([1.0, 1 / 3, 2 / 3, 0.0])
    assert d["constant_bits"] == [0, 3]  # all ones, all zeros
    assert d["degenerate"] and d["reason"] == "2 of 4 bits constant (bit 0, 3)"
    healthy = code_diagnostics(np.array([[1, 0], [0, 1]], dtype=bool))
    assert not healthy["degenerate"] and healthy["reason"] is None and healthy["constant_bits"] == []


def test_diagnostics_agree_with_an_independent_count_at_many_bits():
    rng = np.random.default_rng(0)
    bits = rng.random((300, 70)) < 0.5
    bits[:, 5] = True
    bits[100:, :] = bits[:100, :][rng.integers(0, 100, 200)]  # repeated rows
    d = code_diagnostics(np.where(bits, 0.4, -0.4), convention="relaxed")
    assert d["n_distinct_codes"] == len({row.tobytes() for row in bits})
    np.testing.assert_allclose(d["bit_balance"], bits.mean(axis=0))
    assert d["constant_bits"] == [5]


def test_real_valued_results_carry_empty_diagnostic_fields():
    res = evaluate_scores(np.eye(2), np.eye(2), np.eye(2), np.eye(2))
    assert res.query_codes is None and not res.degenerate
    assert all(res.as_dicts()[0][f] is None for f in DIAGNOSTIC_FIELDS)


def test_code_file_results_and_cli_flag_degenerate_codes(tmp_path, capsys):
    path = tmp_path / "degenerate.npz"
    np.savez(path, q_img=Q, q_txt=Q, r_img=DB, r_txt=DB, q_l=QL, r_l=DL)
    res = evaluate_code_file(path, tasks=("i2t",))
    assert res[("i2t", "aware")].degenerate and res[("i2t", "index")].degenerate
    assert cli_main(["evaluate", str(path), "--tasks", "i2t"]) == 0
    out = capsys.readouterr().out
    assert "| r_txt | 4       | 1                | 16 of 16" in out
    assert "DEGENERATE: 1 distinct code among 4; all 16 bits constant" in out
    assert "WARNING: degenerate codes (r_txt: 1 distinct code among 4; all 16 bits constant)" in out
    assert "| map                    | –    | " in out and "0.6806" in out
    assert cli_main(["evaluate", str(path), "--tasks", "i2t", "--json"]) == 0
    blob = json.loads(capsys.readouterr().out)
    assert blob["degenerate_codes"] is True
    assert blob["codes"]["r_txt"]["n_distinct_codes"] == 1 and blob["codes"]["q_img"]["n_codes"] == 1
    assert all(r["degenerate_codes"] for r in blob["results"])


def test_table_keeps_formatted_cells_verbatim(tmp_path, capsys):
    # issue 13 item 8: tabulate used to print 0.5000 as 0.5 (it re-parsed the formatted strings)
    path = tmp_path / "half.npz"
    np.savez(path, q_img=np.array([[1, 1]]), r_txt=np.array([[1, 1], [-1, -1]]), q_l=np.array([[1, 0]]),
             r_l=np.array([[0, 1], [1, 0]]))
    assert cli_main(["evaluate", str(path), "--tasks", "i2t", "--tie", "index"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("| map "))
    assert [c.strip() for c in line.strip("|").split("|")] == ["map", "–", "0.5000", "0.7500"]
    assert " nan " not in out and "0.5 " not in out
