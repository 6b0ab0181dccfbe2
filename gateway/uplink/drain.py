"""Sending one destination's backlog over one live connection: a sliding window of pipelined
QoS 1 publishes, alarms first.

Owns the send order and the window: at most `window` publishes wait for their PUBACK at once,
alarms included (`_Slots`: an alarm waiting for a slot gets the next one before any backlog row);
rows are claimed from the outbox in chunks (alarms, then state, then telemetry, each by `seq`);
before every publish it checks whether a higher lane got a row since it last claimed (an alarm
pressed during a drain of a million telemetry rows) and sends that first. PUBACKs are recorded
in batches by a marker task. It does not connect or reconnect (`uplink` does) and knows nothing
of other destinations.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.core import contract
from gateway.core.events import Lane
from gateway.store.records import DeliveryQueue, PendingDelivery
from gateway.uplink import mqtt

_BACKLOG_LANES = (Lane.STATE, Lane.TELEMETRY)
"""What the window senders take; the alarm lane is the express sender's."""


class Publisher(Protocol):
    """What the drain asks of a connection (`mqtt.Connection` is one): a publish that returns
    once the broker acknowledged it. Only what the drain uses: QoS 1, and no timer of the
    publish's own (`timeout_s=None`: the drain supervises its window itself)."""

    async def publish(
        self, topic: str, payload: bytes, *, qos: int, timeout_s: float | None
    ) -> None: ...


class _Slots:
    """The window: `size` publishes in flight at most. Slots are handed over first-come
    first-served, alarms before the backlog, and a newcomer never passes a waiter or a task
    handed a slot that has not run yet: a row taken first is handed to the client first."""

    def __init__(self, size: int) -> None:
        self._free = size
        self._waiting = {True: deque[asyncio.Future[None]](), False: deque[asyncio.Future[None]]()}
        self._handed = {True: 0, False: 0}
        """Waiters given a slot that have not resumed yet, alarms (True) and backlog."""

    def _ahead(self, alarm: bool) -> int:
        ahead = len(self._waiting[True]) + self._handed[True]
        return ahead if alarm else ahead + len(self._waiting[False]) + self._handed[False]

    async def acquire(self, *, alarm: bool) -> None:
        if self._free > 0 and not self._ahead(alarm):
            self._free -= 1
            return
        granted = asyncio.get_running_loop().create_future()
        self._waiting[alarm].append(granted)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._handed[alarm] -= 1
                self.release()  # handed a slot, then cancelled: pass it on
            raise
        self._handed[alarm] -= 1
        self._grant()  # waiters queued behind this one while a slot was free

    def release(self) -> None:
        self._free += 1
        self._grant()

    def _grant(self) -> None:
        while self._free > 0:
            alarm = bool(self._waiting[True])
            queue = self._waiting[alarm]
            if not queue:
                return
            waiter = queue.popleft()
            if not waiter.done():  # a cancelled waiter is skipped
                self._free -= 1
                self._handed[alarm] += 1
                waiter.set_result(None)


