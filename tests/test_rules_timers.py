"""Durable timers (随拔随插) on the fake clock: expiry once, latching, restarts (SQLite reopened)
and wall-clock steps of +-1 h."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Lane, Severity, lane_of
from gateway.rules.sqlite_state import SqliteRulesState
from gateway.rules.state import InMemoryRulesState
from gateway.rules.timers import (
    CLEARED_TYPE,
    EXPIRED_TYPE,
    RESTORED_TYPE,
    DurableTimers,
    TimerNotFound,
)

BOLLARD = DeviceRef("bollard-2", "bollard_sockets", "east gate")
HOUR_MS = 3_600_000


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "rules.sqlite"


def test_a_timer_fires_once_at_its_deadline_and_latches() -> None:
    clock = FakeClock()
    timers = DurableTimers(InMemoryRulesState(), clock)
    timers.start("socket-2", BOLLARD, 600)
    assert timers.next_due_in_s() == 600
    clock.advance(599.9)
    assert timers.check() == []
    clock.advance(0.1)
    (event,) = timers.check()
    assert (event.type, event.severity, event.device) == (EXPIRED_TYPE, Severity.CRITICAL, BOLLARD)
    assert event.data["socket"] == "socket-2"
    assert event.data["allowed_s"] == 600
    clock.advance(3600)
    assert timers.check() == []
    assert timers.next_due_in_s() is None
    assert [t.key for t in timers.latched()] == ["socket-2"]
    (restored,) = timers.stop("socket-2")
    assert restored.type == RESTORED_TYPE
    assert timers.latched() == []


def test_a_bollard_back_in_time_stops_the_timer_silently() -> None:
    clock = FakeClock()
    timers = DurableTimers(InMemoryRulesState(), clock)
    timers.start("socket-2", BOLLARD, 600)
    clock.advance(300)
    assert timers.stop("socket-2") == []
    clock.advance(600)
    assert timers.check() == []
    assert timers.stop("socket-2") == []  # already stopped


def test_pulling_again_while_running_keeps_the_first_deadline() -> None:
    clock = FakeClock()
    timers = DurableTimers(InMemoryRulesState(), clock)
    timers.start("socket-2", BOLLARD, 600)
    clock.advance(500)
    timers.start("socket-2", BOLLARD, 600)
    assert timers.next_due_in_s() == pytest.approx(100)


def test_a_person_clears_a_latched_expiry_with_a_note() -> None:
    clock = FakeClock()
    timers = DurableTimers(InMemoryRulesState(), clock)
    timers.start("socket-2", BOLLARD, 60)
    with pytest.raises(TimerNotFound):
        timers.clear("socket-2", by="guard-wang", note="under repair")  # not expired yet
    clock.advance(60)
    timers.check()
    (cleared,) = timers.clear("socket-2", by="guard-wang", note="under repair")
    assert cleared.type == CLEARED_TYPE
    assert cleared.data["note"] == "under repair"
    assert timers.latched() == []
    with pytest.raises(TimerNotFound):
        timers.clear("socket-2", by="guard-wang", note="again")


def test_a_running_timer_survives_a_restart_and_fires_once(db: Path) -> None:
    clock = FakeClock(wall_ms=1_790_000_000_000)
    state = SqliteRulesState(db)
    DurableTimers(state, clock).start("socket-2", BOLLARD, 600)
    clock.advance(200)
    state.close()  # power cut: the process and its monotonic clock are gone

    clock = FakeClock(wall_ms=clock.wall_ms() + 100_000, monotonic=5.0)  # off for 100 s
    state = SqliteRulesState(db)
    timers = DurableTimers(state, clock)
    assert timers.next_due_in_s() is None  # held until the socket is read again
    assert [t.key for t in timers.held()] == ["socket-2"]
    timers.confirm("socket-2")  # still empty
    assert timers.next_due_in_s() == pytest.approx(300)
    clock.advance(299)
    assert timers.check() == []
    clock.advance(1)
    assert [e.type for e in timers.check()] == [EXPIRED_TYPE]
    state.close()

    clock = FakeClock(wall_ms=clock.wall_ms() + 10_000, monotonic=1.0)  # restart after firing
    state = SqliteRulesState(db)
    timers = DurableTimers(state, clock)
    assert timers.next_due_in_s() is None
    clock.advance(3600)
    assert timers.check() == []
    assert [t.key for t in timers.latched()] == ["socket-2"]
    state.close()


@pytest.mark.parametrize("step_ms", [HOUR_MS, -HOUR_MS])
def test_a_wall_step_while_running_neither_advances_nor_delays_expiry(
    db: Path, step_ms: int
) -> None:
    clock = FakeClock()
    state = SqliteRulesState(db)
    timers = DurableTimers(state, clock)
    timers.start("socket-2", BOLLARD, 600)
    clock.advance(100)
    clock.set_wall(clock.wall_ms() + step_ms)
    assert timers.check() == []  # +1 h does not fire it early
    assert timers.next_due_in_s() == pytest.approx(500)
    stored = state.timer("socket-2")
    assert stored is not None
    assert stored.deadline_ms == clock.wall_ms() + 500_000  # the record follows the step
    clock.advance(499)
    assert timers.check() == []
    clock.advance(1)
    assert [e.type for e in timers.check()] == [EXPIRED_TYPE]  # -1 h does not hold it
    state.close()


@pytest.mark.parametrize(
    ("step_ms", "left_s"),
    [(HOUR_MS, 0.0), (-HOUR_MS, 600.0)],
)
def test_a_wall_step_while_off_is_clamped_to_the_timer_duration(
    db: Path, step_ms: int, left_s: float
) -> None:
    clock = FakeClock()
    state = SqliteRulesState(db)
    DurableTimers(state, clock).start("socket-2", BOLLARD, 600)
    state.close()

    clock = FakeClock(wall_ms=clock.wall_ms() + step_ms, monotonic=1.0)
    state = SqliteRulesState(db)
    timers = DurableTimers(state, clock)
    timers.confirm("socket-2")
    assert timers.next_due_in_s() == pytest.approx(left_s)
    clock.advance(left_s)
    assert [e.type for e in timers.check()] == [EXPIRED_TYPE]
    assert timers.check() == []
    state.close()


def test_a_held_timer_never_fires_and_stops_silently_when_its_bollard_is_back(db: Path) -> None:
    clock = FakeClock()
    state = SqliteRulesState(db)
    DurableTimers(state, clock).start("socket-2", BOLLARD, 600)
    state.close()

    clock = FakeClock(wall_ms=clock.wall_ms() + HOUR_MS, monotonic=1.0)  # past its deadline
    state = SqliteRulesState(db)
    timers = DurableTimers(state, clock)
    clock.advance(10)
    assert timers.check() == []
    assert timers.stop("socket-2") == []
    assert state.timers() == []
    state.close()


def test_the_expiry_is_on_the_alarm_lane() -> None:
    assert lane_of(EXPIRED_TYPE) is Lane.ALARM
