"""Path supervision against a real outbox: a path down for `report_after_s` is reported to the
other destinations (whatever their routes) and lights the fault output; a short outage is not;
the end of a reported outage is told to every destination and puts the output out."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.core import contract
from gateway.store.outbox import Outbox
from gateway.store.routing import Router
from gateway.uplink.paths import PathBoard

SITE = contract.Site("school-1", "gate-1", ZoneInfo("UTC"))


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    # The police take only alarms: a path event reaches them only because it overrides routes.
    async with Outbox(
        tmp_path / "o.db", SITE, Router({"police": ["alarm.*"], "bureau": ["*"]})
    ) as box:
        yield box


def stored(outbox: Outbox) -> list[tuple[str, str, list[str]]]:
    db = sqlite3.connect(outbox.path)
    try:
        rows = db.execute(
            "SELECT e.type, e.body, group_concat(d.destination) FROM events e"
            " JOIN deliveries d ON d.seq = e.seq GROUP BY e.seq ORDER BY e.seq"
        ).fetchall()
    finally:
        db.close()
    return [(t, json.loads(b)["data"]["destination"], sorted(d.split(","))) for t, b, d in rows]


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def until(condition: Callable[[], bool]) -> None:
    """Bounded wait for the supervisor (its timer and the store's thread run meanwhile)."""
    async with asyncio.timeout(5):
        while not condition():  # noqa: ASYNC110 - the store thread's commit is the event
            await asyncio.sleep(0.005)


async def test_an_outage_longer_than_the_report_time_is_a_fault_on_the_other_path(
    outbox: Outbox,
) -> None:
    clock, faults = Clock(), []

    async def fault(on: bool) -> None:
        faults.append(on)

    board = PathBoard(
        ["police", "bureau"], outbox, SITE, report_after_s=0.05, fault_output=fault, clock_ms=clock
    )
    board.up("police")
    board.up("bureau")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(board.run())
        board.down("police", "connection refused")
        await settle()
        assert stored(outbox) == [] and faults == []  # not yet: under the report time
        clock.now += 60
        await until(lambda: faults == [True])  # the supervisor's timer runs in real time
        assert stored(outbox) == [("gateway.path_down", "police", ["bureau"])]
        assert faults == [True] and board.in_fault
        assert board.snapshot() == {"police": "down", "bureau": "up"}
        clock.now += 5_000
        board.up("police")
        await until(lambda: faults == [True, False])
        assert stored(outbox)[-1] == ("gateway.path_up", "police", ["bureau", "police"])
        assert faults == [True, False] and not board.in_fault
        task.cancel()


async def test_a_short_outage_is_not_reported(outbox: Outbox) -> None:
    # The supervisor's timer (real time) is due during the test; by then the path is back, and
    # the (fake) clock is far past the report time: only an outage still going is reported.
    clock = Clock()
    board = PathBoard(["police", "bureau"], outbox, SITE, report_after_s=0.05, clock_ms=clock)
    board.up("police")
    board.up("bureau")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(board.run())
        board.down("bureau", "timeout")
        await settle()  # the supervisor now sleeps until the report time
        clock.now += 10
        board.up("bureau")
        clock.now += 60_000
        await asyncio.sleep(0.2)  # past the timer: it wakes, and must find nothing to report
        task.cancel()
    assert stored(outbox) == [] and not board.in_fault


async def test_a_path_that_never_comes_up_is_reported(outbox: Outbox) -> None:
    board = PathBoard(["police", "bureau"], outbox, SITE, report_after_s=0.05)
    board.up("bureau")
    async with asyncio.TaskGroup() as tg:
        task = tg.create_task(board.run())
        await until(lambda: bool(stored(outbox)))
        task.cancel()
    assert stored(outbox) == [("gateway.path_down", "police", ["bureau"])]
