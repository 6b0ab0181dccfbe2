"""The `schoolgate` command line. Parses arguments and calls into the package; nothing else."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog

from edge_config import ConfigError, GatewayConfig
from edge_config.loader import LoadedConfig
from gateway import logsetup
from gateway.commands import control, words
from gateway.security import load  # the schema load plus the [security] keys
from gateway.store import inspect
from receiver import cli as receiver_cli  # registers `console` only; loads nothing heavy

if TYPE_CHECKING:
    import sqlite_utils

DEFAULT_CONFIG = Path(os.environ.get("SCHOOLGATE_CONFIG", "/etc/schoolgate/schoolgate.toml"))


def _refuse(path: Path, exc: ConfigError) -> SystemExit:
    print(f"{path}: invalid configuration:", file=sys.stderr)
    for error in exc.errors:
        print(f"  {error}", file=sys.stderr)
    return SystemExit(2)


def _load_or_exit(path: Path) -> GatewayConfig:
    try:
        return load(path).config
    except ConfigError as exc:
        raise _refuse(path, exc) from None


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
    logsetup.configure(fmt=args.log_format, level=args.log_level)
    for warning in loaded.warnings:
        structlog.get_logger("gateway.cli").warning("config_warning", warning=warning)
    from gateway.app import Gateway  # noqa: PLC0415 - keep `check-config` fast and light

    async def main() -> None:
        await Gateway(config, config_dir=args.config.parent).run()

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


def _control(args: argparse.Namespace, body: dict[str, object]) -> dict[str, object]:
    config = _load_or_exit(args.config)
    try:
        return asyncio.run(control.request(config.control_socket, body))
    except control.ControlError as exc:
        print(f"schoolgate: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_reset(args: argparse.Namespace) -> int:
    by = args.by or os.environ.get("SUDO_USER") or os.environ.get("USER") or "gatehouse"
    _control(args, {"op": "reset", "alarm_id": args.alarm_id, "by": by})
    print(f"alarm {args.alarm_id} reset by {by}")
    return 0


def cmd_alarms(args: argparse.Namespace) -> int:
    answer = _control(args, {"op": "alarms"})
    alarms = answer.get("alarms")
    if not isinstance(alarms, list) or not alarms:
        print("no latched alarms")
        return 0
    for alarm in alarms:
        print(
            f"{alarm['alarm_id']}  {alarm['device']} button {alarm['button']}  "
            f"since {alarm['raised_at']}  presses {alarm['presses']}"
        )
    return 0


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def cmd_status(args: argparse.Namespace) -> int:
    """What an installer checks after start-up: each path, devices, open alarms, commands."""
    answer = _control(args, {"op": "status"})
    if args.json:
        print(json.dumps(answer, ensure_ascii=False))
        return 0
    print(f"devices ready: {'yes' if answer.get('devices_ready') else 'not yet'}")
    print(f"open alarms: {answer.get('open_alarms', 0)}")
    uplinks, paths = _mapping(answer.get("uplinks")), _mapping(answer.get("paths"))
    for name, path in paths.items():
        state = "up" if path["up"] else f"DOWN ({path['error']})"
        fault = "  fault reported" if path["fault_reported"] else ""
        sent = _mapping(uplinks.get(name)).get("sent", 0)
        print(f"path {name}: {state}, {sent} events sent since start{fault}")
    commands = _mapping(answer.get("commands"))
    reasons = _mapping(commands.get("refusals"))
    by_reason = ", ".join(f"{reason} {n}" for reason, n in sorted(reasons.items()))
    print(
        f"commands: {commands.get('accepted', 0)} accepted, {commands.get('rejected', 0)} refused"
        + (f" ({by_reason})" if by_reason else "")
        + f", {commands.get('ignored_retained', 0)} retained ignored"
    )
    return 0


def cmd_command(args: argparse.Namespace) -> int:
    by = os.environ.get("SUDO_USER") or os.environ.get("USER") or "gatehouse"
    try:
        body = words.device_request(args.device, args.name, args.args, by=by)
    except ValueError as exc:  # a word that is not key=value, or a field the op refuses
        print(f"schoolgate: {exc}", file=sys.stderr)
        return 2
    answer = _control(args, body)
    print(json.dumps(answer.get("result"), ensure_ascii=False))
    return 0


def _store_db(args: argparse.Namespace) -> tuple[sqlite_utils.Database, ZoneInfo]:
    config = _load_or_exit(args.config)
    try:
        return inspect.open_readonly(config.store.path), ZoneInfo(config.site.timezone)
    except inspect.InspectError as exc:
        print(f"schoolgate: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_outbox_stats(args: argparse.Namespace) -> int:
    db, tz = _store_db(args)
    data = inspect.stats(db)
    if args.json:
        data["lanes"] = [dataclasses.asdict(lane) for lane in data["lanes"]]
        print(json.dumps(data))
    else:
        print(inspect.render_stats(data, tz))
    return 0


def _event_filter(args: argparse.Namespace, tz: ZoneInfo) -> inspect.EventFilter:
    try:
        return inspect.EventFilter(
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
    db, tz = _store_db(args)
    for event in inspect.events(db, _event_filter(args, tz)):
        print(
            json.dumps(event, ensure_ascii=False) if args.json else inspect.render_event(event, tz)
        )
    return 0


def cmd_outbox_export(args: argparse.Namespace) -> int:
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


def _add_keys_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = sub.add_parser("keys", help="Ed25519 keys for signed commands and events")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    p = keys_sub.add_parser("new", help="create a key pair; prints the config to paste")
    p.add_argument("--role", choices=["gateway", "receiver"], required=True)
    p.add_argument("--id", required=True, help="key id; the files are ID.key and ID.pub")
    p.add_argument("--out", type=Path, required=True, help="directory to write them to")
    p.set_defaults(func=cmd_keys)
    p = keys_sub.add_parser("sign-command", help="print a signed command (for testers)")
    p.add_argument("--key", type=Path, required=True, help="the receiver's private key file")
    p.add_argument("--id", required=True, help="the key id the gateway trusts")
    p.add_argument("--gateway", required=True)
    p.add_argument("--school", required=True)
    p.add_argument("--issued-at", help="ISO 8601 with offset (default: now)")
    p.add_argument("name", metavar="COMMAND")
    p.add_argument("args", nargs="*", metavar="KEY=VALUE")
    p.set_defaults(func=cmd_keys)


def _with_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help=f"configuration file (default {DEFAULT_CONFIG}, or $SCHOOLGATE_CONFIG)",
    )


def _with_filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", help="from this time (ISO 8601; site time when no offset)")
    p.add_argument("--until", help="up to this time (ISO 8601)")
    p.add_argument("--type", help="an event type, or a prefix like 'alarm.*'")
    p.add_argument("--device", help="a device id")


def _add_store_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("events", help="the local record of events, with their delivery state")
    _with_config(p)
    _with_filters(p)
    p.add_argument("--limit", type=int, help="at most this many")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.set_defaults(func=cmd_events)

    outbox = sub.add_parser("outbox", help="inspect the store-and-forward outbox")
    outbox_sub = outbox.add_subparsers(dest="outbox_command", required=True)
    p = outbox_sub.add_parser("stats", help="pending, oldest pending and last sent per lane")
    _with_config(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outbox_stats)
    p = outbox_sub.add_parser("export", help="events as JSON lines, for an auditor")
    _with_config(p)
    _with_filters(p)
    p.add_argument("-o", "--output", help="file to write (default: standard output)")
    p.set_defaults(func=cmd_outbox_export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="schoolgate",
        description="Edge gateway for school-gate panic alarms, bollards and access control.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    with_config = _with_config

    p = sub.add_parser("run", help="run the gateway daemon")
    with_config(p)
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("service-stopped", help="log why the daemon stopped (ExecStopPost)")
    p.set_defaults(func=cmd_service_stopped)

    p = sub.add_parser("check-config", help="validate a configuration file; prints ok or errors")
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("reset", help="reset (unlatch) a panic alarm by its id")
    p.add_argument("alarm_id")
    p.add_argument("--by", help="who resets it (recorded in the alarm.reset event)")
    with_config(p)
    p.set_defaults(func=cmd_reset)

    p = sub.add_parser("alarms", help="list the latched panic alarms")
    with_config(p)
    p.set_defaults(func=cmd_alarms)

    p = sub.add_parser("status", help="paths, devices, open alarms and commands of the daemon")
    p.add_argument("--json", action="store_true", help="the daemon's answer as JSON")
    with_config(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("command", help="send a command to a device (e.g. `box lamp on=true`)")
    p.add_argument("device")
    p.add_argument("name")
    p.add_argument("args", nargs="*", metavar="KEY=VALUE")
    with_config(p)
    p.set_defaults(func=cmd_command)

    _add_store_commands(sub)
    _add_keys_commands(sub)
    receiver_cli.add_parser(sub)

    p = sub.add_parser("demo", help="run a simulated gate with two local brokers, no hardware")
    p.add_argument("--duration", type=float, default=None, help="end after this many seconds")
    p.add_argument("--press-every", type=float, default=2.0, help="seconds between presses")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("scenario", help="play a scenario file against the simulated gate")
    p.add_argument("file", type=Path, help="scenario TOML (docs/simulators/scenarios.md)")
    p.add_argument("--expect", action="store_true", help="check its [[expect]]; exit 1 if unmet")
    p.set_defaults(func=cmd_scenario)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
