"""Questions about school days, answered from a validated `Calendar` and the site's time zone.

Owns the day types and the gate windows of a date as aware datetimes, whether a moment is in a
window, and when the answer next changes. Pure: no clock, no I/O; callers pass the moment.
It does not read files (that is `edge_config.calendar.load_calendar`).

Seam: `SchoolCalendar(calendar, tz)`; `day_type(d)`, `windows(d)`, `in_window(at)`,
`next_change(at)`. A date outside the file's school year raises `OutsideSchoolYear`.

Precedence for one date: special day > make-up day (调休) > holiday > term break > the weekday's
schedule. A plain date whose weekday has windows is a `school_day`, one without is a `weekend`.
A window belongs to the date it starts on; a window that crosses midnight ends on the next date
(`in_window` looks at the previous date too). Window ends are exclusive. Times are built with
zoneinfo; the sites we serve (China) have no daylight saving time, so no window is skipped or
doubled; in a zone with DST a window starting in a skipped hour would start at the shifted time.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from edge_config.calendar import WEEKDAYS, Calendar, GateWindow


class DayType(enum.StrEnum):
    SCHOOL_DAY = "school_day"
    WEEKEND = "weekend"
    HOLIDAY = "holiday"
    MAKEUP_DAY = "makeup_day"
    TERM_BREAK = "term_break"
    SPECIAL = "special"


class OutsideSchoolYear(LookupError):
    """The date is not covered by the calendar file (load next year's file)."""


@dataclass(frozen=True, slots=True)
class Window:
    name: str
    start: datetime
    end: datetime

    def contains(self, at: datetime) -> bool:
        return self.start <= at < self.end


class SchoolCalendar:
    def __init__(self, calendar: Calendar, tz: ZoneInfo) -> None:
        self.calendar = calendar
        self.tz = tz
        self._special = {s.date: s for s in calendar.special_days}
        self._makeup = {m.date: m for m in calendar.makeup_days}
        self._holiday: set[date] = set()
        for holiday in calendar.holidays:
            self._holiday.update(_days(holiday.start, holiday.last))
        self._term_break: set[date] = set()
        for term_break in calendar.term_breaks:
            self._term_break.update(_days(term_break.start, term_break.end))

    def covers(self, day: date) -> bool:
        return self.calendar.year_start <= day <= self.calendar.year_end

    def day_type(self, day: date) -> DayType:
        self._check(day)
        if day in self._special:
            return DayType.SPECIAL
        if day in self._makeup:
            return DayType.MAKEUP_DAY
        if day in self._holiday:
            return DayType.HOLIDAY
        if day in self._term_break:
            return DayType.TERM_BREAK
        if self.calendar.weekdays.of(WEEKDAYS[day.weekday()]):
            return DayType.SCHOOL_DAY
        return DayType.WEEKEND

    def windows(self, day: date) -> list[Window]:
        """The windows that start on `day`, in time order, in site time."""
        kind = self.day_type(day)
        gate_windows: list[GateWindow]
        if kind is DayType.SPECIAL:
            gate_windows = self._special[day].windows
        elif kind is DayType.MAKEUP_DAY:
            gate_windows = self.calendar.weekdays.of(self._makeup[day].runs_as)
        elif kind in (DayType.HOLIDAY, DayType.TERM_BREAK, DayType.WEEKEND):
            gate_windows = []
        else:
            gate_windows = self.calendar.weekdays.of(WEEKDAYS[day.weekday()])
        windows = [self._window(day, w) for w in gate_windows]
        return sorted(windows, key=lambda w: w.start)

    def in_window(self, at: datetime) -> Window | None:
        """The window `at` falls in (start inclusive, end exclusive), or None."""
        local = self._local(at)
        for day in (local.date() - timedelta(days=1), local.date()):
            if not self.covers(day):
                continue
            for window in self.windows(day):
                if window.contains(local):
                    return window
        return None

    def next_change(self, at: datetime) -> datetime | None:
        """The first window start or end strictly after `at`; None if none is left in the
        school year."""
        local = self._local(at)
        day = max(local.date() - timedelta(days=1), self.calendar.year_start)
        while day <= self.calendar.year_end:
            # Edges of a day's windows are all on or after that day's midnight, but a window
            # crossing midnight ends on the next day: so the answer is among two days' edges.
            edges = self._edges_after(day, local)
            if edges:
                return min(edges + self._edges_after(day + timedelta(days=1), local))
            day += timedelta(days=1)
        return None

    def _edges_after(self, day: date, local: datetime) -> list[datetime]:
        if not self.covers(day):
            return []
        return [
            edge
            for window in self.windows(day)
            for edge in (window.start, window.end)
            if edge > local
        ]

    def _window(self, day: date, window: GateWindow) -> Window:
        start = datetime.combine(day, window.start, tzinfo=self.tz)
        end_day = day + timedelta(days=1) if window.crosses_midnight else day
        end = datetime.combine(end_day, window.end, tzinfo=self.tz)
        return Window(window.name, start, end)

    def _local(self, at: datetime) -> datetime:
        if at.tzinfo is None:
            raise ValueError("a naive datetime is ambiguous; pass an aware one")
        return at.astimezone(self.tz)

    def _check(self, day: date) -> None:
        if not self.covers(day):
            raise OutsideSchoolYear(
                f"{day} is outside the school year "
                f"{self.calendar.year_start}..{self.calendar.year_end}"
            )


def _days(first: date, last: date) -> list[date]:
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]
