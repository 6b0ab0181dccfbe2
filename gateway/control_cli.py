"""`schoolgate status`, `alarms`, `reset`, `command`, `test` and `watch`: the commands that talk
to the running daemon over its control socket (gateway.commands.control), and how their answers
are drawn. Also how every command loads the config (`load_or_exit`: errors listed, exit 2).

Owns these commands' words and their output; `gateway.cli` registers them on its group. It does
not decide anything: the daemon's ops do (gateway.commands.local).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edge_config import ConfigError, GatewayConfig
from gateway.commands import control, words
from gateway.security import load  # the schema load plus the [security] keys

DEFAULT_CONFIG = Path(os.environ.get("SCHOOLGATE_CONFIG", "/etc/schoolgate/schoolgate.toml"))


def refuse(path: Path, exc: ConfigError) -> SystemExit:
    print(f"{path}: invalid configuration:", file=sys.stderr)
    for error in exc.errors:
        print(f"  {error}", file=sys.stderr)
    return SystemExit(2)


def load_or_exit(path: Path) -> GatewayConfig:
    try:
        return load(path).config
    except ConfigError as exc:
        raise refuse(path, exc) from None


def control_request(args: argparse.Namespace, body: dict[str, object]) -> dict[str, Any]:
    config = load_or_exit(args.config)
    try:
        return asyncio.run(control.request(config.control_socket, body))
    except control.ControlError as exc:
        print(f"schoolgate: {exc}", file=sys.stderr)
        raise SystemExit(1) from None


def cmd_reset(args: argparse.Namespace) -> int:
    by = args.by or os.environ.get("SUDO_USER") or os.environ.get("USER") or "gatehouse"
    answer = control_request(args, {"op": "reset", "alarm_id": args.alarm_id, "by": by})
    print(f"alarm {answer.get('reset', args.alarm_id)} reset by {by}")
    return 0


def _delivery_line(alarm: dict[str, Any]) -> str:
    """`stored, at police, not yet at bureau; acknowledged by X at T` (or not acknowledged)."""
    places = ["stored"] + [
        f"at {name}" if taken else f"not yet at {name}"
        for name, taken in _mapping(alarm.get("delivered")).items()
    ]
    if alarm.get("acknowledged"):
        who = alarm.get("acknowledged_by") or "(who: not kept across a restart)"
        when = alarm.get("acknowledged_at")
        ack = f"acknowledged by {who}" + (f" at {when}" if when else "")
    else:
        ack = "NOT acknowledged" + (" (escalated)" if alarm.get("escalated") else "")
    return f"{', '.join(places)}; {ack}"


def _listed(args: argparse.Namespace, op: str, key: str, none: str) -> list[Any] | None:
    """The list `key` of the op's answer; printed as JSON (with --json) or `none` when it is
    empty, and None returned: nothing more to print."""
    items = control_request(args, {"op": op}).get(key)
    if args.json:
        print(json.dumps(items, ensure_ascii=False))
        return None
    if not isinstance(items, list) or not items:
        print(none)
        return None
    return items


def cmd_alarms(args: argparse.Namespace) -> int:
    for alarm in _listed(args, "alarms", "alarms", "no latched alarms") or []:
        print(
            f"{alarm['alarm_id']}  {alarm['device']} button {alarm['button']}  "
            f"since {alarm['raised_at']}  presses {alarm['presses']}"
        )
        print(f"    {_delivery_line(alarm)}")
    return 0


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def cmd_status(args: argparse.Namespace) -> int:
    """What an installer checks after start-up: each path, devices, open alarms, commands."""
    answer = control_request(args, {"op": "status"})
    if args.json:
        print(json.dumps(answer, ensure_ascii=False))
        return 0
    offline_boxes = [str(box) for box in answer.get("offline_alarm_boxes") or []]
    if answer.get("ready"):
        print("ready: yes")
    elif offline_boxes:
        print(f"ready: NO (alarm box offline: {', '.join(offline_boxes)})")
    else:
        print("ready: not yet (not every device has answered once)")
    if answer.get("test_mode_until"):
        print(f"TEST MODE until {answer['test_mode_until']}: every event is marked test")
    print(f"open alarms: {answer.get('open_alarms', 0)}")
    for device_id, device in _mapping(answer.get("devices")).items():
        print(_device_line(device_id, _mapping(device)))
    uplinks, paths = _mapping(answer.get("uplinks")), _mapping(answer.get("paths"))
    for name, path in paths.items():
        uplink = _mapping(uplinks.get(name))
        node = uplink.get("node")
        state = (f"up on {node}" if node else "up") if path["up"] else f"DOWN ({path['error']})"
        fault = "  fault reported" if path["fault_reported"] else ""
        sent = uplink.get("sent", 0)
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


def _device_line(device_id: str, device: dict[str, Any]) -> str:
    online = device.get("online")
    state = "not polled yet" if online is None else ("online" if online else "OFFLINE")
    since = f" since {device['since']}" if device.get("since") else ""
    last = device.get("last_answer")
    answer = f", last answer {last}" if last else ", never answered"
    error = f" ({device['error']})" if not online and device.get("error") else ""
    return f"device {device_id} ({device.get('kind')}): {state}{since}{answer}{error}"


def cmd_command(args: argparse.Namespace) -> int:
    by = os.environ.get("SUDO_USER") or os.environ.get("USER") or "gatehouse"
    try:
        body = words.device_request(args.device, args.name, args.args, by=by)
    except ValueError as exc:  # a word that is not key=value, or a field the op refuses
        print(f"schoolgate: {exc}", file=sys.stderr)
        return 2
    answer = control_request(args, body)
    print(json.dumps(answer.get("result"), ensure_ascii=False))
    return 0


def _call(func: Callable[[argparse.Namespace], int], **kwargs: Any) -> int:
    return func(argparse.Namespace(**kwargs))


_CONFIG_HELP = f"configuration file (default {DEFAULT_CONFIG}, or $SCHOOLGATE_CONFIG)"
_config_option = click.option(
    "-c", "--config", type=click.Path(path_type=Path), default=DEFAULT_CONFIG, help=_CONFIG_HELP
)
_key_values = click.argument("args", nargs=-1, metavar="[KEY=VALUE]...")


def _add(
    group: click.Group,
    name: str,
    help: str,
    func: Callable[[argparse.Namespace], int],
    *options: Callable[[Callable[..., int]], Callable[..., int]],
) -> None:
    """`group NAME [options] -c FILE` running `func` on the namespace of its words."""

    def run(**kwargs: Any) -> int:
        return _call(func, **kwargs)

    command: Any = run
    decorators: list[Callable[[Any], Any]] = [*options, _config_option]
    for option in reversed(decorators):
        command = option(command)
    group.command(name, help=help)(command)


_JSON = click.option("--json", is_flag=True, help="the daemon's answer as JSON")
_BY = click.option("--by", help="who (recorded; default: your user name)")


def register(group: click.Group) -> None:
    """Add the control-socket commands to the `schoolgate` group (its command class)."""
    _add(
        group,
        "reset",
        "reset (unlatch) a panic alarm by its id, or a unique start of it",
        cmd_reset,
        click.argument("alarm_id"),
        click.option("--by", help="who resets it (recorded in the alarm.reset event)"),
    )
    _add(
        group,
        "alarms",
        "the latched panic alarms: stored, at which brokers, acknowledged by whom",
        cmd_alarms,
        _JSON,
    )
    _add(
        group, "status", "paths, devices, open alarms and commands of the daemon", cmd_status, _JSON
    )
    _add(
        group,
        "command",
        "send a command to a device (e.g. `box lamp on=true`)",
        cmd_command,
        click.argument("device"),
        click.argument("name"),
        _key_values,
    )

    @group.group("test")
    def test() -> None:
        """test mode and the walk test: presses are marked `test`, timed hop by hop"""

    minutes = click.option("--minutes", type=click.IntRange(1, 240), default=30, show_default=True)
    _add(
        test,
        "start",
        "put the gate in test mode for N minutes (receivers are told)",
        cmd_test_start,
        minutes,
        _BY,
    )
    _add(test, "stop", "end test mode now (receivers are told)", cmd_test_stop, _BY)
    _add(test, "report", "each press of the last test, timed hop by hop", cmd_test_report, _JSON)
    _add(
        group,
        "watch",
        "live inputs, registers and events as the daemon reads them",
        cmd_watch,
        click.argument("device", required=False),
        click.option("--json", is_flag=True, help="one JSON object per line"),
    )


# -- test mode --------------------------------------------------------------------------------


def _asker(by: str | None) -> str | None:
    return by or os.environ.get("SUDO_USER") or None  # None: the daemon names the peer


def cmd_test_start(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"op": "test.start", "minutes": args.minutes}
    if (by := _asker(args.by)) is not None:
        body["by"] = by
    answer = control_request(args, body)
    print(f"test mode on until {answer.get('until')}: every event is marked test")
    print("press each button now; `schoolgate test report` shows each press hop by hop")
    return 0


def cmd_test_stop(args: argparse.Namespace) -> int:
    body: dict[str, object] = {"op": "test.stop"}
    if (by := _asker(args.by)) is not None:
        body["by"] = by
    control_request(args, body)
    print("test mode off: events are real again")
    return 0


def _after(ms: object) -> str:
    return "not yet" if not isinstance(ms, int) else f"+{ms} ms"


def render_receipt(number: int, press: dict[str, Any]) -> list[str]:
    """One press of `test report`: where it was seen, then each hop's time after that."""
    repeat = " (again)" if press.get("type") == "alarm.panic_repeated" else ""
    lines = [
        f"press {number}: {press.get('device')} button {press.get('button')}{repeat}"
        f"  alarm {press.get('alarm_id')}",
        f"    input seen      {press.get('seen')}",
        f"    stored          {_after(press.get('stored_after_ms'))}",
    ]
    for name, ms in _mapping(press.get("puback_after_ms")).items():
        lines.append(f"    {name + ' PUBACK':<15} {_after(ms)}")
    acked = press.get("acknowledged_after_ms")
    who = f" by {press['acknowledged_by']}" if press.get("acknowledged_by") else ""
    lines.append(f"    acknowledged    {_after(acked)}{who if acked is not None else ''}")
    return lines


