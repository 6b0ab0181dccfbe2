"""What the rules say about today, for the guard's page: the gate windows of the site's day, the
patrol rounds done against the day's target, the open rule violations and the overdue ledger
entries.

Owns `RulesToday` and `rules_today`, a read of the calendar, the patrol trackers and the rules'
state at one moment, in the records they already keep (`calendar.Window`, `ViolationRecord`,
`LedgerEntry`). It does not judge (the blocks did, and stored what they said) nor render (the
page does, with the catalogue's words).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.rules.calendar import OutsideSchoolYear, SchoolCalendar, Window
from gateway.rules.counters import local_day
from gateway.rules.patrol import PatrolTracker
from gateway.rules.state import LedgerEntry, RulesState, ViolationRecord


@dataclass(frozen=True, slots=True)
class RulesToday:
    windows: tuple[Window, ...]
    """The windows that start on the site's day, in time order (none outside the calendar)."""
    patrols_done: int
    """Rounds done today over all patrol plans (each counted up to its own target)."""
    patrols_target: int
    violations: tuple[ViolationRecord, ...]
    """Open, the oldest first."""
    overdue: tuple[LedgerEntry, ...]
    """Open entries past their deadline, the earliest deadline first."""


def rules_today(
    now_ms: int, calendar: SchoolCalendar, patrols: Sequence[PatrolTracker], state: RulesState
) -> RulesToday:
    try:
        windows = calendar.windows(local_day(now_ms, calendar.tz))
    except OutsideSchoolYear:
        windows = []  # the calendar file does not cover today: no windows to show
    return RulesToday(
        windows=tuple(windows),
        patrols_done=sum(min(p.rounds_done(now_ms), p.plan.rounds_required) for p in patrols),
        patrols_target=sum(p.plan.rounds_required for p in patrols),
        violations=tuple(sorted(state.violations(), key=lambda v: v.opened_ms)),
        overdue=tuple(
            e
            for e in sorted(state.ledger_entries(open_only=True), key=lambda e: e.deadline_ms)
            if now_ms >= e.deadline_ms
        ),
    )
