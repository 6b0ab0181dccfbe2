"""Sending one destination's backlog over one live connection: a sliding window of pipelined
QoS 1 publishes, alarms first.

Owns the send order and the window: at most `window` publishes wait for their PUBACK at once;
rows are claimed from the outbox in chunks (alarms, then state, then telemetry, each by `seq`);
before every publish it checks whether a higher lane got a row since it last claimed (an alarm
pressed during a drain of a million telemetry rows) and sends that first. PUBACKs are recorded
in batches by a marker task. It does not connect or reconnect (`uplink` does) and knows nothing
of other destinations.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Protocol

from gateway import contract
from gateway.events import Lane
from gateway.outbox import Outbox, PendingDelivery


class Publisher(Protocol):
    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float = 10.0,
    ) -> None: ...


class Drain:
    def __init__(
        self,
        destination: str,
        outbox: Outbox,
        site: contract.Site,
        publisher: Publisher,
        *,
        window: int,
        connected_since_ms: int,
        claim_size: int = 512,
    ) -> None:
        self._name = destination
        self._outbox = outbox
        self._site = site
        self._publisher = publisher
        self._window = asyncio.Semaphore(window)
        self._since_ms = connected_since_ms
        self._claim_size = max(claim_size, window)
        self._cursors = dict.fromkeys(Lane, 0)
        self._queue: deque[PendingDelivery] = deque()
        self._acked: list[int] = []
        self._ack_ready = asyncio.Event()
        self.sent = 0

    async def run(self) -> None:
        """Send until cancelled or a publish fails (the failure propagates: reconnect)."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._marker(), name=f"drain:{self._name}:marker")
                await self._send_loop(tg)
        finally:
            await self._flush_acks()

    async def _send_loop(self, tg: asyncio.TaskGroup) -> None:
        wakeup = self._outbox.wakeup(self._name)
        while True:
            await self._window.acquire()
            try:
                row = await self._next_row(wakeup)
            except BaseException:
                self._window.release()
                raise
            tg.create_task(self._publish(row), name=f"drain:{self._name}:{row.seq}")

    async def _next_row(self, wakeup: asyncio.Event) -> PendingDelivery:
        while True:
            new_lane = self._outbox.take_new_lane(self._name)
            wakeup.clear()
            if self._queue and new_lane is not None and new_lane < self._queue[0].lane:
                # Something more urgent than what is queued: claim just those lanes, now.
                await self._claim(lanes=[lane for lane in Lane if lane < self._queue[0].lane])
            elif not self._queue:
                await self._claim(lanes=list(Lane))
            if self._queue:
                return self._queue.popleft()
            await wakeup.wait()

    async def _claim(self, lanes: list[Lane]) -> None:
        rows = await self._outbox.claim(self._name, self._claim_size, self._cursors, lanes)
        for row in rows:
            self._cursors[row.lane] = max(self._cursors[row.lane], row.seq)
        if rows:
            merged = sorted([*rows, *self._queue], key=lambda r: (r.lane, r.seq))
            self._queue = deque(merged)

    async def _publish(self, row: PendingDelivery) -> None:
        try:
            payload = contract.finish_event_payload(
                row.body, historical=row.occurred_at_ms < self._since_ms, attempt=row.attempt
            )
            await self._publisher.publish(contract.event_topic(self._site, row.category), payload)
        finally:
            self._window.release()
        self._acked.append(row.seq)
        self.sent += 1
        self._ack_ready.set()

    async def _marker(self) -> None:
        # Each mark_sent takes whatever PUBACKs arrived meanwhile: batches form by themselves.
        while True:
            await self._ack_ready.wait()
            self._ack_ready.clear()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        seqs, self._acked = self._acked, []
        if seqs:
            # Shielded: a cancel (shutdown, lost connection) must not drop a PUBACK already
            # taken, or the row would be sent again.
            await asyncio.shield(self._outbox.mark_sent(self._name, seqs))
