"""Imports point down the layers only (README, "Layout"; docs/architecture.md): the ground, then the
contracts, then the pipeline and the stores side by side, then the shell. Every import counts, the
lazy ones inside functions too."""

from __future__ import annotations

import ast

from lifecycle_core.config import PROJECT_ROOT

LAYER = {"lifecycle_core": 0, "schemas": 1, "streams": 2, "connectors": 2, "lifecycle": 3}


def _imports() -> list[tuple[str, str, str]]:
    """(importing package, imported package, where) for every import between top-level packages."""
    found = []
    for package in LAYER:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
                for name in names:
                    top = name.split(".")[0]
                    if top in LAYER and top != package:
                        found.append((package, top, f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {name}"))
    return found


def test_every_import_between_packages_points_down_a_layer():
    upward = [where for src, dst, where in _imports() if LAYER[dst] >= LAYER[src]]
    assert upward == [], "imports that point up or sideways (a cycle waiting to happen)"


def test_the_check_sees_lazy_imports():
    assert any(where.startswith("lifecycle/cli.py") and "streams.app" in where for _, _, where in _imports())


def test_no_module_is_left_outside_a_layer():
    packages = {p.parent.name for p in PROJECT_ROOT.glob("*/__init__.py")} - {"tests", "benchmarks", "examples"}
    assert packages == set(LAYER)
