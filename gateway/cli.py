"""The `schoolgate` command line. Parses arguments and calls into the package; nothing else."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from edge_config import ConfigError, GatewayConfig, load_config
from gateway import control, logsetup

DEFAULT_CONFIG = Path(os.environ.get("SCHOOLGATE_CONFIG", "/etc/schoolgate/schoolgate.toml"))


def _load_or_exit(path: Path) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"{path}: invalid configuration:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    _load_or_exit(args.file)
    print("ok")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _load_or_exit(args.config)
    logsetup.configure(fmt=args.log_format, level=args.log_level)
    from gateway.app import Gateway  # noqa: PLC0415 - keep `check-config` fast and light

    async def main() -> None:
        await Gateway(config).run()

    asyncio.run(main())
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


def _parse_value(text: str) -> object:
    """`on=true` -> True, `ms=500` -> 500, anything else stays a string."""
    lowered = text.lower()
    if lowered in ("true", "on", "yes"):
        return True
    if lowered in ("false", "off", "no"):
        return False
    try:
        return int(text)
    except ValueError:
        return text


def cmd_command(args: argparse.Namespace) -> int:
    params: dict[str, object] = {}
    for item in args.args:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"schoolgate: argument {item!r} is not key=value", file=sys.stderr)
            return 2
        params[key] = _parse_value(value)
    by = os.environ.get("SUDO_USER") or os.environ.get("USER") or "gatehouse"
    body = {"op": "command", "device": args.device, "name": args.name, "args": params, "by": by}
    answer = _control(args, body)
    print(json.dumps(answer.get("result"), ensure_ascii=False))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from simulators.demo import run_demo  # noqa: PLC0415 - the demo pulls in the simulators

    return asyncio.run(run_demo(duration_s=args.duration, press_every_s=args.press_every))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="schoolgate",
        description="Edge gateway for school-gate panic alarms, bollards and access control.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            type=Path,
            default=DEFAULT_CONFIG,
            help=f"configuration file (default {DEFAULT_CONFIG}, or $SCHOOLGATE_CONFIG)",
        )

    p = sub.add_parser("run", help="run the gateway daemon")
    with_config(p)
    p.add_argument("--log-format", choices=["auto", "json", "console"], default="auto")
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    p.set_defaults(func=cmd_run)

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

    p = sub.add_parser("command", help="send a command to a device (e.g. `box lamp on=true`)")
    p.add_argument("device")
    p.add_argument("name")
    p.add_argument("args", nargs="*", metavar="KEY=VALUE")
    with_config(p)
    p.set_defaults(func=cmd_command)

    p = sub.add_parser("demo", help="run a simulated gate with two local brokers, no hardware")
    p.add_argument("--duration", type=float, default=None, help="end after this many seconds")
    p.add_argument("--press-every", type=float, default=2.0, help="seconds between presses")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
