"""No import cycle anywhere in podnode/, counting every import a module can run.

A cycle hidden behind `if TYPE_CHECKING:` or inside a function still ties the two modules together: neither can be
read, tested or moved without the other, and the day someone lifts the import to the top the program fails to
start. So the graph is built from the source with `ast`, not from what Python happens to import: every `import`
and `from ... import` anywhere in a module (top level, under TYPE_CHECKING, in functions) counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "podnode"


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py below `root` (a package's __init__.py is the package)."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of `known` that module `name` (in file `path`) imports anywhere in its source."""
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(_longest_known(alias.name, known) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(name, is_package, node.level, node.module)
            for alias in node.names:
                target = f"{base}.{alias.name}"    # `from pkg import module` imports the module
                found.add(target if target in known else _longest_known(base, known))
    found.discard(None)
    found.discard(name)
    return found


def _absolute(name: str, is_package: bool, level: int, module: str | None) -> str:
    """Resolve a relative `from ...module import` as Python does, from the importing module's package."""
    if level == 0:
        return module or ""
    package = name.split(".") if is_package else name.split(".")[:-1]
    base = package[:len(package) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _longest_known(dotted: str, known: set[str]) -> str | None:
    """`a.b.c` -> the longest of a.b.c, a.b, a that is a module of ours (None for other packages)."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in known:
            return ".".join(parts[:end])
    return None


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: imported_modules(name, path, set(modules)) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (a, b, ..., a) through each group of modules that import each other (Tarjan's strongly
    connected components, then a path round each)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[set[str]] = []

    def visit(start: str) -> None:   # iterative: the graph may be deeper than the recursion limit cares for
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph[nxt]))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(group)

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return [_path_round(graph, group) for group in groups]


def _path_round(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest cycle through the first module of `group` (breadth first, staying in the group)."""
    start = min(group)
    came_from: dict[str, str] = {}
    todo = [start]
    while todo:
        node = todo.pop(0)
        for nxt in sorted(graph[node] & group):
            if nxt == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [start, *reversed(path[:-1]), start] if node != start else [start, start]
            if nxt not in came_from:
                came_from[nxt] = node
                todo.append(nxt)
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def test_podnode_has_no_import_cycle():
    found = cycles(import_graph(PACKAGE))
    assert not found, "import cycles in podnode/ (every import counts, also under TYPE_CHECKING and in " \
                      "functions):\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_the_graph_sees_every_kind_of_import(tmp_path):
    """The checker itself: a cycle behind TYPE_CHECKING, one through a function's import and a relative
    `from . import module` are all found, and imports of other packages are ignored."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nimport json\nif TYPE_CHECKING:\n"
                              "    from .sub.b import B\n")
    (pkg / "sub" / "b.py").write_text("from .. import a\n")
    (pkg / "sub" / "c.py").write_text("def later():\n    from ..sub import d\n")
    (pkg / "sub" / "d.py").write_text("import pkg.sub.c\n")
    (pkg / "e.py").write_text("from .a import something\n")
    graph = import_graph(pkg)
    assert graph == {"pkg": set(), "pkg.sub": set(), "pkg.a": {"pkg.sub.b"}, "pkg.sub.b": {"pkg.a"},
                     "pkg.sub.c": {"pkg.sub.d"}, "pkg.sub.d": {"pkg.sub.c"}, "pkg.e": {"pkg.a"}}
    assert sorted(cycles(graph)) == [["pkg.a", "pkg.sub.b", "pkg.a"], ["pkg.sub.c", "pkg.sub.d", "pkg.sub.c"]]
