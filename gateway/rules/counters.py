"""Day counters: how many of something happened on the site's local day (patrol rounds, drills,
violations). A counter starts again at 0 at local midnight because its key is the local date;
nothing is reset and nothing is lost across a restart (values live in `RulesState`).

Owns turning a wall-clock moment into the site's local day and counting under that day. It does
not decide what to count. A wall-clock step can move a count to another day: the local day is
the one the wall clock says when the thing is counted (the same day the event is stamped with).
"""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from gateway.rules.state import RulesState


def local_day(wall_ms: int, tz: ZoneInfo) -> date:
    return datetime.fromtimestamp(wall_ms / 1000, tz).date()


class DayCounters:
    def __init__(self, state: RulesState, tz: ZoneInfo) -> None:
        self._state = state
        self.tz = tz

    def add(self, name: str, at_ms: int, delta: int = 1) -> int:
        """Count at the local day of `at_ms`; returns that day's new value."""
        return self._state.add_to_counter(name, local_day(at_ms, self.tz).isoformat(), delta)

    def value(self, name: str, day: date) -> int:
        return self._state.counter(name, day.isoformat())

    def today(self, name: str, now_ms: int) -> int:
        return self.value(name, local_day(now_ms, self.tz))
