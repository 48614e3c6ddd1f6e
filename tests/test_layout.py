"""Layout contracts of DEVELOPERS.md: one-way data flow, no import cycles, packages listed, small modules."""

from __future__ import annotations

import ast
import graphlib
import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
#: folder -> import name (``datasets/`` is installed as ``medhash_datasets``, see pyproject.toml).
PACKAGES = {"benchmarks": "benchmarks", "methods": "methods", "datasets": "medhash_datasets"}
MAX_LINES = 500


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [PACKAGES[rel.parts[0]], *rel.parts[1:]]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    return {_module_name(p): p for folder in PACKAGES for p in (ROOT / folder).rglob("*.py") if p.name != "__init__.py"
}


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                lines.update(range(sub.lineno, (sub.end_lineno or sub.lineno) + 1))
    return lines


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported by ``name`` anywhere in its body (lazy imports included, TYPE_CHECKING not)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def test_no_import_cycles_between_project_modules() -> None:
    modules = _project_modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    # a package's __init__ importing its own sub-modules is not a cycle of the layout
    for name in graph:
        graph[name] = {t for t in graph[name] if not (t.startswith(name + ".") and modules[name].name == "__init__.py")}
        graph[name] = {t for t in graph[name] if not (name.startswith(t + ".") and modules[t].name == "__init__.py")}
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the cycle


def test_data_flows_one_way() -> None:
    modules = _project_modules()
    for name, path in modules.items():
        if name.split(".")[0] in ("methods", "medhash_datasets"):
            bad = sorted(t for t in _imports(name, path, modules) if t.split(".")[0] == "benchmarks")
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"
        if name.split(".")[0] == "medhash_datasets":
            bad = sorted(t for t in _imports(name, path, modules) if t.split(".")[0] == "methods")
            assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_every_package_folder_is_installed() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {_module_name(p) for folder in PACKAGES for p in (ROOT / folder).rglob("__init__.py")} | {"medhash_datasets"}
    assert found == listed, f"missing from pyproject: {sorted(found - listed)}, stale: {sorted(listed - found)}"
    assert config["package-dir"] == {"medhash_datasets": "datasets"}


def test_benchmark_modules_stay_small() -> None:
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / "benchmarks").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_loader_folder_does_not_shadow_hugging_face_datasets() -> None:
    """``datasets/`` has no ``__init__.py``: from the repository root a regular package ``datasets`` found first on
    ``sys.path`` would hide Hugging Face ``datasets`` (sentence-transformers imports it when installed)."""
    assert not (ROOT / "datasets" / "__init__.py").exists()


def test_no_module_imports_hugging_face_name() -> None:
    pattern = re.compile(r"^\s*(from datasets[. ]|import datasets\b)", re.M)
    hits = [str(p.relative_to(ROOT)) for folder in (*PACKAGES, "tests") for p in (ROOT / folder).rglob("*.py")
            if pattern.search(p.read_text())]
    assert not hits, f"import the project's loaders as medhash_datasets, not datasets: {hits}"
