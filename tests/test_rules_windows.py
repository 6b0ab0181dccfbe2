"""Window rules on the fake clock: bollards must be up outside the gate windows; a deviation past
the grace is one rule.violation (not repeated after a restart), its end a rule.restored; actions
come back as data."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from edge_config.calendar import Calendar
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef
from gateway.rules.calendar import SchoolCalendar
from gateway.rules.sqlite_state import SqliteRulesState
from gateway.rules.state import InMemoryRulesState, RulesState
from gateway.rules.windows import (
    CloseLedger,
    CommandTemplate,
    Emit,
    OpenLedger,
    SendCommand,
    WindowRule,
    WindowRuleSpec,
)

TZ = ZoneInfo("Asia/Shanghai")
B1 = DeviceRef("bollard-1", "bollard", "east gate")
B2 = DeviceRef("bollard-2", "bollard", "east gate")
CALENDAR = Calendar.model_validate(
    {
        "year_start": datetime(2026, 9, 1).date(),
        "year_end": datetime(2027, 8, 31).date(),
        "weekdays": {"monday": [{"name": "arrival", "start": "07:00", "end": "08:10"}]},
        "holidays": [{"name": "National Day", "start": datetime(2026, 10, 5).date()}],
    }
)
SPEC = WindowRuleSpec(
    id="bollards-up",
    devices=(B1, B2),
    required_state="up",
    grace_s=120,
    on_violation=(CommandTemplate("raise"),),
    at_window_end=(CommandTemplate("raise", {"confirm": True}),),
)


def wall(day: int, hhmm: str, month: int = 9) -> int:
    hours, minutes = hhmm.split(":")
    return int(datetime(2026, month, day, int(hours), int(minutes), tzinfo=TZ).timestamp() * 1000)


def rule_at(wall_ms: int, state: RulesState | None = None) -> tuple[WindowRule, FakeClock]:
    clock = FakeClock(wall_ms=wall_ms)
    store: RulesState = state if state is not None else InMemoryRulesState()
    return WindowRule(SPEC, SchoolCalendar(CALENDAR, TZ), store, clock), clock


def emitted(actions: Sequence[object]) -> list[str]:
    return [a.event.type for a in actions if isinstance(a, Emit)]


def test_inside_a_window_a_lowered_bollard_is_fine() -> None:
    rule, clock = rule_at(wall(7, "07:30"))
    assert rule.observe("bollard-1", "down") == []
    clock.advance(30 * 60)
    assert rule.check() == []


def test_a_bollard_left_down_after_the_window_violates_after_the_grace_once() -> None:
    rule, clock = rule_at(wall(7, "08:00"))
    rule.observe("bollard-1", "down")
    rule.observe("bollard-2", "up")
    assert rule.next_check_in_s() == 600  # the window ends at 08:10
    clock.advance(600)
    actions = rule.check()
    assert actions == [SendCommand(B1, "raise", {"confirm": True})]  # window-end action
    assert rule.next_check_in_s() == 120
    clock.advance(119.9)
    assert rule.check() == []  # inside the grace
    clock.advance(0.1)
    actions = rule.check()
    assert emitted(actions) == ["rule.violation"]
    violation = actions[0]
    assert isinstance(violation, Emit)
    assert violation.event.device == B1
    assert violation.event.data["state"] == "down"
    assert SendCommand(B1, "raise", {}) in actions
    assert (
        OpenLedger(
            "rule_violation",
            "rule:bollards-up:bollard-1",
            "bollard-1 is down, must be up",
            "east gate",
            wall(7, "08:12"),
        )
        in actions
    )
    clock.advance(600)
    assert rule.check() == []  # not repeated
    actions = rule.observe("bollard-1", "up")
    assert emitted(actions) == ["rule.restored"]
    assert actions[1] == CloseLedger(
        "rule:bollards-up:bollard-1", "bollard-1 reported up", wall(7, "08:22")
    )


def test_a_deviation_shorter_than_the_grace_is_nothing() -> None:
    rule, clock = rule_at(wall(7, "09:00"))
    assert rule.observe("bollard-1", "down") == []
    clock.advance(119)
    assert rule.observe("bollard-1", "up") == []
    clock.advance(600)
    assert rule.check() == []


def test_window_edges_start_and_end_exactly() -> None:
    rule, clock = rule_at(wall(7, "06:55"))
    rule.observe("bollard-1", "down")
    clock.advance(5 * 60)  # 07:00: the window opens, the requirement lifts
    assert rule.check() == []
    assert not rule.required_now()
    clock.advance(70 * 60 - 0.001)  # one ms before 08:10
    assert not rule.required_now()
    clock.advance(0.001)
    assert rule.required_now()


def test_a_holiday_has_no_windows_so_the_bollards_stay_up_all_day() -> None:
    rule, clock = rule_at(wall(5, "07:30", month=10))  # a Monday, National Day
    assert rule.required_now()
    rule.observe("bollard-1", "down")
    clock.advance(120)
    assert emitted(rule.check()) == ["rule.violation"]


def test_an_open_violation_survives_a_restart(tmp_path: Path) -> None:
    state = SqliteRulesState(tmp_path / "rules.sqlite")
    rule, clock = rule_at(wall(7, "09:00"), state)
    rule.observe("bollard-1", "down")
    clock.advance(120)
    assert emitted(rule.check()) == ["rule.violation"]
    state.close()
    state = SqliteRulesState(tmp_path / "rules.sqlite")
    rule, clock = rule_at(wall(7, "09:30"), state)
    clock.advance(600)
    assert rule.observe("bollard-1", "down") == []  # already open: not again
    clock.advance(600)
    assert rule.check() == []
    assert emitted(rule.observe("bollard-1", "up")) == ["rule.restored"]
    state.close()


def test_a_rule_for_inside_the_windows() -> None:
    spec = WindowRuleSpec(
        id="doors-open-at-arrival",
        devices=(B1,),
        required_state="unlocked",
        applies="inside",
        grace_s=60,
        ledger_kind=None,
    )
    clock = FakeClock(wall_ms=wall(7, "07:10"))
    rule = WindowRule(spec, SchoolCalendar(CALENDAR, TZ), InMemoryRulesState(), clock)
    rule.observe("bollard-1", "locked")
    clock.advance(60)
    assert [type(a).__name__ for a in rule.check()] == ["Emit"]
    assert rule.observe("bollard-2", "locked") == []  # not in this rule


def test_outside_the_school_year_nothing_is_required() -> None:
    rule, _ = rule_at(wall(31, "12:00", month=8) + 24 * 3_600_000 * 366)  # 2027-09-01
    assert not rule.required_now()
    assert rule.next_check_in_s() is None
