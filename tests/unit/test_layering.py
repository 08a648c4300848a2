"""The package's layering: no import cycles, and no module imports another module's ``_private`` names.

Imports are read from the source (``ast``), including those inside functions: a lazy import that
closes a cycle is still a cycle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("kcp", "kcprpc")


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = path
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> list[tuple[str, str | None]]:
    """(imported module, imported name or None) for every import in ``path`` that names one of ours."""
    out: list[tuple[str, str | None]] = []
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                full = f"{target}.{alias.name}"
                out.append((full, None) if full in mods else (target, alias.name))
        elif isinstance(node, ast.Import):
            out.extend((alias.name, None) for alias in node.names)
    return [(m, n) for m, n in out if m in mods and m != name]


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    mods = _modules()
    graph: dict[str, set[str]] = {}
    private: list[tuple[str, str, str]] = []
    for name, path in mods.items():
        found = _imports(name, path, mods)
        graph[name] = {m for m, _ in found}
        private += [(name, m, n) for m, n in found if n and n.startswith("_") and not n.startswith("__")]
    return graph, private


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def _graph_in_a_fresh_process() -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """:func:`_graph`, computed by this file run as a script: CPython 3.11's ``ast.parse`` can fail
    with "AST constructor recursion depth mismatch" inside a long test session (after tests that
    change the recursion limit); a fresh interpreter has none of that state."""
    out = subprocess.run([sys.executable, __file__], capture_output=True, text=True, check=True, timeout=60)
    graph, private = json.loads(out.stdout)
    return {k: set(v) for k, v in graph.items()}, [(a, b, c) for a, b, c in private]


def test_no_module_imports_a_module_that_imports_it_back() -> None:
    graph, _ = _graph_in_a_fresh_process()
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_imports_private_names_of_another() -> None:
    _, private = _graph_in_a_fresh_process()
    assert private == []


if __name__ == "__main__":
    g, p = _graph()
    print(json.dumps([{k: sorted(v) for k, v in g.items()}, p]))
