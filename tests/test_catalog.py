"""The torch-free method catalogue equals the real registry (names, tags, ``all``) and fails the same way."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmarks.catalog import method_names, resolve_methods
from medhash_datasets.registry import RegistryError
from methods import METHODS


def test_catalogue_matches_the_registry() -> None:
    catalogue = method_names()
    assert sorted(catalogue.names()) == sorted(METHODS.names())
    for name in METHODS.names():
        assert catalogue.tags(name) == METHODS.tags(name), name
    assert resolve_methods(["all"]) == METHODS.resolve(["all"], all_excludes_tag="ablation")
    assert resolve_methods(["mcmfh*"]) == METHODS.resolve(["mcmfh*"], all_excludes_tag="ablation")


def test_typo_suggests_the_closest_name() -> None:
    with pytest.raises(RegistryError, match=r"did you mean 'mcmfh'"):
        resolve_methods(["mcmf"])


def test_catalogue_does_not_import_torch() -> None:
    code = "import sys; from benchmarks.catalog import resolve_methods; resolve_methods(['all']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--methods", "mcmf"], "did you mean 'mcmfh'"),
    (["run", "--datasets", "medpx"], "did you mean 'medpix'"),
])
def test_name_errors_are_one_line_and_import_no_torch(argv: list[str], message: str) -> None:
    code = ("import sys; from benchmarks.cli import main; rc = main(sys.argv[1:]); "
            "print('RC', rc, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "RC 2 False"
    assert message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_out_naming_a_file_is_a_clear_error(tmp_path, capsys) -> None:
    from benchmarks.cli import main

    afile = tmp_path / "results.txt"
    afile.write_text("x")
    assert main(["run", "--methods", "random", "--out", str(afile / "sub"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"{afile} is a file, not a folder" in err
