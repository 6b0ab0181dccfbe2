"""The durable log's SQL: the schema of `events` and `deliveries` and every statement over them.

Owns the tables (and their migration from older files), the one definition of an open alarm
(`OPEN_ALARM_IDS`, used by the latches' restore and by retention), appending and writing back,
claiming and marking rows sent, the reads of heartbeats, replay and the latches, retention's
evictions, and the read-only queries of `schoolgate outbox stats` / `events`. Every function takes
a `sqlite3.Connection` and runs on the caller's thread (the store's worker, or the read-only CLI).
No statement parses the wire payload: what a query needs is a column (`button`, `actor`,
`alarm_id`).

It does not open files or own threads (`db`), decide about a failing disk (`log`), or know what
an event means beyond its columns.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.core.events import Lane
from gateway.store.faults import STORAGE_ERRORS
from gateway.store.records import AlarmProgress, OpenAlarm, PendingDelivery
from gateway.store.spill import SpillRow

_T = TypeVar("_T")
NO_SEQ_ABOVE = 2**63 - 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: a seq is never reused
    id TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    lane INTEGER NOT NULL,
    device_id TEXT NOT NULL,
    alarm_id TEXT,
    occurred_at_ms INTEGER NOT NULL,
    stored_at_ms INTEGER NOT NULL,
    body TEXT NOT NULL,
    button INTEGER,  -- data.button of the event, when it has one (alarms)
    actor TEXT  -- data.by of the event, when it has one (who acknowledged, silenced, ...)
);
CREATE INDEX IF NOT EXISTS events_alarm ON events(alarm_id) WHERE alarm_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_time ON events(occurred_at_ms);
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
CREATE INDEX IF NOT EXISTS deliveries_seq ON deliveries(seq);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""

OPEN_ALARM_TYPES = ("alarm.panic", "alarm.panic_repeated")
"""The events that raise (or repeat) a latched alarm; `alarm.reset` closes it."""
_ALARM_TYPES_SQL = ", ".join(f"'{t}'" for t in OPEN_ALARM_TYPES)
OPEN_ALARM_IDS = (
    f"SELECT alarm_id FROM events WHERE alarm_id IS NOT NULL AND type IN ({_ALARM_TYPES_SQL})"
    " AND alarm_id NOT IN (SELECT alarm_id FROM events"
    "                      WHERE type = 'alarm.reset' AND alarm_id IS NOT NULL)"
)
"""THE definition of an open alarm: raised and not reset. The latches restore these and
retention never deletes an event of one."""


def in_transaction(db: sqlite3.Connection, fn: Callable[[], _T], *, durable: bool = True) -> _T:
    """Run `fn` inside BEGIN IMMEDIATE ... COMMIT, rolling back on any error.

    `durable=False` is for delivery bookkeeping (attempt counts, PUBACK marks): committed
    without an fsync of its own (the next durable commit carries it to disk). Losing it to a
    power cut only means a row is sent again, with the same id."""
    if not durable:
        db.execute("PRAGMA synchronous=NORMAL")
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            result = fn()
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
    finally:
        if not durable:
            db.execute("PRAGMA synchronous=FULL")
    return result


_ADDED_COLUMNS = {
    "button": (
        "INTEGER",
        "UPDATE events SET button = json_extract(body, '$.data.button')"
        " WHERE json_type(body, '$.data.button') = 'integer'",
    ),
    "actor": (
        "TEXT",
        "UPDATE events SET actor = json_extract(body, '$.data.by')"
        " WHERE json_type(body, '$.data.by') = 'text'",
    ),
}
"""Columns added since the first files: (type, how an older file's rows are filled)."""


def prepare(db: sqlite3.Connection) -> None:
    """Create the tables, or bring an older file's up to date (columns added and filled once)."""
    db.executescript(SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(events)")}
    missing = {name: how for name, how in _ADDED_COLUMNS.items() if name not in columns}
    if missing:

        def migrate() -> None:
            for name, (type_, fill) in missing.items():
                db.execute(f"ALTER TABLE events ADD COLUMN {name} {type_}")
                # The one place that reads the payload: once, for rows stored before the column.
                db.execute(fill)

        in_transaction(db, migrate)


EventRow = tuple[int, str, str, int, str, str | None, int, int, str, int | None, str | None]
"""An `events` row: seq, id, type, lane, device_id, alarm_id, occurred_at_ms, stored_at_ms, body,
button, actor."""
DeliveryRow = tuple[str, int, int, int, int | None]
"""A `deliveries` row: destination, seq, lane, attempts, sent_at_ms."""

# -- writing ----------------------------------------------------------------------------------

_INSERT_EVENT = (
    "INSERT INTO events(seq, id, type, lane, device_id, alarm_id, occurred_at_ms, stored_at_ms,"
    " body, button, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def max_seq(db: sqlite3.Connection) -> int:
    row = db.execute("SELECT seq FROM sqlite_sequence WHERE name='events'").fetchone()
    (top,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()
    return max(int(row[0]) if row else 0, int(top))


def insert(
    db: sqlite3.Connection,
    rows: Sequence[EventRow],
    deliveries: Sequence[DeliveryRow],
    unsynced: dict[str, dict[int, int]] | None = None,
) -> None:
    """Append events and their deliveries in one durable transaction; `unsynced`: PUBACK marks
    (destination -> seq -> at) taken while the disk could not record them."""

    def write() -> None:
        db.executemany(_INSERT_EVENT, rows)
        db.executemany(
            "INSERT INTO deliveries(destination, seq, lane, attempts, sent_at_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            deliveries,
        )
        for destination, marks in (unsynced or {}).items():
            db.executemany(
                "UPDATE deliveries SET sent_at_ms=? WHERE destination=? AND seq=?",
                [(at, destination, seq) for seq, at in marks.items()],
            )

    in_transaction(db, write)


def write_back(
    db: sqlite3.Connection, rows: list[SpillRow], unsynced: dict[str, dict[int, int]]
) -> None:
    """What the log held in memory, and the PUBACKs it took meanwhile, written to the file."""
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
            r.actor,
        )
        for r in rows
    ]
    deliveries = [
        (name, r.seq, int(r.lane), r.attempts.get(name, 0), r.sent_at_ms.get(name))
        for r in rows
        for name in (*r.unsent, *r.sent_at_ms)
    ]
    insert(db, events, deliveries, unsynced)


def _seq_array(seqs: Iterable[int]) -> str:
    """Seqs as one JSON array for `seq IN (SELECT value FROM json_each(?))`: one statement for a
    whole batch, where executemany would step (and hand the GIL to and fro) once per row while
    the event loop is busiest."""
    return "[" + ",".join(str(int(seq)) for seq in seqs) + "]"


def mark_sent(db: sqlite3.Connection, destination: str, seqs: Iterable[int], at: int) -> None:
    in_transaction(
        db,
        lambda: db.execute(
            "UPDATE deliveries SET sent_at_ms = ? WHERE destination = ?"
            " AND seq IN (SELECT value FROM json_each(?))",
            (at, destination, _seq_array(seqs)),
        ),
        durable=False,
    )


@dataclass(frozen=True, slots=True)
class ClaimQuery:
    destination: str
    limit: int
    after: dict[Lane, int]
    skip: set[int]
    """Rows acknowledged while the disk could not record it."""
    lanes: tuple[Lane, ...]
    below: int | None = None
    """Only rows with a smaller seq (a late-opened file's backfill)."""

    def run(self, db: sqlite3.Connection) -> list[PendingDelivery]:
        # [seq, type, lane, attempts, occurred_at_ms, body] per row, as the JSON aggregate has it
        found: list[list[Any]] = []
        for lane in sorted(self.lanes):
            if len(found) >= self.limit:
                break
            # One row holding the whole chunk: fetching 256 rows would step (and hand the GIL
            # to and fro) 256 times while the event loop is busiest sending them.
            (chunk,) = db.execute(
                "SELECT json_group_array(json_array(seq, type, lane, attempts, at, body))"
                " FROM (SELECT d.seq AS seq, e.type AS type, d.lane AS lane,"
                " d.attempts AS attempts, e.occurred_at_ms AS at, e.body AS body"
                " FROM deliveries d JOIN events e ON e.seq = d.seq"
                " WHERE d.destination = ? AND d.sent_at_ms IS NULL AND d.lane = ?"
                " AND d.seq > ? AND d.seq < ? ORDER BY d.seq LIMIT ?)",
                (
                    self.destination,
                    int(lane),
                    self.after.get(lane, 0),
                    NO_SEQ_ABOVE if self.below is None else self.below,
                    self.limit - len(found) + len(self.skip),
                ),
            ).fetchone()
            found.extend(sorted(json.loads(chunk)))  # seq order, whatever the aggregate's
        found = [row for row in found if row[0] not in self.skip][: self.limit]
        # On a full disk the attempt is still counted in this payload; only its record is lost.
        with contextlib.suppress(*STORAGE_ERRORS):
            in_transaction(
                db,
                lambda: db.execute(
                    "UPDATE deliveries SET attempts = attempts + 1 WHERE destination = ?"
                    " AND seq IN (SELECT value FROM json_each(?))",
                    (self.destination, _seq_array(row[0] for row in found)),
                ),
                durable=False,
            )
        return [
            PendingDelivery(seq, type_, Lane(lane), attempts + 1, occurred, body.encode())
            for seq, type_, lane, attempts, occurred, body in found
        ]


# -- read by heartbeats, replay and the latches -----------------------------------------------


def pending_count(db: sqlite3.Connection, destination: str) -> int:
    (count,) = db.execute(
        "SELECT COUNT(*) FROM deliveries WHERE destination=? AND sent_at_ms IS NULL",
        (destination,),
    ).fetchone()
    return int(count)


def last_sent_seq(db: sqlite3.Connection, destination: str) -> int:
    row = db.execute(
        "SELECT max(seq) FROM deliveries WHERE destination=? AND sent_at_ms IS NOT NULL",
        (destination,),
    ).fetchone()
    return int(row[0] or 0)


def routed_count(db: sqlite3.Connection, destination: str, after_seq: int, upto_seq: int) -> int:
    row = db.execute(
        "SELECT count(*) FROM deliveries WHERE destination=? AND seq>? AND seq<=?",
        (destination, after_seq, upto_seq),
    ).fetchone()
    return int(row[0])


def replay(
    db: sqlite3.Connection, destination: str, from_seq: int, to_seq: int
) -> list[PendingDelivery]:
    found = db.execute(
        "SELECT d.seq, e.type, d.lane, d.attempts, e.occurred_at_ms, e.body"
        " FROM deliveries d JOIN events e ON e.seq = d.seq"
        " WHERE d.destination=? AND d.seq BETWEEN ? AND ? ORDER BY d.seq",
        (destination, from_seq, to_seq),
    ).fetchall()
    return [
        PendingDelivery(seq, type_, Lane(lane), attempts + 1, occurred, body.encode())
        for seq, type_, lane, attempts, occurred, body in found
    ]


def open_alarms(db: sqlite3.Connection) -> list[OpenAlarm]:
    rows = db.execute(
        "SELECT alarm_id, device_id, MIN(button), MIN(occurred_at_ms), COUNT(*)"
        f" FROM events WHERE type IN ({_ALARM_TYPES_SQL}) AND alarm_id IN ({OPEN_ALARM_IDS})"
        " GROUP BY alarm_id ORDER BY MIN(seq)"
    ).fetchall()
    # The test mark is read from the raising events' stored bodies in Python (few: the open
    # alarms), as `test_receipts` does: no query parses the wire payload.
    tests = {
        alarm_id
        for alarm_id, body in db.execute(
            f"SELECT alarm_id, body FROM events WHERE type = 'alarm.panic'"
            f" AND alarm_id IN ({OPEN_ALARM_IDS})"
        )
        if json.loads(body).get("test") is True
    }
    return [
        OpenAlarm(
            alarm_id=a, device_id=d, button=int(b), raised_at_ms=t, presses=n, test=a in tests
        )
        for a, d, b, t, n in rows
    ]


PROGRESS_TYPES = ("alarm.panic", "alarm.escalated", "alarm.acknowledged", "alarm.siren_silenced")
"""The events of an open alarm that say how far it got (`alarm_progress`)."""


def alarm_progress(
    db: sqlite3.Connection, destination: str, alarm_ids: Sequence[str]
) -> list[AlarmProgress]:
    marks = ",".join("?" * len(alarm_ids))
    types = ", ".join(f"'{t}'" for t in PROGRESS_TYPES)
    found = db.execute(
        "SELECT e.alarm_id, e.type, e.seq, d.sent_at_ms IS NOT NULL, e.occurred_at_ms, e.actor"
        " FROM events e LEFT JOIN deliveries d ON d.seq = e.seq AND d.destination = ?"
        f" WHERE e.type IN ({types}) AND e.alarm_id IN ({marks}) ORDER BY e.seq",
        (destination, *alarm_ids),
    ).fetchall()
    return [
        AlarmProgress(a, t, int(seq), bool(sent), int(at), actor or "")
        for a, t, seq, sent, at, actor in found
    ]


# -- the walk test's receipts ------------------------------------------------------------------


def test_receipts(db: sqlite3.Connection) -> list[dict[str, object]]:
    """Each press stored since the last `gateway.test_started` while the gate was in test mode
    (`alarm.panic` / `alarm.panic_repeated` with `"test": true`), in seq order, timed hop by hop:
    `seen_ms` (the driver read the input), `stored_ms` (on disk), `sent_ms` (destination -> the
    broker's PUBACK, None while it has not got it), and the alarm's first acknowledgement
    (`acked_ms`, `acked_by`). Empty when no test was ever started."""
    (since,) = db.execute(
        "SELECT COALESCE(MAX(seq), -1) FROM events WHERE type = 'gateway.test_started'"
    ).fetchone()
    if since < 0:
        return []
    # The mark is read from the stored body in Python, for the few presses of one test (no
    # query parses the payload: the columns are what queries use).
    presses = db.execute(
        "SELECT seq, type, alarm_id, device_id, button, occurred_at_ms, stored_at_ms, body"
        f" FROM events WHERE seq > ? AND type IN ({_ALARM_TYPES_SQL}) ORDER BY seq",
        (since,),
    ).fetchall()
    receipts: list[dict[str, object]] = []
    for seq, type_, alarm_id, device_id, button, seen_ms, stored_ms, body in presses:
        if json.loads(body).get("test") is not True:
            continue
        sent = dict(
            db.execute(
                "SELECT destination, sent_at_ms FROM deliveries WHERE seq = ? ORDER BY destination",
                (seq,),
            ).fetchall()
        )
        ack = db.execute(
            "SELECT occurred_at_ms, body FROM events"
            " WHERE type = 'alarm.acknowledged' AND alarm_id = ? ORDER BY seq LIMIT 1",
            (alarm_id,),
        ).fetchone()
        receipts.append(
            {
                "seq": seq,
                "type": type_,
                "alarm_id": alarm_id,
                "device": device_id,
                "button": button,
                "seen_ms": seen_ms,
                "stored_ms": stored_ms,
                "sent_ms": sent,
                "acked_ms": None if ack is None else ack[0],
                "acked_by": None if ack is None else json.loads(ack[1])["data"].get("by"),
            }
        )
    return receipts


# -- a device's small values (meta) -----------------------------------------------------------


def recall(db: sqlite3.Connection, key: str) -> int | None:
    row = db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
    return None if row is None else int(row[0])


def remember(db: sqlite3.Connection, key: str, value: int) -> None:
    in_transaction(
        db,
        lambda: db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        ),
        durable=False,
    )
