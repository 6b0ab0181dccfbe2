"""The writers' side of the store: every event goes through here before any broker sees it.

Owns stamping (the `seq` the log issues, the drill mark, the contract body, its signature),
routing each event to its destinations, and the group commit: alarms are written (fsynced, or held
in memory by the log) before `append` returns; lower lanes are queued and committed together
within `batch_delay_ms`, so a burst costs one fsync. It turns the log's notices of a failing and
recovered disk into `gateway.storage_*` events, and tells the delivery queue which destination got
a row of which lane. It does not hold rows or know which medium does (`log`), hand rows to
senders (`delivery`), talk MQTT (`uplink`), evict (`retention`) or decide what an event means.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import structlog

from gateway.core import contract
from gateway.core.clock import Clock, SystemClock, wait_until_set
from gateway.core.events import DeviceRef, Event, Lane, new_event
from gateway.store.db import StoreError
from gateway.store.delivery import Deliveries
from gateway.store.log import DurableLog, StorageNotice
from gateway.store.routing import Router
from gateway.store.sql import EventRow

log = structlog.get_logger(__name__)

GATEWAY_DEVICE = DeviceRef("gateway", "gateway", "")
_MAX_BATCH = 2000


OutboxError = StoreError


@dataclass(slots=True)
class _Item:
    event: Event
    destinations: list[str]


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Marks:
    """What every event stored now is marked as, asked at each stamp."""

    drill: Callable[[], bool] = _never
    """True while a drill runs (gateway.alarms.drill): events are marked `drill`."""
    test: Callable[[], bool] = _never
    """True in test mode (gateway.alarms.test_mode): events are marked `test`."""


class Outbox:
    """`records.EventWriter`: stamps, signs, routes and group-commits into a `DurableLog`."""

    def __init__(
        self,
        log: DurableLog,
        queue: Deliveries,
        site: contract.Site,
        router: Router,
        *,
        batch_delay_ms: int = 50,
        signer: Callable[[bytes], bytes] | None = None,
        marks: Marks | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._log = log
        self._queue = queue
        self._clock: Clock = clock or SystemClock()
        self._signer = signer
        """Signs an event's stored body once (gateway.core.auth.sign_payload, the gateway key)."""
        self._marks = marks or Marks()
        self._site = site
        self._router = router
        self._batch_delay_s = batch_delay_ms / 1000
        self._queued: list[_Item] = []
        self._notices: list[_Item] = []
        self._has_queued = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self.on_stored: Callable[[Event], None] | None = None
        """Told of every event once it is stored (the rules read them); it must only queue."""

    # -- writing -----------------------------------------------------------------------------

    async def append(self, event: Event, *, destinations: list[str] | None = None) -> Event:
        """Store `event` now (with anything queued before it) and return it with its `seq`.
        When this returns the event is fsynced, or held in memory if the disk is failing.
        `destinations` overrides the routes (a path fault goes to every other path)."""
        if destinations is None:
            destinations = self._router.destinations_for(event.type)
        item = _Item(event, destinations)
        async with self._write_lock:
            stored = await self._flush_locked([item])
        return stored[-1]  # queued events were flushed ahead of it

    async def flush(self) -> list[Event]:
        """Commit whatever is queued now, without waiting for the group-commit delay."""
        async with self._write_lock:
            return await self._flush_locked([])

    def submit(self, event: Event) -> None:
        """Queue a lower-lane event for the next group commit (within `batch_delay_ms`)."""
        self._queued.append(_Item(event, self._router.destinations_for(event.type)))
        self._has_queued.set()
        if len(self._queued) >= _MAX_BATCH:
            self._flush_now.set()

    async def emit(self, event: Event) -> Event:
        """What drivers call: an alarm is stored before this returns; other events are queued
        for the group commit and returned without a `seq`."""
        if event.lane is Lane.ALARM:
            return await self.append(event)
        self.submit(event)
        return event

    def notice(self, notice: StorageNotice) -> None:
        """The log's report of a disk fault or recovery: stored as an event at once by the next
        commit (`run` commits it without the group-commit delay)."""
        event = new_event(
            notice.type,
            GATEWAY_DEVICE,
            severity=notice.severity,
            occurred_at_ms=self._clock.wall_ms(),
            data=dict(notice.data),
        )
        self._notices.append(_Item(event, self._router.destinations_for(event.type)))
        self._has_queued.set()
        self._flush_now.set()

    async def run(self) -> None:
        """The group-commit flusher."""
        while True:
            await self._has_queued.wait()
            # The group-commit delay on the injected clock, cut short by a full batch or a
            # notice. Not wait_for: on Python 3.11 it drops a cancel that arrives with the
            # event, and the shutdown would wait for this loop forever.
            await wait_until_set(self._flush_now, self._clock, self._batch_delay_s)
            async with self._write_lock:
                await self._flush_locked([])

    async def _flush_locked(self, extra: list[_Item]) -> list[Event]:
        items = [*self._notices, *self._queued, *extra]
        self._notices, self._queued = [], []
        self._has_queued.clear()
        self._flush_now.clear()
        stored: list[Event] | None = None
        while items:
            stamped = self._stamp(items)
            rows = [self._row(event) for event, _ in stamped]
            urgent = any(event.lane is Lane.ALARM for event, _ in stamped)
            await self._log.write(rows, [names for _, names in stamped], urgent=urgent)
            for event, destinations in stamped:
                for name in destinations:
                    self._queue.queued(name, event.lane)
            self._tell(event for event, _ in stamped)
            if stored is None:
                stored = [event for event, _ in stamped]
            # A fault the write ran into goes right behind the batch (to memory, by then).
            items, self._notices = self._notices, []
        return stored or []

    def _tell(self, events: Iterable[Event]) -> None:
        if self.on_stored is None:
            return
        for event in events:
            try:
                self.on_stored(event)
            except Exception as exc:  # a reader's bug must not stop the store
                log.error("on_stored_failed", type=event.type, error=repr(exc))

    def _stamp(self, items: list[_Item]) -> list[tuple[Event, list[str]]]:
        stamped = []
        drill, test = self._marks.drill(), self._marks.test()
        for item in items:
            seq = self._log.next_seq()
            event = replace(
                item.event, seq=seq, drill=item.event.drill or drill, test=item.event.test or test
            )
            stamped.append((event, item.destinations))
        return stamped

    def _row(self, event: Event) -> EventRow:
        assert event.seq is not None  # stamped before it is encoded
        encoded = contract.encode_event_body(self._site, event)
        body = (encoded if self._signer is None else self._signer(encoded)).decode()
        return (
            event.seq,
            event.id,
            event.type,
            int(event.lane),
            event.device.id,
            event.alarm_id,
            event.occurred_at_ms,
            self._clock.wall_ms(),
            body,
            _button(event),
            _actor(event),
        )


def _button(event: Event) -> int | None:
    """The event's `data.button`, kept in its own column so that no query reads the payload."""
    button = event.data.get("button")
    return button if isinstance(button, int) and not isinstance(button, bool) else None


def _actor(event: Event) -> str | None:
    """The event's `data.by` (who acknowledged, silenced, ...), in its own column likewise."""
    by = event.data.get("by")
    return by if isinstance(by, str) else None
