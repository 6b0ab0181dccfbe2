"""Store-and-forward rules: group commit, alarm preemption during a drain, memory spill while the
disk refuses writes, corrupt-file recovery, eviction order and the local record.

The broker side here is a recording publisher (our own `drain.Publisher` seam); the end-to-end
paths with mosquitto are in test_uplink.py, test_e2e.py and test_disk_full.py."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from gateway.core import contract
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Event, Lane, Severity, new_event
from gateway.store.delivery import Deliveries
from gateway.store.retention import Retention, RetentionPolicy, used_bytes
from gateway.store.routing import Router
from gateway.store.storage import Storage
from gateway.uplink import mqtt
from gateway.uplink.drain import Drain

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))
BOX = DeviceRef("box", "alarm_box", "north gate")
ROUTES = Router({"police": ["lane:alarm", "alarm.*"], "bureau": ["*"]})


def make(event_type: str, at_ms: int = 1_000, **kw: object) -> Event:
    severity = Severity.CRITICAL if event_type.startswith("alarm.panic") else Severity.INFO
    return new_event(event_type, BOX, severity=severity, occurred_at_ms=at_ms, **kw)  # type: ignore[arg-type]


class Recorder:
    """A publisher that records (and can hold back or fail) what it is asked to publish."""

    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = False

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float | None = 10.0,
    ) -> None:
        if self.fail:
            raise mqtt.MqttFailure("broker down")
        self.published.append(json.loads(payload))
        await self.gate.wait()


@contextlib.asynccontextmanager
async def draining(
    store: Storage, publisher: Recorder | Window, window: int = 8
) -> AsyncIterator[Drain]:
    drain = Drain("bureau", store.queue, SITE, publisher, window=window, connected_since_ms=2_000)
    task = asyncio.create_task(drain.run())
    try:
        yield drain
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        # The recorder and drain counters have nothing to await; a bounded look every 5 ms.
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


async def test_group_commit_keeps_submission_order_and_alarm_flushes_the_queue(
    tmp_path: Path,
) -> None:
    async with Storage(tmp_path / "o.db", SITE, ROUTES, batch_delay_ms=100) as store:
        for _ in range(5):
            store.outbox.submit(make("telemetry.temp"))
        alarm = await store.outbox.append(make("alarm.panic", alarm_id="a"))
        # The five queued events were committed in the alarm's transaction, before it.
        assert alarm.seq == 6
        assert await store.log.pending_count("bureau") == 6


async def test_submitted_events_are_committed_by_the_flusher_within_the_delay(
    tmp_path: Path,
) -> None:
    async with Storage(tmp_path / "o.db", SITE, ROUTES, batch_delay_ms=20) as store:
        flusher = asyncio.create_task(store.run())
        try:
            store.queue.wakeup("bureau").clear()  # set by open(): a restart resumes pending rows
            store.outbox.submit(make("device.online"))
            await wait_until(lambda: store.queue.wakeup("bureau").is_set())
            assert await store.log.pending_count("bureau") == 1
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher


async def test_alarm_pressed_during_a_backlog_drain_goes_next(tmp_path: Path) -> None:
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        for start in range(0, 3000, 500):
            for i in range(500):
                store.outbox.submit(make("telemetry.temp", at_ms=start + i))
            await store.outbox.append(make("device.online"))
        publisher = Recorder()
        async with draining(store, publisher, window=8) as drain:
            await wait_until(lambda: len(publisher.published) > 1000)
            publisher.gate.clear()  # hold the window full, like a slow broker
            alarm = await store.outbox.append(make("alarm.panic", alarm_id="x"))
            before = len(publisher.published)
            publisher.gate.set()
            await wait_until(lambda: any(p["seq"] == alarm.seq for p in publisher.published))
            position = next(i for i, p in enumerate(publisher.published) if p["seq"] == alarm.seq)
            # Only the publishes already in the window may go before it.
            assert position - before <= 8
            await wait_until(lambda: drain.sent >= 3007)
        seqs = [p["seq"] for p in publisher.published if p["type"] == "telemetry.temp"]
        assert seqs == sorted(seqs) and len(set(seqs)) == 3000
        # The state rows queued behind 3000 telemetry rows went first (lane order).
        assert [p["type"] for p in publisher.published[:6]] == ["device.online"] * 6
        assert await store.log.pending_count("bureau") == 0


async def test_a_failed_publish_leaves_the_row_pending_and_it_is_sent_on_the_next_drain(
    tmp_path: Path,
) -> None:
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        stored = await store.outbox.append(make("alarm.panic", alarm_id="a"))
        publisher = Recorder()
        publisher.fail = True
        drain = Drain("bureau", store.queue, SITE, publisher, window=4, connected_since_ms=0)
        with pytest.raises(ExceptionGroup) as info:
            await drain.run()
        assert info.group_contains(mqtt.MqttFailure)
        assert await store.log.pending_count("bureau") == 1
        publisher.fail = False
        async with draining(store, publisher):
            await wait_until(lambda: publisher.published)
        assert publisher.published[0]["id"] == stored.id
        assert publisher.published[0]["attempt"] == 2  # the failed try counted
        assert publisher.published[0]["historical"] is True  # it happened before this session


async def test_disk_refusing_writes_keeps_alarms_in_memory_and_writes_them_back(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    async with Storage(path, SITE, ROUTES, recover_interval_s=0.05) as store:
        before = await store.outbox.append(make("device.online"))
        # A real SQLite write failure, switched on through our own store seam.
        await store.log.call(lambda db: db.execute("PRAGMA query_only=ON"))
        alarm = await store.outbox.append(make("alarm.panic", alarm_id="a"))
        assert store.log.degraded and "readonly" in (store.log.degraded_reason or "")
        assert alarm.seq == (before.seq or 0) + 1
        claimed = await store.queue.claim("police", 10)
        assert [r.type for r in claimed] == ["alarm.panic"]  # gateway.* is not routed to police
        bureau = await store.queue.claim("bureau", 10)
        assert {r.type for r in bureau} == {"alarm.panic", "gateway.storage_fault", "device.online"}
        await store.queue.mark_sent("police", [alarm.seq or 0])
        assert await store.log.pending_count("police") == 0
        assert not await store.recover()  # still refused
        await store.log.call(lambda db: db.execute("PRAGMA query_only=OFF"))  # space is back
        assert await store.recover()
        assert not store.log.degraded
    with sqlite3.connect(path) as db:
        types = [t for (t,) in db.execute("SELECT type FROM events ORDER BY seq")]
        police_unsent = db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE destination='police' AND sent_at_ms IS NULL"
        ).fetchone()
    db.close()
    assert types == [
        "device.online",
        "alarm.panic",
        "gateway.storage_fault",
        "gateway.storage_recovered",
    ]
    assert police_unsent == (0,)  # the PUBACK taken in memory was written back too


async def test_corrupt_store_is_moved_aside_and_the_gateway_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Storage(path, SITE, ROUTES) as store:
        old = await store.outbox.append(make("device.online"))
    path.write_bytes(b"this is not a database" * 100)
    (tmp_path / "o.db-wal").unlink(missing_ok=True)
    async with Storage(path, SITE, ROUTES) as store:
        rows = await store.queue.claim("bureau", 10)
    assert [r.type for r in rows] == ["gateway.storage_fault"]
    fault = json.loads(rows[0].body)
    assert fault["data"]["fault"] == "corrupt_database"
    assert Path(fault["data"]["moved_to"]).read_bytes().startswith(b"this is not")
    assert rows[0].seq > (old.seq or 0) + 1_000_000  # no seq a receiver saw is issued again


async def test_size_cap_evicts_delivered_then_telemetry_never_alarms(tmp_path: Path) -> None:
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        filler = "x" * 2000
        alarms = [
            await store.outbox.append(make("alarm.panic", alarm_id=f"a{i}")) for i in range(20)
        ]
        for i in range(300):
            store.outbox.submit(make("telemetry.temp", data={"pad": filler, "i": i}))
            store.outbox.submit(make("device.online", data={"pad": filler}))
        await store.outbox.append(make("alarm.reset", alarm_id="a0"))
        delivered = await store.queue.claim("bureau", 10, lanes=[Lane.TELEMETRY])
        await store.queue.mark_sent("bureau", [r.seq for r in delivered])
        size = await store.log.call(used_bytes)
        retention = Retention(store.maintenance, RetentionPolicy(max_bytes=size // 3))
        report = await retention.enforce()
        assert report.evicted_undelivered.get("telemetry", 0) > 0
        assert report.evicted_delivered == 0  # delivered to bureau only, police never had them
        remaining = await store.log.call(
            lambda db: dict(
                db.execute("SELECT type, COUNT(*) FROM events GROUP BY type").fetchall()
            )
        )
        assert remaining["alarm.panic"] == 20 and len(alarms) == 20
        assert remaining.get("gateway.eviction") == 1
        evicted = await store.log.call(
            lambda db: db.execute(
                "SELECT value FROM meta WHERE key='evicted_undelivered'"
            ).fetchone()
        )
        assert evicted[0] == report.lost


async def test_delivered_rows_are_pruned_after_the_retention_period_but_open_alarms_stay(
    tmp_path: Path,
) -> None:
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        day = 86_400_000
        open_alarm = await store.outbox.append(make("alarm.panic", at_ms=1 * day, alarm_id="open"))
        old = await store.outbox.append(make("device.online", at_ms=1 * day))
        undelivered = await store.outbox.append(make("device.online", at_ms=1 * day))
        for destination in ("police", "bureau"):
            await store.queue.mark_sent(destination, [open_alarm.seq or 0, old.seq or 0])
        await store.queue.mark_sent("bureau", [])
        retention = Retention(
            store.maintenance, RetentionPolicy(max_bytes=1 << 30, retain_ms=90 * day)
        )
        report = await retention.enforce(now_ms=100 * day)
        kept = await store.log.call(lambda db: [s for (s,) in db.execute("SELECT seq FROM events")])
    assert report.pruned == 1
    assert kept == [open_alarm.seq, undelivered.seq]


async def test_retention_checks_on_the_injected_clock_its_interval_and_its_now(
    tmp_path: Path,
) -> None:
    day = 86_400_000
    clock = FakeClock(wall_ms=50 * day)
    async with Storage(tmp_path / "o.db", SITE, ROUTES, clock=clock) as store:
        old = await store.outbox.append(make("device.online", at_ms=1 * day))
        for destination in ("police", "bureau"):
            await store.queue.mark_sent(destination, [old.seq or 0])
        policy = RetentionPolicy(max_bytes=1 << 30, retain_ms=90 * day)
        retention = Retention(store.maintenance, policy, check_interval_s=10.0, clock=clock)

        async def seqs() -> list[int]:
            return await store.log.call(
                lambda db: [s for (s,) in db.execute("SELECT seq FROM events")]
            )

        async with asyncio.TaskGroup() as tg:
            checks = tg.create_task(retention.run())
            async with asyncio.timeout(5):
                await clock.sleeping()  # the first check is done; the next waits its interval
            assert await seqs() == [old.seq]  # 49 days old by this clock: kept
            clock.set_wall(95 * day)
            await clock.run_for(9.9)
            assert clock.sleepers == 1  # still waiting its interval: not checked again yet
            assert await seqs() == [old.seq]
            await clock.run_for(0.1)
            async with asyncio.timeout(5):
                await clock.sleeping()  # the second check is done
            assert await seqs() == []
            checks.cancel()


async def test_the_flusher_retries_the_disk_by_itself_after_an_append_fault(tmp_path: Path) -> None:
    # Regression: a fault met by append() (not by a queued submit) left run() asleep forever.
    async with Storage(tmp_path / "o.db", SITE, ROUTES, recover_interval_s=0.02) as store:
        flusher = asyncio.create_task(store.run())
        try:
            await store.log.call(lambda db: db.execute("PRAGMA query_only=ON"))
            await store.outbox.append(make("alarm.panic", alarm_id="a"))
            assert store.log.degraded
            await store.log.call(lambda db: db.execute("PRAGMA query_only=OFF"))
            await wait_until(lambda: not store.log.degraded)
        finally:
            flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await flusher


async def test_age_cap_evicts_old_undelivered_telemetry_and_state_but_not_alarms(
    tmp_path: Path,
) -> None:
    day = 86_400_000
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        old_alarm = await store.outbox.append(make("alarm.panic", at_ms=1 * day, alarm_id="a"))
        await store.outbox.append(make("telemetry.temp", at_ms=1 * day))
        await store.outbox.append(make("device.online", at_ms=1 * day))
        fresh = await store.outbox.append(make("telemetry.temp", at_ms=9 * day))
        policy = RetentionPolicy(max_bytes=1 << 30, max_age_ms=7 * day)
        report = await Retention(store.maintenance, policy).enforce(now_ms=10 * day)
        kept = await store.log.call(
            lambda db: [s for (s,) in db.execute("SELECT seq FROM events ORDER BY seq")]
        )
    assert report.evicted_undelivered == {"telemetry": 1, "state": 1}
    assert kept[:2] == [old_alarm.seq, fresh.seq]  # then the gateway.eviction report
    assert len(kept) == 3


async def test_the_next_chunk_is_claimed_before_the_queue_runs_dry(tmp_path: Path) -> None:
    """The window must not stall on the store thread between chunks of a backlog: the refiller
    claims the next chunk while half of the current one is still queued."""
    queued_at_claim: list[int] = []
    drain: Drain | None = None

    class Acking(Recorder):
        async def publish(self, topic: str, payload: bytes, **kwargs: Any) -> None:
            await super().publish(topic, payload, **kwargs)
            await asyncio.sleep(0.0005)  # a PUBACK takes a round trip

    class Watched:
        """The drain's queue (our `records.DeliveryQueue` seam), its claims watched."""

        def __init__(self, queue: Deliveries) -> None:
            self._queue = queue

        def wakeup(self, destination: str) -> asyncio.Event:
            return self._queue.wakeup(destination)

        def alarm_wakeup(self, destination: str) -> asyncio.Event:
            return self._queue.alarm_wakeup(destination)

        def take_new_lane(
            self, destination: str, among: Sequence[Lane] = tuple(Lane)
        ) -> Lane | None:
            return self._queue.take_new_lane(destination, among)

        async def mark_sent(self, destination: str, seqs: Sequence[int]) -> None:
            await self._queue.mark_sent(destination, seqs)

        async def claim(self, *args: Any, **kwargs: Any) -> Any:
            lanes = kwargs.get("lanes", args[3] if len(args) > 3 else ())
            if drain is not None and Lane.TELEMETRY in lanes:  # not the alarm sender's claims
                queued_at_claim.append(len(drain._queue))
            return await self._queue.claim(*args, **kwargs)

    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        for i in range(1200):
            store.outbox.submit(make("telemetry.temp", at_ms=i))
        await store.outbox.flush()
        publisher = Acking()
        drain = Drain(
            "bureau", Watched(store.queue), SITE, publisher, window=8, connected_since_ms=0
        )
        task = asyncio.create_task(drain.run())
        try:
            await wait_until(lambda: drain is not None and drain.sent >= 1200)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    seqs = [p["seq"] for p in publisher.published]
    assert seqs == sorted(seqs) and len(set(seqs)) == 1200
    # Claims of 256: the first finds an empty queue, the following ones a queue still holding
    # rows (claimed ahead), until the backlog is exhausted.
    assert len(queued_at_claim) >= 5
    assert all(n > 0 for n in queued_at_claim[1:5]), queued_at_claim


