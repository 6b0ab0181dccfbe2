"""Bounded disk: the size cap, the optional age cap for undelivered rows, and the local record.

Owns what is deleted from the store and in which order: events delivered everywhere and older
than `retain_days` are pruned (the school's local record is kept that long); over the size cap,
the oldest delivered rows go first, then the oldest undelivered telemetry, then undelivered state.
Undelivered alarms are never evicted, nor any event of an alarm that is still latched. Every
eviction of undelivered data is counted (persistently), logged once per episode and reported as a
`gateway.eviction` event, which the default routes send to the bureau.

Work is done in small chunks on the store thread so that an alarm's append never waits behind a
long delete. It does not append rows or send anything itself.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import dataclass, field
from functools import partial

import structlog

from gateway.core.events import Lane, Severity, new_event
from gateway.store.db import in_transaction
from gateway.store.outbox import GATEWAY_DEVICE, Outbox

log = structlog.get_logger(__name__)
_CHUNK = 2000
_DAY_MS = 86_400_000

_OPEN_ALARMS = (
    "SELECT alarm_id FROM events WHERE type = 'alarm.panic' AND alarm_id IS NOT NULL"
    " AND alarm_id NOT IN (SELECT alarm_id FROM events"
    "                      WHERE type = 'alarm.reset' AND alarm_id IS NOT NULL)"
)
_DELIVERED = "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = e.seq AND d.sent_at_ms IS NULL)"
_NOT_LATCHED = f"(e.alarm_id IS NULL OR e.alarm_id NOT IN ({_OPEN_ALARMS}))"


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    max_bytes: int
    retain_ms: int = 90 * _DAY_MS
    max_age_ms: int | None = None


@dataclass(slots=True)
class EvictionReport:
    pruned: int = 0
    """Delivered rows past the retention period."""
    evicted_delivered: int = 0
    evicted_undelivered: dict[str, int] = field(default_factory=dict)
    """Lane name -> rows removed before every destination had them."""

    @property
    def lost(self) -> int:
        return sum(self.evicted_undelivered.values())


def used_bytes(db: sqlite3.Connection) -> int:
    (pages,) = db.execute("PRAGMA page_count").fetchone()
    (free,) = db.execute("PRAGMA freelist_count").fetchone()
    (size,) = db.execute("PRAGMA page_size").fetchone()
    return int((pages - free) * size)


def _delete(db: sqlite3.Connection, seqs: list[int]) -> None:
    def run() -> None:
        db.executemany("DELETE FROM deliveries WHERE seq = ?", [(s,) for s in seqs])
        db.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in seqs])

    in_transaction(db, run)


def _prune_chunk(db: sqlite3.Connection, before_ms: int) -> int:
    seqs = [
        row[0]
        for row in db.execute(
            f"SELECT e.seq FROM events e WHERE e.occurred_at_ms < ? AND {_DELIVERED}"
            f" AND {_NOT_LATCHED} ORDER BY e.seq LIMIT ?",
            (before_ms, _CHUNK),
        )
    ]
    if seqs:
        _delete(db, seqs)
    return len(seqs)


def _evict_delivered_chunk(db: sqlite3.Connection, after_seq: int) -> tuple[int, int]:
    """Delete delivered rows among the next chunk of oldest events. Returns (deleted, last seq
    scanned; 0 when the table is exhausted)."""
    rows = db.execute(
        f"SELECT e.seq, {_DELIVERED} AND {_NOT_LATCHED} FROM events e WHERE e.seq > ?"
        " ORDER BY e.seq LIMIT ?",
        (after_seq, _CHUNK),
    ).fetchall()
    if not rows:
        return 0, 0
    seqs = [seq for seq, deletable in rows if deletable]
    if seqs:
        _delete(db, seqs)
    return len(seqs), rows[-1][0]


def _evict_undelivered_chunk(db: sqlite3.Connection, lane: Lane, before_ms: int | None) -> int:
    age = "" if before_ms is None else " AND e.occurred_at_ms < ?"
    params: tuple[int, ...] = (int(lane),) if before_ms is None else (int(lane), before_ms)
    seqs = [
        row[0]
        for row in db.execute(
            f"SELECT e.seq FROM events e WHERE e.lane = ?{age} AND NOT {_DELIVERED}"
            f" AND {_NOT_LATCHED} ORDER BY e.seq LIMIT {_CHUNK}",
            params,
        )
    ]
    if seqs:
        _delete(db, seqs)
        db.execute(
            "INSERT INTO meta(key, value) VALUES ('evicted_undelivered', ?)"
            " ON CONFLICT(key) DO UPDATE SET value = value + excluded.value",
            (len(seqs),),
        )
    return len(seqs)


class Retention:
    def __init__(
        self, outbox: Outbox, policy: RetentionPolicy, *, check_interval_s: float = 10.0
    ) -> None:
        self._outbox = outbox
        self._policy = policy
        self._interval_s = check_interval_s
        self._in_episode = False

    async def run(self) -> None:
        while True:
            await self.enforce()
            await asyncio.sleep(self._interval_s)

    async def enforce(self, now_ms: int | None = None) -> EvictionReport:
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        report = EvictionReport()
        if not self._outbox.store_open:
            return report  # nothing on disk to keep small while the file cannot be opened
        call = self._outbox.call
        while chunk := await call(partial(_prune_chunk, before_ms=now - self._policy.retain_ms)):
            report.pruned += chunk
        if self._policy.max_age_ms is not None:
            for lane in (Lane.TELEMETRY, Lane.STATE):
                cutoff = now - self._policy.max_age_ms
                while n := await call(
                    partial(_evict_undelivered_chunk, lane=lane, before_ms=cutoff)
                ):
                    name = lane.name.lower()
                    report.evicted_undelivered[name] = report.evicted_undelivered.get(name, 0) + n
        if await call(used_bytes) > self._policy.max_bytes:
            await self._enforce_size(report)
        await self._report(report)
        return report

    async def _enforce_size(self, report: EvictionReport) -> None:
        call = self._outbox.call
        cap = self._policy.max_bytes
        after = 0
        while await call(used_bytes) > cap:
            deleted, after = await call(partial(_evict_delivered_chunk, after_seq=after))
            report.evicted_delivered += deleted
            if after == 0:
                break
        for lane in (Lane.TELEMETRY, Lane.STATE):
            while await call(used_bytes) > cap:
                n = await call(partial(_evict_undelivered_chunk, lane=lane, before_ms=None))
                if not n:
                    break
                name = lane.name.lower()
                report.evicted_undelivered[name] = report.evicted_undelivered.get(name, 0) + n

    async def _report(self, report: EvictionReport) -> None:
        if report.pruned or report.evicted_delivered:
            log.info(
                "store_pruned", pruned=report.pruned, evicted_delivered=report.evicted_delivered
            )
        if not report.lost:
            self._in_episode = False
            return
        if not self._in_episode:
            # Once per episode in the log; every time in the bureau's record.
            self._in_episode = True
            log.error("undelivered_events_evicted", **report.evicted_undelivered)
        await self._outbox.append(
            new_event(
                "gateway.eviction",
                GATEWAY_DEVICE,
                severity=Severity.MAJOR,
                occurred_at_ms=time.time_ns() // 1_000_000,
                data={"evicted_undelivered": dict(report.evicted_undelivered)},
            )
        )
