"""SQLite store-and-forward: every event is stored here before any broker sees it.

Owns the database file: the `events` table (one durable copy of each event, with its `seq`), the
per-destination `deliveries` table (progress, attempts) and the `meta` table (boot counter). It
hands uplinks the next rows to send, in lane then `seq` order, and records PUBACKs. It does not
talk MQTT (that is `uplink`) and does not decide what an event means.

Durability: WAL mode. An alarm is committed with `synchronous=FULL` (the WAL is fsynced before
`append` returns); other lanes are committed with `synchronous=NORMAL`, which survives a process
kill but may lose the last commits on power loss. All SQLite work runs on one worker thread that
owns the connection, so the event loop never blocks on an fsync.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import structlog

from gateway import contract
from gateway.events import Event, Lane
from gateway.routing import Router

_T = TypeVar("_T")
log = structlog.get_logger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a seq is never reused
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    lane INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    alarm_id TEXT,
    occurred_at_ms INTEGER NOT NULL,
    stored_at_ms INTEGER NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_alarm ON events(alarm_id) WHERE alarm_id IS NOT NULL;
CREATE TABLE IF NOT EXISTS deliveries (
    destination TEXT NOT NULL,
    seq INTEGER NOT NULL,
    lane INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at_ms INTEGER,
    PRIMARY KEY (destination, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS deliveries_pending
    ON deliveries(destination, lane, seq) WHERE sent_at_ms IS NULL;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


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


class OutboxError(Exception):
    """The store could not be opened or written."""


class Outbox:
    def __init__(self, path: Path, site: contract.Site, router: Router) -> None:
        self._path = path
        self._site = site
        self._router = router
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None
        self._wakeups = {name: asyncio.Event() for name in router.destinations}
        self.boot_count = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        self.boot_count = await self._call(self._open_sync)
        for wakeup in self._wakeups.values():
            wakeup.set()  # a restart resumes whatever each destination had pending

    async def close(self) -> None:
        if self._db is not None:
            await self._call(self._close_sync)
        self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Outbox:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- writing -----------------------------------------------------------------------------

    async def append(self, event: Event) -> Event:
        """Store `event` and queue it for every destination whose route accepts it. Returns the
        event with its `seq`. An alarm is on disk (fsynced) when this returns."""
        destinations = self._router.destinations_for(event.type)
        stored = await self._call(lambda: self._append_sync(event, destinations))
        for name in destinations:
            self._wakeups[name].set()
        return stored

    async def claim(self, destination: str, limit: int) -> list[PendingDelivery]:
        """The next rows to send to `destination` (alarms first, then by seq), with their
        attempt counter already incremented so a crash after publishing still counts it."""
        return await self._call(lambda: self._claim_sync(destination, limit))

    async def mark_sent(self, destination: str, seqs: Sequence[int]) -> None:
        if seqs:
            await self._call(lambda: self._mark_sent_sync(destination, seqs))

    def wakeup(self, destination: str) -> asyncio.Event:
        """Set whenever a new row is queued for `destination`; the uplink clears it."""
        return self._wakeups[destination]

    # -- reading -----------------------------------------------------------------------------

    async def open_alarms(self) -> list[OpenAlarm]:
        """Panic alarms that were raised and not yet reset: the latches survive restarts."""
        return await self._call(self._open_alarms_sync)

    async def pending_count(self, destination: str) -> int:
        return await self._call(lambda: self._pending_count_sync(destination))

    # -- the worker thread -------------------------------------------------------------------

    async def _call(self, fn: Callable[[], _T]) -> _T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise OutboxError("outbox is not open")
        return self._db

    def _open_sync(self) -> int:
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self._path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            db.execute(
                "INSERT INTO meta(key, value) VALUES('boot_count', 1) "
                "ON CONFLICT(key) DO UPDATE SET value = value + 1"
            )
            (boot,) = db.execute("SELECT value FROM meta WHERE key='boot_count'").fetchone()
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open outbox {self._path}: {exc}") from exc
        self._db = db
        return int(boot)

    def _close_sync(self) -> None:
        self._conn().close()
        self._db = None

    def _append_sync(self, event: Event, destinations: list[str]) -> Event:
        db = self._conn()
        alarm = event.lane is Lane.ALARM
        if alarm:
            db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                cur = db.execute(
                    "INSERT INTO events(id, type, lane, device_id, alarm_id, occurred_at_ms,"
                    " stored_at_ms, body) VALUES (?, ?, ?, ?, ?, ?, ?, '')",
                    (
                        event.id,
                        event.type,
                        int(event.lane),
                        event.device.id,
                        event.alarm_id,
                        event.occurred_at_ms,
                        time.time_ns() // 1_000_000,
                    ),
                )
                seq = cur.lastrowid
                assert seq is not None  # an INSERT into a rowid table always sets it
                stored = replace(event, seq=seq)
                body = contract.encode_event_body(self._site, stored).decode()
                db.execute("UPDATE events SET body=? WHERE seq=?", (body, seq))
                db.executemany(
                    "INSERT INTO deliveries(destination, seq, lane) VALUES (?, ?, ?)",
                    [(name, seq, int(event.lane)) for name in destinations],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        finally:
            if alarm:
                db.execute("PRAGMA synchronous=NORMAL")
        return stored

    def _claim_sync(self, destination: str, limit: int) -> list[PendingDelivery]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            rows = db.execute(
                "SELECT d.seq, e.type, d.lane, d.attempts, e.occurred_at_ms, e.body"
                " FROM deliveries d JOIN events e ON e.seq = d.seq"
                " WHERE d.destination = ? AND d.sent_at_ms IS NULL"
                " ORDER BY d.lane, d.seq LIMIT ?",
                (destination, limit),
            ).fetchall()
            db.executemany(
                "UPDATE deliveries SET attempts = attempts + 1 WHERE destination=? AND seq=?",
                [(destination, row[0]) for row in rows],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return [
            PendingDelivery(
                seq=seq,
                type=type_,
                lane=Lane(lane),
                attempt=attempts + 1,
                occurred_at_ms=occurred,
                body=body.encode(),
            )
            for seq, type_, lane, attempts, occurred, body in rows
        ]

    def _mark_sent_sync(self, destination: str, seqs: Sequence[int]) -> None:
        now = time.time_ns() // 1_000_000
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "UPDATE deliveries SET sent_at_ms=? WHERE destination=? AND seq=?",
                [(now, destination, seq) for seq in seqs],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _open_alarms_sync(self) -> list[OpenAlarm]:
        rows = (
            self._conn()
            .execute(
                "SELECT alarm_id, device_id, json_extract(body, '$.data.button'),"
                " MIN(occurred_at_ms), COUNT(*)"
                " FROM events"
                " WHERE alarm_id IS NOT NULL AND type IN ('alarm.panic', 'alarm.panic_repeated')"
                "   AND alarm_id NOT IN (SELECT alarm_id FROM events"
                "                        WHERE type = 'alarm.reset' AND alarm_id IS NOT NULL)"
                " GROUP BY alarm_id ORDER BY MIN(seq)"
            )
            .fetchall()
        )
        return [
            OpenAlarm(alarm_id=a, device_id=d, button=int(b), raised_at_ms=t, presses=n)
            for a, d, b, t, n in rows
        ]

    def _pending_count_sync(self, destination: str) -> int:
        (count,) = (
            self._conn()
            .execute(
                "SELECT COUNT(*) FROM deliveries WHERE destination=? AND sent_at_ms IS NULL",
                (destination,),
            )
            .fetchone()
        )
        return int(count)
