"""The school calendar: the file's schema and loader (errors name the key and the line), and the
queries: day types, window edges, a 调休 Saturday, a holiday, a window across midnight."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from edge_config.calendar import Calendar, load_calendar
from edge_config.errors import ConfigError
from gateway.rules.calendar import DayType, OutsideSchoolYear, SchoolCalendar

EXAMPLE = Path(__file__).parent.parent / "edge_config" / "examples" / "calendar-2026-2027.toml"
SHENZHEN = ZoneInfo("Asia/Shanghai")

SMALL = """\
year_start = 2026-09-01
year_end = 2027-08-31

[weekdays]
monday = [
    { name = "arrival", start = "07:00", end = "08:10" },
    { name = "dismissal", start = "16:20", end = "17:30" },
]
friday = [{ name = "night-shift", start = "22:00", end = "06:00" }]

[[holidays]]
name = "National Day"
start = 2026-10-01
end = 2026-10-07

[[makeup_days]]
date = 2026-10-10
runs_as = "monday"

[[term_breaks]]
name = "winter break"
start = 2027-01-23
end = 2027-02-21

[[special_days]]
date = 2026-11-16
name = "sports day"
windows = [{ name = "all-day", start = "07:00", end = "17:00" }]
"""


def _load(tmp_path: Path, text: str) -> Calendar:
    path = tmp_path / "calendar.toml"
    path.write_text(text, encoding="utf-8")
    return load_calendar(path)


def _errors(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    return caught.value.errors


def at(day: date, hhmm: str) -> datetime:
    hours, minutes = hhmm.split(":")
    return datetime(day.year, day.month, day.day, int(hours), int(minutes), tzinfo=SHENZHEN)


@pytest.fixture
def cal(tmp_path: Path) -> SchoolCalendar:
    return SchoolCalendar(_load(tmp_path, SMALL), SHENZHEN)


MONDAY = date(2026, 9, 7)
SATURDAY_MAKEUP = date(2026, 10, 10)
FRIDAY = date(2026, 9, 11)


def test_the_example_calendar_loads() -> None:
    calendar = SchoolCalendar(load_calendar(EXAMPLE), SHENZHEN)
    assert calendar.day_type(date(2026, 10, 1)) is DayType.HOLIDAY
    assert calendar.day_type(date(2026, 9, 27)) is DayType.MAKEUP_DAY
    assert calendar.day_type(date(2027, 2, 1)) is DayType.TERM_BREAK


def test_day_types(cal: SchoolCalendar) -> None:
    assert cal.day_type(MONDAY) is DayType.SCHOOL_DAY
    assert cal.day_type(MONDAY + timedelta(days=1)) is DayType.WEEKEND  # no Tuesday windows
    assert cal.day_type(date(2026, 9, 12)) is DayType.WEEKEND
    assert cal.day_type(date(2026, 10, 5)) is DayType.HOLIDAY  # a Monday in the holiday
    assert cal.day_type(SATURDAY_MAKEUP) is DayType.MAKEUP_DAY
    assert cal.day_type(date(2027, 2, 1)) is DayType.TERM_BREAK
    assert cal.day_type(date(2026, 11, 16)) is DayType.SPECIAL


def test_window_edges_start_inclusive_end_exclusive(cal: SchoolCalendar) -> None:
    assert cal.in_window(at(MONDAY, "06:59")) is None
    window = cal.in_window(at(MONDAY, "07:00"))
    assert window is not None
    assert window.name == "arrival"
    assert cal.in_window(at(MONDAY, "08:09")) == window
    assert cal.in_window(at(MONDAY, "08:10")) is None
    assert cal.in_window(at(MONDAY, "08:10") - timedelta(microseconds=1)) == window


def test_in_window_accepts_any_zone(cal: SchoolCalendar) -> None:
    utc = at(MONDAY, "07:30").astimezone(ZoneInfo("UTC"))
    window = cal.in_window(utc)
    assert window is not None
    assert window.name == "arrival"
    with pytest.raises(ValueError, match="naive"):
        cal.in_window(datetime(2026, 9, 7, 7, 30))  # naive: refused


def test_a_makeup_saturday_runs_the_named_weekday(cal: SchoolCalendar) -> None:
    assert [w.name for w in cal.windows(SATURDAY_MAKEUP)] == ["arrival", "dismissal"]
    assert cal.windows(SATURDAY_MAKEUP)[0].start == at(SATURDAY_MAKEUP, "07:00")
    assert cal.in_window(at(SATURDAY_MAKEUP, "16:30")) is not None
    assert cal.windows(date(2026, 10, 17)) == []  # the next Saturday is a plain weekend


def test_a_holiday_on_a_school_weekday_has_no_windows(cal: SchoolCalendar) -> None:
    holiday_monday = date(2026, 10, 5)
    assert cal.windows(holiday_monday) == []
    assert cal.in_window(at(holiday_monday, "07:30")) is None
    # The next change after the holiday morning is Friday's night window, then the make-up
    # Saturday's arrival (after the night window ends at 06:00).
    friday = date(2026, 10, 9)
    assert cal.next_change(at(holiday_monday, "07:30")) == at(friday, "22:00")
    assert cal.next_change(at(SATURDAY_MAKEUP, "06:00")) == at(SATURDAY_MAKEUP, "07:00")


def test_a_special_day_has_its_own_windows(cal: SchoolCalendar) -> None:
    assert [(w.name, w.end) for w in cal.windows(date(2026, 11, 16))] == [
        ("all-day", at(date(2026, 11, 16), "17:00"))
    ]


def test_a_window_across_midnight(cal: SchoolCalendar) -> None:
    (window,) = cal.windows(FRIDAY)
    saturday = FRIDAY + timedelta(days=1)
    assert (window.start, window.end) == (at(FRIDAY, "22:00"), at(saturday, "06:00"))
    assert cal.in_window(at(FRIDAY, "21:59")) is None
    assert cal.in_window(at(FRIDAY, "23:59")) == window
    assert cal.in_window(at(saturday, "00:00")) == window  # asked on the next date
    assert cal.in_window(at(saturday, "05:59")) == window
    assert cal.in_window(at(saturday, "06:00")) is None
    assert cal.next_change(at(saturday, "01:00")) == at(saturday, "06:00")


def test_next_change_walks_edges_and_days(cal: SchoolCalendar) -> None:
    assert cal.next_change(at(MONDAY, "06:00")) == at(MONDAY, "07:00")
    assert cal.next_change(at(MONDAY, "07:00")) == at(MONDAY, "08:10")
    assert cal.next_change(at(MONDAY, "17:30")) == at(FRIDAY, "22:00")
    assert cal.next_change(at(date(2027, 8, 31), "12:00")) is None


def test_a_date_outside_the_school_year_is_refused(cal: SchoolCalendar) -> None:
    with pytest.raises(OutsideSchoolYear, match="2027-09-01"):
        cal.day_type(date(2027, 9, 1))
    assert cal.in_window(at(date(2026, 9, 1), "00:10")) is None  # the day before is not asked


def test_a_bad_time_names_the_key_and_the_line(tmp_path: Path) -> None:
    errors = _errors(tmp_path, SMALL.replace('end = "08:10"', 'end = "08:70"'))
    assert errors == [
        "weekdays.monday[0].end (line 6): a time of day is \"HH:MM\", 00:00 to 23:59 (got '08:70')"
    ]


def test_a_date_given_as_a_string_names_the_line(tmp_path: Path) -> None:
    errors = _errors(tmp_path, SMALL.replace("date = 2026-10-10", 'date = "2026-10-10"'))
    assert len(errors) == 1
    assert errors[0].startswith("makeup_days[0].date (line 17): ")


def test_an_impossible_date_is_a_toml_error_with_its_line(tmp_path: Path) -> None:
    errors = _errors(tmp_path, SMALL.replace("start = 2027-01-23", "start = 2027-02-30"))
    assert len(errors) == 1
    assert errors[0].startswith("not valid TOML")
    assert "line 22" in errors[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('runs_as = "monday"', 'runs_as = "funday"'), "makeup_days[0].runs_as (line 18)"),
        (("[[holidays]]", "[[holiday]]"), "holiday (line 11): unknown key"),
        (("year_end = 2027-08-31", "year_end = 2026-08-31"), "year_end must be after"),
        (("end = 2026-10-07", "end = 2026-09-30"), "end 2026-09-30 is before start"),
        (("date = 2026-10-10", "date = 2026-10-03"), "2026-10-03 is named twice"),
        (("start = 2027-01-23", "start = 2026-08-23"), "outside the school year"),
        (('"16:20", end = "17:30"', '"08:00", end = "09:00"'), "windows of one day overlap"),
        (('name = "dismissal"', 'name = "arrival"'), "window names must be unique"),
        (('start = "22:00", end = "06:00"', 'start = "22:00", end = "22:00"'), "same time"),
        (("year_start = 2026-09-01\n", ""), "year_start: required key is missing"),
    ],
)
def test_bad_calendars_are_refused_with_the_reason(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    assert change[0] in SMALL
    errors = _errors(tmp_path, SMALL.replace(*change))
    assert any(expected in e for e in errors), errors


def test_more_than_eight_windows_a_day_is_refused(tmp_path: Path) -> None:
    many = ", ".join(
        f'{{ name = "w{n}", start = "{n + 8:02d}:00", end = "{n + 8:02d}:30" }}' for n in range(9)
    )
    errors = _errors(
        tmp_path,
        SMALL.replace(
            'friday = [{ name = "night-shift"',
            f'tuesday = [{many}]\nfriday = [{{ name = "night-shift"',
        ),
    )
    assert any("weekdays.tuesday" in e and "at most 8" in e for e in errors), errors


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the calendar"):
        load_calendar(tmp_path / "missing.toml")
