"""Drill mode against a real store: events stored during a drill are marked, the start and stop
are recorded, and a drill ends by itself when its minutes are up (on a fake clock)."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.alarms.drill import Drill
from gateway.core import contract
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Severity, new_event
from gateway.store.outbox import Marks
from gateway.store.routing import Router
from gateway.store.storage import Storage

SITE = contract.Site("school-1", "gate-1", ZoneInfo("UTC"))
BOX = DeviceRef("box", "alarm_box", "")


def stored(path: Path) -> list[tuple[str, bool, dict[str, object]]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT body FROM events ORDER BY seq").fetchall()
    finally:
        db.close()
    return [(b["type"], b["drill"], b["data"]) for b in (json.loads(r[0]) for r in rows)]


async def test_a_drill_marks_what_is_stored_and_ends_by_itself(tmp_path: Path) -> None:
    drill: Drill
    async with Storage(
        tmp_path / "o.db",
        SITE,
        Router({"police": ["*"]}),
        marks=Marks(drill=lambda: drill.active()),  # noqa: PLW0108 - made next
    ) as store:
        clock = FakeClock()
        drill = Drill(store.outbox, clock=clock)
        async with asyncio.TaskGroup() as tg:
            timer = tg.create_task(drill.run())
            await drill.start(minutes=1, by="Officer Li")
            await store.outbox.append(
                new_event("alarm.panic", BOX, severity=Severity.CRITICAL, occurred_at_ms=1)
            )
            await clock.run_for(59)
            assert drill.active()  # not a second early
            clock.set_wall(clock.wall_ms() - 3_600_000)  # a wall step back does not stretch it
            await clock.run_for(1)
            assert not drill.active()
            await store.outbox.flush()  # the timer's stop went to the store
            await store.outbox.append(
                new_event("alarm.panic", BOX, severity=Severity.CRITICAL, occurred_at_ms=2)
            )
            timer.cancel()
    assert stored(tmp_path / "o.db") == [
        ("gateway.drill_started", True, {"by": "Officer Li", "minutes": 1}),
        ("alarm.panic", True, {}),
        ("gateway.drill_stopped", False, {"by": "timer"}),
        ("alarm.panic", False, {}),
    ]
