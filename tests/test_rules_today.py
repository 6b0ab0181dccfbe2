"""What the rules say about today for the guard's page (gateway/rules/today.py, through
`RulesEngine.today`), on the fake clock with the real SQLite state: the day's gate windows, the
patrol tally against the target, an open violation and an overdue ledger entry; the engine tells
its watcher after each step. And the daemon's `GuardSource` turns it into the page's view."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from test_rules_engine import ACCESS, BOLLARD, CALENDAR, DEVICES, RULES, TZ, Gate, running, wall

from gateway.core.clock import FakeClock
from gateway.rules.engine import RulesEngine, RulesLinks


async def test_today_shows_windows_patrols_violations_and_overdue_entries(tmp_path: Path) -> None:
    clock = FakeClock(wall_ms=wall(7, "09:00"))  # a Monday, after the arrival window
    gate = Gate(tmp_path / "outbox.db", clock)
    told: list[int] = []
    gate.engine = RulesEngine(
        RULES, CALENDAR, gate.state,
        RulesLinks(clock, DEVICES, gate.emit, changed=lambda: told.append(clock.wall_ms())),
    )  # fmt: skip
    async with running(gate):
        today = gate.engine.today()
        ((name, start, end),) = [(w.name, w.start, w.end) for w in today.windows]
        assert (name, _ms(start), _ms(end)) == ("arrival", wall(7, "07:00"), wall(7, "08:10"))
        assert (today.patrols_done, today.patrols_target) == (0, 5)
        assert today.violations == () and today.overdue == ()
        steps = len(told)
        assert steps >= 1  # the first step at start

        for reader in (1, 2):  # one round of the patrol
            await gate.feed(ACCESS, "access.card", reader=reader, card="guard-7")
        await gate.feed(BOLLARD, "bollard.state", position="down")  # must be up outside it
        await gate.feed(ACCESS, "device.offline", error="no answer")
        assert len(told) > steps  # each step tells the page
        await clock.run_for(121)  # past the window rule's grace
        today = gate.engine.today()
        assert today.patrols_done == 1
        (broken,) = today.violations
        assert (broken.rule_id, broken.device_id, broken.opened_ms) == (
            "bollards-up",
            "bollard-1",
            wall(7, "09:00") + 120_000,
        )
        assert today.overdue == ()
        await clock.run_for(24 * 3600)  # the offline entry's repair time (24 h) runs out
        today = gate.engine.today()
        day_ms = 24 * 3_600_000
        assert [(e.kind, e.where, e.deadline_ms) for e in today.overdue] == [  # earliest first
            ("device_offline", "east door", wall(7, "09:00") + day_ms),
            ("rule_violation", "east gate", wall(7, "09:02") + day_ms),
        ]
        assert today.violations[0].rule_id == "bollards-up"  # still open: still down
        assert today.windows == ()  # Tuesday: no windows in this calendar
        assert today.patrols_done == 0  # a new day's tally


async def test_a_day_outside_the_calendar_has_no_windows(tmp_path: Path) -> None:
    clock = FakeClock(wall_ms=int(datetime(2030, 1, 7, 8, 0, tzinfo=TZ).timestamp() * 1000))
    gate = Gate(tmp_path / "outbox.db", clock)
    try:
        assert gate.engine.today().windows == ()
        assert CALENDAR.covers(datetime(2030, 1, 7).date()) is False
    finally:
        gate.state.close()


def _ms(at: datetime) -> int:
    return round(at.timestamp() * 1000)
