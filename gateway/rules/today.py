"""What the rules say about today, for the guard's page: the gate windows of the site's day, the
patrol rounds done against the day's target, the open rule violations and the overdue ledger
entries.

Owns `RulesToday` (plain values, epoch ms) and `rules_today`, a read of the calendar, the patrol
trackers and the rules' state at one moment. It does not judge (the blocks did, and stored what
they said) nor render (the page does, with the catalogue's words).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gateway.core.events import DeviceRef
from gateway.rules.calendar import OutsideSchoolYear, SchoolCalendar
from gateway.rules.counters import local_day
from gateway.rules.patrol import PatrolTracker
from gateway.rules.state import RulesState


@dataclass(frozen=True, slots=True)
class WindowToday:
    name: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class ViolationNow:
    rule_id: str
    device_id: str
    place: str  # where the device is, as the installer named it
    since_ms: int


@dataclass(frozen=True, slots=True)
class OverdueEntry:
    kind: str  # the ledger kind ("device_offline", a window rule's ledger_kind)
    place: str
    deadline_ms: int


@dataclass(frozen=True, slots=True)
class RulesToday:
    windows: tuple[WindowToday, ...]
    patrols_done: int
    patrols_target: int
    violations: tuple[ViolationNow, ...]
    overdue: tuple[OverdueEntry, ...]


def rules_today(
    now_ms: int,
    calendar: SchoolCalendar,
    patrols: Sequence[PatrolTracker],
    state: RulesState,
    devices: Mapping[str, DeviceRef],
) -> RulesToday:
    day = local_day(now_ms, calendar.tz)
    try:
        windows = calendar.windows(day)
    except OutsideSchoolYear:
        windows = []  # the calendar file does not cover today: no windows to show
    return RulesToday(
        windows=tuple(
            WindowToday(w.name, _ms(w.start.timestamp()), _ms(w.end.timestamp())) for w in windows
        ),
        patrols_done=sum(min(p.rounds_done(now_ms), p.plan.rounds_required) for p in patrols),
        patrols_target=sum(p.plan.rounds_required for p in patrols),
        violations=tuple(
            ViolationNow(v.rule_id, v.device_id, _place(devices, v.device_id), v.opened_ms)
            for v in sorted(state.violations(), key=lambda v: v.opened_ms)
        ),
        overdue=tuple(
            OverdueEntry(e.kind, e.where, e.deadline_ms)
            for e in sorted(state.ledger_entries(open_only=True), key=lambda e: e.deadline_ms)
            if now_ms >= e.deadline_ms
        ),
    )


def _place(devices: Mapping[str, DeviceRef], device_id: str) -> str:
    device = devices.get(device_id)
    return (device.location if device is not None else "") or device_id


def _ms(seconds: float) -> int:
    return round(seconds * 1000)
