"""The sandbox package's shape: every module imports on its own, and no import cycle exists
inside ``bot.sandbox``. Every import counts, including those under ``if TYPE_CHECKING:`` and
inside functions: a cycle hidden from the interpreter is still a cycle in the design.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import bot.sandbox

PACKAGE = "bot.sandbox"
ROOT = Path(bot.sandbox.__file__).parent


def _modules() -> dict[str, Path]:
    found = {PACKAGE: ROOT / "__init__.py"}
    for info in pkgutil.walk_packages([str(ROOT)], prefix=PACKAGE + "."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None
        assert spec.origin is not None
        found[info.name] = Path(spec.origin)
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``module`` imports, anywhere in its source."""
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    targets: set[str] = set()

    def resolve(node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        base = module.split(".")
        base = base if is_package else base[:-1]
        base = base[: len(base) - (node.level - 1)]
        return ".".join([*base, node.module] if node.module else base)

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            source = resolve(node)
            targets.add(source)
            # "from bot.sandbox.api import chats" imports the submodule too.
            targets.update(f"{source}.{alias.name}" for alias in node.names)
    found = set()
    for target in targets:
        # Importing a.b.c runs a and a.b first.
        parts = target.split(".")
        for end in range(1, len(parts) + 1):
            name = ".".join(parts[:end])
            if name in known and name != module:
                found.add(name)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(name, path, known) for name, path in modules.items()}
    # A package's own __init__ runs before any of its submodules: that edge is not a cycle.
    for name, edges in graph.items():
        edges.difference_update(parent for parent in known if name.startswith(parent + "."))
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := walk(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := walk(node)):
            return found
    return None


def test_every_sandbox_module_imports() -> None:
    for name in _modules():
        importlib.import_module(name)


def test_no_import_cycle_inside_the_sandbox() -> None:
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_sees_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_users_need_only_the_core() -> None:
    graph = _graph()
    assert "bot.sandbox.server" not in graph["bot.sandbox.users"]
    core = {name for name in graph if name.startswith("bot.sandbox.core")}
    for name in core:
        above = {
            dep for dep in graph[name] if dep.startswith(("bot.sandbox.api", "bot.sandbox.server"))
        }
        assert not above, f"{name} imports {above}"
