"""Store-and-forward: every event is stored here before any broker sees it.

Owns appending events (alarms committed and fsynced at once; lower lanes group-committed within
`batch_delay_ms` so a burst costs one fsync), routing each event to its destinations, handing an
uplink the next rows in lane-then-`seq` order, recording PUBACKs per destination, and carrying on
in memory when the disk cannot be written (`spill`) until it can again, and starting in memory
when the store cannot even be opened (`open_unavailable`): seqs then start from a floor past the
file's, the file is retried every interval, and once open the memory is written back and the
file's own pending rows, which lie below the seqs stamped meanwhile, are handed out too
(`_Backfill`). It does not talk MQTT
(`uplink`, `drain`), does not evict or prune (`retention`), and does not decide what an event
means. The file itself belongs to `store`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import structlog

from gateway.core import contract
from gateway.core.events import DeviceRef, Event, Lane, Severity, new_event
from gateway.store import sql
from gateway.store.db import (
    STORAGE_ERRORS,
    OpenResult,
    Store,
    StoreError,
    StoreUnavailable,
    now_ms,
    seq_floor,
)
from gateway.store.records import OpenAlarm, PendingDelivery
from gateway.store.routing import Router
from gateway.store.spill import Spill, SpillRow
from gateway.store.sql import ClaimQuery, EventRow

log = structlog.get_logger(__name__)
GATEWAY_DEVICE = DeviceRef("gateway", "gateway", "")
_MAX_BATCH = 2000


OutboxError = StoreError


@dataclass(slots=True)
class _Item:
    event: Event
    destinations: list[str]


_T = TypeVar("_T")


class Outbox:
    def __init__(
        self,
        path: Path,
        site: contract.Site,
        router: Router,
        *,
        batch_delay_ms: int = 50,
        spill_limit: int = 50_000,
        recover_interval_s: float = 1.0,
        signer: Callable[[bytes], bytes] | None = None,
        drill: Callable[[], bool] | None = None,
    ) -> None:
        self._store = Store(path)
        self._signer = signer
        """Signs an event's stored body once (gateway.core.auth.sign_payload, the gateway key)."""
        self._drill = drill
        """True while a drill runs: every event stored meanwhile is marked `drill`."""
        self._site = site
        self._router = router
        self._batch_delay_s = batch_delay_ms / 1000
        self._recover_interval_s = recover_interval_s
        self._wakeups = {name: asyncio.Event() for name in router.destinations}
        self._new_lanes: dict[str, set[Lane]] = {name: set() for name in router.destinations}
        self._alarm_wakeups = {name: asyncio.Event() for name in router.destinations}
        self._queued: list[_Item] = []
        self._has_queued = asyncio.Event()
        self._flush_now = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self._last_seq = 0
        self.spill = Spill(spill_limit)
        self._unsynced_sent: dict[str, dict[int, int]] = {n: {} for n in router.destinations}
        self.degraded_reason: str | None = None
        self.boot_count = 0
        self.path = path
        self.store_open = False
        """False while the file cannot be opened: everything lives in `spill` meanwhile."""
        self.store_opened = asyncio.Event()
        """Set once the file is open (at start, or later by `recover`)."""
        self._backfill: dict[str, _Backfill] = {}

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        """Open the store. A file that cannot be opened does not stop the gateway: it starts in
        memory, reports the cause and the fix, and `run` retries the file every interval."""
        try:
            opened = await self._store.open()
        except StoreUnavailable as exc:
            await self._open_unavailable(exc)
            return
        self._last_seq = await self._store.call(sql.max_seq)
        await self._opened(opened)

    async def _opened(self, opened: OpenResult) -> None:
        self.boot_count = opened.boot_count
        self.store_open = True
        self.store_opened.set()
        for wakeup in [*self._wakeups.values(), *self._alarm_wakeups.values()]:
            wakeup.set()  # a restart resumes whatever each destination had pending
        if opened.moved_aside is not None:
            await self.append(
                _storage_event(
                    "gateway.storage_fault",
                    Severity.MAJOR,
                    fault="corrupt_database",
                    error=opened.reason,
                    moved_to=str(opened.moved_aside),
                )
            )

    async def _open_unavailable(self, exc: StoreUnavailable) -> None:
        # The file's seqs cannot be read: stamp from a floor no seq of the file can reach.
        self._last_seq = seq_floor()
        self.degraded_reason = str(exc)
        self._has_queued.set()  # wake `run`, which retries the file every interval
        log.error(
            "store_unavailable",
            path=str(exc.path),
            cause=exc.cause,
            error=exc.error,
            hint=exc.hint,
        )
        await self.append(
            _storage_event(
                "gateway.storage_fault",
                Severity.MAJOR,
                fault="cannot_open",
                cause=exc.cause,
                error=exc.error,
                hint=exc.hint,
                path=str(exc.path),
            )
        )

    async def close(self) -> None:
        await self.flush()
        if self.degraded:
            await self.recover()  # a last try: what is only in memory is lost at exit
        await self._store.close()

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

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
        item = _Item(event, self._router.destinations_for(event.type))
        self._queued.append(item)
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

    async def run(self) -> None:
        """The group-commit flusher, and the retry of the disk while degraded."""
        loop = asyncio.get_running_loop()
        next_recovery = 0.0
        while True:
            timeout = self._recover_interval_s if self.degraded else None
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancel that
            # arrives with the event, and the shutdown would wait for this loop forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._has_queued.wait()
            if self._has_queued.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._batch_delay_s):
                        await self._flush_now.wait()
                async with self._write_lock:
                    await self._flush_locked([])
            # While degraded, try the disk again at most once per interval.
            if self.degraded and loop.time() >= next_recovery:
                next_recovery = loop.time() + self._recover_interval_s
                await self.recover()

    async def _flush_locked(self, extra: list[_Item]) -> list[Event]:
        items, self._queued = [*self._queued, *extra], []
        self._has_queued.clear()
        self._flush_now.clear()
        if not items:
            return []
        stamped = self._stamp(items)
        rows = [self._row(event) for event, _ in stamped]
        if not self.degraded:
            urgent = any(event.lane is Lane.ALARM for event, _ in stamped)
            try:
                deliveries = [
                    (name, event.seq or 0, int(event.lane), 0, None)
                    for event, names in stamped
                    for name in names
                ]
                await self._store.call(lambda db: sql.insert(db, rows, deliveries), urgent=urgent)
            except STORAGE_ERRORS as exc:
                if isinstance(exc, sqlite3.IntegrityError):
                    raise  # a bug (a reused id or seq), not a disk fault
                await self._enter_degraded(str(exc))
                self._spill_rows(rows, stamped)
        else:
            self._spill_rows(rows, stamped)
        for event, destinations in stamped:
            for name in destinations:
                self._note_new(name, event.lane)
        return [event for event, _ in stamped]

    def _stamp(self, items: list[_Item]) -> list[tuple[Event, list[str]]]:
        stamped = []
        drill = self._drill is not None and self._drill()
        for item in items:
            self._last_seq += 1
            event = replace(item.event, seq=self._last_seq, drill=item.event.drill or drill)
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
            now_ms(),
            body,
            _button(event),
        )

    # -- the disk failing and coming back ------------------------------------------------------

    async def _enter_degraded(self, reason: str) -> None:
        first = self.degraded_reason is None
        self.degraded_reason = reason
        self._has_queued.set()  # wake `run`, which now retries the disk every interval
        if first:
            log.error("storage_fault", error=reason, path=str(self.path))
            fault = _storage_event(
                "gateway.storage_fault", Severity.MAJOR, fault="write_failed", error=reason
            )
            self._queued.append(_Item(fault, self._router.destinations_for(fault.type)))

    def _spill_rows(self, rows: list[EventRow], stamped: list[tuple[Event, list[str]]]) -> None:
        for row, (_, destinations) in zip(rows, stamped, strict=True):
            seq, id_, type_, lane, device_id, alarm_id, occurred, stored, body, button = row
            self.spill.add(
                SpillRow(
                    seq=seq,
                    id=id_,
                    type=type_,
                    lane=Lane(lane),
                    device_id=device_id,
                    alarm_id=alarm_id,
                    occurred_at_ms=occurred,
                    stored_at_ms=stored,
                    body=body,
                    button=button,
                    unsent=set(destinations),
                )
            )
        # A fault event queued by `_enter_degraded` goes to memory right behind the batch.
        if self._queued:
            queued, self._queued = self._queued, []
            stamped_more = self._stamp(queued)
            self._spill_rows([self._row(e) for e, _ in stamped_more], stamped_more)

    async def recover(self) -> bool:
        """Try to write everything held in memory back to disk (opening the file first if it
        could not be opened yet). True when no longer degraded."""
        if not self.degraded:
            return True
        if not self.store_open and not await self._reopen():
            return False
        async with self._write_lock:
            rows = list(self.spill.rows.values())
            unsynced = {d: dict(m) for d, m in self._unsynced_sent.items()}
            try:
                await self._store.call(lambda db: _write_back(db, rows, unsynced))
                # Past the file's seqs and everything written back, whichever is higher.
                self._last_seq = max(self._last_seq, await self._store.call(sql.max_seq))
            except STORAGE_ERRORS as exc:
                log.debug("storage_still_failing", error=str(exc))
                return False
            dropped = self.spill.dropped
            self.spill.clear()
            self.spill.dropped = 0
            for marks in self._unsynced_sent.values():
                marks.clear()
            reason, self.degraded_reason = self.degraded_reason, None
        log.info("storage_recovered", written_back=len(rows), dropped=dropped)
        if not self.store_opened.is_set():
            self.store_opened.set()  # the latches learn the alarms latched in the file
        await self.append(
            _storage_event(
                "gateway.storage_recovered",
                Severity.INFO,
                written_back=len(rows),
                dropped_in_memory=dropped,
                fault=reason,
            )
        )
        return True

    async def _reopen(self) -> bool:
        """Open a file that could not be opened before; not under the write lock, so alarms go
        on to memory while SQLite waits for a lock."""
        try:
            opened = await self._store.open()
        except StoreUnavailable as exc:
            log.debug("store_still_unavailable", error=exc.error, cause=exc.cause)
            return False
        floor = min(self.spill.rows, default=self._last_seq + 1)
        on_file = await self._store.call(sql.max_seq)
        if on_file >= floor:
            # Only a wall clock set far back does this; the write-back below then fails on the
            # seqs in common and keeps retrying, and the log says why.
            log.error("store_seq_floor_overtaken", floor=floor, file_max_seq=on_file)
        # The file's pending rows lie below every seq stamped meanwhile: below each claimer's
        # cursor. Hand them out too.
        self._backfill = {name: _Backfill(floor) for name in self._wakeups}
        self.boot_count = opened.boot_count
        self.store_open = True
        log.info("store_opened", path=str(self.path), boot=opened.boot_count)
        for wakeup in [*self._wakeups.values(), *self._alarm_wakeups.values()]:
            wakeup.set()
        if opened.moved_aside is not None:  # readable at last, and found corrupt
            self._queued.append(
                _Item(
                    fault := _storage_event(
                        "gateway.storage_fault",
                        Severity.MAJOR,
                        fault="corrupt_database",
                        error=opened.reason,
                        moved_to=str(opened.moved_aside),
                    ),
                    self._router.destinations_for(fault.type),
                )
            )
        return True

    # -- reading for uplinks -------------------------------------------------------------------

    async def claim(
        self,
        destination: str,
        limit: int,
        after: dict[Lane, int] | None = None,
        lanes: Sequence[Lane] = tuple(Lane),
    ) -> list[PendingDelivery]:
        """The next rows for `destination`: alarms first, then state, then telemetry, each lane
        in `seq` order, skipping rows at or below `after[lane]` (already claimed by the caller),
        only from `lanes`. Each row's attempt counter is incremented."""
        query = ClaimQuery(
            destination, limit, after or {}, set(self._unsynced_sent[destination]), tuple(lanes)
        )
        urgent = Lane.TELEMETRY not in query.lanes
        backfill = self._backfill.get(destination)
        if not self.store_open:
            rows = []
        elif backfill is not None:
            rows = await self._store.call(backfill.claim_run(query), urgent=urgent)
            if backfill.done:
                # Another sender of this destination may have finished it in the same turn.
                self._backfill.pop(destination, None)
        else:
            rows = await self._store.call(query.run, urgent=urgent)
        if self.spill.rows:
            rows = self._merge_spill(query, rows)
        return rows

    def _merge_spill(self, query: ClaimQuery, rows: list[PendingDelivery]) -> list[PendingDelivery]:
        merged = list(rows)
        for lane in query.lanes:
            for spilled in self.spill.pending(query.destination, lane, query.after.get(lane, 0)):
                attempt = spilled.attempts.get(query.destination, 0) + 1
                spilled.attempts[query.destination] = attempt
                merged.append(
                    PendingDelivery(
                        spilled.seq,
                        spilled.type,
                        spilled.lane,
                        attempt,
                        spilled.occurred_at_ms,
                        spilled.body.encode(),
                    )
                )
        merged.sort(key=lambda r: (r.lane, r.seq))
        return merged[: query.limit]

    async def mark_sent(self, destination: str, seqs: Sequence[int]) -> None:
        if not seqs:
            return
        at = now_ms()
        on_disk = self.spill.mark_sent(destination, set(seqs), at) if self.spill.rows else set(seqs)
        if not on_disk:
            return
        try:
            if not self.store_open:
                raise StoreError("the store is not open")
            await self._store.call(lambda db: sql.mark_sent(db, destination, on_disk, at))
        except (*STORAGE_ERRORS, StoreError) as exc:
            # Remembered in memory so the row is not sent again, written back on recovery.
            marks = self._unsynced_sent[destination]
            for seq in on_disk:
                marks[seq] = at
            if not self.degraded:
                async with self._write_lock:
                    await self._enter_degraded(str(exc))
                    await self._flush_locked([])

    def _note_new(self, destination: str, lane: Lane) -> None:
        self._new_lanes[destination].add(lane)
        self._wakeups[destination].set()
        if lane is Lane.ALARM:
            self._alarm_wakeups[destination].set()

    def take_new_lane(self, destination: str, among: Sequence[Lane] = tuple(Lane)) -> Lane | None:
        """The highest-priority lane of `among` that got a row for `destination` since the last
        call, if any (and forget those lanes): lets a sender see that something more urgent
        arrived while it drains a backlog."""
        new = self._new_lanes[destination]
        if not new:  # the common case, asked once per message sent
            return None
        found = [lane for lane in among if lane in new]
        new.difference_update(found)
        return min(found) if found else None

    def alarm_wakeup(self, destination: str) -> asyncio.Event:
        """Set whenever an alarm-lane row is queued for `destination`."""
        return self._alarm_wakeups[destination]

    def memory(self, device_id: str) -> DeviceStore:
        """A device's small persistent values (kept in the store's `meta` table)."""
        return DeviceStore(self._store, device_id)

    def wakeup(self, destination: str) -> asyncio.Event:
        """Set whenever a row is queued for `destination`; the uplink clears it."""
        return self._wakeups[destination]

    async def open_alarms(self) -> list[OpenAlarm]:
        """Panic alarms raised and not yet reset: the latches survive restarts. None while the
        file cannot be opened (the latches merge them in once it is: `store_opened`)."""
        if not self.store_open:
            return []
        alarms = await self._store.call(sql.open_alarms)
        return alarms

    async def pending_count(self, destination: str) -> int:
        on_disk = 0
        if self.store_open:
            on_disk = await self._store.call(lambda db: sql.pending_count(db, destination))
        return (
            on_disk - len(self._unsynced_sent[destination]) + self.spill.pending_count(destination)
        )

    async def call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read or maintenance function on the store thread (for `retention`)."""
        return await self._store.call(fn)

    # -- read by heartbeats and replay ---------------------------------------------------------

    async def last_sent_seq(self, destination: str) -> int:
        """The highest seq this destination's broker has acknowledged (0 if none)."""
        if not self.store_open:
            return max(
                (seq for seq, r in self.spill.rows.items() if destination in r.sent_at_ms),
                default=0,
            )

        return await self._store.call(lambda db: sql.last_sent_seq(db, destination))

    async def routed_count(self, destination: str, after_seq: int, upto_seq: int) -> int:
        """Events routed to `destination` with after_seq < seq <= upto_seq (on disk)."""
        if not self.store_open:
            return sum(
                1
                for seq, r in self.spill.rows.items()
                if after_seq < seq <= upto_seq
                and (destination in r.unsent or destination in r.sent_at_ms)
            )

        return await self._store.call(
            lambda db: sql.routed_count(db, destination, after_seq, upto_seq)
        )

    async def replay(self, destination: str, from_seq: int, to_seq: int) -> list[PendingDelivery]:
        """The stored events routed to `destination` with from_seq <= seq <= to_seq, in seq
        order, sent or not (the local record); attempt counters are not changed. Nothing
        while the file cannot be opened."""
        if not self.store_open:
            return []

        return await self._store.call(lambda db: sql.replay(db, destination, from_seq, to_seq))

    # -- read by the latches -------------------------------------------------------------------

    async def alarm_progress(
        self, destination: str, alarm_ids: Sequence[str]
    ) -> list[tuple[str, str, int, bool]]:
        """`(alarm_id, type, seq, sent)` of every stored `alarm.panic`, `alarm.escalated` and
        `alarm.acknowledged` of these alarms, in seq order; `sent`: `destination`'s broker has
        acknowledged it (PUBACK). The record on disk: read at start, when nothing is in memory."""
        if not alarm_ids or not self.store_open:
            return []
        return await self._store.call(lambda db: sql.alarm_progress(db, destination, alarm_ids))


