"""Code files (.mat/.npz) and the ``evaluate`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from benchmarks.cli import main as cli_main
from benchmarks.evaluation import evaluate_code_file, evaluate_hamming, load_code_file


def _arrays(seed=0, nq=12, nd=60, k=16, n_labels=4):
    rng = np.random.default_rng(seed)
    return {
        "q_img": np.where(rng.random((nq, k)) < 0.5, 1.0, -1.0),
        "q_txt": np.where(rng.random((nq, k)) < 0.5, 1.0, -1.0),
        "r_img": (rng.random((nd, k)) < 0.5).astype(np.uint8),  # 0/1 form is accepted too
        "r_txt": (rng.random((nd, k)) < 0.5).astype(np.uint8),
        "q_l": (rng.random((nq, n_labels)) < 0.4).astype(np.float64),
        "r_l": (rng.random((nd, n_labels)) < 0.4).astype(np.float64),
    }


@pytest.fixture
def mat_file(tmp_path):
    path = tmp_path / "codes.mat"
    scipy.io.savemat(path, _arrays())
    return path


def test_mat_and_npz_give_the_same_results(tmp_path, mat_file):
    npz = tmp_path / "codes.npz"
    np.savez(npz, **_arrays())
    a = evaluate_code_file(mat_file, tasks=("i2t", "t2i", "i2i", "t2t"))
    b = evaluate_code_file(npz, tasks=("i2t", "t2i", "i2i", "t2t"))
    assert list(a) == [(t, tie) for t in ("i2t", "t2i", "i2i", "t2t") for tie in ("index", "aware")]
    for key in a:
        assert a[key].values == b[key].values


def test_tasks_pair_the_right_keys(mat_file):
    arr = _arrays()
    res = evaluate_code_file(mat_file, tasks=("i2t", "t2i"), ties=("index",))
    direct = evaluate_hamming(arr["q_img"] > 0, arr["r_txt"] > 0, arr["q_l"], arr["r_l"])
    assert res[("i2t", "index")].values == direct.values
    direct = evaluate_hamming(arr["q_txt"] > 0, arr["r_img"] > 0, arr["q_l"], arr["r_l"])
    assert res[("t2i", "index")].values == direct.values


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda a: a.pop("r_txt"), r"missing key\(s\) \['r_txt'\].*file has"),
        (lambda a: a.update(q_img=a["q_img"][:5]), r"'q_img' has 5 rows.*'q_l' has 12"),
        (lambda a: a.update(r_img=a["r_img"] * 3), r"'r_img'.*±1 or 0/1.*\(60, 16\)"),
        (lambda a: a.update(q_txt=np.where(a["q_txt"] > 0, np.nan, -1.0)), r"'q_txt'.*NaN"),
        (lambda a: a.update(r_l=np.ones((60, 5))), r"label widths differ: 'q_l' \(12, 4\) vs 'r_l' \(60, 5\)"),
        (lambda a: a.update(r_txt=a["r_txt"][:, :8]), "code lengths differ"),
    ],
)
def test_bad_files_name_the_key_and_shapes(tmp_path, change, match):
    arr = _arrays()
    change(arr)
    path = tmp_path / "bad.npz"
    np.savez(path, **arr)
    with pytest.raises(ValueError, match=match):
        load_code_file(path, tasks=("i2t", "t2i"))


def test_only_keys_of_requested_tasks_are_required(tmp_path):
    arr = _arrays()
    del arr["q_txt"], arr["r_img"]
    path = tmp_path / "i2t_only.npz"
    np.savez(path, **arr)
    assert load_code_file(path, tasks=("i2t",)).bits == 16
    with pytest.raises(ValueError, match="missing key"):
        load_code_file(path, tasks=("t2i",))


def test_cli_table_and_json(mat_file, capsys):
    assert cli_main(["evaluate", str(mat_file)]) == 0
    out = capsys.readouterr().out
    assert "i2t index" in out and "t2i aware" in out and "map_first_k_relevant@k" in out
    assert cli_main(["evaluate", str(mat_file), "--tasks", "i2t", "--tie", "aware", "--json"]) == 0
    blob = json.loads(capsys.readouterr().out)
    rows = blob["results"]
    assert {r["task"] for r in rows} == {"i2t"} and {r["tie"] for r in rows} == {"aware"}
    metrics = {r["metric"] for r in rows}
    assert metrics >= {"map", "map@k", "map_first_k_relevant@k", "p@n", "ndcg@k", "p@r2", "pr_radius_precision", "pr_radius_recall"}
    arr = _arrays()
    expected = evaluate_hamming(arr["q_img"], arr["r_txt"] > 0, arr["q_l"], arr["r_l"], tie="aware").get("map")
    assert next(r["value"] for r in rows if r["metric"] == "map") == pytest.approx(expected, abs=1e-15)


def test_cli_errors_are_one_line(tmp_path, capsys):
    arr = _arrays()
    arr.pop("q_l")
    path = tmp_path / "bad.npz"
    np.savez(path, **arr)
    assert cli_main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "'q_l'" in err and err.count("\n") == 1
    assert cli_main(["evaluate", str(tmp_path / "absent.mat")]) == 2
    assert cli_main(["evaluate", str(tmp_path / "x.txt")]) == 2


def test_unreadable_files_and_bad_flags_are_one_line_errors(tmp_path, capsys):
    garbage_mat, garbage_npz = tmp_path / "garbage.mat", tmp_path / "garbage.npz"
    garbage_mat.write_bytes(b"this is not a MATLAB file at all\n")
    garbage_npz.write_bytes(b"this is not a zip archive\n")
    objects = tmp_path / "objects.npz"
    arr = _arrays()
    arr["q_img"] = np.array([[1, None]], dtype=object)
    np.savez(objects, **arr)
    cases = [
        (garbage_mat, f"{garbage_mat}: not a readable MATLAB .mat code file"),
        (garbage_npz, f"{garbage_npz}: not a readable .npz code file"),
        (objects, f"{objects}: not a readable .npz code file (it holds object (pickled) arrays"),
        (tmp_path, f"code file {tmp_path} is a folder"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
            load_code_file(path)
        assert cli_main(["evaluate", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {message}") and err.count("\n") == 1, err
    # labels stored as text / object arrays in a .mat are refused by dtype, not by a numpy crash
    mat = tmp_path / "text_labels.mat"
    arr = _arrays()
    scipy.io.savemat(mat, {**arr, "q_l": np.array([["a", "b"]] * arr["q_l"].shape[0])})
    with pytest.raises(ValueError, match="key 'q_l'"):
        load_code_file(mat)
    good = tmp_path / "good.npz"
    np.savez(good, **_arrays())
    assert cli_main(["evaluate", str(good), "--shuffle-seed", "-1"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --shuffle-seed must be >= 0, got -1\n"
