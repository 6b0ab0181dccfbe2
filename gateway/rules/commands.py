"""`schoolgate calendar`, `schoolgate ledger` and `schoolgate report`: the school's rules on the
command line, no daemon needed.

Owns these commands' options and their output: a date's day type and gate windows from the
config's calendar file; the fault ledger read-only from the store file (as text or JSON); a
stored daily report (text, JSON or a printable HTML page).
It judges nothing and writes nothing; `gateway.cli` registers the commands on its group.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from datetime import date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import click

from edge_config.calendar import load_calendar
from edge_config.errors import ConfigError
from edge_config.loader import load
from edge_config.models import GatewayConfig
from gateway.core.contract import iso_ms
from gateway.rules.calendar import OutsideSchoolYear, SchoolCalendar
from gateway.rules.sqlite_state import RulesUnreadable, read_ledger


def load_config_or_exit(path: Path) -> GatewayConfig:
    try:
        return load(path, store_fatal=False).config
    except ConfigError as exc:
        print(f"schoolgate: {path}: config refused:", file=sys.stderr)
        for error in exc.errors:
            print(f"  {error}", file=sys.stderr)
        raise SystemExit(2) from None


def run_calendar(config_path: Path, day: str | None) -> int:
    config = load_config_or_exit(config_path)
    if config.rules is None:
        print("schoolgate calendar: the config has no [rules] section", file=sys.stderr)
        return 2
    tz = ZoneInfo(config.site.timezone)
    try:
        calendar_data = load_calendar(config.rules.calendar_path(config_path.parent))
    except ConfigError as exc:
        print(f"schoolgate calendar: {exc}", file=sys.stderr)
        return 2
    calendar = SchoolCalendar(calendar_data, tz)
    try:
        when = datetime.now(tz).date() if day is None else date.fromisoformat(day)
    except ValueError:
        raise click.BadParameter(
            f"{day!r} is not a date like 2026-09-07", param_hint="--date"
        ) from None
    try:
        kind = calendar.day_type(when)
    except OutsideSchoolYear as exc:
        print(f"schoolgate calendar: {exc}", file=sys.stderr)
        return 1
    print(f"{when} {when:%A}: {kind.value}")
    for window in calendar.windows(when):
        print(f"  {window.name}: {window.start:%H:%M} - {window.end:%H:%M}")
    if not calendar.windows(when):
        print("  no gate windows")
    return 0


def run_ledger(config_path: Path, *, open_only: bool, as_json: bool) -> int:
    config = load_config_or_exit(config_path)
    try:
        entries = read_ledger(config.store.path, open_only=open_only)
    except RulesUnreadable as exc:
        print(f"schoolgate ledger: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps([dataclasses.asdict(e) for e in entries], ensure_ascii=False, indent=2))
        return 0
    tz = ZoneInfo(config.site.timezone)

    def at(ms: int) -> str:
        return f"{datetime.fromtimestamp(ms / 1000, tz):%Y-%m-%d %H:%M}"

    if not entries:
        print("no ledger entries" + (" open" if open_only else ""))
    for e in entries:
        state = "open" if e.is_open else f"closed {at(e.closed_ms or 0)} by {e.closed_by}"
        print(f"{e.id}  {e.kind}  {e.where}: {e.what}")
        print(f"    opened {at(e.opened_ms)}, repair by {at(e.deadline_ms)}, {state}")
    return 0


def run_report(config_path: Path, day: str | None, *, as_json: bool, html: Path | None) -> int:
    # Imported here: `python -m gateway run` registers this command but never runs it.
    from gateway.rules.report_html import render_html  # noqa: PLC0415
    from gateway.rules.report_store import read_reports  # noqa: PLC0415

    config = load_config_or_exit(config_path)
    if day is not None:
        try:
            date.fromisoformat(day)
        except ValueError:
            raise click.BadParameter(
                f"{day!r} is not a date like 2026-09-07", param_hint="--date"
            ) from None
    try:
        reports = read_reports(config.store.path, day)
    except RulesUnreadable as exc:
        print(f"schoolgate report: {exc}", file=sys.stderr)
        return 1
    if not reports:
        print(f"schoolgate report: no report stored{f' for {day}' if day else ''}", file=sys.stderr)
        return 1
    report = reports[-1]  # without --date: the latest
    if as_json:
        print(json.dumps(report.body, ensure_ascii=False, indent=2))
        return 0
    tz = ZoneInfo(config.site.timezone)
    if html is not None:
        page = render_html(
            report.body,
            school=config.site.school_id,
            gateway=config.site.gateway_id,
            built=iso_ms(report.built_ms, tz),
        )
        html.write_text(page, encoding="utf-8")
        print(f"report of {report.day} written to {html}")
        return 0
    body = report.body
    ledger = body.get("ledger", {})
    print(f"daily report {report.day} ({body.get('from')} - {body.get('to')})")
    print(f"  sent to the bureau: {'yes' if report.sent else 'not yet'}")
    for device in body.get("devices", []):
        print(
            f"  device {device['id']}: {device['health']},"
            f" online {device['online_fraction'] * 100:.2f} %"
        )
    for name, path in body.get("paths", {}).items():
        print(f"  path {name}: up {path['up_fraction'] * 100:.2f} %, last ack {path['last_ack']}")
    print(f"  alarms: {len(body.get('alarms', []))}")
    print(f"  ledger: {ledger.get('open')} open, {ledger.get('overdue')} overdue")
    print(f"  rule violations: {len(body.get('violations', {}).get('opened', []))}")
    return 0


def register(group: click.Group) -> None:
    """Add `calendar` and `ledger` to the `schoolgate` group."""
    config_option = click.option(
        "-c", "--config", type=click.Path(path_type=Path), default=_default_config()
    )

    @group.command("calendar", help="a date's day type and gate windows (default: today)")
    @config_option
    @click.option("--date", "day", help="a date, e.g. 2026-09-07")
    def calendar_command(config: Path, day: str | None) -> int:
        return run_calendar(config, day)

    @group.group(
        "ledger",
        help="the fault ledger, read from the store file (`ledger close ID` closes an entry)",
        invoke_without_command=True,
    )
    @config_option
    @click.option("--open", "open_only", is_flag=True, help="only entries still open")
    @click.option("--json", "as_json", is_flag=True, help="as JSON")
    @click.pass_context
    def ledger_command(ctx: click.Context, config: Path, open_only: bool, as_json: bool) -> int:
        if ctx.invoked_subcommand is not None:
            return 0  # `close` (gateway.cli adds it: it asks the daemon)
        ctx.exit(run_ledger(config, open_only=open_only, as_json=as_json))
        return 0

    @group.command("report", help="a stored daily inspection report (default: the latest)")
    @config_option
    @click.option("--date", "day", help="the report's site date, e.g. 2026-09-07")
    @click.option("--json", "as_json", is_flag=True, help="as JSON")
    @click.option("--html", type=click.Path(path_type=Path), help="write a printable A4 page")
    def report_command(config: Path, day: str | None, as_json: bool, html: Path | None) -> int:
        return run_report(config, day, as_json=as_json, html=html)


def _default_config() -> Path:
    return Path(os.environ.get("SCHOOLGATE_CONFIG", "/etc/schoolgate/schoolgate.toml"))
