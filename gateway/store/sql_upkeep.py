"""The durable log's upkeep SQL: retention's evictions and the read-only views of the CLI.

Owns what is deleted from `events` and `deliveries` and in which order (pruning delivered rows,
evicting undelivered telemetry and state, never an event of an open alarm: `sql.OPEN_ALARM_IDS`),
and the queries behind `schoolgate outbox stats` and `schoolgate events`. Split from `sql` only
to keep each module small: the two together are every statement over the log's tables. It does
not decide when to evict (`retention`) or how to render (`inspect`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gateway.core.events import Lane
from gateway.store.sql import OPEN_ALARM_IDS, in_transaction

# -- read-only views (`schoolgate outbox stats`, `schoolgate events`) --------------------------


def lane_stats(db: sqlite3.Connection) -> list[tuple[str, int, int, int | None, int | None]]:
    """(destination, lane, pending, oldest pending occurred_at_ms, last sent_at_ms) per lane."""
    return db.execute(
        "SELECT d.destination, d.lane,"
        " SUM(d.sent_at_ms IS NULL),"
        " MIN(CASE WHEN d.sent_at_ms IS NULL THEN e.occurred_at_ms END),"
        " MAX(d.sent_at_ms)"
        " FROM deliveries d JOIN events e ON e.seq = d.seq"
        " GROUP BY d.destination, d.lane ORDER BY d.destination, d.lane"
    ).fetchall()


def meta_values(db: sqlite3.Connection) -> dict[str, int]:
    return dict(db.execute("SELECT key, value FROM meta").fetchall())


def event_count(db: sqlite3.Connection) -> int:
    (events,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
    return int(events)


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which stored events `select_events` reads (`schoolgate events`' options)."""

    since_ms: int | None = None
    until_ms: int | None = None
    type_pattern: str | None = None
    """An exact type, or a prefix ending in `*` (`alarm.*`)."""
    device: str | None = None
    limit: int | None = None


def select_events(db: sqlite3.Connection, flt: EventFilter) -> Iterator[tuple[str, str | None]]:
    """(body, deliveries as a JSON object) of stored events, oldest first."""
    since_ms, until_ms, type_pattern = flt.since_ms, flt.until_ms, flt.type_pattern
    device, limit = flt.device, flt.limit
    where: list[str] = ["1=1"]
    params: list[object] = []
    if since_ms is not None:
        where.append("e.occurred_at_ms >= ?")
        params.append(since_ms)
    if until_ms is not None:
        where.append("e.occurred_at_ms < ?")
        params.append(until_ms)
    if type_pattern:
        if type_pattern.endswith("*"):
            where.append("e.type LIKE ? ESCAPE '\\'")
            prefix = type_pattern[:-1].replace("\\", "\\\\").replace("%", "\\%")
            params.append(prefix.replace("_", "\\_") + "%")
        else:
            where.append("e.type = ?")
            params.append(type_pattern)
    if device:
        where.append("e.device_id = ?")
        params.append(device)
    limit_sql = f" LIMIT {int(limit)}" if limit else ""
    sql = (
        "SELECT e.body,"
        " (SELECT json_group_object(d.destination, json_object('sent_at_ms', d.sent_at_ms,"
        "   'attempts', d.attempts)) FROM deliveries d WHERE d.seq = e.seq)"
        f" FROM events e WHERE {' AND '.join(where)} ORDER BY e.seq{limit_sql}"
    )
    yield from db.execute(sql, params)


# -- the daily report's reads (gateway.store.report_reads) ---------------------------------------


def bodies_between(
    db: sqlite3.Connection, since_ms: int, until_ms: int, types: Sequence[str]
) -> list[tuple[int, str]]:
    """(occurred_at_ms, body) of the events of `types` in [since_ms, until_ms), oldest first."""
    marks = ", ".join("?" for _ in types)
    return db.execute(
        "SELECT occurred_at_ms, body FROM events"
        f" WHERE occurred_at_ms >= ? AND occurred_at_ms < ? AND type IN ({marks})"
        " ORDER BY occurred_at_ms, seq",
        (since_ms, until_ms, *types),
    ).fetchall()


def last_type_per_device(
    db: sqlite3.Connection, before_ms: int, types: Sequence[str]
) -> list[tuple[str, str]]:
    """(device_id, type) of each device's last event of `types` before `before_ms`."""
    marks = ", ".join("?" for _ in types)
    return db.execute(
        "SELECT device_id, type FROM events e WHERE seq = (SELECT MAX(seq) FROM events"
        f" WHERE device_id = e.device_id AND occurred_at_ms < ? AND type IN ({marks}))",
        (before_ms, *types),
    ).fetchall()


def has_event_id(db: sqlite3.Connection, event_id: str) -> bool:
    return db.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None


# -- retention: what is deleted, and in which order --------------------------------------------

_DELIVERED = "NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.seq = e.seq AND d.sent_at_ms IS NULL)"
_NOT_LATCHED = f"(e.alarm_id IS NULL OR e.alarm_id NOT IN ({OPEN_ALARM_IDS}))"


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


def prune_chunk(db: sqlite3.Connection, before_ms: int, chunk: int) -> int:
    """Delete up to `chunk` events delivered everywhere, older than `before_ms`, not latched."""
    seqs = [
        row[0]
        for row in db.execute(
            f"SELECT e.seq FROM events e WHERE e.occurred_at_ms < ? AND {_DELIVERED}"
            f" AND {_NOT_LATCHED} ORDER BY e.seq LIMIT ?",
            (before_ms, chunk),
        )
    ]
    if seqs:
        _delete(db, seqs)
    return len(seqs)


def evict_delivered_chunk(db: sqlite3.Connection, after_seq: int, chunk: int) -> tuple[int, int]:
    """Delete delivered rows among the next chunk of oldest events. Returns (deleted, last seq
    scanned; 0 when the table is exhausted)."""
    rows = db.execute(
        f"SELECT e.seq, {_DELIVERED} AND {_NOT_LATCHED} FROM events e WHERE e.seq > ?"
        " ORDER BY e.seq LIMIT ?",
        (after_seq, chunk),
    ).fetchall()
    if not rows:
        return 0, 0
    seqs = [seq for seq, deletable in rows if deletable]
    if seqs:
        _delete(db, seqs)
    return len(seqs), rows[-1][0]


def evict_undelivered_chunk(
    db: sqlite3.Connection, lane: Lane, before_ms: int | None, chunk: int
) -> int:
    """Delete up to `chunk` undelivered, unlatched rows of `lane` (older than `before_ms` if
    given), counting them in `meta.evicted_undelivered`."""
    age = "" if before_ms is None else " AND e.occurred_at_ms < ?"
    params: tuple[int, ...] = (int(lane),) if before_ms is None else (int(lane), before_ms)
    seqs = [
        row[0]
        for row in db.execute(
            f"SELECT e.seq FROM events e WHERE e.lane = ?{age} AND NOT {_DELIVERED}"
            f" AND {_NOT_LATCHED} ORDER BY e.seq LIMIT {int(chunk)}",
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
