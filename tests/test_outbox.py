"""The store: ordering, per-destination progress, seq that survives restarts, latch restore."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.core import contract
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Event, Lane, Severity, new_event
from gateway.store.outbox import _MAX_BATCH as MAX_BATCH
from gateway.store.outbox import OutboxError
from gateway.store.routing import Router
from gateway.store.storage import Storage

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))
BOX = DeviceRef("box", "alarm_box", "north gate")
ROUTES = Router({"police": ["alarm.*"], "bureau": ["*"]})


def event(event_type: str, **kw: object) -> Event:
    severity = Severity.CRITICAL if event_type.startswith("alarm.panic") else Severity.INFO
    return new_event(event_type, BOX, severity=severity, occurred_at_ms=1_000, **kw)  # type: ignore[arg-type]


async def test_rows_are_routed_and_claimed_alarms_first_then_by_seq(tmp_path: Path) -> None:
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        t1 = await store.outbox.append(event("telemetry.temperature"))
        s1 = await store.outbox.append(event("device.online"))
        a1 = await store.outbox.append(event("alarm.panic", alarm_id="x"))
        t2 = await store.outbox.append(event("telemetry.temperature"))
        assert [t1.seq, s1.seq, a1.seq, t2.seq] == [1, 2, 3, 4]
        assert [r.seq for r in await store.queue.claim("bureau", 10)] == [3, 2, 1, 4]
        assert [r.seq for r in await store.queue.claim("police", 10)] == [3]
        assert await store.log.pending_count("bureau") == 4


async def test_mark_sent_is_per_destination_and_attempts_count_every_claim(tmp_path: Path) -> None:
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        await store.outbox.append(event("alarm.panic", alarm_id="x"))
        first = await store.queue.claim("police", 10)
        again = await store.queue.claim("police", 10)
        assert (first[0].attempt, again[0].attempt) == (1, 2)
        await store.queue.mark_sent("police", [first[0].seq])
        assert await store.queue.claim("police", 10) == []
        assert [r.seq for r in await store.queue.claim("bureau", 10)] == [1]


async def test_append_wakes_only_the_routed_destinations(tmp_path: Path) -> None:
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        store.queue.wakeup("police").clear()
        store.queue.wakeup("bureau").clear()
        await store.outbox.append(event("device.online"))
        assert store.queue.wakeup("bureau").is_set()
        assert not store.queue.wakeup("police").is_set()


async def test_an_alarm_is_on_disk_when_append_returns(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Storage(path, SITE, ROUTES) as store:
        stored = await store.outbox.append(event("alarm.panic", alarm_id="x"))
        # A second, independent connection (another process would see the same) finds it.
        other = sqlite3.connect(path)
        try:
            row = other.execute("SELECT id, type FROM events WHERE seq=?", (stored.seq,)).fetchone()
            assert row == (stored.id, "alarm.panic")
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        finally:
            other.close()


async def test_seq_grows_across_restarts_and_is_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Storage(path, SITE, ROUTES) as store:
        for _ in range(3):
            await store.outbox.append(event("device.online"))
        boot1 = store.log.boot_count
    with sqlite3.connect(path) as db:  # even if the newest rows were pruned
        db.execute("DELETE FROM events WHERE seq >= 2")
    db.close()
    async with Storage(path, SITE, ROUTES) as store:
        again = await store.outbox.append(event("device.online"))
        assert again.seq == 4
        assert store.log.boot_count == boot1 + 1


async def test_pending_rows_resume_after_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Storage(path, SITE, ROUTES) as store:
        await store.outbox.append(event("alarm.panic", alarm_id="x"))
        await store.outbox.append(event("device.online"))
        await store.queue.mark_sent("bureau", [1])
    async with Storage(path, SITE, ROUTES) as store:
        assert store.queue.wakeup("police").is_set()
        assert [r.seq for r in await store.queue.claim("police", 10)] == [1]
        assert [r.seq for r in await store.queue.claim("bureau", 10)] == [2]


async def test_open_alarms_are_those_without_a_reset(tmp_path: Path) -> None:
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        await store.outbox.append(event("alarm.panic", alarm_id="a", data={"button": 0}))
        await store.outbox.append(event("alarm.panic_repeated", alarm_id="a", data={"button": 0}))
        await store.outbox.append(event("alarm.panic", alarm_id="b", data={"button": 1}))
        await store.outbox.append(event("alarm.reset", alarm_id="b", data={"button": 1}))
        alarms = await store.log.open_alarms()
        assert [(a.alarm_id, a.button, a.presses) for a in alarms] == [("a", 0, 2)]


async def test_an_unopenable_store_starts_in_memory_and_says_why_and_how_to_fix_it(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    async with Storage(blocker / "o.db", SITE, ROUTES, recover_interval_s=0.01) as store:
        assert store.log.degraded and not store.log.store_open  # started all the same
        alarm = await store.outbox.append(event("alarm.panic", alarm_id="a", data={"button": 0}))
        rows = await store.queue.claim("bureau", 10)
        assert [r.type for r in rows] == ["alarm.panic", "gateway.storage_fault"]  # lane order
        fault = json.loads(rows[1].body)["data"]
        assert fault["fault"] == "cannot_open" and fault["cause"] == "folder_missing"
        assert (
            fault["hint"] == f"{blocker} is a file, not a folder: move it away or point"
            " store.path elsewhere"
        )
        assert rows[1].seq > 1_000_000_000_000  # a floor past any seq the file could hold
        assert (
            await store.log.open_alarms() == [] and await store.log.replay("police", 0, 2**62) == []
        )
        assert not await store.recover()  # still in the way: retried, nothing touched
        assert blocker.read_text() == ""
        blocker.unlink()
        assert await store.recover()
        assert store.log.store_open and store.log.store_opened.is_set()
        assert [a.alarm_id for a in await store.log.open_alarms()] == ["a"]
        later = await store.outbox.append(event("device.online"))
        assert (later.seq or 0) > (alarm.seq or 0)


async def test_two_senders_claiming_the_last_of_a_backfill_at_once_both_get_their_rows(
    tmp_path: Path,
) -> None:
    """Regression: the alarm sender and a backlog sender of one destination claimed together
    while the file's own pending rows were being handed out; both saw the backfill finished and
    the second `del` raised KeyError, which ended the uplink session (found under load)."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    async with Storage(blocker / "o.db", SITE, ROUTES, recover_interval_s=0.01) as store:
        alarm = await store.outbox.append(event("alarm.panic", alarm_id="a", data={"button": 0}))
        blocker.unlink()
        assert await store.recover()
        assert [r.type for r in await store.queue.claim("bureau", 10, lanes=[Lane.ALARM])] == [
            "alarm.panic"
        ]
        cursors = {Lane.ALARM: alarm.seq or 0}  # both senders are past the alarm already
        first, second = await asyncio.gather(
            store.queue.claim("bureau", 10, cursors), store.queue.claim("bureau", 10, cursors)
        )
        assert "gateway.storage_fault" in [r.type for r in first]
        assert [r.type for r in first] == [r.type for r in second]


