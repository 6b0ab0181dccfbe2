"""The layers point one way: no module imports from a layer above its own, and no import circle.

The order is written once, here, and explained in docs/architecture.md. Imports are read with
`ast` from the source (also those inside functions and under TYPE_CHECKING: a lazy import is
still a dependency).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("edge_config",),
    ("gateway", "gateway.core", "gateway.security"),
    ("drivers",),
    ("gateway.store",),
    ("gateway.alarms", "gateway.rules"),
    ("gateway.commands",),
    ("gateway.uplink", "gateway.guard"),
    (
        "gateway.app",
        "gateway.commissioning",
        "gateway.device_state",
        "gateway.guard_source",
        "gateway.logsetup",
        "gateway.report_source",
        "gateway.sdnotify",
    ),
    ("receiver",),
    ("simulators",),
    ("gateway.cli", "gateway.control_cli", "gateway.__main__"),
)
"""Bottom first. A module belongs to the longest prefix listed; it may import its own layer and
any below it. `gateway` names the package's own `__init__` only, so a new gateway module is
unplaced until it is listed."""
EXACT = frozenset({"gateway"})

PACKAGES = ("edge_config", "gateway", "drivers", "receiver", "simulators")

KNOWN_UPWARD: frozenset[tuple[str, str]] = frozenset()
"""Upward imports not yet removed: none left (issue 11). Nothing may be added."""
KNOWN_CIRCLES: frozenset[frozenset[str]] = frozenset()
"""Import circles not yet removed, as the set of modules on each circle: none left (issue 11)."""


def layer_of(module: str) -> int | None:
    best: tuple[int, int] | None = None  # (prefix length, layer)
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or (prefix not in EXACT and module.startswith(prefix + "."))
            if inside and (best is None or len(prefix) > best[0]):
                best = (len(prefix), index)
    return None if best is None else best[1]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def our_modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[module_name(path)] = path
    return found


def imports_of(path: Path, name: str, known: set[str]) -> Iterator[tuple[str, int]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from gateway import contract` imports a module
                if f"{target}.{alias.name}" in known:
                    yield f"{target}.{alias.name}", node.lineno


def dependencies() -> dict[str, set[str]]:
    modules = our_modules()
    known = set(modules)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        graph[name] = {
            target
            for target, _ in imports_of(path, name, known)
            if target in known and target != name
        }
    return graph


def test_every_module_has_a_layer() -> None:
    unplaced = [name for name in our_modules() if layer_of(name) is None]
    assert not unplaced, f"add these to LAYERS: {unplaced}"


def test_no_import_points_up() -> None:
    modules = our_modules()
    known = set(modules)
    upward = []
    seen_known = set()
    for name, path in modules.items():
        own = layer_of(name)
        assert own is not None
        for target, line in imports_of(path, name, known):
            theirs = layer_of(target)
            if theirs is not None and target in known and theirs > own:
                if (name, target) in KNOWN_UPWARD:
                    seen_known.add((name, target))
                    continue
                upward.append(f"{path.relative_to(ROOT)}:{line} {name} -> {target}")
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)
    assert seen_known == KNOWN_UPWARD, f"fixed, take off KNOWN_UPWARD: {KNOWN_UPWARD - seen_known}"


def test_no_import_circle() -> None:
    graph = dependencies()
    # A package's __init__ importing its own submodules is not a circle of design.
    for name, deps in graph.items():
        graph[name] = {d for d in deps if not d.startswith(name + ".")}
    circles = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                circles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    found = {frozenset(c.split(" -> ")) for c in circles}
    new = [c for c in circles if frozenset(c.split(" -> ")) not in KNOWN_CIRCLES]
    assert not new, "import circles:\n" + "\n".join(new)
    assert found >= KNOWN_CIRCLES, f"fixed, take off KNOWN_CIRCLES: {KNOWN_CIRCLES - found}"


@pytest.mark.parametrize(
    ("importer", "imported", "allowed"),
    [
        ("drivers.alarm_box", "gateway.core.events", True),
        ("drivers.alarm_box", "gateway.store.outbox", False),
        ("edge_config.models", "gateway.core.auth", False),
        ("gateway.cli", "simulators.demo", True),
        ("simulators.gate", "gateway.cli", False),
        ("gateway.core.contract", "gateway", True),
    ],
)
def test_the_rule_itself(importer: str, imported: str, allowed: bool) -> None:
    own, theirs = layer_of(importer), layer_of(imported)
    assert own is not None and theirs is not None
    assert (theirs <= own) is allowed


def test_a_new_gateway_module_must_be_placed() -> None:
    """`gateway` itself is not a prefix: a module added under it has no layer until listed."""
    assert layer_of("gateway.something_new") is None
    assert layer_of("gateway") == 1
