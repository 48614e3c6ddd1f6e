"""Code files (.mat/.npz) and the ``evaluate`` command."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.io

from benchmarks.cli import main as cli_main
from benchmarks.evaluation import evaluate_code_file, evaluate_hamming, load_code_file, write_code_file


def _arrays(seed=0, nq=12, nd=60, k=16, n_labels=4):
    rng = np.random.default_rng(seed)
    return {
        "q_img": np.where(rng.random((nq, k)) < 0.5, 1.0, -1.0),
        "q_txt": np.where(rng.random((nq, k)) < 0.5, 1.0, -1.0),
        "r_img": np.where(rng.random((nd, k)) < 0.5, 1, -1).astype(np.int8),  # any numeric dtype
        "r_txt": np.where(rng.random((nd, k)) < 0.5, 1, -1).astype(np.int8),
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
        (lambda a: a.update(r_img=(a["r_img"] > 0).astype(np.uint8) * 3), r"'r_img'.*±1 or 0/1.*\(60, 16\)"),
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


# ---- issue 16 item 9: transposed labels, MATLAB v7.3 (HDF5) files ----------------------------------------


@pytest.mark.parametrize("key, shape", [("q_l", (4, 12)), ("r_l", (4, 60))])
def test_labels_stored_classes_by_items_name_the_transposition(tmp_path, key, shape):
    arr = _arrays()
    arr[key] = arr[key].T  # MATLAB users often save labels as (classes x items)
    path = tmp_path / "transposed.mat"
    scipy.io.savemat(path, arr)
    rows = shape[1]
    expected = (rf"key '{key}': labels of shape \({shape[0]}, {shape[1]}\) look stored as \(classes × items\), i\.e\. "
                rf"transposed: its {rows} columns match the {rows} rows of '.*'; store the transpose, "
                rf"\(items × classes\) = \({shape[1]}, {shape[0]}\)")
    with pytest.raises(ValueError, match=expected):
        load_code_file(path)


def test_codes_stored_bits_by_items_name_the_transposition(tmp_path):
    arr = _arrays()
    arr["q_img"] = arr["q_img"].T  # (16, 12) instead of (12, 16)
    path = tmp_path / "codes_t.npz"
    np.savez(path, **arr)
    with pytest.raises(ValueError, match=r"'q_img' has 16 rows \(shape \(16, 12\)\) but 'q_l' has 12.*looks stored as \(bits × items\)"):
        load_code_file(path)


def _write_mat73(path, arrays, matlab_header=True):
    """Write ``arrays`` as MATLAB v7.3 does: HDF5 with a 512-byte user block holding the MATLAB header, each
    matrix column-major (so an (n, K) MATLAB matrix is an HDF5 dataset of shape (K, n)) with ``MATLAB_class``."""
    import h5py

    classes = {np.dtype(np.float64): "double", np.dtype(np.int8): "int8", np.dtype(np.uint8): "uint8", np.dtype(bool): "logical"}
    with h5py.File(path, "w", userblock_size=512 if matlab_header else 0) as f:
        for key, value in arrays.items():
            value = np.asarray(value)
            data = value.astype(np.uint8) if value.dtype == bool else value
            ds = f.create_dataset(key, data=np.ascontiguousarray(data.T))
            ds.attrs["MATLAB_class"] = np.bytes_(classes[value.dtype])
        f.create_group("#refs#")
    if matlab_header:
        header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
        with open(path, "r+b") as fh:
            fh.write(header.ljust(116) + b"\x00" * 8 + b"\x00\x02IM")


@pytest.mark.parametrize("matlab_header", [True, False], ids=["matlab-v7.3", "plain-hdf5"])
def test_mat_v73_hdf5_reads_like_v5(tmp_path, mat_file, matlab_header):
    arr = _arrays()
    arr["r_img"] = arr["r_img"] > 0  # a logical matrix too
    arr["r_txt"] = np.where(arr["r_txt"] > 0, 1.0, -1.0)
    path = tmp_path / "codes73.mat"
    _write_mat73(path, arr, matlab_header)
    cf = load_code_file(path, tasks=("i2t", "t2i", "i2i", "t2t"))
    assert cf.q_labels.shape == (12, 4) and cf.codes["r_txt"].shape == (60, 16)  # column-major undone
    ref = load_code_file(mat_file, tasks=("i2t", "t2i", "i2i", "t2t"))
    for key in ref.codes:
        np.testing.assert_array_equal(cf.codes[key], ref.codes[key])
    np.testing.assert_array_equal(cf.r_labels, ref.r_labels)
    a = evaluate_code_file(path, tasks=("i2t",), ties=("aware",))
    b = evaluate_code_file(mat_file, tasks=("i2t",), ties=("aware",))
    assert a[("i2t", "aware")].values == b[("i2t", "aware")].values


def test_mat_v73_with_transposed_labels_names_the_transposition(tmp_path):
    arr = _arrays()
    arr["q_l"] = arr["q_l"].T
    path = tmp_path / "t73.mat"
    _write_mat73(path, arr)
    with pytest.raises(ValueError, match=r"key 'q_l': labels of shape \(4, 12\) look stored as \(classes × items\)"):
        load_code_file(path)


def test_damaged_hdf5_mat_is_a_one_line_error(tmp_path, capsys):
    path = tmp_path / "cut73.mat"
    _write_mat73(path, _arrays())
    path.write_bytes(path.read_bytes()[:1500])
    with pytest.raises(ValueError, match=r"not a readable MATLAB v7\.3 \(HDF5\) \.mat code file"):
        load_code_file(path)
    assert cli_main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1


# ---- issue 16 item 10 (codes): the harness writes the layout `evaluate` reads -----------------------------


@pytest.mark.parametrize("suffix", [".npz", ".mat"])
def test_write_code_file_round_trip_gives_the_in_memory_values(tmp_path, suffix):
    rng = np.random.default_rng(7)
    relaxed = {k: np.tanh(rng.normal(size=(n, 24))) for k, n in (("q_img", 10), ("q_txt", 10), ("r_img", 50), ("r_txt", 50))}
    q_l, r_l = rng.random((10, 5)) < 0.3, rng.random((50, 5)) < 0.3
    path = write_code_file(tmp_path / "run" / f"codes{suffix}", q_l=q_l, r_l=r_l, convention="relaxed", **relaxed)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))  # atomic: no temporary left
    cf = load_code_file(path, tasks=("i2t", "t2i", "i2i", "t2t"))
    assert cf.convention == "pm1" and cf.bits == 24
    from_file = evaluate_code_file(path, tasks=("i2t", "t2i"))
    for (task, tie), res in from_file.items():
        q_key, r_key = {"i2t": ("q_img", "r_txt"), "t2i": ("q_txt", "r_img")}[task]
        direct = evaluate_hamming(relaxed[q_key], relaxed[r_key], q_l, r_l, tie=tie, convention="relaxed")
        assert res.values == direct.values
        assert res.get("map") == direct.get("map")


def test_write_code_file_refuses_what_evaluate_would_refuse(tmp_path):
    ok = {"q_l": np.ones((2, 3)), "r_l": np.ones((4, 3))}
    with pytest.raises(ValueError, match=r"codes \['q_img'\] form no task"):
        write_code_file(tmp_path / "x.npz", q_img=np.ones((2, 8)), **ok)
    with pytest.raises(ValueError, match=r"'r_txt' has 3 rows"):
        write_code_file(tmp_path / "x.npz", q_img=np.ones((2, 8)), r_txt=np.ones((3, 8)), **ok)
    with pytest.raises(ValueError, match="unsupported code file type '.txt'"):
        write_code_file(tmp_path / "x.txt", q_img=np.ones((2, 8)), r_txt=np.ones((4, 8)), **ok)
    assert not (tmp_path / "x.npz").exists()
