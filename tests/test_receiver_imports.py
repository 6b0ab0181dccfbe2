"""The receiving console is its own program (issue 11): `receiver/` uses only gateway's shared
vocabulary, and nothing in `gateway/` imports it but the command line that registers it."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
SHARED = {
    "gateway.core.auth",
    "gateway.core.backoff",
    "gateway.core.contract",
    "gateway.core.events",
    "gateway.core.keys",
    "gateway.uplink.mqtt",
}
"""What the console may import from the daemon's package: the contract, keys and MQTT client."""
PACKAGES = {"gateway.core", "gateway.uplink"}
"""`from gateway.core import auth` names the package too."""


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
            if not name.startswith("gateway.") or name in PACKAGES:
                continue
            # `gateway.uplink.mqtt.BrokerParams` is from `gateway.uplink.mqtt`
            shared = any(name == s or name.startswith(s + ".") for s in SHARED)
            assert shared, f"{path.relative_to(ROOT)} imports {name}"


def test_only_the_command_line_of_gateway_imports_receiver() -> None:
    importers = [
        path.relative_to(ROOT).as_posix()
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        if any(name.split(".")[0] == "receiver" for name in imported_modules(path))
    ]
    assert importers == ["gateway/cli.py"]
