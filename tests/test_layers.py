"""The layer contract, checked on the source: a new back-arrow or import cycle fails here.

    handlers  ->  bot.services  ->  storage, payments
    bot (runtime: application, factory, jobs, middlewares) wires them together

- storage imports nothing of ours but itself; payments nothing but itself (both may use the
  dependency-free ``bot.redaction``);
- services never import handlers, nor the runtime that wires them (application, factory, jobs);
- the sandbox (the fake Telegram) is never imported by the bot's runtime: only by the demo and
  the benchmarks;
- no import cycle among our modules (imports under ``if TYPE_CHECKING:`` do not run and do not
  count).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "handlers", "payments", "storage")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


MODULES = _modules()


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Imports that run: module level and inside functions, not under ``if TYPE_CHECKING``."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import | ast.ImportFrom):
                found.append(child)
            visit(child)

    visit(tree)
    return found


def _edges(name: str, path: Path) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in _runtime_imports(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            # ``from pkg import module`` imports the module; ``from pkg import name`` the package.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base
                for alias in node.names
            ]
        for target in names:
            # The deepest module of ours the name refers to.
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            if target and target != name:
                targets.add(target)
    return targets


GRAPH = {name: _edges(name, path) for name, path in MODULES.items()}


def _imports_of(prefix: str) -> dict[str, set[str]]:
    return {
        name: targets
        for name, targets in GRAPH.items()
        if name == prefix or name.startswith(prefix + ".")
    }


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


# Dependency-free helpers every layer may use: they import nothing of ours themselves.
SHARED_LEAVES = {"bot.redaction"}


def test_shared_helpers_import_nothing_of_ours() -> None:
    for name in SHARED_LEAVES:
        assert GRAPH[name] == set(), f"{name} imports {sorted(GRAPH[name])}"


def test_storage_and_payments_import_only_themselves() -> None:
    for layer in ("storage", "payments"):
        for name, targets in _imports_of(layer).items():
            foreign = {t for t in targets if not _within(t, layer)} - SHARED_LEAVES
            assert not foreign, f"{name} imports {sorted(foreign)}"


def test_services_never_import_handlers_or_the_runtime() -> None:
    forbidden = ("handlers", "bot.application", "bot.factory", "bot.jobs", "bot.middlewares")
    for name, targets in _imports_of("bot.services").items():
        bad = {t for t in targets if any(_within(t, f) for f in forbidden)}
        assert not bad, f"{name} imports {sorted(bad)}"


def test_the_sandbox_is_not_part_of_the_bots_runtime() -> None:
    allowed = {"bot.demo", "bot.__main__"}
    for name, targets in GRAPH.items():
        if _within(name, "bot.sandbox") or name in allowed:
            continue
        assert not any(_within(t, "bot.sandbox") for t in targets), f"{name} imports the sandbox"


def test_the_graph_sees_imports() -> None:
    assert "bot.services.refunds" in GRAPH["bot.services.purchases"]
    assert "bot.services.orders" in GRAPH["bot.services.refunds"]


def test_no_import_cycles() -> None:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in GRAPH.get(node, ()):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(GRAPH):
        if node not in index:
            connect(node)
    assert cycles == [], f"import cycles: {cycles}"