def cmd_test_report(args: argparse.Namespace) -> int:
    none = "no test presses (start one with `schoolgate test start`, then press a button)"
    presses = _listed(args, "test.report", "presses", none) or []
    for number, press in enumerate(presses, start=1):
        print("\n".join(render_receipt(number, _mapping(press))))
    return 0


# -- watch ------------------------------------------------------------------------------------


def render_watch(item: dict[str, Any]) -> str:
    """One line of `schoolgate watch` in rich markup: bits as ●/○, registers as numbers, what
    changed in bold yellow, events in cyan."""
    from rich.markup import escape  # noqa: PLC0415 - rich only for watch

    at = str(item.get("at", ""))[11:23]  # the time of day, milliseconds included
    device = escape(str(item.get("device", "")))
    if item.get("kind") == "event":
        data = json.dumps(item.get("data", {}), ensure_ascii=False)
        return f"{at}  {device}  [cyan]{escape(str(item.get('type')))}[/]  {escape(data)}"
    table = str(item.get("table", ""))
    changed = set(item.get("changed") or [])
    bits = table in ("discrete_input", "coil")
    cells = []
    for index, value in enumerate(item.get("values") or []):
        text = ("●" if value else "○") if bits else str(value)
        cells.append(f"[bold yellow]{text}[/]" if index in changed else text)
    dropped = f"  [red]({item['dropped']} not shown: too fast)[/]" if item.get("dropped") else ""
    return f"{at}  {device}  {table}@{item.get('address')}  {' '.join(cells)}{dropped}"


def cmd_watch(args: argparse.Namespace) -> int:
    config = load_or_exit(args.config)
    body: dict[str, object] = {"op": "watch"}
    if args.device:
        body["device"] = args.device
    from rich.console import Console  # noqa: PLC0415 - rich only for watch

    console = Console(highlight=False, soft_wrap=True)

    async def follow() -> None:
        items = control.stream(config.control_socket, body)
        try:
            first = await anext(items)
            if not args.json:
                console.print(
                    f"watching {first.get('watching')} (Ctrl-C to stop): each line is what the "
                    "gateway read; a change is [bold yellow]highlighted[/]"
                )
            async for item in items:
                if args.json:
                    print(json.dumps(item, ensure_ascii=False), flush=True)
                else:
                    console.print(render_watch(item))
        finally:
            await items.aclose()

    try:
        asyncio.run(follow())
    except control.ControlError as exc:
        print(f"schoolgate: {exc}", file=sys.stderr)
        return 1
    return 0
