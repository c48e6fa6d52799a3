"""The HTTP API depends on api/node_api.NodeApi only: it imports nothing of the server (not even for type
checking), and the node it is served from has every member of that interface."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from podnode.api.node_api import NodeApi
from podnode.server.node import PodNode

API = Path(__file__).resolve().parents[2] / "podnode" / "api"


def _imports(path: Path) -> set[str]:
    """Every module a file imports anywhere (relative imports as written, with their leading dots)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.add("." * node.level + (node.module or ""))
    return found


def test_the_api_imports_nothing_of_the_server():
    for path in sorted(API.glob("*.py")):
        for module in _imports(path):
            name = module.lstrip(".")
            assert not (name.startswith(("server", "node", "podnode.server", "podnode.node"))
                        and (module.startswith("..") or name.startswith("podnode."))), f"{path.name} imports {module}"


def test_the_node_has_every_member_of_the_api_interface():
    wanted = {n for n, v in vars(NodeApi).items() if not n.startswith("_") and inspect.isfunction(v)}
    assert wanted, "NodeApi lists no methods"
    for name in sorted(wanted):
        member = getattr(PodNode, name, None)
        assert callable(member), f"PodNode lacks {name}"
        assert inspect.iscoroutinefunction(member) == inspect.iscoroutinefunction(getattr(NodeApi, name)), name
    assert "cfg" in NodeApi.__annotations__
