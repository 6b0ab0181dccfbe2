"""Path supervision against a real store, on a fake clock (nothing sleeps for real): a path
down for `report_after_s` is reported to the other destinations (whatever their routes) and
lights the fault output; a short outage is not; the end of a reported outage is told to every
destination and puts the output out."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.core import contract
from gateway.core.clock import FakeClock
from gateway.store.routing import Router
from gateway.store.storage import Storage
from gateway.uplink.paths import PathBoard

SITE = contract.Site("school-1", "gate-1", ZoneInfo("UTC"))


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Storage]:
    # The police take only alarms: a path event reaches them only because it overrides routes.
    async with Storage(
        tmp_path / "o.db", SITE, Router({"police": ["alarm.*"], "bureau": ["*"]})
    ) as store:
        yield store


def stored(store: Storage) -> list[tuple[str, str, list[str]]]:
    db = sqlite3.connect(store.log.path)
    try:
        rows = db.execute(
            "SELECT e.type, e.body, group_concat(d.destination) FROM events e"
            " JOIN deliveries d ON d.seq = e.seq GROUP BY e.seq ORDER BY e.seq"
        ).fetchall()
    finally:
        db.close()
    return [(t, json.loads(b)["data"]["destination"], sorted(d.split(","))) for t, b, d in rows]


class Faults:
    """The fault output, as the board drives it: each change queued for the test to await."""

    def __init__(self) -> None:
        self.seen: list[bool] = []
        self._changes: asyncio.Queue[bool] = asyncio.Queue()

    async def __call__(self, on: bool) -> None:
        self.seen.append(on)
        self._changes.put_nowait(on)

    async def next(self) -> bool:
        # The store's thread commits the event before the output is driven: wait on that.
        async with asyncio.timeout(5):
            return await self._changes.get()


async def test_an_outage_longer_than_the_report_time_is_a_fault_on_the_other_path(
    store: Storage,
) -> None:
    clock, faults = FakeClock(), Faults()
    board = PathBoard(
        ["police", "bureau"],
        store.outbox,
        SITE,
        report_after_s=30,
        fault_output=faults,
        clock=clock,
    )
    board.up("police")
    board.up("bureau")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(board.run())
        board.down("police", "connection refused")
        await clock.run_for(29.9)  # not yet: under the report time
        assert stored(store) == [] and faults.seen == []
        assert clock.next_deadline() is not None  # the supervisor waits on the clock
        await clock.run_for(0.2)
        assert await faults.next() is True
        assert stored(store) == [("gateway.path_down", "police", ["bureau"])]
        assert board.in_fault
        assert board.snapshot() == {"police": "down", "bureau": "up"}
        await clock.run_for(5)
        board.up("police")
        assert await faults.next() is False
        assert stored(store)[-1] == ("gateway.path_up", "police", ["bureau", "police"])
        assert faults.seen == [True, False] and not board.in_fault
        assert board.paths["police"].outage_ms == 35_100
        task.cancel()


async def test_a_short_outage_is_not_reported(store: Storage) -> None:
    clock, faults = FakeClock(), Faults()
    board = PathBoard(
        ["police", "bureau"],
        store.outbox,
        SITE,
        report_after_s=30,
        fault_output=faults,
        clock=clock,
    )
    board.up("police")
    board.up("bureau")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(board.run())
        board.down("bureau", "timeout")
        await clock.settle()
        assert clock.sleepers == 1  # the supervisor sleeps until the report time
        await clock.run_for(10)
        board.up("bureau")
        await clock.settle()
        # The positive sign it looked again: no deadline left, nothing asleep on the clock.
        assert clock.sleepers == 0
        await clock.run_for(600)
        task.cancel()
    assert stored(store) == [] and faults.seen == [] and not board.in_fault


async def test_a_path_that_never_comes_up_is_reported(store: Storage) -> None:
    clock, faults = FakeClock(), Faults()
    board = PathBoard(
        ["police", "bureau"],
        store.outbox,
        SITE,
        report_after_s=30,
        fault_output=faults,
        clock=clock,
    )
    board.up("bureau")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(board.run())
        await clock.run_for(30)
        assert await faults.next() is True
        task.cancel()
    assert stored(store) == [("gateway.path_down", "police", ["bureau"])]


async def test_a_wall_clock_step_neither_hastens_nor_delays_the_report(store: Storage) -> None:
    clock, faults = FakeClock(), Faults()
    board = PathBoard(
        ["police", "bureau"],
        store.outbox,
        SITE,
        report_after_s=30,
        fault_output=faults,
        clock=clock,
    )
    board.up("bureau")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(board.run())
        await clock.settle()
        clock.set_wall(clock.wall_ms() + 3_600_000)  # an NTP correction an hour forward
        board.down("bureau", "timeout")  # wakes the supervisor under the stepped wall clock
        await clock.run_for(29)
        assert faults.seen == []
        await clock.run_for(1)
        assert await faults.next() is True
        task.cancel()
