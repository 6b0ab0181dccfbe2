"""The `schoolgate` command line (and `python -m gateway`): parses arguments, calls into the
package; nothing else. Declared with click (`schoolgate`, at the bottom); each command builds the
namespace its `cmd_*` reads. `--version` everywhere; exit 2 for a usage error, 130 for Ctrl-C, 1
and no traceback for a closed pipe. `console` passes through to receiver/cli.py's own parser. The
imports here are those `run` needs anyway (`python -m gateway run` preloads them); what only
another command reads (the outbox's inspection) is imported where that command runs.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click
import structlog

from edge_config import ConfigError
from edge_config.loader import LoadedConfig
from gateway import control_cli, logsetup
from gateway.commands import drill_cli, words
from gateway.commissioning import commands as commissioning
from gateway.control_cli import DEFAULT_CONFIG
from gateway.control_cli import load_or_exit as _load_or_exit
from gateway.control_cli import refuse as _refuse
from gateway.rules import commands as rules_commands
from gateway.security import load  # the schema load plus the [security] keys
from gateway.store.sql_upkeep import EventFilter

if TYPE_CHECKING:
    import sqlite_utils


def cmd_check_config(args: argparse.Namespace) -> int:
    try:
        loaded: LoadedConfig = load(args.file)
    except ConfigError as exc:
        raise _refuse(args.file, exc) from None
    for warning in loaded.warnings:
        print(f"warning: {warning}")
    print("ok")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    try:
        loaded = load(args.config, store_fatal=False)
    except ConfigError as exc:
        raise _refuse(args.config, exc) from None
    config = loaded.config
    logsetup.configure(fmt=args.log_format, level=args.log_level, tz=ZoneInfo(config.site.timezone))
    for warning in loaded.warnings:
        structlog.get_logger("gateway.cli").warning("config_warning", warning=warning)
    from gateway.core.clock import ClockSeamRefused, scenario_clock_from_env  # noqa: PLC0415 - run only

    try:
        clock = scenario_clock_from_env(os.environ, config.store.path)
    except ClockSeamRefused as exc:
        print(f"refused: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if clock is not None:
        structlog.get_logger("gateway.cli").warning("test_clock_in_use", offset_ms=clock.offset_ms)
    from gateway.app import Gateway  # noqa: PLC0415 - keep `check-config` fast and light

    async def main() -> None:
        await Gateway(config, config_dir=args.config.parent, clock=clock).run()

    asyncio.run(main())
    return 0


def cmd_service_stopped(args: argparse.Namespace) -> int:
    """systemd's ExecStopPost: log why the daemon's run ended, from the variables systemd sets
    for this command, so each restart of a crash loop leaves its reason in the journal."""
    logsetup.configure(fmt="json")
    result = os.environ.get("SERVICE_RESULT", "unknown")
    fields = {
        "result": result,
        "exit_code": os.environ.get("EXIT_CODE", "unknown"),
        "exit_status": os.environ.get("EXIT_STATUS", "unknown"),
    }
    log = structlog.get_logger("gateway.service")
    if result == "success":
        log.info("service_stopped", **fields)
    else:
        log.warning("service_stopped", **fields)
    return 0


def _store_db(args: argparse.Namespace) -> tuple[sqlite_utils.Database, ZoneInfo]:
    from gateway.store import inspect  # noqa: PLC0415 - the outbox commands only, not `run`

    config = _load_or_exit(args.config)
    try:
        return inspect.open_readonly(config.store.path), ZoneInfo(config.site.timezone)
    except inspect.InspectError as exc:
        print(f"schoolgate: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_outbox_stats(args: argparse.Namespace) -> int:
    from gateway.store import inspect  # noqa: PLC0415 - the outbox commands only, not `run`

    db, tz = _store_db(args)
    data = inspect.stats(db)
    if args.json:
        data["lanes"] = [dataclasses.asdict(lane) for lane in data["lanes"]]
        print(json.dumps(data))
    else:
        print(inspect.render_stats(data, tz))
    return 0


def _event_filter(args: argparse.Namespace, tz: ZoneInfo) -> EventFilter:
    from gateway.store import inspect  # noqa: PLC0415 - the outbox commands only, not `run`

    try:
        return EventFilter(
            since_ms=None if args.since is None else inspect.parse_time(args.since, tz),
            until_ms=None if args.until is None else inspect.parse_time(args.until, tz),
            type_pattern=args.type,
            device=args.device,
            limit=getattr(args, "limit", None),
        )
    except inspect.InspectError as exc:
        print(f"schoolgate: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_events(args: argparse.Namespace) -> int:
    from gateway.store import inspect  # noqa: PLC0415 - the outbox commands only, not `run`

    db, tz = _store_db(args)
    for event in inspect.events(db, _event_filter(args, tz)):
        print(
            json.dumps(event, ensure_ascii=False) if args.json else inspect.render_event(event, tz)
        )
    return 0


def cmd_outbox_export(args: argparse.Namespace) -> int:
    from gateway.store import inspect  # noqa: PLC0415 - the outbox commands only, not `run`

    db, tz = _store_db(args)
    out = sys.stdout if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")  # noqa: SIM115
    count = 0
    try:
        for event in inspect.events(db, _event_filter(args, tz)):
            out.write(json.dumps(event, ensure_ascii=False) + "\n")
            count += 1
    finally:
        if out is not sys.stdout:
            out.close()
    if out is not sys.stdout:
        print(f"exported {count} events to {args.output}", file=sys.stderr)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from simulators.demo import run_demo  # noqa: PLC0415 - the demo pulls in the simulators

    return asyncio.run(run_demo(duration_s=args.duration, press_every_s=args.press_every))


def cmd_scenario(args: argparse.Namespace) -> int:
    from simulators import scenario  # noqa: PLC0415 - the runner pulls in the simulators

    return scenario.main(args.file, expect=args.expect)


def cmd_keys(args: argparse.Namespace) -> int:
    from gateway.core import auth, keys  # noqa: PLC0415 - keep the other commands free of crypto

    try:
        if args.keys_command == "new":
            files = keys.write_key_pair(args.out, args.id)
            print(f"wrote {files.private_key} (private, mode 0600: keep it on this machine)")
            print(f"wrote {files.public_key}")
            print(f"public key: {files.public_b64}\n")
            print(keys.config_snippet(args.role, args.id, files), end="")
            return 0
        private_key = keys.load_private_key(args.key)
    except keys.KeyFileError as exc:
        print(f"schoolgate: {exc}", file=sys.stderr)
        return 1
    try:
        params = words.key_values(args.args)
    except ValueError as exc:
        print(f"schoolgate: {exc}", file=sys.stderr)
        return 2
    try:
        issued_at = datetime.fromisoformat(args.issued_at) if args.issued_at else None
        command = auth.build_command(
            gateway=args.gateway,
            school=args.school,
            command=args.name,
            args=params,
            issued_at=issued_at or datetime.now().astimezone(),
        )
    except ValueError as exc:
        print(f"schoolgate: {exc}", file=sys.stderr)
        return 2
    signed = auth.sign_command(command, private_key, args.id)
    print(json.dumps(signed, ensure_ascii=False, separators=(",", ":")))
    return 0


class _Command(click.Command):
    """A command of `schoolgate`: each takes `--version`, and flushes what it printed while
    click still answers a closed pipe (`schoolgate events | head -1`: exit 1, no traceback)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("short_help", kwargs.get("help"))  # the list shows it whole, wrapped
        super().__init__(*args, **kwargs)
        click.version_option(
            package_name="schoolgate", prog_name="schoolgate", message="%(prog)s %(version)s"
        )(self)  # the version is looked up only when asked for

    def invoke(self, ctx: click.Context) -> Any:
        result = super().invoke(ctx)
        sys.stdout.flush()
        return result


