"""`schoolgate drill start --minutes N` and `schoolgate drill stop`: the school's own drill,
asked of the running daemon through the control socket (op `drill`, right `device`).

Owns these commands' options and output; the daemon announces the drill to the police and ends
it by itself (gateway.alarms.drill). `gateway.cli` registers the group.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import click

from gateway.commands import control
from gateway.commands.args import DEFAULT_DRILL_MINUTES
from gateway.rules.commands import load_config_or_exit


def _ask(config_path: Path, body: dict[str, object]) -> dict[str, object]:
    config = load_config_or_exit(config_path)
    try:
        return asyncio.run(control.request(config.control_socket, body))
    except control.ControlError as exc:
        print(f"schoolgate: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def _by(by: str | None) -> str:
    return by or os.environ.get("SUDO_USER") or os.environ.get("USER") or "gatehouse"


def register(group: click.Group) -> None:
    """Add `drill start` and `drill stop` to the `schoolgate` group."""
    config = click.option(
        "-c",
        "--config",
        type=click.Path(path_type=Path),
        default=Path(os.environ.get("SCHOOLGATE_CONFIG", "/etc/schoolgate/schoolgate.toml")),
    )

    @group.group("drill", help="the school's drill: every alarm meanwhile is marked a drill")
    def drill() -> None:
        pass

    @drill.command("start", help="start a drill, announced to the police; it ends by itself")
    @config
    @click.option(
        "--minutes",
        type=click.IntRange(1, 24 * 60),
        default=DEFAULT_DRILL_MINUTES,
        show_default=True,
    )
    @click.option("--by", help="who runs it (default: the user)")
    def start(config: Path, minutes: int, by: str | None) -> int:
        _ask(config, {"op": "drill", "start": True, "minutes": minutes, "by": _by(by)})
        print(f"drill started for {minutes} min by {_by(by)}; the police are told")
        return 0

    @drill.command("stop", help="end the drill now")
    @config
    @click.option("--by", help="who ends it (default: the user)")
    def stop(config: Path, by: str | None) -> int:
        _ask(config, {"op": "drill", "start": False, "by": _by(by)})
        print(f"drill stopped by {_by(by)}")
        return 0