class _Backfill:
    """Claims of a destination after a file opened late: its pending rows lie below `floor`
    (the first seq stamped in memory), under the claimer's cursors. They are handed out by a
    cursor of their own per lane; a claimer whose cursor for a lane is 0 is new (a reconnect)
    and gets that lane's rows from the start again."""

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self.handed: dict[Lane, int] = {}
        self.exhausted: set[Lane] = set()
        self.done = False

    def claim_run(self, query: ClaimQuery) -> Callable[[sqlite3.Connection], list[PendingDelivery]]:
        def run(db: sqlite3.Connection) -> list[PendingDelivery]:
            for lane in query.lanes:
                if query.after.get(lane, 0) == 0:
                    self.handed[lane] = 0
                    self.exhausted.discard(lane)
            old = replace(query, after=dict(self.handed), below=self.floor).run(db)
            rows = old
            if len(old) < query.limit:
                # Every lane asked for was looked at: those without a row have none left.
                self.exhausted.update(set(query.lanes) - {row.lane for row in old})
                above = {ln: max(query.after.get(ln, 0), self.floor - 1) for ln in query.lanes}
                rows = old + replace(query, limit=query.limit - len(old), after=above).run(db)
                rows.sort(key=lambda r: (r.lane, r.seq))
            for row in old:
                self.handed[row.lane] = max(self.handed.get(row.lane, 0), row.seq)
            self.done = self.exhausted == set(Lane)
            return rows

        return run