class _Group(click.Group, _Command):
    command_class = _Command
    group_class = type  # its sub-groups are `_Group`s as well


def _call(func: Callable[[argparse.Namespace], int], **kwargs: Any) -> int:
    """A `cmd_*` on the namespace argparse used to build."""
    return func(argparse.Namespace(**kwargs))


_FILE = click.Path(path_type=Path)
_LOG_LEVELS = ("debug", "info", "warning", "error")
_CONFIG_HELP = f"configuration file (default {DEFAULT_CONFIG}, or $SCHOOLGATE_CONFIG)"
_config = click.option("-c", "--config", type=_FILE, default=DEFAULT_CONFIG, help=_CONFIG_HELP)
_key_values = click.argument("args", nargs=-1, metavar="[KEY=VALUE]...")


def _filters(func: Callable[..., int]) -> Callable[..., int]:
    func = click.option("--device", help="a device id")(func)
    func = click.option("--type", help="an event type, or a prefix like 'alarm.*'")(func)
    func = click.option("--until", help="up to this time (ISO 8601)")(func)
    return click.option("--since", help="from this time (ISO 8601; site time when no offset)")(func)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def schoolgate() -> None:
    """Edge gateway for school-gate panic alarms, bollards and access control."""


@schoolgate.command("run", help="run the gateway daemon")
@_config
@click.option("--log-format", type=click.Choice(["auto", "json", "console"]), default="auto")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info"
)
def _run(**kwargs: Any) -> int:
    return _call(cmd_run, **kwargs)


@schoolgate.command("service-stopped", help="log why the daemon stopped (ExecStopPost)")
def _service_stopped() -> int:
    return _call(cmd_service_stopped)


@schoolgate.command("check-config", help="validate a configuration file; prints ok or errors")
@click.argument("file", type=_FILE, required=False)
@click.option("-c", "--config", type=_FILE, help="the file (default: as for the other commands)")
def _check_config(file: Path | None, config: Path | None) -> int:
    if file is not None and config is not None:
        raise click.UsageError("give the file once: FILE or -c FILE")
    return _call(cmd_check_config, file=file or config or DEFAULT_CONFIG)


