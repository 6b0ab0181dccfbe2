"""The `[rules]` section: the school's rules on the box (issue 12), off unless configured.

Owns the shape of the section (the calendar file's path, window rules, insert-bollard socket
timers, patrol plans, the ledger's repair deadlines) and `rules_errors`, the checks that reach
outside the section: the named devices exist and are of a kind the rule can judge, the socket
and reader names exist, and the calendar file loads (its own errors name the key and the line).
It does not judge anything (gateway.rules does) and does not read the calendar's days.

Shape (docs/rules.md has a complete example):
  [rules] calendar_file         the school year's calendar TOML (relative: to the config's folder)
  [[rules.window]]              id, devices, required_state, applies, grace_s, actions
  [[rules.socket_timer]]        device (bollard_sockets), sockets = {name = minutes allowed out}
  [[rules.patrol]]              id, checkpoints = [{device, reader}], rounds_required, latest,
                                tolerance_s
  [rules.ledger]                default_repair_h, repair_h = {kind = hours}
  [rules.panic]                 boxes, during_drill, [[rules.panic.action]] command, devices, args
  [rules.daily_report]          at (site time of day the day's inspection report is built)
  [rules.drills]                warn_days_before_quarter_end (no drill yet: reported)
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from edge_config.base import Ident, Strict, require_distinct
from edge_config.calendar import TimeOfDay, load_calendar
from edge_config.errors import ConfigError
from edge_config.fields import ConfigPath

WINDOW_STATES: Mapping[str, tuple[str, ...]] = {
    "bollard": ("up", "down"),
    "bollard_sockets": ("all_inserted", "some_out"),
    "access_controller": ("locked_down", "not_locked_down"),
}
"""The device kinds a window rule can judge, and the states each reports (gateway.rules.engine
derives them from the drivers' events). An access controller cannot be asked whether it is
locked down: its state is what the last confirmed `lockdown` / `release_lockdown` said
(`access.lockdown`), `not_locked_down` until then and after it was offline."""

PANIC_COMMANDS: Mapping[str, tuple[str, ...]] = {
    "bollard": ("emergency_raise", "raise"),
    "access_controller": ("lockdown",),
    "alarm_box": ("siren",),
}
"""What a panic reaction may do to each device kind (the drivers' commands; `siren` is the
latch's: the box's siren sounds for that alarm until it is reset or a guard silences it)."""


class RuleCommand(Strict):
    """A command sent by a rule to a device (through the device's driver)."""

    command: str = Field(min_length=1, max_length=40)
    args: dict[str, Any] = Field(default_factory=dict)


class WindowRuleConfig(Strict):
    id: Ident
    devices: list[Ident] = Field(min_length=1)
    required_state: str = Field(min_length=1)
    applies: Literal["outside", "inside"] = "outside"
    grace_s: float = Field(default=300.0, ge=0, le=86_400)
    on_violation: list[RuleCommand] = Field(default_factory=list)
    at_window_end: list[RuleCommand] = Field(default_factory=list)
    ledger_kind: Ident | None = "rule_violation"


class SocketTimerConfig(Strict):
    device: Ident
    sockets: dict[str, float] = Field(
        min_length=1, description="socket name -> minutes a bollard may stay out (fractions ok)"
    )

    @model_validator(mode="after")
    def _positive_minutes(self) -> SocketTimerConfig:
        for name, minutes in self.sockets.items():
            if not 0 < minutes <= 24 * 60:
                raise ValueError(f"sockets.{name}: minutes must be above 0 and at most 1440")
        return self


class PatrolCheckpoint(Strict):
    device: Ident
    reader: int = Field(ge=1, le=255, description="the reader's number on that controller")

    @property
    def id(self) -> str:
        return f"{self.device}-r{self.reader}"


class PatrolConfig(Strict):
    id: Ident
    checkpoints: list[PatrolCheckpoint] = Field(min_length=1)
    rounds_required: int = Field(default=5, ge=1, le=48)
    latest: TimeOfDay = time(23, 0)
    tolerance_s: float = Field(default=900.0, gt=0, le=86_400)

    @model_validator(mode="after")
    def _distinct(self) -> PatrolConfig:
        ids = [c.id for c in self.checkpoints]
        require_distinct(ids, "checkpoints: a reader is named twice")
        return self


class LedgerConfig(Strict):
    default_repair_h: float = Field(default=24.0, gt=0, le=24 * 365)
    repair_h: dict[Ident, float] = Field(default_factory=dict)


class PanicAction(Strict):
    command: str = Field(min_length=1, max_length=40)
    devices: list[Ident] = Field(min_length=1)


class PanicConfig(Strict):
    """What happens when a panic alarm latches (after it is stored; never before)."""

    boxes: list[Ident] = Field(
        default_factory=list, description="alarm boxes whose alarms trigger it; empty: every box"
    )
    during_drill: bool = Field(
        default=False, description="also for an alarm marked as a drill (default: not)"
    )
    action: list[PanicAction] = Field(min_length=1)


class DailyReportConfig(Strict):
    at: TimeOfDay = time(18, 0)
    """The report covers the 24 hours up to this time of the site's day."""


class DrillsConfig(Strict):
    warn_days_before_quarter_end: int = Field(default=14, ge=0, le=80)
    """No drill yet in the quarter this many days before its end: one `drill.missing`."""


class RulesConfig(Strict):
    calendar_file: ConfigPath
    window: list[WindowRuleConfig] = Field(default_factory=list)
    socket_timer: list[SocketTimerConfig] = Field(default_factory=list)
    patrol: list[PatrolConfig] = Field(default_factory=list)
    ledger: LedgerConfig = LedgerConfig()
    panic: PanicConfig | None = None
    daily_report: DailyReportConfig | None = None
    drills: DrillsConfig = DrillsConfig()

    @model_validator(mode="after")
    def _unique_ids(self) -> RulesConfig:
        for section, ids in (
            ("window", [w.id for w in self.window]),
            ("patrol", [p.id for p in self.patrol]),
            ("socket_timer", [t.device for t in self.socket_timer]),
        ):
            require_distinct(ids, f"{section}: an id (or device) is used twice")
        return self

    def calendar_path(self, config_dir: Path) -> Path:
        return (
            self.calendar_file
            if self.calendar_file.is_absolute()
            else config_dir / (self.calendar_file)
        )


def rules_errors(rules: RulesConfig, devices: Mapping[str, Any], config_dir: Path) -> list[str]:
    """What in `[rules]` does not fit the rest of the config (each `key: message`)."""
    errors: list[str] = []
    try:
        load_calendar(rules.calendar_path(config_dir))
    except ConfigError as exc:
        errors += [f"rules.calendar_file ({exc.path}): {e}" for e in exc.errors]
    for n, window in enumerate(rules.window):
        errors += _window_errors(f"rules.window[{n}]", window, devices)
    for n, timer in enumerate(rules.socket_timer):
        errors += _socket_timer_errors(f"rules.socket_timer[{n}]", timer, devices)
    for n, plan in enumerate(rules.patrol):
        for m, point in enumerate(plan.checkpoints):
            where = f"rules.patrol[{n}].checkpoints[{m}]"
            device = devices.get(point.device)
            if device is None or device.kind != "access_controller":
                errors.append(f"{where}.device: {point.device!r} is not an access_controller")
            elif point.reader not in device.readers:
                errors.append(f"{where}.reader: {point.device!r} has no reader {point.reader}")
    if rules.panic is not None:
        errors += _panic_errors(rules.panic, devices)
    return errors


def _panic_errors(panic: PanicConfig, devices: Mapping[str, Any]) -> list[str]:
    errors = [
        f"rules.panic.boxes: {box!r} is not an alarm_box"
        for box in panic.boxes
        if getattr(devices.get(box), "kind", None) != "alarm_box"
    ]
    for n, action in enumerate(panic.action):
        for device_id in action.devices:
            device = devices.get(device_id)
            kind = getattr(device, "kind", None)
            if kind is None:
                errors.append(f"rules.panic.action[{n}].devices: no device {device_id!r}")
            elif action.command not in PANIC_COMMANDS.get(kind, ()):
                can = ", ".join(f"{k}: {'/'.join(c)}" for k, c in PANIC_COMMANDS.items())
                errors.append(
                    f"rules.panic.action[{n}].command: {action.command!r} is not for a {kind}"
                    f" ({device_id!r}); a reaction can do {can}"
                )
    return errors


def _window_errors(where: str, window: WindowRuleConfig, devices: Mapping[str, Any]) -> list[str]:
    errors: list[str] = []
    kinds = set()
    for device_id in window.devices:
        device = devices.get(device_id)
        if device is None:
            errors.append(f"{where}.devices: no device {device_id!r}")
        elif device.kind not in WINDOW_STATES:
            known = ", ".join(WINDOW_STATES)
            errors.append(f"{where}.devices: {device_id!r} is a {device.kind} ({known} only)")
        else:
            kinds.add(device.kind)
    for kind in sorted(kinds):
        if window.required_state not in WINDOW_STATES[kind]:
            errors.append(
                f"{where}.required_state: a {kind} reports {', '.join(WINDOW_STATES[kind])}"
                f" (got {window.required_state!r})"
            )
    return errors


def _socket_timer_errors(
    where: str, timer: SocketTimerConfig, devices: Mapping[str, Any]
) -> list[str]:
    device = devices.get(timer.device)
    if device is None or device.kind != "bollard_sockets":
        return [f"{where}.device: {timer.device!r} is not a bollard_sockets device"]
    names = {s.name for s in device.sockets}
    return [
        f"{where}.sockets.{name}: {timer.device!r} has no socket {name!r}"
        for name in timer.sockets
        if name not in names
    ]
