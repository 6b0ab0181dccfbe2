"""Day counters across local midnight and a restart, patrol rounds (a day with four of five:
patrol.missed) and the fault ledger (auto-close with evidence, close by a person, overdue)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.core.events import DeviceRef
from gateway.rules.counters import DayCounters
from gateway.rules.ledger import EntryAlreadyClosed, EntryNotFound, Ledger, LedgerError
from gateway.rules.patrol import PatrolPlan, PatrolTracker
from gateway.rules.sqlite_state import SqliteRulesState
from gateway.rules.state import InMemoryRulesState

TZ = ZoneInfo("Asia/Shanghai")
POINTS = tuple(DeviceRef(f"reader-{n}", "access_controller") for n in (1, 2, 3))
MINUTE_MS = 60_000


def ms(hhmm: str, day: int = 7) -> int:
    hours, minutes = hhmm.split(":")
    return int(datetime(2026, 9, day, int(hours), int(minutes), tzinfo=TZ).timestamp() * 1000)


def test_a_counter_starts_again_at_local_midnight_and_survives_a_restart(tmp_path: Path) -> None:
    state = SqliteRulesState(tmp_path / "rules.sqlite")
    counters = DayCounters(state, TZ)
    assert counters.add("rounds", ms("23:58")) == 1
    assert counters.add("rounds", ms("23:59")) == 2
    # 00:00 in Shenzhen is 16:00 UTC the day before: the local day decides, not UTC's.
    assert counters.add("rounds", ms("00:00", day=8)) == 1
    state.close()
    counters = DayCounters(SqliteRulesState(tmp_path / "rules.sqlite"), TZ)
    assert counters.today("rounds", ms("23:59")) == 2
    assert counters.today("rounds", ms("12:00", day=8)) == 1
    assert counters.add("rounds", ms("12:00", day=8), delta=3) == 4
    assert counters.today("rounds", ms("12:00", day=9)) == 0


def _walk(tracker: PatrolTracker, start: str, gap_min: int = 5) -> list[str]:
    types = []
    for n, point in enumerate(POINTS):
        types += [
            e.type for e in tracker.on_card(point.id, "card-7", ms(start) + n * gap_min * MINUTE_MS)
        ]
    return types


def test_a_day_with_four_rounds_reports_patrol_missed_once() -> None:
    state = InMemoryRulesState()
    plan = PatrolPlan("main", POINTS, rounds_required=5, latest=datetime(1, 1, 1, 22).time())
    tracker = PatrolTracker(plan, state, TZ)
    for start in ("08:00", "11:00", "14:00", "17:00"):
        assert _walk(tracker, start) == ["patrol.checkpoint"] * 3 + ["patrol.round_completed"]
    tracker.on_card("reader-1", "card-7", ms("20:00"))  # a fifth round begun, not finished
    assert tracker.rounds_done(ms("21:00")) == 4
    assert tracker.check(ms("21:59")) == []
    assert tracker.next_check_ms(ms("21:59")) == ms("22:00")
    (missed,) = tracker.check(ms("22:00"))
    assert missed.type == "patrol.missed"
    assert missed.data == {
        "plan": "main",
        "date": "2026-09-07",
        "rounds_done": 4,
        "rounds_required": 5,
        "rounds_missing": 1,
        "missing_points": ["reader-2", "reader-3"],
    }
    assert tracker.check(ms("23:00")) == []  # once a day
    # A restart (new tracker, same state) does not report it again.
    assert PatrolTracker(plan, state, TZ).check(ms("23:30")) == []
    assert tracker.next_check_ms(ms("22:00")) == ms("22:00", day=8)


def test_five_rounds_are_not_missed() -> None:
    tracker = PatrolTracker(PatrolPlan("main", POINTS), InMemoryRulesState(), TZ)
    for start in ("08:00", "10:00", "12:00", "14:00", "16:00"):
        _walk(tracker, start)
    assert tracker.check(ms("23:00")) == []


def test_a_gap_over_the_tolerance_or_a_wrong_order_does_not_complete_a_round() -> None:
    plan = PatrolPlan("main", POINTS, tolerance_s=600)
    tracker = PatrolTracker(plan, InMemoryRulesState(), TZ)
    assert "patrol.round_completed" not in _walk(tracker, "08:00", gap_min=11)
    tracker.on_card("reader-1", "card-7", ms("09:00"))
    (checkpoint,) = tracker.on_card("reader-3", "card-7", ms("09:01"))
    assert checkpoint.data["in_round"] is False
    tracker.on_card("reader-2", "card-7", ms("09:02"))
    assert [e.type for e in tracker.on_card("reader-3", "card-7", ms("09:03"))] == [
        "patrol.checkpoint",
        "patrol.round_completed",
    ]
    assert tracker.on_card("reader-9", "card-7", ms("09:04")) == []  # not a patrol point
    assert tracker.rounds_done(ms("10:00")) == 1


def test_a_patrol_plan_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="distinct"):
        PatrolPlan("p", (POINTS[0], POINTS[0]))
    with pytest.raises(ValueError, match="positive"):
        PatrolPlan("p", POINTS, rounds_required=0)


def test_a_ledger_entry_closes_itself_with_the_evidence() -> None:
    ledger = Ledger(InMemoryRulesState(), TZ, repair_hours={"bollard_fault": 4})
    entry, (opened,) = ledger.open(
        "device_offline",
        "offline:bollard-1",
        what="bollard-1 offline",
        where="east gate",
        at_ms=ms("08:00"),
    )
    assert entry.id == "20260907-001"
    assert entry.deadline_ms == ms("08:00", day=8)  # 24 h by default
    assert opened.type == "ledger.opened"
    again, events = ledger.open(
        "device_offline", "offline:bollard-1", what="x", where="y", at_ms=ms("09:00")
    )
    assert (again, events) == (entry, [])
    (closed,) = ledger.close_cleared("offline:bollard-1", evidence="polled ok", at_ms=ms("10:00"))
    assert closed.type == "ledger.closed"
    assert closed.data["closed_by"] == "auto"
    assert closed.data["note"] == "polled ok"
    assert closed.data["repair_s"] == 7200
    assert ledger.close_cleared("offline:bollard-1", evidence="again", at_ms=ms("10:01")) == []
    second, _ = ledger.open(
        "bollard_fault", "stuck:b2", what="b2 stuck", where="g", at_ms=0 + ms("11:00")
    )
    assert second.id == "20260907-002"
    assert second.deadline_ms == ms("15:00")  # per-kind deadline
    summary = ledger.summary(ms("12:00"))
    assert (summary.open, summary.overdue, summary.closed) == (1, 0, 1)
    assert summary.mean_time_to_repair_s == 7200


def test_an_overdue_entry_is_reported_once_even_after_a_restart(tmp_path: Path) -> None:
    state = SqliteRulesState(tmp_path / "rules.sqlite")
    ledger = Ledger(state, TZ)
    entry, _ = ledger.open(
        "tamper", "tamper:box-1", what="box-1 opened", where="gate", at_ms=ms("08:00")
    )
    assert ledger.next_deadline_ms() == entry.deadline_ms
    assert ledger.check_overdue(entry.deadline_ms - 1) == []
    (overdue,) = ledger.check_overdue(entry.deadline_ms)
    assert overdue.type == "ledger.overdue"
    assert overdue.data["entry"] == entry.id
    assert ledger.next_deadline_ms() is None
    state.close()
    state = SqliteRulesState(tmp_path / "rules.sqlite")
    ledger = Ledger(state, TZ)
    assert ledger.check_overdue(entry.deadline_ms + 3_600_000) == []
    assert ledger.summary(entry.deadline_ms).overdue == 1
    (closed,) = ledger.close_by_person(entry.id, by="Li", note="lid replaced", at_ms=ms("09:00", 8))
    assert closed.data["closed_by"] == "Li"
    assert ledger.entries(open_only=True) == []
    assert ledger.summary(ms("10:00", 8)).overdue == 0
    state.close()


def test_closing_by_hand_refuses_bad_requests() -> None:
    ledger = Ledger(InMemoryRulesState(), TZ)
    entry, _ = ledger.open("tamper", "t", what="w", where="g", at_ms=ms("08:00"))
    with pytest.raises(LedgerError, match="needs a note"):
        ledger.close_by_person(entry.id, by="Li", note="  ", at_ms=ms("09:00"))
    with pytest.raises(LedgerError, match="person's name"):
        ledger.close_by_person(entry.id, by="auto", note="done", at_ms=ms("09:00"))
    with pytest.raises(EntryNotFound):
        ledger.close_by_person("19990101-001", by="Li", note="done", at_ms=ms("09:00"))
    ledger.close_by_person(entry.id, by="Li", note="done", at_ms=ms("09:00"))
    with pytest.raises(EntryAlreadyClosed, match="closed by Li"):
        ledger.close_by_person(entry.id, by="Li", note="done", at_ms=ms("09:00"))
    assert ledger.summary(ms("10:00")).mean_time_to_repair_s == 3600
    assert Ledger(InMemoryRulesState(), TZ).summary(0).mean_time_to_repair_s is None
