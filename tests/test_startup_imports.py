"""What a running gateway has imported: `cryptography` (about 7 MB resident) only when the config
has a `[security]` section. A gateway without one must start, run and refuse commands without it.
`rich` (the receiving console's view, 4-5 MB with what it pulls in) never, with or without. The
rules' service and daily report only with `[rules]`, the guard page's source and view only with
`[guard]`, and what only another command of the CLI reads (the outbox's inspection, the report's
HTML) never (issue 16, item 3: the gateway's own memory over the stack's floor).

The child (`startup_child.py`) does what `schoolgate run` does with the simulated gate's config
(every device kind and line type, both destinations; nothing needs to answer), so an import of
cryptography anywhere on the way in, in a driver, in the uplinks or in the command path, shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import free_port
from simulators.gate import gateway_config
from tests_support import report_rules

CHILD = Path(__file__).parent / "startup_child.py"
ROOT = Path(__file__).parent.parent


def run_child(workdir: Path, extra_config: str = "") -> dict[str, Any]:
    config = workdir / "schoolgate.toml"
    config.write_text(
        gateway_config(
            workdir,
            police_port=free_port(),
            bureau_port=free_port(),
            modbus_port=free_port(),
            gate_bus=str(workdir / "no-gate-bus"),
            door_bus=str(workdir / "no-door-bus"),
        )
        + extra_config
    )
    out = workdir / "imports.json"
    done = subprocess.run(
        [sys.executable, str(CHILD), str(config), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=45,
        check=False,
    )
    assert done.returncode == 0, f"child failed:\n{done.stdout}\n{done.stderr}"
    result: dict[str, Any] = json.loads(out.read_text())
    return result


def crypto_modules(modules: list[str]) -> list[str]:
    return [name for name in modules if name.split(".")[0] == "cryptography"]


def aiohttp_modules(modules: list[str]) -> list[str]:
    return [name for name in modules if name.split(".")[0] == "aiohttp"]


def rich_modules(modules: list[str]) -> list[str]:
    return [name for name in modules if name.split(".")[0] in ("rich", "pygments")]


RULES_ONLY = (
    "gateway.rules.service",
    "gateway.rules.engine",
    "gateway.rules.daily_report",
    "gateway.rules.report",
    "gateway.store.report_reads",
    "gateway.report_source",
)
"""Loaded by a gateway with `[rules]` (its service builds them); an idle one without has no use."""
GUARD_ONLY = ("gateway.guard_source", "gateway.guard.view", "gateway.rules.today")
"""Loaded by a gateway with `[guard]` (the page's source); with the page off, never."""
OTHER_COMMANDS_ONLY = (
    "gateway.store.inspect",
    "gateway.rules.report_html",
    "gateway.rules.report_catalogue",
)
"""Read by `schoolgate outbox`, `events` and `report --html`, never by `schoolgate run`."""


def test_an_idle_gateway_without_rules_or_page_loads_neither_nor_other_commands(
    tmp_path: Path,
) -> None:
    child = run_child(tmp_path)
    loaded = set(child["after_command"])
    assert loaded & {*RULES_ONLY, *GUARD_ONLY, *OTHER_COMMANDS_ONLY} == set()
    assert "gateway.app" in loaded and "gateway.rules.sqlite_state" in loaded  # the check sees


def test_a_gateway_with_rules_and_the_page_loads_what_they_need(tmp_path: Path) -> None:
    """The control for the check above: the same child with `[rules]` and `[guard]`."""
    from gateway.guard.pin import hash_pin  # noqa: PLC0415 - only this test needs a hash

    rules = report_rules(tmp_path, at="23:59")
    guard = (
        f'\n[guard]\nport = 0\n[[guard.guards]]\nname = "王师傅"\npin_hash = "{hash_pin("2468")}"\n'
    )
    loaded = set(run_child(tmp_path, rules + guard)["running"])
    assert set(RULES_ONLY) | set(GUARD_ONLY) <= loaded
    assert loaded & set(OTHER_COMMANDS_ONLY) == set()


def test_a_gateway_without_security_never_imports_cryptography(tmp_path: Path) -> None:
    child = run_child(tmp_path)
    assert "status_keys" in child  # it ran: the control socket answered
    assert crypto_modules(child["running"]) == []
    # A command is refused as before, and refusing it does not load cryptography either.
    assert (child["status"], child["reason"]) == ("rejected", "unknown_key")
    assert child["detail"] == "this gateway trusts no keys ([security])"
    assert crypto_modules(child["after_command"]) == []
    assert rich_modules(child["after_command"]) == []
    # No `[guard]`: the page is off and aiohttp (the page's server) is never loaded.
    assert aiohttp_modules(child["after_command"]) == []


def test_a_gateway_with_the_guard_page_loads_aiohttp_and_serves_it(tmp_path: Path) -> None:
    # The control for the check above: the same child does see aiohttp once the page is on.
    from gateway.guard.pin import hash_pin  # noqa: PLC0415 - only this test needs a hash

    guard = (
        f'\n[guard]\nport = 0\n[[guard.guards]]\nname = "王师傅"\npin_hash = "{hash_pin("2468")}"\n'
    )
    child = run_child(tmp_path, guard)
    assert "aiohttp.web" in child["running"]


def test_a_gateway_with_security_loads_cryptography_and_checks_signatures(tmp_path: Path) -> None:
    # The control: the same child does see cryptography when keys are configured.
    from gateway.core import keys  # noqa: PLC0415 - the other test proves importing it is not free

    gate = keys.write_key_pair(tmp_path / "keys", "north-gate")
    receiver = keys.write_key_pair(tmp_path / "keys", "police-console")
    security = (
        "\n[security]\n"
        f'gateway_key_file = "{gate.private_key}"\n'
        'gateway_key_id = "north-gate"\n'
        "[[security.trusted_keys]]\n"
        'id = "police-console"\n'
        f'public_key = "{receiver.public_b64}"\n'
        'commands = ["acknowledge"]\n'
    )
    child = run_child(tmp_path, security)
    assert "cryptography.hazmat.primitives.asymmetric.ed25519" in child["running"]
    assert (child["status"], child["reason"]) == ("rejected", "bad_signature")
    assert rich_modules(child["after_command"]) == []


@pytest.mark.parametrize(
    "module", ["gateway.core.auth", "edge_config.security", "gateway.commands.handlers"]
)
def test_modules_on_the_start_up_path_do_not_import_cryptography(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'cryptography'], 'imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def imports_in_a_fresh_interpreter(code: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", f"import sys\n{code}\nprint(' '.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.parametrize(
    "code",
    [
        "import gateway.cli",  # registers `schoolgate console` (receiver.cli)
        "from gateway import cli; cli.schoolgate.commands['run'].make_context('run', [])",
    ],
)
def test_the_daemons_command_line_does_not_import_rich(code: str) -> None:
    assert rich_modules(imports_in_a_fresh_interpreter(code)) == []


def test_rich_is_loaded_where_it_is_used_and_by_structlog_imported_alone() -> None:
    """The controls: the check sees rich in the console's view, and structlog imported before
    the gateway package loads rich (why `gateway/__init__.py` imports it with rich hidden)."""
    assert "rich.table" in imports_in_a_fresh_interpreter("import gateway.cli, receiver.view")
    assert "rich.console" in imports_in_a_fresh_interpreter("import structlog")


def test_start_up_objects_are_moved_out_of_the_collectors_reach(tmp_path: Path) -> None:
    """gc.freeze() after start-up: the idle gateway's full collections no longer walk the
    modules, config and drivers (about a fifth of its idle CPU)."""
    child = run_child(tmp_path)
    assert child["frozen"] > 20_000