async def test_using_a_closed_outbox_is_a_typed_error(tmp_path: Path) -> None:
    store = Storage(tmp_path / "o.db", SITE, ROUTES)
    await store.open()
    await store.close()
    with pytest.raises(OutboxError, match="closed"):  # typed, never silently dropped
        await store.outbox.append(event("device.online"))


async def test_a_cancel_that_meets_a_queued_event_stops_the_flusher(tmp_path: Path) -> None:
    """Regression: the flusher waited with asyncio.wait_for, which on Python 3.11 drops a cancel
    that arrives in the same loop turn as the event it waits for; the gateway's shutdown then
    waited for the flusher forever. The queued event is still stored by close()."""
    clock = FakeClock()
    async with Storage(tmp_path / "o.db", SITE, ROUTES, clock=clock) as store:
        flusher = asyncio.create_task(store.run())
        store.outbox.submit(event("device.online"))
        async with asyncio.timeout(5):
            await clock.sleeping()  # the flusher now waits out the batch delay
        for _ in range(MAX_BATCH):  # a full batch asks for the flush now...
            store.outbox.submit(event("device.online"))
        flusher.cancel()  # ...in the same turn as a shutdown
        done, _ = await asyncio.wait({flusher}, timeout=2.0)
        if not done:
            flusher.cancel()
            await asyncio.wait({flusher})
        assert done and flusher.cancelled(), "the flusher went on after its cancel"
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        assert await store.log.pending_count("bureau") == MAX_BATCH + 1


async def test_a_claimed_body_is_byte_for_byte_the_stored_one(tmp_path: Path) -> None:
    """Claims come back as one JSON aggregate: quotes, backslashes, control characters and
    non-ASCII text in a body must survive the round trip unchanged."""
    odd = 'North gate 北门 "booth" \\ back\nslash \u0007 \U0001f6a8'
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        stored = [
            await store.outbox.append(event("device.online", data={"note": odd})) for _ in range(3)
        ]
        claimed = await store.queue.claim("bureau", 10)
        with sqlite3.connect(tmp_path / "o.db") as db:
            bodies = [b.encode() for (b,) in db.execute("SELECT body FROM events ORDER BY seq")]
    assert [row.seq for row in claimed] == [s.seq for s in stored]
    assert [row.body for row in claimed] == bodies
    assert contract.decode_event(claimed[0].body)["data"]["note"] == odd


async def test_the_group_commit_waits_its_delay_on_the_injected_clock(tmp_path: Path) -> None:
    clock = FakeClock()
    async with Storage(tmp_path / "o.db", SITE, ROUTES, batch_delay_ms=50, clock=clock) as store:
        stored = store.queue.wakeup("bureau")  # set when a row is stored for the bureau
        stored.clear()
        async with asyncio.TaskGroup() as tg:
            flusher = tg.create_task(store.run())
            store.outbox.submit(event("device.online"))
            async with asyncio.timeout(5):
                await clock.sleeping()  # the flusher had its chance and waits out the delay
            await clock.run_for(0.049)
            assert clock.sleepers == 1
            assert await store.log.pending_count("bureau") == 0
            await clock.run_for(0.001)
            async with asyncio.timeout(5):
                await stored.wait()
            assert await store.log.pending_count("bureau") == 1
            flusher.cancel()
