"""Imports point down the layers only (README, "Layout"; docs/architecture.md): the ground, then the
contracts, then the pipeline and the stores side by side, then the shell. Every import counts, the
lazy ones inside functions too.

The distribution installs one package, ``lifecycle``; the user's folders ``streams/``, ``schemas/``
and ``connectors/`` are ``lifecycle.streams``, ``lifecycle.schemas`` and ``lifecycle.connectors``
through links in ``lifecycle/``."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

from lifecycle.core.config import PROJECT_ROOT

LAYER = {"lifecycle.core": 0, "lifecycle.schemas": 1, "lifecycle.streams": 2, "lifecycle.connectors": 2,
         "lifecycle": 3}
FOLDER = {"lifecycle.core": "lifecycle/core", "lifecycle.schemas": "schemas", "lifecycle.streams": "streams",
          "lifecycle.connectors": "connectors", "lifecycle": "lifecycle"}
LINKS = ("streams", "schemas", "connectors")
BARE = {"streams", "schemas", "connectors", "lifecycle_core"}  # the names before everything was one package


def _layer_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if ".".join(parts[:2]) in LAYER else parts[0]


def _sources() -> list[tuple[str, Path]]:
    """(layer, file) for every module of the package, each file once (the links not followed twice)."""
    found = []
    for layer, folder in FOLDER.items():
        for path in sorted((PROJECT_ROOT / folder).rglob("*.py")):
            inner = path.relative_to(PROJECT_ROOT / folder).parts
            if layer == "lifecycle" and inner[0] in ("core", *LINKS):
                continue
            found.append((layer, path))
    return found


def _imports() -> list[tuple[str, str, str]]:
    """(importing layer, imported layer or bare name, where) for every import between layers."""
    found = []
    for layer, path in _sources():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            for name in names:
                where = f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {name}"
                if name.split(".")[0] in BARE:
                    found.append((layer, name.split(".")[0], where))
                elif name.split(".")[0] == "lifecycle" and _layer_of(name) != layer:
                    found.append((layer, _layer_of(name), where))
    return found


def test_every_import_between_layers_points_down():
    upward = [where for src, dst, where in _imports() if dst in LAYER and LAYER[dst] >= LAYER[src]]
    assert upward == [], "imports that point up or sideways (a cycle waiting to happen)"


def test_the_check_sees_lazy_imports():
    assert any(where.startswith("lifecycle/cli.py") and "lifecycle.streams.app" in where
               for _, _, where in _imports())


def test_nothing_imports_a_bare_top_level_name():
    # `import streams` would load streams/app.py a second time as another module, with its own state.
    assert [where for _, dst, where in _imports() if dst in BARE] == []


def test_no_module_is_left_outside_a_layer():
    packages = {p.parent.name for p in PROJECT_ROOT.glob("*/__init__.py")} - {"tests", "benchmarks", "examples"}
    assert packages == {"lifecycle", *LINKS}
    assert sorted(p.name for p in (PROJECT_ROOT / "lifecycle").iterdir() if p.is_symlink()) == sorted(LINKS)
    for link in LINKS:
        assert (PROJECT_ROOT / "lifecycle" / link).resolve() == PROJECT_ROOT / link


def test_the_distribution_installs_one_top_level_package():
    assert importlib.metadata.distribution("lifecycle").read_text("top_level.txt").split() == ["lifecycle"]
