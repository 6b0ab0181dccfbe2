"""The receiving console is its own program (issue 11): `receiver/` uses only gateway's shared
vocabulary, and nothing in `gateway/` imports it but the command line that registers it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
SHARED = {
    "gateway.auth",
    "gateway.backoff",
    "gateway.contract",
    "gateway.events",
    "gateway.keys",
    "gateway.mqtt",
}
"""What the console may import from the daemon's package: the contract, keys and MQTT client."""


def imported_modules(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_receiver_imports_only_the_shared_vocabulary_of_gateway() -> None:
    for path in sorted((ROOT / "receiver").rglob("*.py")):
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] != "gateway" or name == "gateway":
                continue
            module = ".".join(parts[:2])  # `gateway.mqtt.BrokerParams` is from `gateway.mqtt`
            assert module in SHARED, f"{path.relative_to(ROOT)} imports {name}"


def test_only_the_command_line_of_gateway_imports_receiver() -> None:
    importers = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        if any(name.split(".")[0] == "receiver" for name in imported_modules(path))
    ]
    assert importers == ["gateway/cli.py"]
