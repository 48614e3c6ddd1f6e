"""The harness beside the usual ML packages: Hugging Face ``datasets`` installed, any working folder (issue 16.1)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["elsewhere", "repo root"])
def test_cli_lists_datasets_from_any_folder(tmp_path: Path, where: str) -> None:
    out = _run([sys.executable, "-m", "benchmarks", "list", "datasets"], tmp_path if where == "elsewhere" else ROOT)
    assert out.returncode == 0, out.stderr
    assert "medpix" in out.stdout and "synthetic" in out.stdout


@pytest.mark.slow
def test_console_script_runs(tmp_path: Path) -> None:
    script = shutil.which("medhash-bench")
    if script is None:
        pytest.skip("medhash-bench console script not on PATH (package not installed)")
    out = _run([script, "list", "methods"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "mcmfh" in out.stdout


@pytest.mark.slow
def test_hugging_face_datasets_is_not_shadowed_from_the_repo_root() -> None:
    pytest.importorskip("datasets", reason="Hugging Face datasets not installed (CI installs it with the dev extra)")
    code = ("import datasets, medhash_datasets.loaders, sentence_transformers;"
            "from datasets import Dataset;"
            "print(datasets.__file__)")
    out = _run([sys.executable, "-c", code], ROOT)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).parent != ROOT / "datasets"
