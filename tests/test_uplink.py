"""Uplinks against real mosquitto brokers: delivery to both destinations, a dead broker that does
not slow the other, reconnection with the backlog marked historical, retained status."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.core import contract
from gateway.core.backoff import Backoff
from gateway.core.clock import SystemClock
from gateway.core.events import DeviceRef, Event, Severity, new_event
from gateway.store.routing import Router
from gateway.store.storage import Storage
from gateway.uplink import mqtt
from gateway.uplink.destination import Uplink
from simulators.broker import MosquittoBroker
from simulators.listener import listen

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))
BOX = DeviceRef("box", "alarm_box", "north gate")


def panic() -> Event:
    return new_event(
        "alarm.panic", BOX, severity=Severity.CRITICAL, occurred_at_ms=_now_ms(), alarm_id="a"
    )


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class RetryCountingClock(SystemClock):
    """The real clock, counting the uplink's sleeps: with no heartbeats configured it sleeps
    only between connection attempts, so a sleep is the sign that an attempt has been made."""

    def __init__(self) -> None:
        self.sleeps = 0
        self._slept = asyncio.Condition()

    async def sleep(self, seconds: float) -> None:
        async with self._slept:
            self.sleeps += 1
            self._slept.notify_all()
        await super().sleep(seconds)

    async def attempts_failed(self, count: int, timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s), self._slept:
            await self._slept.wait_for(lambda: self.sleeps >= count)


def params(name: str, broker: MosquittoBroker) -> mqtt.BrokerParams:
    return mqtt.BrokerParams(
        host=broker.host,
        port=broker.port,
        client_id=f"gate-1-{name}",
        will_topic=contract.status_topic(SITE),
        will_payload=contract.status_payload(SITE, online=False),
    )


@contextlib.asynccontextmanager
async def running(store: Storage, *uplinks: Uplink) -> AsyncIterator[None]:
    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(u.run(), name=f"test-uplink:{u.name}") for u in uplinks]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()


async def test_event_reaches_both_brokers_once_and_status_is_retained_online(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    router = Router({"police": ["alarm.*"], "bureau": ["*"]})
    async with (
        Storage(tmp_path / "o.db", SITE, router) as store,
        listen("police", police_broker.host, police_broker.port) as police,
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
    ):
        uplinks = [
            Uplink("police", params("police", police_broker), store.uplink, SITE),
            Uplink("bureau", params("bureau", bureau_broker), store.uplink, SITE),
        ]
        async with running(store, *uplinks):
            await police.wait_for(lambda m: m.topic.endswith("/status"))
            stored = await store.outbox.append(panic())
            await store.outbox.append(
                new_event("device.online", BOX, severity=Severity.INFO, occurred_at_ms=_now_ms())
            )
            got = await police.wait_event(lambda e: e["id"] == stored.id)
            await bureau.wait_event(lambda e: e["type"] == "device.online")
            await bureau.wait_event(lambda e: e["id"] == stored.id)
            for _ in range(250):  # mark_sent follows the PUBACK by a moment
                if not await store.log.pending_count("bureau") + await store.log.pending_count(
                    "police"
                ):
                    break
                await asyncio.sleep(0.02)
            assert await store.log.pending_count("bureau") == 0
        assert got["seq"] == stored.seq and got["historical"] is False and got["attempt"] == 1
        assert [e["type"] for e in police.events()] == ["alarm.panic"]  # routing: alarms only
        assert len(bureau.events()) == 2
        status = [m.json for m in police.messages if m.topic == contract.status_topic(SITE)]
        assert status[0]["online"] is True
        # A clean shutdown replaces the retained status with offline.
        await police.wait_for(lambda m: m.topic.endswith("/status") and m.json["online"] is False)


async def test_dead_police_broker_does_not_delay_bureau_and_backlog_arrives_historical(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    router = Router({"police": ["*"], "bureau": ["*"]})
    async with (
        Storage(tmp_path / "o.db", SITE, router) as store,
        listen("police", police_broker.host, police_broker.port) as police,
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
    ):
        uplinks = [
            Uplink(
                "police",
                params("police", police_broker),
                store.uplink,
                SITE,
                backoff=Backoff(base_s=0.05, cap_s=0.5),
                clock=(police_clock := RetryCountingClock()),
            ),
            Uplink("bureau", params("bureau", bureau_broker), store.uplink, SITE),
        ]
        await police_broker.stop(graceful=True)
        async with running(store, *uplinks):
            await bureau.wait_for(lambda m: m.topic.endswith("/status"))
            stored = await store.outbox.append(panic())
            arrived = await bureau.wait_event(lambda e: e["id"] == stored.id, timeout_s=5)
            assert arrived["historical"] is False
            assert await store.log.pending_count("police") == 1
            before = police_clock.sleeps
            await police_clock.attempts_failed(before + 2)  # the police uplink keeps retrying
            assert await store.log.pending_count("police") == 1
            await police_broker.start()
            got = await police.wait_event(lambda e: e["id"] == stored.id, timeout_s=10)
        assert got["historical"] is True
        assert got["occurred_at"] == arrived["occurred_at"]
        assert [e["id"] for e in police.events()].count(stored.id) == 1


async def test_uplink_retries_a_broker_that_is_not_there_yet(tmp_path: Path) -> None:
    broker = MosquittoBroker("late")
    router = Router({"police": ["*"]})
    async with Storage(tmp_path / "o.db", SITE, router) as store:
        uplink = Uplink(
            "police",
            params("police", broker),
            store.uplink,
            SITE,
            backoff=Backoff(base_s=0.05, cap_s=0.2),
            clock=(clock := RetryCountingClock()),
        )
        await store.outbox.append(panic())
        async with running(store, uplink):
            await clock.attempts_failed(2)  # it has tried, twice, and found nobody
            assert not uplink.connected
            async with broker:
                # Nobody may be subscribed yet when the uplink gets in: the PUBACK is the proof.
                for _ in range(500):
                    if await store.log.pending_count("police") == 0:
                        break
                    await asyncio.sleep(0.02)
                assert await store.log.pending_count("police") == 0
                assert uplink.connected and uplink.sent_count == 1


async def test_cancel_while_the_connection_drops_still_stops_the_uplink(tmp_path: Path) -> None:
    # Regression: a TaskGroup that sees a child's MqttFailure while its task is being cancelled
    # raises the failure, not CancelledError; the reconnect loop took it and ran on, so a
    # shutdown that met a dropping broker never finished.
    router = Router({"police": ["*"]})
    async with Storage(tmp_path / "o.db", SITE, router) as store:
        for attempt in range(15):
            broker = MosquittoBroker(f"drop{attempt}")
            async with broker:
                uplink = Uplink(
                    "police",
                    params("police", broker),
                    store.uplink,
                    SITE,
                    backoff=Backoff(base_s=0.01, cap_s=0.02),
                )
                task = asyncio.create_task(uplink.run())
                async with asyncio.timeout(10):
                    while not uplink.connected:  # noqa: ASYNC110 - a bounded look at a flag
                        await asyncio.sleep(0.005)
                await broker.stop()  # the connection drops ...
                await asyncio.sleep(attempt * 0.0005)  # ... at varying moments of the cancel
                task.cancel()
                done, _ = await asyncio.wait([task], timeout=5)
                assert done, f"attempt {attempt}: the uplink ignored its cancellation"
