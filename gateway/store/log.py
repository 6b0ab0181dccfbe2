"""The durable log: events and their deliveries, on disk when it can be, in memory when not.

Owns the SQLite file (through `db.Store`), the memory `spill` while the disk cannot be written,
the degraded mode it implies, the retry of the disk every interval (`run`, on the injected
clock) and the write-back once it works again, a file that could not be opened at start and is
opened late, and the seqs: it issues them (`next_seq`), from the file's highest, or from a floor
past it when the file cannot be read. Every reader sees one log whichever medium holds a row:
claims and PUBACKs (for the delivery queue), the records of heartbeats, replay and the latches,
and retention's statements (`call`).

It does not stamp, sign or route events (`outbox`), nor wake or pace senders (`delivery`), nor
emit events of its own: it reports a disk fault and a recovery by the `on_notice` callback (the
outbox turns each into a `gateway.storage_*` event) and a file opened by `on_open` (the queue
wakes its senders). Every statement is `sql`'s.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import structlog

from gateway.core.clock import Clock, SystemClock
from gateway.core.events import Lane, Severity
from gateway.store import sql
from gateway.store.db import STORAGE_ERRORS, OpenResult, Store, StoreError, StoreUnavailable
from gateway.store.memory import DeviceStore
from gateway.store.records import AlarmProgress, OpenAlarm, PendingDelivery
from gateway.store.spill import Spill, SpillRow
from gateway.store.sql import ClaimQuery, EventRow

log = structlog.get_logger(__name__)
_T = TypeVar("_T")

ClaimPlan = Callable[[ClaimQuery], Callable[[sqlite3.Connection], list[PendingDelivery]]]
"""How a claim reads the file (`ClaimQuery.run`, or a backfill's own plan)."""


@dataclass(frozen=True, slots=True)
class StorageNotice:
    """A fault of the disk or its recovery, for whoever reports it (`gateway.storage_*`)."""

    type: str
    severity: Severity
    data: dict[str, object] = field(default_factory=dict)


def _ignore(*_: object) -> None:
    return None


class DurableLog:
    def __init__(
        self,
        path: Path,
        destinations: Sequence[str],
        *,
        spill_limit: int = 50_000,
        recover_interval_s: float = 1.0,
        clock: Clock | None = None,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._db = Store(path, clock=self._clock)
        self._recover_interval_s = recover_interval_s
        self._lock = asyncio.Lock()
        """Held by a write and by the write-back: memory is never written back half-filled."""
        self._last_seq = 0
        self._degraded = asyncio.Event()
        self._unsynced_sent: dict[str, dict[int, int]] = {n: {} for n in destinations}
        self.spill = Spill(spill_limit)
        self.path = path
        self.degraded_reason: str | None = None
        self.boot_count = 0
        self.store_open = False
        """False while the file cannot be opened: everything lives in `spill` meanwhile."""
        self.store_opened = asyncio.Event()
        """Set once the file is open (at start, or later by `recover`)."""
        self.on_notice: Callable[[StorageNotice], None] = _ignore
        """Told of a disk fault and of its recovery (the outbox stores them as events)."""
        self.on_open: Callable[[int | None], None] = _ignore
        """Told when the file opens: None at start, or the first seq stamped in memory when it
        opens late (its pending rows lie below it)."""

    @property
    def degraded(self) -> bool:
        return self.degraded_reason is not None

    def now_ms(self) -> int:
        return self._clock.wall_ms()

    def next_seq(self) -> int:
        self._last_seq += 1
        return self._last_seq

    # -- opening and closing -------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file. One that cannot be opened does not stop the gateway: the log starts in
        memory, reports the cause and the fix, and `run` retries the file every interval."""
        try:
            opened = await self._db.open()
        except StoreUnavailable as exc:
            self._open_unavailable(exc)
            return
        self._last_seq = await self._db.call(sql.max_seq)
        self._opened(opened, floor=None)

    def _opened(self, opened: OpenResult, floor: int | None) -> None:
        self.boot_count = opened.boot_count
        self.store_open = True
        if floor is None:
            self.store_opened.set()  # late: set once memory is written back (`recover`)
        self.on_open(floor)  # a restart resumes whatever each destination had pending
        if opened.moved_aside is not None:
            self.on_notice(
                StorageNotice(
                    "gateway.storage_fault",
                    Severity.MAJOR,
                    {
                        "fault": "corrupt_database",
                        "error": opened.reason,
                        "moved_to": str(opened.moved_aside),
                    },
                )
            )

    def _open_unavailable(self, exc: StoreUnavailable) -> None:
        # The file's seqs cannot be read: stamp from a floor no seq of the file can reach.
        self._last_seq = self._db.seq_floor()
        log.error(
            "store_unavailable", path=str(exc.path), cause=exc.cause, error=exc.error, hint=exc.hint
        )
        self._set_degraded(str(exc))
        self.on_notice(
            StorageNotice(
                "gateway.storage_fault",
                Severity.MAJOR,
                {
                    "fault": "cannot_open",
                    "cause": exc.cause,
                    "error": exc.error,
                    "hint": exc.hint,
                    "path": str(exc.path),
                },
            )
        )

    async def close(self) -> None:
        if self.degraded:
            await self.recover()  # a last try: what is only in memory is lost at exit
        await self._db.close()

    # -- writing ---------------------------------------------------------------------------------

    async def write(self, rows: list[EventRow], routes: list[list[str]], *, urgent: bool) -> None:
        """Store stamped rows and one delivery per destination of each (`routes`, row by row):
        fsynced when this returns, or held in memory if the disk is failing."""
        async with self._lock:
            if not self.degraded:
                deliveries = [
                    (name, row[0], row[3], 0, None)
                    for row, names in zip(rows, routes, strict=True)
                    for name in names
                ]
                try:
                    await self._db.call(lambda db: sql.insert(db, rows, deliveries), urgent=urgent)
                except STORAGE_ERRORS as exc:
                    if isinstance(exc, sqlite3.IntegrityError):
                        raise  # a bug (a reused id or seq), not a disk fault
                    self._enter_degraded(str(exc))
                else:
                    return
            for row, names in zip(rows, routes, strict=True):
                self.spill.add(_spill_row(row, names))

    def _set_degraded(self, reason: str) -> None:
        self.degraded_reason = reason
        self._degraded.set()  # wakes `run`, which now retries the disk every interval

    def _enter_degraded(self, reason: str) -> None:
        if self.degraded:
            return
        log.error("storage_fault", error=reason, path=str(self.path))
        self._set_degraded(reason)
        self.on_notice(
            StorageNotice(
                "gateway.storage_fault", Severity.MAJOR, {"fault": "write_failed", "error": reason}
            )
        )

    # -- the disk coming back --------------------------------------------------------------------

    async def run(self) -> None:
        """While degraded, try the disk again at once and then once per interval."""
        while True:
            await self._degraded.wait()
            while not await self.recover():
                await self._clock.sleep(self._recover_interval_s)

    async def recover(self) -> bool:
        """Try to write everything held in memory back to disk (opening the file first if it
        could not be opened yet). True when no longer degraded."""
        if not self.degraded:
            return True
        if not self.store_open and not await self._reopen():
            return False
        async with self._lock:
            rows = list(self.spill.rows.values())
            unsynced = {d: dict(m) for d, m in self._unsynced_sent.items()}
            try:
                await self._db.call(lambda db: sql.write_back(db, rows, unsynced))
                # Past the file's seqs and everything written back, whichever is higher.
                self._last_seq = max(self._last_seq, await self._db.call(sql.max_seq))
            except STORAGE_ERRORS as exc:
                log.debug("storage_still_failing", error=str(exc))
                return False
            dropped = self.spill.dropped
            self.spill.clear()
            self.spill.dropped = 0
            for marks in self._unsynced_sent.values():
                marks.clear()
            reason, self.degraded_reason = self.degraded_reason, None
            self._degraded.clear()
        log.info("storage_recovered", written_back=len(rows), dropped=dropped)
        if not self.store_opened.is_set():
            self.store_opened.set()  # the latches learn the alarms latched in the file
        self.on_notice(
            StorageNotice(
                "gateway.storage_recovered",
                Severity.INFO,
                {"written_back": len(rows), "dropped_in_memory": dropped, "fault": reason},
            )
        )
        return True

    async def _reopen(self) -> bool:
        """Open a file that could not be opened before; not under the lock, so alarms go on to
        memory while SQLite waits for a lock."""
        try:
            opened = await self._db.open()
        except StoreUnavailable as exc:
            log.debug("store_still_unavailable", error=exc.error, cause=exc.cause)
            return False
        floor = min(self.spill.rows, default=self._last_seq + 1)
        on_file = await self._db.call(sql.max_seq)
        if on_file >= floor:
            # Only a wall clock set far back does this; the write-back then fails on the seqs
            # in common and keeps retrying, and the log says why.
            log.error("store_seq_floor_overtaken", floor=floor, file_max_seq=on_file)
        log.info("store_opened", path=str(self.path), boot=opened.boot_count)
        self._opened(opened, floor=floor)
        return True

    # -- claims and PUBACKs (the delivery queue's) -----------------------------------------------

    async def claim(
        self,
        destination: str,
        limit: int,
        after: dict[Lane, int],
        lanes: Sequence[Lane],
        plan: ClaimPlan | None = None,
    ) -> list[PendingDelivery]:
        """Rows of `destination` not acknowledged, from the file (read by `plan`) and memory."""
        query = ClaimQuery(
            destination, limit, after, set(self._unsynced_sent[destination]), tuple(lanes)
        )
        rows: list[PendingDelivery] = []
        if self.store_open:
            run = query.run if plan is None else plan(query)
            rows = await self._db.call(run, urgent=Lane.TELEMETRY not in query.lanes)
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
        at = self.now_ms()
        on_disk = self.spill.mark_sent(destination, set(seqs), at) if self.spill.rows else set(seqs)
        if not on_disk:
            return
        try:
            if not self.store_open:
                raise StoreError("the store is not open")
            await self._db.call(lambda db: sql.mark_sent(db, destination, on_disk, at))
        except (*STORAGE_ERRORS, StoreError) as exc:
            # Remembered in memory so the row is not sent again, written back on recovery.
            marks = self._unsynced_sent[destination]
            for seq in on_disk:
                marks[seq] = at
            self._enter_degraded(str(exc))

    # -- records: heartbeats, replay, the latches, retention, device memory ------------------------

    async def pending_count(self, destination: str) -> int:
        on_disk = 0
        if self.store_open:
            on_disk = await self._db.call(lambda db: sql.pending_count(db, destination))
        return (
            on_disk - len(self._unsynced_sent[destination]) + self.spill.pending_count(destination)
        )

    async def last_sent_seq(self, destination: str) -> int:
        """The highest seq this destination's broker has acknowledged (0 if none)."""
        if not self.store_open:
            return max(
                (seq for seq, r in self.spill.rows.items() if destination in r.sent_at_ms),
                default=0,
            )
        return await self._db.call(lambda db: sql.last_sent_seq(db, destination))

    async def routed_count(self, destination: str, after_seq: int, upto_seq: int) -> int:
        """Events routed to `destination` with after_seq < seq <= upto_seq (on disk)."""
        if not self.store_open:
            return sum(
                1
                for seq, r in self.spill.rows.items()
                if after_seq < seq <= upto_seq
                and (destination in r.unsent or destination in r.sent_at_ms)
            )
        return await self._db.call(
            lambda db: sql.routed_count(db, destination, after_seq, upto_seq)
        )

    async def replay(self, destination: str, from_seq: int, to_seq: int) -> list[PendingDelivery]:
        """The stored events routed to `destination` with from_seq <= seq <= to_seq, in seq
        order, sent or not (the local record); attempt counters are not changed. Nothing
        while the file cannot be opened."""
        if not self.store_open:
            return []
        return await self._db.call(lambda db: sql.replay(db, destination, from_seq, to_seq))

    async def open_alarms(self) -> list[OpenAlarm]:
        """Panic alarms raised and not yet reset: the latches survive restarts. None while the
        file cannot be opened (the latches merge them in once it is: `store_opened`)."""
        if not self.store_open:
            return []
        return await self._db.call(sql.open_alarms)

    async def alarm_progress(
        self, destination: str, alarm_ids: Sequence[str]
    ) -> list[AlarmProgress]:
        """Every stored step of these alarms (`sql.PROGRESS_TYPES`: raised, escalated,
        acknowledged, siren silenced; when, by whom), in seq order; `sent`: `destination`'s
        broker has acknowledged it (PUBACK). The record on disk: read at start, when nothing is
        in memory."""
        if not alarm_ids or not self.store_open:
            return []
        return await self._db.call(lambda db: sql.alarm_progress(db, destination, alarm_ids))

    async def call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run a read or maintenance function on the store thread (for `retention`)."""
        return await self._db.call(fn)

    def memory(self, device_id: str) -> DeviceStore:
        """A device's small persistent values (kept in the store's `meta` table)."""
        return DeviceStore(self._db, device_id)


def _spill_row(row: EventRow, destinations: list[str]) -> SpillRow:
    seq, id_, type_, lane, device_id, alarm_id, occurred, stored, body, button, actor = row
    return SpillRow(
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
        actor=actor,
        unsent=set(destinations),
    )
