"""The module import graph of src/relaygate has no cycles, and production never loads dev tooling.

Read from the source with ``ast`` (nothing is imported), counting every import: top-level,
inside functions, and under ``TYPE_CHECKING``, because a function-level import is still a
dependency, only a late one, and a cycle hidden that way is still a layering knot.
``from package import name`` is an edge to ``package.name`` when that is a module, else to
``package``. A submodule's implicit import of its parent package is not counted: that is how
Python loads packages, not a dependency one module chose.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

pytestmark = pytest.mark.unit

SRC = pathlib.Path(__file__).resolve().parents[2] / "src"
PACKAGE = "relaygate"
DEV = "relaygate.dev"

# The one production module that may reach into relaygate.dev: the ``relaygate dev`` and
# ``relaygate mock-upstream`` commands, which import it only when run.
DEV_ENTRY = {"relaygate.cli.dev"}

# Known cycles, each the set of modules that import each other; a cycle not named here fails
# the test, and so does a named one that is gone. Empty: the only cycle (cli <-> devmode) was
# broken by relaygate.serving. The inverted imports of the review (errors -> relay.dialects,
# api.channels -> relay.handlers) are one-way, so they are layering issues, not cycles.
ALLOWED_CYCLES: list[frozenset[str]] = []


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, name, path.name == "__init__.py")
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.append(sub if sub in modules else base)
            for target in targets:
                # ``import a.b.c`` loads a.b.c; keep the longest prefix that is our module.
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_imports() -> None:
    """Guards the walker itself: cli.dev imports relaygate.dev.mode inside a function."""
    assert "relaygate.dev.mode" in import_graph()["relaygate.cli.dev"]


def test_no_import_cycles() -> None:
    found = cycles(import_graph())
    new = [sorted(c) for c in found if c not in ALLOWED_CYCLES]
    assert not new, f"import cycles: {new}"
    stale = [sorted(c) for c in ALLOWED_CYCLES if c not in found]
    assert not stale, f"allowed cycles that no longer exist, remove them: {stale}"


def test_production_modules_never_import_dev_tooling() -> None:
    offenders = {
        module: sorted(t for t in targets if t == DEV or t.startswith(DEV + "."))
        for module, targets in import_graph().items()
        if not (module == DEV or module.startswith(DEV + ".")) and module not in DEV_ENTRY
    }
    offenders = {m: t for m, t in offenders.items() if t}
    assert not offenders, f"production modules importing {DEV}: {offenders}"
