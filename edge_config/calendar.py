"""The school calendar file: its TOML schema and its loader. One file per school year.

Owns what a calendar file may say and the messages that refuse a bad one (each names the key
and, where it can be found, the TOML line; never a traceback). It does not answer questions
about days (that is `gateway.rules.calendar`, which takes a `Calendar` and the site's time
zone: the zone is the site's, given by the caller, never written in this file).

Shape (see edge_config/examples/calendar-2026-2027.toml):
  year_start, year_end      the school year the file covers (TOML dates)
  [weekdays] monday..sunday lists of up to 8 named windows {name, start "HH:MM", end "HH:MM"};
                            end earlier than start means the window crosses midnight
  [[holidays]]              name, start, optional end (inclusive)
  [[makeup_days]]           调休: date, runs_as (a weekday whose windows the date runs), name
  [[term_breaks]]           name, start, end (inclusive)
  [[special_days]]          date, name, windows (their own; may be empty: gate closed)
A date may be named by at most one of holidays / makeup_days / special_days; term breaks may
contain holidays (a single-date entry wins over a range).
"""

from __future__ import annotations

import itertools
import re
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from edge_config.base import require_distinct
from edge_config.errors import ConfigError

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MAX_WINDOWS_PER_DAY = 8
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


def _hhmm(value: object) -> object:
    if isinstance(value, str):
        match = _HHMM.fullmatch(value)
        if match is None:
            raise ValueError('a time of day is "HH:MM", 00:00 to 23:59')
        return time(int(match[1]), int(match[2]))
    return value


TimeOfDay = Annotated[time, BeforeValidator(_hhmm)]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class GateWindow(_Strict):
    name: str = Field(min_length=1, max_length=40)
    start: TimeOfDay
    end: TimeOfDay

    @model_validator(mode="after")
    def _not_empty(self) -> GateWindow:
        if self.start == self.end:
            raise ValueError(f"window {self.name!r}: start and end are the same time")
        return self

    @property
    def crosses_midnight(self) -> bool:
        return self.end < self.start

    def span_minutes(self) -> tuple[int, int]:
        """Start and end in minutes from the day's midnight; end > 1440 past midnight."""
        start = self.start.hour * 60 + self.start.minute
        end = self.end.hour * 60 + self.end.minute
        return start, end + 1440 if end <= start else end


def _check_windows(windows: list[GateWindow]) -> list[GateWindow]:
    names = [w.name for w in windows]
    require_distinct(names, "window names must be unique within a day")
    spans = sorted(w.span_minutes() for w in windows)
    for (_, end), (start, _) in itertools.pairwise(spans):
        if start < end:
            raise ValueError("windows of one day overlap")
    return windows


DayWindows = Annotated[
    list[GateWindow], Field(max_length=MAX_WINDOWS_PER_DAY), AfterValidator(_check_windows)
]


class WeekSchedule(_Strict):
    monday: DayWindows = []
    tuesday: DayWindows = []
    wednesday: DayWindows = []
    thursday: DayWindows = []
    friday: DayWindows = []
    saturday: DayWindows = []
    sunday: DayWindows = []

    def of(self, weekday: str) -> list[GateWindow]:
        windows: list[GateWindow] = getattr(self, weekday)
        return windows


class Holiday(_Strict):
    name: str = Field(min_length=1)
    start: date
    end: date | None = None

    @property
    def last(self) -> date:
        return self.end or self.start


class MakeupDay(_Strict):
    date: date
    runs_as: Weekday
    name: str = "调休"


class TermBreak(_Strict):
    name: str = Field(min_length=1)
    start: date
    end: date


class SpecialDay(_Strict):
    date: date
    name: str = Field(min_length=1)
    windows: DayWindows = []


class Calendar(_Strict):
    year_start: date
    year_end: date
    weekdays: WeekSchedule
    holidays: list[Holiday] = []
    makeup_days: list[MakeupDay] = []
    term_breaks: list[TermBreak] = []
    special_days: list[SpecialDay] = []

    @model_validator(mode="after")
    def _dates(self) -> Calendar:
        if self.year_end <= self.year_start:
            raise ValueError("year_end must be after year_start")
        ranges = [("holidays", h.name, h.start, h.last) for h in self.holidays]
        ranges += [("term_breaks", t.name, t.start, t.end) for t in self.term_breaks]
        ranges += [("makeup_days", m.name, m.date, m.date) for m in self.makeup_days]
        ranges += [("special_days", s.name, s.date, s.date) for s in self.special_days]
        for section, name, first, last in ranges:
            if last < first:
                raise ValueError(f"{section} {name!r}: end {last} is before start {first}")
            if first < self.year_start or last > self.year_end:
                raise ValueError(
                    f"{section} {name!r}: {first}..{last} is outside the school year "
                    f"{self.year_start}..{self.year_end}"
                )
        seen: dict[date, str] = {}
        for section, name, first, last in ranges:
            if section == "term_breaks":
                continue
            day = first
            while day <= last:
                if day in seen:
                    raise ValueError(f"{day} is named twice: {seen[day]} and {section} {name!r}")
                seen[day] = f"{section} {name!r}"
                day = date.fromordinal(day.toordinal() + 1)
        return self


def load_calendar(path: Path) -> Calendar:
    """Read and validate a calendar file; raise `ConfigError` listing every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"cannot read the calendar: {exc}"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    try:
        return Calendar.model_validate(raw)
    except ValidationError as exc:
        lines = _LineMap(text)
        raise ConfigError(path, [_describe(e, lines) for e in exc.errors()]) from None


def _describe(error: Any, lines: _LineMap) -> str:
    loc = tuple(error["loc"])
    where = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in loc).replace(".[", "[")
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    line = lines.find(loc, value)
    at = f" (line {line})" if line else ""
    if error["type"] == "extra_forbidden":
        return f"{where or '(top level)'}{at}: unknown key"
    if error["type"] == "missing":
        return f"{where or '(top level)'}{at}: required key is missing"
    got = f" (got {value!r})" if isinstance(value, str | int | float | date | time) else ""
    return f"{where or '(top level)'}{at}: {message}{got}"


_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\s\"]+?)\s*\]\]?\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_]+)\s*=")


class _LineMap:
    """Where each table and key of a TOML text starts (tomllib gives no positions). Knows
    [table], [[array of tables]] and `key =` lines; deeper places (inline tables) are found by
    searching for the offending value from the nearest known line on."""

    def __init__(self, text: str) -> None:
        self._lines = text.splitlines()
        self._at: dict[tuple[int | str, ...], int] = {}
        counts: dict[tuple[str, ...], int] = {}
        table: tuple[int | str, ...] = ()
        for number, line in enumerate(self._lines, start=1):
            if header := _HEADER.match(line):
                names = tuple(p.strip().strip('"') for p in header[2].split("."))
                if header[1] == "[[":
                    index = counts.get(names, -1) + 1
                    counts[names] = index
                    table = (*names, index)
                    self._at.setdefault(names, number)
                else:
                    table = names
                self._at.setdefault(table, number)
            elif key := _KEY.match(line):
                self._at.setdefault((*table, key[1]), number)

    def find(self, loc: tuple[int | str, ...], value: object) -> int | None:
        for length in range(len(loc), -1, -1):
            start = self._at.get(loc[:length])
            if start is None:
                continue
            if length < len(loc) and isinstance(value, str | date | time):
                needle = value if isinstance(value, str) else value.isoformat()
                for number in range(start, len(self._lines) + 1):
                    if needle in self._lines[number - 1]:
                        return number
            return start
        return None
