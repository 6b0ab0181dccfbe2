"""What the store hands each of its readers, and the narrow interfaces they read it through.

Owns the records (`PendingDelivery`, `OpenAlarm`, `AlarmProgress`) and one protocol per
audience: the writers (`EventWriter`), the drain (`DeliveryQueue`: wake-ups, claim,
mark_sent), heartbeats and replay (`DeliveryRecords`), the latches (`AlarmRecords`) and retention
(`LogMaintenance`). A reader depends on its protocol, never on the class behind it (today
`outbox.Outbox` serves them all; the protocols are the seams along which it splits). Pure: no
SQL, no I/O.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from gateway.core.events import Event, Lane

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class PendingDelivery:
    seq: int
    type: str
    lane: Lane
    attempt: int
    """1 for the first publish of this row to this destination."""
    occurred_at_ms: int
    body: bytes

    @property
    def category(self) -> str:
        return self.type.split(".", 1)[0]


@dataclass(frozen=True, slots=True)
class OpenAlarm:
    alarm_id: str
    device_id: str
    button: int
    raised_at_ms: int
    presses: int
    test: bool = False
    """Its `alarm.panic` was stored marked `test` (raised in test mode)."""


@dataclass(frozen=True, slots=True)
class AlarmProgress:
    """One stored step of an open alarm: its `alarm.panic`, `alarm.escalated`,
    `alarm.acknowledged` or `alarm.siren_silenced`."""

    alarm_id: str
    type: str
    seq: int
    sent: bool
    """The destination asked about has acknowledged it (PUBACK)."""
    occurred_at_ms: int
    actor: str
    """Who did it (`data.by`: the officer who acknowledged, the guard who silenced); "" if
    nobody is named."""


class EventWriter(Protocol):
    """What every producer of events uses: store it (fsynced, or held in memory) and get it
    back with its `seq`."""

    async def append(self, event: Event, *, destinations: list[str] | None = None) -> Event: ...


class DeliveryQueue(Protocol):
    """The drain's only dependency: per-destination wake-ups, claim and mark_sent."""

    def wakeup(self, destination: str) -> asyncio.Event: ...

    def alarm_wakeup(self, destination: str) -> asyncio.Event: ...

    def take_new_lane(
        self, destination: str, among: Sequence[Lane] = tuple(Lane)
    ) -> Lane | None: ...

    async def claim(
        self, destination: str, limit: int, after: dict[Lane, int], lanes: Sequence[Lane]
    ) -> list[PendingDelivery]:
        """The next rows above the cursors `after`, from `lanes` (`delivery.Deliveries.claim`;
        the drain always says both)."""
        ...

    async def mark_sent(self, destination: str, seqs: Sequence[int]) -> None: ...


class DeliveryRecords(Protocol):
    """What heartbeats and replay read about one destination's progress."""

    @property
    def boot_count(self) -> int: ...

    async def last_sent_seq(self, destination: str) -> int: ...

    async def routed_count(self, destination: str, after_seq: int, upto_seq: int) -> int: ...

    async def pending_count(self, destination: str) -> int: ...

    async def replay(
        self, destination: str, from_seq: int, to_seq: int
    ) -> list[PendingDelivery]: ...


@dataclass(frozen=True, slots=True)
class UplinkStore:
    """An uplink's view: it hands the queue to its drain and reads the records for heartbeats
    and replay (two parts of the store, so a pair rather than one object forwarding both)."""

    queue: DeliveryQueue
    records: DeliveryRecords


class AlarmRecords(Protocol):
    """What the latches read at start: the alarms still open and how far each got."""

    async def open_alarms(self) -> list[OpenAlarm]: ...

    async def alarm_progress(
        self, destination: str, alarm_ids: Sequence[str]
    ) -> list[AlarmProgress]: ...


class AlarmStore(EventWriter, AlarmRecords, Protocol):
    """The latches' view of the store: they write alarm events and restore open alarms."""


class LogMaintenance(EventWriter, Protocol):
    """Retention's view: whether the file is open, and its own statements run on the store's
    thread (they are `sql_upkeep`'s)."""

    @property
    def store_open(self) -> bool: ...

    async def call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T: ...