class Drain:
    def __init__(
        self,
        destination: str,
        outbox: DeliveryQueue,
        site: contract.Site,
        publisher: Publisher,
        *,
        window: int,
        connected_since_ms: int,
        claim_size: int = 256,
        stall_timeout_s: float = 30.0,
        on_sent: Callable[[str, list[int]], Awaitable[None]] | None = None,
    ) -> None:
        self._name = destination
        self._outbox = outbox
        self._site = site
        self._publisher = publisher
        self._window_size = window
        self._slots = _Slots(window)
        self._claiming = asyncio.Lock()
        self._urgent: Lane | None = None
        self._alarms_clear = asyncio.Event()
        """Set when no stored alarm waits to be handed to paho; the backlog senders wait on it."""
        self._alarms_clear.set()
        """A lane that got a row since the last claim (seen while taking a queued row)."""
        self._since_ms = connected_since_ms
        self._claim_size = max(claim_size, window)
        self._low_water = self._claim_size // 2
        self._more = False
        """The last claim was full: more of the backlog may wait on disk."""
        self._refill = asyncio.Event()
        """Set when the queue runs low: the refiller claims the next chunk while the senders
        go on with what is queued, so the window never waits for the store thread."""
        self._cursors = dict.fromkeys(Lane, 0)
        self._queue: deque[PendingDelivery] = deque()
        self._acked: list[int] = []
        self._ack_ready = asyncio.Event()
        self._stall_timeout_s = stall_timeout_s
        self._in_flight = 0
        self._last_ack = asyncio.get_running_loop().time()
        self._on_sent = on_sent
        """Told of every batch marked sent (the latches light the lamp from it)."""
        self.sent = 0
        self._topics: dict[str, str] = {}

    async def run(self) -> None:
        """Send until cancelled or a publish fails (the failure propagates: reconnect). A broker
        that keeps the connection but stops acknowledging for `stall_timeout_s` is a failure
        too."""
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._marker(), name=f"drain:{self._name}:marker")
                tg.create_task(self._watch_stall(), name=f"drain:{self._name}:stall")
                tg.create_task(self._refiller(), name=f"drain:{self._name}:refill")
                # Alarms have a sender of their own: they never wait for a window slot or
                # behind a claim of the backlog.
                tg.create_task(self._express(tg), name=f"drain:{self._name}:alarms")
                # The window is a fixed set of senders, each with at most one publish waiting
                # for its PUBACK: no task per message.
                for i in range(self._window_size):
                    tg.create_task(self._sender(), name=f"drain:{self._name}:sender{i}")
        finally:
            await self._flush_acks()

    async def _watch_stall(self) -> None:
        # A timer, not a state poller: it looks a few times per timeout period.
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self._stall_timeout_s / 4)
            if self._in_flight and loop.time() - self._last_ack > self._stall_timeout_s:
                raise mqtt.MqttFailure(
                    f"{self._name}: no PUBACK for {self._stall_timeout_s} s with publishes waiting"
                )

    async def _express(self, tg: asyncio.TaskGroup) -> None:
        wakeup = self._outbox.alarm_wakeup(self._name)
        while True:
            self._alarms_clear.clear()  # hold the backlog while looking for stored alarms
            wakeup.clear()
            rows = await self._outbox.claim(
                self._name, self._claim_size, self._cursors, [Lane.ALARM]
            )
            if rows:
                self._cursors[Lane.ALARM] = rows[-1].seq
                # Tasks start in creation order, so paho gets simultaneous alarms in seq order.
                for row in rows:
                    tg.create_task(self._send(row, alarm=True))
                # One loop turn: the alarms' first steps hand them to paho before the backlog
                # is let go. A sender already due to run (back from its PUBACK) would otherwise
                # run first and find the backlog released (found by the property test).
                await asyncio.sleep(0)
                if len(rows) == self._claim_size:
                    continue  # there may be more stored behind these
            if not wakeup.is_set():
                self._alarms_clear.set()  # every stored alarm is now ahead of the backlog
                await wakeup.wait()

    async def _sender(self) -> None:
        alarm_wakeup = self._outbox.alarm_wakeup(self._name)
        while True:
            if alarm_wakeup.is_set():
                self._alarms_clear.clear()  # an alarm is stored: let it go first
            if not self._alarms_clear.is_set():  # a coroutine per message costs: test first
                await self._alarms_clear.wait()
            row = self._ready_row()
            if row is None:
                async with self._claiming:  # one sender claims; the others queue behind it
                    row = await self._next_row()
            await self._send(row)

    async def _send(self, row: PendingDelivery, *, alarm: bool = False) -> None:
        # Between taking the row and handing it to paho (publish() calls paho before its first
        # await) only the window's slot is awaited, and slots are handed over in the order they
        # were asked for: rows leave in the order they were taken.
        await self._slots.acquire(alarm=alarm)
        try:
            await self._publish(row)
        finally:
            self._slots.release()

    async def _publish(self, row: PendingDelivery) -> None:
        payload = contract.finish_event_payload(
            row.body, historical=row.occurred_at_ms < self._since_ms, attempt=row.attempt
        )
        topic = self._topics.get(row.category)
        if topic is None:
            topic = self._topics[row.category] = contract.event_topic(self._site, row.category)
        self._in_flight += 1
        try:
            await self._publisher.publish(topic, payload, qos=1, timeout_s=None)
        finally:
            self._in_flight -= 1
        self._last_ack = asyncio.get_running_loop().time()
        self._acked.append(row.seq)
        self.sent += 1
        self._ack_ready.set()

    def _ready_row(self) -> PendingDelivery | None:
        """The next queued row, unless the queue is empty or something more urgent than the
        queue's head arrived (then the sender takes the slow path). A claim under way does not
        stop it: a claim only adds rows above each lane's cursor and merges them in order."""
        if not self._queue:
            return None
        self._note_urgent()
        if self._urgent is not None and self._urgent < self._queue[0].lane:
            return None
        row = self._queue.popleft()
        if self._more and len(self._queue) < self._low_water:
            self._refill.set()
        return row

    async def _refiller(self) -> None:
        while True:
            await self._refill.wait()
            async with self._claiming:
                self._refill.clear()
                if len(self._queue) < self._low_water:
                    await self._claim(lanes=list(_BACKLOG_LANES))

    def _note_urgent(self) -> None:
        lane = self._outbox.take_new_lane(self._name, _BACKLOG_LANES)
        if lane is not None and (self._urgent is None or lane < self._urgent):
            self._urgent = lane

    async def _next_row(self) -> PendingDelivery:
        """Called with `_claiming` held."""
        wakeup = self._outbox.wakeup(self._name)
        while True:
            wakeup.clear()
            self._note_urgent()
            urgent, self._urgent = self._urgent, None
            if self._queue and urgent is not None and urgent < self._queue[0].lane:
                # Something more urgent than what is queued: claim just those lanes, now.
                await self._claim(lanes=[ln for ln in _BACKLOG_LANES if ln < self._queue[0].lane])
                if not self._queue:
                    # The other senders took the rest meanwhile (and the urgent row was sent
                    # already): claim every lane before waiting, or the backlog would wait.
                    continue
            elif not self._queue:
                await self._claim(lanes=list(_BACKLOG_LANES))
            if self._queue:
                return self._queue.popleft()
            await wakeup.wait()

    async def _claim(self, lanes: list[Lane]) -> None:
        rows = await self._outbox.claim(self._name, self._claim_size, self._cursors, lanes)
        self._more = len(rows) == self._claim_size
        for row in rows:
            self._cursors[row.lane] = max(self._cursors[row.lane], row.seq)
        if rows:
            merged = sorted([*rows, *self._queue], key=lambda r: (r.lane, r.seq))
            self._queue = deque(merged)

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
            if self._on_sent is not None:
                await self._on_sent(self._name, seqs)
