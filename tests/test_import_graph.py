"""The shape of `pipeline/`: no import cycles (function-level imports count), no Dagster, rooms by stage.

Why a test and not a convention: a cycle hidden behind an import inside a function works until the day
someone imports the other module first; this walks every module with `ast` so the shape cannot drift.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "pipeline"
# Rooms in the order they may import each other: a room imports only rooms to its left (and the root).
ROOMS = ["capture", "lake", "server", "corpus", "train", "evaluate", "demo", "cli"]
# Root packages: shared by every room like the root modules (the chat templates every stage renders with).
ROOT_PACKAGES = ["chat"]
# Root modules shared by every room (the data model, settings, logging …), in their own downward order.
ROOT_ORDER = ["errors", "jsonio", "schema", "settings", "config", "storage", "logs", "progress", "previews", "models",
              "rewards", "environment", "tracking"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """Every project module this file imports, at any depth of the file (functions included)."""
    name = _module_name(path)
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = name.split(".")[: len(name.split(".")) - node.level + (path.name == "__init__.py")]
                base = ".".join(up + ([node.module] if node.module else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
            targets = subs + ([base] if len(subs) < len(node.names) else [])
        else:
            continue
        for t in targets:
            parts = t.split(".")
            for i in range(len(parts), 0, -1):
                cand = ".".join(parts[:i])
                if cand in modules and cand != name:
                    out.add(cand)
                    break
    return out


def _graph() -> dict[str, set[str]]:
    files = {_module_name(f): f for f in PKG.rglob("*.py")}
    return {name: _imports(f, set(files)) for name, f in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative enough for this size)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def _rank(module: str) -> tuple[int, int]:
    """(room rank, root rank): the root is below every room; packages not listed rank last."""
    parts = module.split(".")
    if parts[1] in ROOT_PACKAGES or (len(parts) == 2 and parts[1] not in ROOMS):  # the root tier
        return (-1, ROOT_ORDER.index(parts[1]) if parts[1] in ROOT_ORDER else len(ROOT_ORDER))
    room = parts[1]
    return (ROOMS.index(room) if room in ROOMS else len(ROOMS), 0)


def test_pipeline_has_no_import_cycles():
    assert _cycles(_graph()) == []


def test_pipeline_never_imports_dagster():
    offenders = []
    for f in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offenders += [f"{_module_name(f)} imports {n}" for n in names if n.split(".")[0] in ("dagster", "assets")]
    assert offenders == []


def test_rooms_import_only_downward():
    upward = []
    for module, targets in _graph().items():
        if module == "pipeline":
            continue
        for t in targets:
            if t == "pipeline":
                continue
            (mr, _), (tr, _) = _rank(module), _rank(t)
            same_room = module.split(".")[1] == t.split(".")[1]
            if not same_room and tr > mr:
                upward.append(f"{module} -> {t}")
    assert upward == []


@pytest.mark.parametrize("room", ["chat", "capture", "lake", "corpus", "train", "evaluate", "demo", "cli"])
def test_every_room_exists(room):
    assert (PKG / room / "__init__.py").exists()


def test_the_walk_sees_a_cycle(tmp_path, monkeypatch):
    """The checker itself: two modules that import each other inside functions are a cycle."""
    pkg = tmp_path / "pipeline"
    (pkg / "a").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a" / "__init__.py").write_text("")
    (pkg / "a" / "x.py").write_text("def f():\n    from pipeline.a import y\n")
    (pkg / "a" / "y.py").write_text("def g():\n    from pipeline.a.x import f\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PKG"]), "PKG", pkg)
    assert _cycles(_graph()) == [["pipeline.a.x", "pipeline.a.y"]]