class DeviceStore:
    """`drivers.base.DeviceMemory` on the store: keys live in `meta` as `device:<id>:<key>`.
    Writes are bookkeeping (no fsync of their own) and never raise: a full disk (or a file not
    open yet: nothing is recalled) only means the value is re-learned after a restart."""

    def __init__(self, store: Store, device_id: str) -> None:
        self._store = store
        self._prefix = f"device:{device_id}:"

    async def recall(self, key: str) -> int | None:
        name = self._prefix + key

        try:
            return await self._store.call(lambda db: sql.recall(db, name))
        except StoreError:  # the file cannot be opened yet: re-learned, as after a full disk
            return None

    async def remember(self, key: str, value: int) -> None:
        name = self._prefix + key

        with contextlib.suppress(*STORAGE_ERRORS, StoreError):
            await self._store.call(lambda db: sql.remember(db, name, value))


def _storage_event(event_type: str, severity: Severity, **data: object) -> Event:
    return new_event(
        event_type, GATEWAY_DEVICE, severity=severity, occurred_at_ms=now_ms(), data=dict(data)
    )


def _button(event: Event) -> int | None:
    """The event's `data.button`, kept in its own column so that no query reads the payload."""
    button = event.data.get("button")
    return button if isinstance(button, int) and not isinstance(button, bool) else None


def _write_back(
    db: sqlite3.Connection, rows: list[SpillRow], unsynced: dict[str, dict[int, int]]
) -> None:
    events = [
        (
            r.seq,
            r.id,
            r.type,
            int(r.lane),
            r.device_id,
            r.alarm_id,
            r.occurred_at_ms,
            r.stored_at_ms,
            r.body,
            r.button,
        )
        for r in rows
    ]
    deliveries = [
        (name, r.seq, int(r.lane), r.attempts.get(name, 0), r.sent_at_ms.get(name))
        for r in rows
        for name in (*r.unsent, *r.sent_at_ms)
    ]
    sql.insert(db, events, deliveries, unsynced)
