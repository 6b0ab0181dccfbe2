"""The rules engine on the fake clock with the real SQLite state: the drivers' events in, the
rule events out, across restarts (a new engine on the same file is a restart)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from edge_config.calendar import Calendar
from edge_config.rules import RuleCommand, RulesConfig
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Event, Lane, Severity, new_event
from gateway.rules.calendar import SchoolCalendar
from gateway.rules.engine import RulesEngine, RulesLinks
from gateway.rules.sqlite_state import SqliteRulesState

TZ = ZoneInfo("Asia/Shanghai")
SOCKETS = DeviceRef("sockets-1", "bollard_sockets", "east gate")
BOLLARD = DeviceRef("bollard-1", "bollard", "east gate")
ACCESS = DeviceRef("access-east", "access_controller", "east door")
DEVICES = {d.id: d for d in (SOCKETS, BOLLARD, ACCESS)}
CALENDAR = SchoolCalendar(
    Calendar.model_validate(
        {
            "year_start": datetime(2026, 9, 1).date(),
            "year_end": datetime(2027, 8, 31).date(),
            "weekdays": {"monday": [{"name": "arrival", "start": "07:00", "end": "08:10"}]},
        }
    ),
    TZ,
)
RULES = RulesConfig.model_validate(
    {
        "calendar_file": "calendar.toml",
        "window": [
            {"id": "bollards-up", "devices": ["bollard-1"], "required_state": "up", "grace_s": 120}
        ],
        "socket_timer": [{"device": "sockets-1", "sockets": {"socket-1": 10}}],
        "patrol": [
            {
                "id": "main",
                "checkpoints": [
                    {"device": "access-east", "reader": 1},
                    {"device": "access-east", "reader": 2},
                ],
                "rounds_required": 5,
                "latest": "22:00",
                "tolerance_s": 900,
            }
        ],
    }
)


def wall(day: int, hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(datetime(2026, 9, day, int(hours), int(minutes), tzinfo=TZ).timestamp() * 1000)


class Gate:
    """One engine on the state file, its task, and what it emitted."""

    def __init__(self, db: Path, clock: FakeClock, command_error: Exception | None = None) -> None:
        self.state = SqliteRulesState(db)
        self.clock = clock
        self.emitted: list[Event] = []
        self.commands: list[tuple[str, str]] = []
        self._command_error = command_error
        self.engine = RulesEngine(
            RULES, CALENDAR, self.state, RulesLinks(clock, DEVICES, self.emit, self.command)
        )

    async def emit(self, event: Event) -> Event:
        self.emitted.append(event)
        return event

    async def command(
        self, device_id: str, name: str, args: Mapping[str, object]
    ) -> dict[str, object]:
        self.commands.append((device_id, name))
        if self._command_error is not None:
            raise self._command_error
        return {"done": True}

    def types(self) -> list[str]:
        return [e.type for e in self.emitted]

    async def feed(self, device: DeviceRef, type: str, **data: Any) -> None:
        self.engine.on_stored(
            new_event(
                type, device, severity=Severity.INFO, occurred_at_ms=self.clock.wall_ms(), data=data
            )
        )
        await self.clock.settle()


@contextlib.asynccontextmanager
async def running(gate: Gate) -> AsyncIterator[Gate]:
    task = asyncio.create_task(gate.engine.run(), name="rules:engine")
    await gate.clock.settle()
    try:
        yield gate
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        gate.state.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


async def test_a_socket_timer_across_a_restart_fires_exactly_once(db: Path) -> None:
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    async with running(Gate(db, clock)) as gate:
        await gate.feed(SOCKETS, "bollard.pulled", socket="socket-1", input=0)
        await clock.run_for(6 * 60)
        assert "bollard.not_reinserted" not in gate.types()
    # the restart: a new process (a new monotonic origin) on the same file
    clock = FakeClock(wall_ms=clock.wall_ms() + 30_000, monotonic=5.0)
    async with running(Gate(db, clock)) as gate:
        # the driver's first poll: the socket is still empty
        await gate.feed(SOCKETS, "bollard.pulled", socket="socket-1", input=0, initial=True)
        gate.engine.on_device_ready(SOCKETS.id)
        await clock.run_for(3 * 60)
        assert gate.types().count("bollard.not_reinserted") == 0
        await clock.run_for(60)
        expired = [e for e in gate.emitted if e.type == "bollard.not_reinserted"]
        assert len(expired) == 1
        assert expired[0].lane is Lane.ALARM
        assert expired[0].data["socket"] == "socket-1"
        await clock.run_for(3600)
    clock = FakeClock(wall_ms=clock.wall_ms() + 1_000, monotonic=7.0)
    async with running(Gate(db, clock)) as gate:  # fired is stored: never again
        await clock.run_for(3600)
        assert "bollard.not_reinserted" not in gate.types()
        await gate.feed(SOCKETS, "bollard.inserted", socket="socket-1", input=0)
        assert gate.types() == ["bollard.reinserted"]


async def test_a_socket_back_in_time_fires_nothing(db: Path) -> None:
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    async with running(Gate(db, clock)) as gate:
        await gate.feed(SOCKETS, "bollard.pulled", socket="socket-1", input=0)
        await clock.run_for(9 * 60)
        await gate.feed(SOCKETS, "bollard.inserted", socket="socket-1", input=0)
        await clock.run_for(3600)
        assert gate.types() == []


async def test_a_window_violation_after_grace_and_its_restore(db: Path) -> None:
    clock = FakeClock(wall_ms=wall(7, "09:00"))  # a Monday, after the arrival window
    async with running(Gate(db, clock)) as gate:
        await gate.feed(BOLLARD, "bollard.state", position="down", previous="up")
        await clock.run_for(119)
        assert "rule.violation" not in gate.types()
        await clock.run_for(2)
        assert gate.types() == ["rule.violation", "ledger.opened"]
        violation = gate.emitted[0]
        assert violation.data["rule"] == "bollards-up"
        assert violation.data["state"] == "down"
        await gate.feed(BOLLARD, "bollard.state", position="up", previous="down")
        assert gate.types()[2:] == ["rule.restored", "ledger.closed"]
        assert gate.emitted[2].data["violation_id"] == violation.id


async def test_an_open_violation_is_not_repeated_after_a_restart(db: Path) -> None:
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    async with running(Gate(db, clock)) as gate:
        await gate.feed(BOLLARD, "bollard.state", position="down", previous="up")
        await clock.run_for(200)
        assert gate.types().count("rule.violation") == 1
    clock = FakeClock(wall_ms=clock.wall_ms() + 10_000, monotonic=3.0)
    async with running(Gate(db, clock)) as gate:
        await gate.feed(BOLLARD, "bollard.state", position="down", previous="unknown")
        await clock.run_for(600)
        assert "rule.violation" not in gate.types()
        await gate.feed(BOLLARD, "bollard.state", position="up", previous="down")
        assert gate.types() == ["rule.restored", "ledger.closed"]


async def test_a_patrol_day_with_four_rounds_gives_patrol_missed(db: Path) -> None:
    clock = FakeClock(wall_ms=wall(7, "08:00"))
    async with running(Gate(db, clock)) as gate:
        for _ in range(4):
            await gate.feed(ACCESS, "access.card", card="guard-7", reader=1, granted=True)
            await clock.run_for(300)
            await gate.feed(ACCESS, "access.card", card="guard-7", reader=2, granted=True)
            await clock.run_for(3 * 3600)
        assert gate.types().count("patrol.round_completed") == 4
        assert "patrol.missed" not in gate.types()
        await clock.run_for(wall(7, "22:00") / 1000 - clock.wall_ms() / 1000 + 1)
        missed = [e for e in gate.emitted if e.type == "patrol.missed"]
        assert len(missed) == 1
        assert missed[0].data["rounds_done"] == 4
        assert missed[0].data["rounds_missing"] == 1
        await clock.run_for(3600)
        assert gate.types().count("patrol.missed") == 1


async def test_a_device_offline_opens_a_ledger_entry_and_online_closes_it(db: Path) -> None:
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    async with running(Gate(db, clock)) as gate:
        await gate.feed(BOLLARD, "device.offline", error="timeout")
        assert gate.types() == ["ledger.opened"]
        entry = gate.emitted[0].data["entry"]
        assert [e.id for e in gate.state.ledger_entries(open_only=True)] == [entry]
        await clock.run_for(3600)
        await gate.feed(BOLLARD, "device.online")
        assert gate.types() == ["ledger.opened", "ledger.closed"]
        assert gate.emitted[1].data["entry"] == entry
        assert gate.emitted[1].data["closed_by"] == "auto"
        assert gate.state.ledger_entries(open_only=True) == []


async def test_an_entry_open_past_its_deadline_is_reported_overdue_once(db: Path) -> None:
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    async with running(Gate(db, clock)) as gate:
        await gate.feed(BOLLARD, "device.offline", error="timeout")
        await clock.run_for(24 * 3600 + 1)
        assert gate.types().count("ledger.overdue") == 1
        await clock.run_for(3600)
        assert gate.types().count("ledger.overdue") == 1


async def test_a_failing_action_is_reported_and_the_engine_goes_on(db: Path) -> None:
    rules = RULES.model_copy(
        update={
            "window": [
                RULES.window[0].model_copy(update={"on_violation": [RuleCommand(command="raise")]})
            ]
        }
    )
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    gate = Gate(db, clock, command_error=RuntimeError("no answer"))
    gate.engine = RulesEngine(
        rules, CALENDAR, gate.state, RulesLinks(clock, DEVICES, gate.emit, gate.command)
    )
    async with running(gate):
        await gate.feed(BOLLARD, "bollard.state", position="down", previous="up")
        await clock.run_for(121)
        actions = [e for e in gate.emitted if e.type == "rule.action"]
        assert [(a.data["command"], a.data["ok"], a.data["error"]) for a in actions] == [
            ("raise", False, "no answer")
        ]
        await gate.feed(BOLLARD, "device.offline", error="timeout")
        assert gate.types()[-1] == "ledger.opened"


async def test_a_bad_input_is_counted_and_the_engine_goes_on(db: Path) -> None:
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    gate = Gate(db, clock)
    disk_ok = False

    async def flaky_emit(event: Event) -> Event:
        if not disk_ok:
            raise OSError("disk gone")
        return await gate.emit(event)

    gate.engine = RulesEngine(RULES, CALENDAR, gate.state, RulesLinks(clock, DEVICES, flaky_emit))
    async with running(gate):
        await gate.feed(BOLLARD, "device.offline", error="timeout")
        assert gate.engine.refused == 1
        disk_ok = True
        await gate.feed(BOLLARD, "device.online")
        assert gate.types() == ["ledger.closed"]


async def test_a_bollard_put_back_while_the_gateway_was_off_fires_no_stored_timer(
    db: Path,
) -> None:
    """Regression: the stored timer fired after a restart although the bollard was back in.
    The driver's first poll reports only empty sockets; once it has polled (ready) and said
    nothing of socket-1, the socket is occupied and its stored timer is stopped unfired."""
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    async with running(Gate(db, clock)) as gate:
        await gate.feed(SOCKETS, "bollard.pulled", socket="socket-1", input=0)
        await clock.run_for(5 * 60)
    # off for 20 minutes (past the 10-minute deadline); the bollard went back meanwhile
    clock = FakeClock(wall_ms=clock.wall_ms() + 20 * 60_000, monotonic=4.0)
    async with running(Gate(db, clock)) as gate:
        await clock.run_for(5)  # before the driver's first poll: nothing is judged yet
        assert gate.types() == []
        gate.engine.on_device_ready(SOCKETS.id)
        await clock.settle()
        await clock.run_for(3600)
        assert gate.types() == []
        assert gate.state.timers() == []


async def pulled_then_off_20_minutes(db: Path) -> FakeClock:
    """socket-1 pulled, then the gateway off for 20 minutes: the clock of the next start."""
    clock = FakeClock(wall_ms=wall(7, "09:00"))
    async with running(Gate(db, clock)) as gate:
        await gate.feed(SOCKETS, "bollard.pulled", socket="socket-1", input=0)
    return FakeClock(wall_ms=clock.wall_ms() + 20 * 60_000, monotonic=4.0)


async def test_a_socket_still_empty_after_a_restart_fires_once_its_first_poll_says_so(
    db: Path,
) -> None:
    clock = await pulled_then_off_20_minutes(db)
    async with running(Gate(db, clock)) as gate:
        await clock.run_for(5)
        assert gate.types() == []  # held until the socket's state is read
        await gate.feed(SOCKETS, "bollard.pulled", socket="socket-1", input=0, initial=True)
        gate.engine.on_device_ready(SOCKETS.id)
        await clock.settle()
        expired = [e for e in gate.emitted if e.type == "bollard.not_reinserted"]
        assert len(expired) == 1
        assert expired[0].data["socket"] == "socket-1"  # the name, as in bollard.pulled


async def test_a_stored_timer_of_a_device_that_never_answers_fires_when_it_goes_offline(
    db: Path,
) -> None:
    clock = await pulled_then_off_20_minutes(db)
    async with running(Gate(db, clock)) as gate:
        await gate.feed(SOCKETS, "device.offline", error="timeout")
        assert "bollard.not_reinserted" in gate.types()  # cannot be read: assume still out
