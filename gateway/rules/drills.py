"""Drills on the school's side: drills counted per quarter of the site's calendar year, and one
`drill.missing` when a quarter has none a configured number of days before its end.

Owns the quarter arithmetic and the count. Every `gateway.drill_started` is a drill, whoever
started it (the police with `drill.start`, the school with `schoolgate drill start`); it is counted
in the quarter of its site date. The count and "missing already reported" are counters in
`RulesState` keyed by the quarter ("2026-Q4"), so both survive a restart and nothing is reported
twice. Pure: fed events and the wall time, returns events. It does not run drills
(gateway.alarms.drill does).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.core.events import Event, Severity, new_event
from gateway.rules.counters import local_day
from gateway.rules.state import RulesState
from gateway.store.outbox import GATEWAY_DEVICE

STARTED_TYPE = "gateway.drill_started"
MISSING_TYPE = "drill.missing"
_COUNT = "drills"
_REPORTED = "drills:missing_reported"


@dataclass(frozen=True, slots=True)
class Quarter:
    name: str
    """E.g. "2026-Q4"."""
    first_day: date
    end: date
    """The day after its last day."""


def quarter_of(day: date) -> Quarter:
    index = (day.month - 1) // 3
    first = date(day.year, index * 3 + 1, 1)
    end = date(day.year + 1, 1, 1) if index == 3 else date(day.year, index * 3 + 4, 1)
    return Quarter(f"{day.year}-Q{index + 1}", first, end)


class DrillQuarters:
    def __init__(self, state: RulesState, tz: ZoneInfo, warn_days: int) -> None:
        self._state = state
        self._tz = tz
        self._warn_days = warn_days

    def take(self, event: Event) -> list[Event]:
        if event.type == STARTED_TYPE:
            quarter = quarter_of(local_day(event.occurred_at_ms, self._tz))
            self._state.add_to_counter(_COUNT, quarter.name)
        return []

    def count(self, now_ms: int) -> int:
        return self._state.counter(_COUNT, self._quarter(now_ms).name)

    def next_check_ms(self, now_ms: int) -> int:
        """When the current quarter's warning is due (or the next quarter's, once past)."""
        warn_ms = self._warn_ms(self._quarter(now_ms))
        if warn_ms > now_ms:
            return warn_ms
        return self._warn_ms(quarter_of(self._quarter(now_ms).end))

    async def check(self, now_ms: int) -> list[Event]:
        quarter = self._quarter(now_ms)
        if now_ms < self._warn_ms(quarter) or self._state.counter(_REPORTED, quarter.name):
            return []
        if self._state.counter(_COUNT, quarter.name):
            return []
        self._state.add_to_counter(_REPORTED, quarter.name)
        days_left = (quarter.end - local_day(now_ms, self._tz)).days
        data = {
            "quarter": quarter.name,
            "quarter_ends": (quarter.end - timedelta(days=1)).isoformat(),
            "days_left": days_left,
            "drills": 0,
        }
        return [
            new_event(
                MISSING_TYPE,
                GATEWAY_DEVICE,
                severity=Severity.MAJOR,
                occurred_at_ms=now_ms,
                data=data,
            )
        ]

    def figures(self, now_ms: int) -> dict[str, Any]:
        quarter = self._quarter(now_ms)
        return {
            "quarter": quarter.name,
            "this_quarter": self._state.counter(_COUNT, quarter.name),
            "quarter_ends": (quarter.end - timedelta(days=1)).isoformat(),
        }

    def _quarter(self, now_ms: int) -> Quarter:
        return quarter_of(local_day(now_ms, self._tz))

    def _warn_ms(self, quarter: Quarter) -> int:
        warn_day = quarter.end - timedelta(days=self._warn_days)
        return int(
            datetime.combine(warn_day, datetime.min.time(), tzinfo=self._tz).timestamp() * 1000
        )
