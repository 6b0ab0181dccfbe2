"""Test mode against a real store on a fake clock: events stored while it is on carry
`test: true`, its start is announced before anything is marked and its end after, it ends by
itself when its minutes are up, and its end time survives a restart (kept running, or ended at
start-up when it ran out while the gateway was down). The walk test's receipts are read from
the store: each press timed hop by hop (seen, stored, each broker's PUBACK, acknowledged)."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drivers.base import PanicPress
from gateway.alarms.latch import AlarmLatches, BoxInfo
from gateway.alarms.test_mode import UNTIL_KEY, TestMode, TestModeError
from gateway.core import contract
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Severity, new_event
from gateway.store import sql
from gateway.store.outbox import Marks
from gateway.store.routing import Router
from gateway.store.storage import Storage

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))
BOX = DeviceRef("box", "alarm_box", "front gate")
ROUTES = Router({"police": ["*"], "bureau": ["*"]})
START_MS = 1_795_000_000_000


def stored(path: Path) -> list[tuple[str, bool, dict[str, object]]]:
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT body FROM events ORDER BY seq").fetchall()
    finally:
        db.close()
    return [(b["type"], b["test"], b["data"]) for b in (json.loads(r[0]) for r in rows)]


@asynccontextmanager
async def gate(path: Path, clock: FakeClock) -> AsyncIterator[tuple[Storage, TestMode]]:
    """A store and its test mode, as the daemon wires them; the timer runs in a TaskGroup."""
    mode: TestMode
    async with Storage(
        path,
        SITE,
        ROUTES,
        marks=Marks(test=lambda: mode.active()),  # noqa: PLW0108 - made next
        clock=clock,
    ) as store:
        mode = TestMode(store.outbox, store.log.memory("gateway"), SITE, clock=clock)
        await mode.restore()
        async with asyncio.TaskGroup() as tg:
            timer = tg.create_task(mode.run(), name="test-mode:timer")
            yield store, mode
            await store.outbox.flush()
            timer.cancel()


async def press(store: Storage, at_ms: int) -> None:
    await store.outbox.append(
        new_event("alarm.panic", BOX, severity=Severity.CRITICAL, occurred_at_ms=at_ms)
    )


async def test_events_are_marked_while_on_and_it_ends_by_itself(tmp_path: Path) -> None:
    clock = FakeClock(wall_ms=START_MS)
    async with gate(tmp_path / "o.db", clock) as (store, mode):
        until_ms = await mode.start(minutes=2, by="installer")
        assert until_ms == START_MS + 120_000
        await press(store, clock.wall_ms())
        await clock.run_for(119)
        assert mode.active()  # not a second early
        await clock.run_for(1)
        assert not mode.active()
        await mode.ended.wait()  # the timer's stop is stored
        await press(store, clock.wall_ms())
    assert stored(tmp_path / "o.db") == [
        (
            "gateway.test_started",
            True,
            {
                "by": "installer",
                "minutes": 2,
                "until": contract.iso_ms(START_MS + 120_000, SITE.tz),
            },
        ),
        ("alarm.panic", True, {}),
        ("gateway.test_stopped", True, {"by": "timer"}),
        ("alarm.panic", False, {}),  # real again
    ]


async def test_stop_by_hand_and_the_refusals(tmp_path: Path) -> None:
    clock = FakeClock(wall_ms=START_MS)
    async with gate(tmp_path / "o.db", clock) as (_store, mode):
        with pytest.raises(TestModeError, match="not on"):
            await mode.stop(by="installer")
        with pytest.raises(TestModeError, match=r"minutes must be 1\.\.240"):
            await mode.start(minutes=241, by="installer")
        await mode.start(minutes=30, by="installer")
        with pytest.raises(
            TestModeError,
            match=re.escape("already on until " + contract.iso_ms(START_MS + 1_800_000, SITE.tz)),
        ):
            await mode.start(minutes=5, by="installer")
        await mode.stop(by="guard Wang")
        assert not mode.active()
    types = [(t, data.get("by")) for t, _test, data in stored(tmp_path / "o.db")]
    assert types == [("gateway.test_started", "installer"), ("gateway.test_stopped", "guard Wang")]


async def test_a_restart_keeps_test_mode_until_its_stored_end(tmp_path: Path) -> None:
    clock = FakeClock(wall_ms=START_MS)
    async with gate(tmp_path / "o.db", clock) as (_store, mode):
        await mode.start(minutes=10, by="installer")
    clock.set_wall(START_MS + 300_000)  # back five minutes later
    async with gate(tmp_path / "o.db", clock) as (store, mode):
        assert mode.active()
        assert mode.until_ms == START_MS + 600_000
        await press(store, clock.wall_ms())
        await clock.run_for(300)
        await mode.ended.wait()
    assert [(t, test) for t, test, _ in stored(tmp_path / "o.db")] == [
        ("gateway.test_started", True),
        ("alarm.panic", True),
        ("gateway.test_stopped", True),
    ]


async def test_test_mode_that_ran_out_while_down_is_ended_at_start(tmp_path: Path) -> None:
    clock = FakeClock(wall_ms=START_MS)
    async with gate(tmp_path / "o.db", clock) as (_store, mode):
        await mode.start(minutes=10, by="installer")
    clock.set_wall(START_MS + 3_600_000)  # the gateway was down for an hour
    async with gate(tmp_path / "o.db", clock) as (store, mode):
        assert not mode.active()  # ended by `restore`, before anything else is stored
        await press(store, clock.wall_ms())
        assert await store.log.memory("gateway").recall(UNTIL_KEY) == 0
    assert stored(tmp_path / "o.db")[1:] == [
        ("gateway.test_stopped", True, {"by": "timer"}),
        ("alarm.panic", False, {}),
    ]


async def test_the_receipts_time_each_press_hop_by_hop(tmp_path: Path) -> None:
    """A press in test mode: seen by the driver, stored, taken by the police broker (the bureau
    not yet), acknowledged by the police; a press before the test is not in the report."""
    clock = FakeClock(wall_ms=START_MS)
    boxes = {"box": BoxInfo(device=BOX, button_names={0: "desk"})}
    async with gate(tmp_path / "o.db", clock) as (store, mode):
        latches = AlarmLatches(store.alarms, boxes, clock=clock)
        assert await store.log.call(sql.test_receipts) == []  # no test ever started
        await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=clock.wall_ms()))
        await mode.start(minutes=30, by="installer")
        seen_ms = clock.wall_ms() + 1_000
        clock.set_wall(seen_ms)
        await latches.panic_pressed(PanicPress("box", 1, presses=1, occurred_at_ms=seen_ms))
        test_alarm = latches.open_alarms[-1]
        [claimed] = [
            row for row in await store.queue.claim("police", 10) if row.seq == max(test_alarm.seqs)
        ]
        clock.set_wall(seen_ms + 40)
        await store.queue.mark_sent("police", [claimed.seq])
        clock.set_wall(seen_ms + 2_500)
        await latches.acknowledge(
            test_alarm.alarm_id,
            by="Officer Li",
            issuer="police-1",
            command_id="c-1",
            occurred_at_ms=clock.wall_ms(),
        )
        [receipt] = await store.log.call(sql.test_receipts)
    assert receipt["alarm_id"] == test_alarm.alarm_id
    assert (receipt["device"], receipt["button"], receipt["seen_ms"]) == ("box", 1, seen_ms)
    stored_ms = receipt["stored_ms"]
    assert isinstance(stored_ms, int) and stored_ms >= seen_ms
    assert receipt["sent_ms"] == {"bureau": None, "police": seen_ms + 40}
    assert (receipt["acked_ms"], receipt["acked_by"]) == (seen_ms + 2_500, "Officer Li")
