"""One binary convention per set of code matrices (issue 13 item 1): never decided per key or per array."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from benchmarks.cli import main as cli_main
from benchmarks.evaluation import (
    MetricSpec,
    binarize,
    binarize_together,
    evaluate_code_file,
    evaluate_hamming,
    load_code_file,
)

#: issue 13 item 1: q_img from sign() of a relaxed output (a 0 from sign(0), no -1 in that key)
ISSUE_ARRAYS = {
    "q_img": np.array([[0.0, 1.0]]),
    "r_txt": np.array([[1, 1], [-1, 1]]),
    "q_l": np.array([[1, 0]]),
    "r_l": np.array([[1, 0], [0, 1]]),
}


@pytest.fixture(params=[".npz", ".mat"])
def issue_file(request, tmp_path):
    path = tmp_path / f"issue13_1{request.param}"
    if request.param == ".npz":
        np.savez(path, **ISSUE_ARRAYS)
    else:
        scipy.io.savemat(path, ISSUE_ARRAYS)
    return path


def test_issue_file_is_refused_naming_the_key_and_values(issue_file):
    # before the fix: q_img read as 0/1, r_txt as ±1, exit 0 with i2t mAP 0.5
    with pytest.raises(ValueError, match=r"key 'q_img': codes hold values \[0\.0, 1\.0\].*key 'r_txt' holds values \[-1, 1\]"):
        load_code_file(issue_file, tasks=("i2t",))


def test_issue_file_with_stated_relaxed_convention_is_evaluated_correctly(issue_file):
    # relaxed: bit = h >= 0, so q = [1, 1]; r_txt bits [1, 1] (relevant, distance 0) and [0, 1] (distance 1):
    # the one relevant item is ranked first, AP = 1 under both tie policies (the faulty reading gave 0.5)
    res = evaluate_code_file(issue_file, tasks=("i2t",), convention="relaxed", metrics=MetricSpec.map_only())
    assert res[("i2t", "index")].get("map") == 1.0
    assert res[("i2t", "aware")].get("map") == 1.0
    assert load_code_file(issue_file, tasks=("i2t",), convention="relaxed").convention == "relaxed"


@pytest.mark.parametrize("convention, match", [
    ("pm1", r"key 'q_img': codes must be ±1 under the pm1 convention, found values \[0\.0, 1\.0\] \(shape \(1, 2\)\)"),
    ("01", r"key 'r_txt': codes must be 0/1 under the 01 convention, found values \[-1, 1\] \(shape \(2, 2\)\)"),
])
def test_issue_file_under_a_stated_binary_convention_names_the_misfit(issue_file, convention, match):
    with pytest.raises(ValueError, match=match):
        load_code_file(issue_file, tasks=("i2t",), convention=convention)


def test_cli_refuses_then_evaluates_with_the_flag(tmp_path, capsys):
    path = tmp_path / "issue.npz"
    np.savez(path, **ISSUE_ARRAYS)
    assert cli_main(["evaluate", str(path), "--tasks", "i2t"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: key 'q_img'") and "[0.0, 1.0]" in err and "'r_txt'" in err and err.count("\n") == 1
    assert cli_main(["evaluate", str(path), "--tasks", "i2t", "--code-convention", "relaxed", "--json"]) == 0
    import json

    blob = json.loads(capsys.readouterr().out)
    assert blob["convention"] == "relaxed"
    assert {r["value"] for r in blob["results"] if r["metric"] == "map"} == {1.0}


def test_convention_is_decided_over_all_keys_even_unused_ones(tmp_path):
    # i2t needs q_img and r_txt (both 0/1-looking), but r_img holds -1: the file is ±1, so its 0s are ambiguous
    path = tmp_path / "mixed.npz"
    np.savez(path, q_img=np.array([[0, 1]]), r_txt=np.array([[1, 1], [0, 1]]), r_img=np.array([[-1, 1], [1, 1]]),
             q_l=np.array([[1, 0]]), r_l=np.array([[1, 0], [0, 1]]))
    with pytest.raises(ValueError, match=r"key 'q_img'.*key 'r_img' holds values \[-1, 1\]"):
        load_code_file(path, tasks=("i2t",))


def test_whole_file_01_and_pm1_give_identical_results(tmp_path):
    rng = np.random.default_rng(3)
    bits = {k: rng.random((n, 16)) < 0.5 for k, n in (("q_img", 8), ("q_txt", 8), ("r_img", 30), ("r_txt", 30))}
    labels = {"q_l": (rng.random((8, 3)) < 0.5).astype(np.uint8), "r_l": (rng.random((30, 3)) < 0.5).astype(np.uint8)}
    np.savez(tmp_path / "pm1.npz", **{k: np.where(b, 1.0, -1.0) for k, b in bits.items()}, **labels)
    np.savez(tmp_path / "01.npz", **{k: b.astype(np.uint8) for k, b in bits.items()}, **labels)
    a, b = load_code_file(tmp_path / "pm1.npz"), load_code_file(tmp_path / "01.npz")
    assert (a.convention, b.convention) == ("pm1", "01")
    for key in a.codes:
        np.testing.assert_array_equal(a.codes[key], bits[key])
        np.testing.assert_array_equal(b.codes[key], bits[key])


def test_in_memory_evaluation_reads_query_and_database_under_one_convention():
    # the same fault through the API: int query [[0, 1]] and database ±1 used to be read per array
    q, db = np.array([[0, 1]]), np.array([[1, 1], [-1, 1]])
    ql, dl = ISSUE_ARRAYS["q_l"], ISSUE_ARRAYS["r_l"]
    with pytest.raises(ValueError, match=r"query codes: codes hold values \[0, 1\].*database codes holds values \[-1, 1\]"):
        evaluate_hamming(q, db, ql, dl)
    assert evaluate_hamming(q, db, ql, dl, convention="relaxed", metrics=MetricSpec.map_only()).get("map") == 1.0


@pytest.mark.parametrize("arrays, used, expected", [
    ({"a": np.array([[-1, 1]]), "b": np.array([[1, 1]])}, "pm1", {"a": [[False, True]], "b": [[True, True]]}),
    ({"a": np.array([[0, 1]]), "b": np.array([[1.0, 1.0]])}, "01", {"a": [[False, True]], "b": [[True, True]]}),
    ({"a": np.array([[-0.2, 0.0]]), "b": np.array([[1.0, -1.0]])}, "relaxed", {"a": [[False, True]], "b": [[True, False]]}),
    ({"a": np.array([[True, False]]), "b": np.array([[-1, 1]])}, "pm1", {"a": [[True, False]], "b": [[False, True]]}),
    ({"a": np.array([[True, False]])}, "bits", {"a": [[True, False]]}),
])
def test_auto_decisions(arrays, used, expected):
    bits, got = binarize_together(arrays)
    assert got == used
    assert {k: v.tolist() for k, v in bits.items()} == expected


@pytest.mark.parametrize("arrays, match", [
    # a 0/1-looking matrix beside relaxed reals: its 0s could be 0-bits or relaxed zeros
    ({"a": np.array([[0.0, 1.0]]), "b": np.array([[0.3, -0.7]])}, r"a: codes hold only values \[0\.0, 1\.0\] while b holds relaxed"),
    ({"a": np.array([[-1, 0, 1]])}, r"a: codes must be ±1 or 0/1, found values \[-1, 0, 1\]"),
    ({"a": np.array([[2, 0]])}, r"a: integer codes must be ±1 or 0/1, found values \[0, 2\]"),
    ({"a": np.array([[0.5, np.nan]])}, "a: codes contain NaN"),
])
def test_auto_refusals_name_the_matrix_and_values(arrays, match):
    with pytest.raises(ValueError, match=match):
        binarize_together(arrays)


def test_stated_relaxed_convention_accepts_sign_outputs_with_zeros():
    np.testing.assert_array_equal(binarize(np.array([[-1, 0, 1]]), convention="relaxed"), [[False, True, True]])
    with pytest.raises(ValueError, match="unknown code convention 'sign'"):
        binarize(np.array([[1]]), convention="sign")