@schoolgate.command("events", help="the local record of events, with their delivery state")
@_config
@_filters
@click.option("--limit", type=int, help="at most this many")
@click.option("--json", is_flag=True, help="one JSON object per line")
def _events(**kwargs: Any) -> int:
    return _call(cmd_events, **kwargs)


@schoolgate.group("outbox")
def _outbox() -> None:
    """inspect the store-and-forward outbox"""


@_outbox.command("stats", help="pending, oldest pending and last sent per lane")
@_config
@click.option("--json", is_flag=True)
def _outbox_stats(**kwargs: Any) -> int:
    return _call(cmd_outbox_stats, **kwargs)


@_outbox.command("export", help="events as JSON lines, for an auditor")
@_config
@_filters
@click.option("-o", "--output", help="file to write (default: standard output)")
def _outbox_export(**kwargs: Any) -> int:
    return _call(cmd_outbox_export, **kwargs)


@schoolgate.group("keys")
def _keys() -> None:
    """Ed25519 keys for signed commands and events"""


@_keys.command("new", help="create a key pair; prints the config to paste")
@click.option("--role", type=click.Choice(["gateway", "receiver"]), required=True)
@click.option("--id", required=True, help="key id; the files are ID.key and ID.pub")
@click.option("--out", type=_FILE, required=True, help="directory to write them to")
def _keys_new(**kwargs: Any) -> int:
    return _call(cmd_keys, keys_command="new", **kwargs)


@_keys.command("sign-command", help="print a signed command (for testers)")
@click.option("--key", type=_FILE, required=True, help="the receiver's private key file")
@click.option("--id", required=True, help="the key id the gateway trusts")
@click.option("--gateway", required=True)
@click.option("--school", required=True)
@click.option("--issued-at", help="ISO 8601 with offset (default: now)")
@click.argument("name", metavar="COMMAND")
@_key_values
def _keys_sign_command(**kwargs: Any) -> int:
    return _call(cmd_keys, keys_command="sign-command", **kwargs)


@schoolgate.command(
    "console",
    help="receiving console: live alarms from gateways, acknowledge, gap and silence checks",
    cls=click.Command,  # no `--version` of ours: the console answers its own
    short_help="receiving console: live alarms from gateways, acknowledge, gap and silence checks",
    context_settings={"ignore_unknown_options": True, "help_option_names": []},
)
@click.argument("argv", nargs=-1, type=click.UNPROCESSED)
def _console(argv: tuple[str, ...]) -> int:
    """Passed through to the console's own argparse parser (receiver/cli.py): its options,
    checks, `--help`, `--version` and messages stay with the console."""
    from receiver import cli as receiver_cli  # noqa: PLC0415 - only `console` needs it

    parser = argparse.ArgumentParser(prog="schoolgate")
    receiver_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["console", *argv])
    result: int = args.func(args)
    return result


@schoolgate.command("demo", help="run a simulated gate with two local brokers, no hardware")
@click.option("--duration", type=float, default=None, help="end after this many seconds")
@click.option("--press-every", type=float, default=2.0, help="seconds between presses")
def _demo(**kwargs: Any) -> int:
    return _call(cmd_demo, **kwargs)


@schoolgate.command("scenario", help="play a scenario file against the simulated gate")
@click.argument("file", type=_FILE)
@click.option("--expect", is_flag=True, help="check its [[expect]]; exit 1 if unmet")
def _scenario(**kwargs: Any) -> int:
    return _call(cmd_scenario, **kwargs)


control_cli.register(schoolgate)  # status, alarms, reset, command, test, watch
commissioning.register(schoolgate)  # doctor, scan
rules_commands.register(schoolgate)  # calendar, ledger, report
drill_cli.register(schoolgate)  # drill start, drill stop


def cmd_ledger_close(args: argparse.Namespace) -> int:
    request: dict[str, object] = {"op": "ledger_close", "entry": args.entry, "note": args.note}
    if args.by:
        request["by"] = args.by
    answer = control_cli.control_request(args, request)
    print(f"ledger entry {answer.get('entry')} closed by {answer.get('closed_by')}")
    return 0


_ledger_group = schoolgate.commands["ledger"]
assert isinstance(_ledger_group, click.Group)


@_ledger_group.command("close", help="close an open ledger entry by hand (the daemon records it)")
@click.argument("entry")
@click.option("--note", required=True, help="what was done (the repair, or why it is closed)")
@click.option("--by", help="who closes it (default: your user name)")
@_config
def _ledger_close(**kwargs: Any) -> int:
    return _call(cmd_ledger_close, **kwargs)


def main(argv: list[str] | None = None) -> int:
    """`schoolgate` (and `python -m gateway`): the command's exit status. A usage error prints
    click's message and exits 2, as argparse did; Ctrl-C ends with 130 and no traceback."""
    try:
        result = schoolgate.main(argv, prog_name="schoolgate", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        raise SystemExit(exc.exit_code) from None
    except click.Abort as exc:
        return 130 if isinstance(exc.__cause__, KeyboardInterrupt) else 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
