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
    assert any(where.startswith("lifecycle/cli/run.py") and "lifecycle.streams.app" in where
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


# Inside streams/: the runtime at the bottom, the features above it, and what assembles them on top.
RUNTIME = "lifecycle.streams.runtime"
FEATURES = ("ingest", "accounts", "sessions", "traffic", "consent", "erasure", "access", "retention")
ASSEMBLY = ("lifecycle.streams.app", "lifecycle.streams.pipeline", "lifecycle.streams.features",
            "lifecycle.streams.rebuild", "lifecycle.streams.http")


def _module_of(path: Path) -> str:
    """The dotted name of a file of the package (its links read as the package's folders)."""
    for layer, folder in FOLDER.items():
        root = PROJECT_ROOT / folder
        if path.is_relative_to(root) and (layer != "lifecycle" or path.parent == root or
                                          path.relative_to(root).parts[0] not in ("core", *LINKS)):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            return ".".join([*layer.split("."), *parts])
    raise AssertionError(path)


def _file_imports() -> list[tuple[str, str, str]]:
    """(importing module, imported module, where) between modules of the package, each resolved to
    the module it names (``from pkg import name`` names ``pkg.name`` when that is a module)."""
    modules = {_module_of(path) for _, path in _sources()}
    found = []
    for _, path in _sources():
        source = _module_of(path)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module
                         for a in node.names]
            else:
                continue
            for name in names:
                if name in modules and name != source:
                    found.append((source, name, f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {name}"))
    return found


def _feature_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[2] if len(parts) > 2 and parts[:2] == ["lifecycle", "streams"] and parts[2] in FEATURES else None


def _is_assembly(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ASSEMBLY)


def _streams_rule_breaks(imports: list[tuple[str, str, str]]) -> list[str]:
    """Imports that break the cut of streams/ (docs/architecture.md, "Inside streams/")."""
    broken = []
    for src, dst, where in imports:
        if not dst.startswith("lifecycle.streams.") or not src.startswith("lifecycle.streams."):
            continue
        if src.startswith(RUNTIME):
            if not dst.startswith(RUNTIME):
                broken.append(f"{where}: the runtime imports a feature or the assembly")
        elif (feature := _feature_of(src)) is not None:
            if _is_assembly(dst):
                broken.append(f"{where}: a feature imports the assembly")
            elif (other := _feature_of(dst)) is not None and other != feature and dst != f"lifecycle.streams.{other}":
                broken.append(f"{where}: a feature imports another feature's internals (use its package)")
        elif not _is_assembly(src) and src not in ("lifecycle.streams",):
            broken.append(f"{where}: a module outside the cut ({src})")
    return broken


def _cycles(imports: list[tuple[str, str, str]]) -> list[list[str]]:
    graph: dict[str, set[str]] = {}
    for src, dst, _ in imports:
        graph.setdefault(src, set()).add(dst)
    found, state = [], {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_streams_is_cut_by_feature():
    assert _streams_rule_breaks(_file_imports()) == []


def test_every_module_of_streams_has_its_place():
    stray = [m for m in {_module_of(p) for layer, p in _sources() if layer == "lifecycle.streams"}
             if not (m == "lifecycle.streams" or m.startswith(RUNTIME) or _feature_of(m) or _is_assembly(m))]
    assert stray == []


def test_no_file_imports_itself_through_a_circle():
    assert _cycles(_file_imports()) == []


def test_the_cut_sees_what_it_must_refuse():
    """The rules fail on the imports they exist to refuse (each added here on purpose)."""
    planted = [
        ("lifecycle.streams.runtime.outbox", "lifecycle.streams.erasure", "runtime -> feature"),
        ("lifecycle.streams.accounts.processor", "lifecycle.streams.erasure.opening", "feature -> internals"),
        ("lifecycle.streams.erasure.tick", "lifecycle.streams.app", "feature -> assembly"),
    ]
    assert len(_streams_rule_breaks(planted)) == 3
    assert _streams_rule_breaks([("lifecycle.streams.accounts.processor", "lifecycle.streams.erasure", "ok")]) == []
    circle = [("lifecycle.streams.http.views", "lifecycle.streams.app", "a"),
              ("lifecycle.streams.app", "lifecycle.streams.http.views", "b")]
    assert _cycles(circle) != []
    assert _cycles(circle[:1]) == []
