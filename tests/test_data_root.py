"""Data-root mistakes give one-line errors that name the fix (issue 16 item 11: a root one level too deep
suggests its parent; also too high, near-miss folder names, a root that is missing or a file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medhash_datasets.base import DatasetError, require_dir, resolve_data_root
from medhash_datasets.loaders import DATASETS
from tests.dataset_trees import medpix_record, medpix_tree, png


def _medpix(data_root: Path) -> Path:
    root = medpix_tree(
        data_root, [medpix_record("MPX1_a", "MPX1", "Disc.")], [], [medpix_record("MPX2_a", "MPX2", "Cord.")]
    )
    png(root / "images" / "MPX1_a.png", 10)
    png(root / "images" / "MPX2_a.png", 20)
    return root


def test_root_one_level_too_deep_suggests_the_parent(tmp_path):
    dataset_dir = _medpix(tmp_path)
    with pytest.raises(DatasetError) as err:
        DATASETS.get("medpix")(dataset_dir)
    assert str(err.value) == (
        f"dataset 'medpix' not found: searched {dataset_dir / 'medpix-2.0'}, but found {dataset_dir}: "
        f"pass the parent, --data-root {tmp_path}"
    )
    assert len(DATASETS.get("medpix")(tmp_path)) == 2  # the suggested root works


def test_dataset_folder_under_another_name_passed_as_root(tmp_path):
    dataset_dir = _medpix(tmp_path)
    clone = dataset_dir.rename(tmp_path / "MedPix-2-0")  # the GitHub repository's folder name
    with pytest.raises(DatasetError) as err:
        DATASETS.get("medpix")(clone)
    assert str(err.value) == (
        f"dataset 'medpix' not found: --data-root {clone} is the dataset folder itself, one level too deep: "
        f"name it medpix-2.0 (or link {tmp_path / 'medpix-2.0'} to it) and pass its parent, --data-root {tmp_path} "
        f"(searched {clone / 'medpix-2.0'})"
    )
    with pytest.raises(DatasetError) as err:  # its parent: the near-miss name is pointed out
        DATASETS.get("medpix")(tmp_path)
    assert str(err.value) == (
        f"dataset 'medpix' not found: searched {tmp_path / 'medpix-2.0'}, but found {clone}: "
        f"rename or link it to {tmp_path / 'medpix-2.0'}"
    )


def test_root_one_level_too_high_names_the_folder_to_pass(tmp_path):
    _medpix(tmp_path / "data")
    with pytest.raises(DatasetError) as err:
        DATASETS.get("medpix")(tmp_path)
    assert str(err.value) == (
        f"dataset 'medpix' not found: searched {tmp_path / 'medpix-2.0'}, but found "
        f"{tmp_path / 'data' / 'medpix-2.0'}: pass --data-root {tmp_path / 'data'}"
    )


def test_root_missing_or_a_file_and_dataset_path_a_file(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError, match=(
        rf"^dataset 'medpix': data root {missing} \(from --data-root or MEDHASH_DATA_ROOT\) does not exist; "
        r"expected layout DIR/medpix-2.0/$")):  # fmt: skip
        DATASETS.get("medpix")(missing)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    with pytest.raises(DatasetError, match=r"^dataset 'openi': data root .*notes.txt is a file, not a folder; "
                                           r"expected layout DIR/iu-xray/ or DIR/openi/$"):  # fmt: skip
        DATASETS.get("openi")(a_file)
    (tmp_path / "roco").write_text("x")
    with pytest.raises(DatasetError, match=r"^dataset 'roco': .*roco is a file, not the dataset folder$"):
        DATASETS.get("roco")(tmp_path)
    with pytest.raises(
        DatasetError, match=r"^dataset 'mirflickr25k' not found: searched .*mirflickr25k\. Get the DCMH"
    ):
        DATASETS.get("mirflickr25k")(tmp_path)


def test_openi_root_is_the_dataset_folder(tmp_path):
    base = tmp_path / "chest-xrays"
    base.mkdir()
    (base / "indiana_reports.csv").write_text("uid\n")
    with pytest.raises(DatasetError, match=(
        rf"^dataset 'openi' not found: --data-root {base} is the dataset folder itself, one level too deep: "
        rf"name it iu-xray \(or link {tmp_path / 'iu-xray'} to it\) and pass its parent")):  # fmt: skip
        require_dir(base, ("iu-xray", "openi"), "openi", "", markers=("indiana_reports.csv",))


def test_resolve_data_root_flag_env_and_white_space(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDHASH_DATA_ROOT", f"  {tmp_path}  ")
    assert resolve_data_root(None) == tmp_path and resolve_data_root("") == tmp_path
    assert resolve_data_root(" /elsewhere ") == Path("/elsewhere")  # the flag wins
    monkeypatch.setenv("MEDHASH_DATA_ROOT", "   ")
    assert resolve_data_root(None) is None
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_root("~/data") == tmp_path / "data"


def test_cli_one_line_error_suggests_the_parent(tmp_path, capsys):
    from benchmarks.cli import main

    dataset_dir = _medpix(tmp_path)
    assert main(["data", "info", "medpix", "--data-root", str(dataset_dir)]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"error: dataset 'medpix' not found: searched {dataset_dir / 'medpix-2.0'}, but found {dataset_dir}: "
        f"pass the parent, --data-root {tmp_path}\n"
    )