class Window:
    """A publisher whose PUBACKs come back when the test lets them: it counts how many
    publishes wait for theirs at once."""

    def __init__(self) -> None:
        self.waiting = 0
        self.most = 0
        self.acks = asyncio.Event()
        self.types: list[str] = []

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float | None = 10.0,
    ) -> None:
        self.types.append(json.loads(payload)["type"])
        self.waiting += 1
        self.most = max(self.most, self.waiting)
        try:
            await self.acks.wait()
        finally:
            self.waiting -= 1


async def test_alarms_and_backlog_together_never_exceed_max_inflight(tmp_path: Path) -> None:
    """Issue 10: the alarm sender had publishes of its own on top of the window's, so paho
    queued more than `max_inflight` (and aiomqtt warned of pending publish calls)."""
    window = 4
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        for i in range(20):
            await store.outbox.append(make("device.online", at_ms=3_000 + i))
        for i in range(6):
            await store.outbox.append(make("alarm.panic", at_ms=3_100 + i, alarm_id=f"a{i}"))
        publisher = Window()
        async with draining(store, publisher, window=window) as drain:
            await wait_until(lambda: publisher.waiting >= window)
            # Alarms stored while the window is full wait for a slot, and get the first ones.
            for i in range(3):
                await store.outbox.append(make("alarm.panic", at_ms=3_200 + i, alarm_id=f"b{i}"))
            publisher.acks.set()
            await wait_until(lambda: drain.sent == 29)
        assert publisher.most <= window
        assert publisher.types[:6] == ["alarm.panic"] * 6
        late_alarms = [i for i, t in enumerate(publisher.types) if t == "alarm.panic"][6:]
        assert late_alarms and max(late_alarms) < 6 + 20  # not behind the whole backlog
