"""The tree shows the architecture: the core never imports a plugin; modules stay small."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MAX_LINES = 500


def python_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", python_files("adapter"), ids=lambda p: p.name)
def test_core_imports_no_plugin(path: Path) -> None:
    bad = {m for m in imported_modules(path) if m.split(".")[0] in ("importer", "exporter")}
    assert not bad, f"{path.relative_to(REPO)} imports plugin modules {bad}"


@pytest.mark.parametrize("path", python_files("importer"), ids=lambda p: p.name)
def test_importer_does_not_import_the_exporter(path: Path) -> None:
    assert not {m for m in imported_modules(path) if m.startswith("exporter")}


@pytest.mark.parametrize("path", python_files("exporter"), ids=lambda p: p.name)
def test_exporter_does_not_import_the_importer(path: Path) -> None:
    assert not {m for m in imported_modules(path) if m.startswith("importer")}


@pytest.mark.parametrize(
    "path",
    [p for pkg in ("adapter", "importer", "exporter") for p in python_files(pkg)],
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_modules_stay_small(path: Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(REPO)} has {lines} lines: split it"


def test_every_package_is_listed_in_pyproject() -> None:
    import tomllib

    listed = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    on_disk = {
        str(p.parent.relative_to(REPO)).replace("/", ".")
        for pkg in ("adapter", "importer", "exporter")
        for p in (REPO / pkg).rglob("__init__.py")
    }
    assert on_disk <= listed, f"packages missing from pyproject: {on_disk - listed}"
