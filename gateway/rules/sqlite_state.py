"""`RulesState` in SQLite: the rules' memory across restarts and power cuts.

Owns the `rules_` tables (their schema is the string below) and nothing else; sqlite3 directly,
autocommit, one statement per change, so each change is durable when the call returns. The
integration moves this into the store package (same file as the event log, same tables); the
rules see only the `RulesState` protocol.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.rules.state import LedgerEntry, TimerRecord, ViolationRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS rules_timers (
    key TEXT PRIMARY KEY, device_id TEXT NOT NULL, device_kind TEXT NOT NULL,
    device_location TEXT NOT NULL, started_ms INTEGER NOT NULL, duration_ms INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL, fired_ms INTEGER
);
CREATE TABLE IF NOT EXISTS rules_counters (
    name TEXT NOT NULL, day TEXT NOT NULL, value INTEGER NOT NULL, PRIMARY KEY (name, day)
);
CREATE TABLE IF NOT EXISTS rules_violations (
    rule_id TEXT NOT NULL, device_id TEXT NOT NULL, opened_ms INTEGER NOT NULL,
    event_id TEXT NOT NULL, PRIMARY KEY (rule_id, device_id)
);
CREATE TABLE IF NOT EXISTS rules_ledger (
    id TEXT PRIMARY KEY, kind TEXT NOT NULL, key TEXT NOT NULL, what TEXT NOT NULL,
    "where" TEXT NOT NULL, opened_ms INTEGER NOT NULL, deadline_ms INTEGER NOT NULL,
    closed_ms INTEGER, closed_by TEXT, closing_note TEXT, overdue_reported INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS rules_ledger_open ON rules_ledger (closed_ms, opened_ms);
"""

_TIMER_COLUMNS = (
    "key, device_id, device_kind, device_location, started_ms, duration_ms, deadline_ms, fired_ms"
)
_LEDGER_COLUMNS = (
    'id, kind, key, what, "where", opened_ms, deadline_ms, closed_ms, closed_by, closing_note,'
    " overdue_reported"
)


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """An autocommit connection to the store's file (WAL, each commit fsynced) with `schema`."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


def select_readonly(
    path: Path, sql: str, params: tuple[object, ...], what: str
) -> list[tuple[object, ...]]:
    """Rows of `sql` on a read-only connection (the daemon may be running). A store without
    the table yet has none; anything else is `RulesUnreadable` naming `what`."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise RulesUnreadable(f"cannot open {path} read-only: {exc}") from None
    try:
        return db.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise RulesUnreadable(f"cannot read {what} in {path}: {exc}") from None
    finally:
        db.close()


class RulesUnreadable(Exception):
    """The store file cannot be opened read-only, or its rules' tables read (says why)."""


class SqliteRulesState:
    def __init__(self, path: Path) -> None:
        self._db = connect(path, SCHEMA)

    def close(self) -> None:
        self._db.close()

    def put_timer(self, timer: TimerRecord) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO rules_timers ({_TIMER_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)",
            (
                timer.key,
                timer.device_id,
                timer.device_kind,
                timer.device_location,
                timer.started_ms,
                timer.duration_ms,
                timer.deadline_ms,
                timer.fired_ms,
            ),
        )

    def timer(self, key: str) -> TimerRecord | None:
        row = self._db.execute(
            f"SELECT {_TIMER_COLUMNS} FROM rules_timers WHERE key = ?", (key,)
        ).fetchone()
        return TimerRecord(*row) if row else None

    def timers(self) -> list[TimerRecord]:
        rows = self._db.execute(f"SELECT {_TIMER_COLUMNS} FROM rules_timers ORDER BY key")
        return [TimerRecord(*row) for row in rows]

    def delete_timer(self, key: str) -> None:
        self._db.execute("DELETE FROM rules_timers WHERE key = ?", (key,))

    def counter(self, name: str, day: str) -> int:
        row = self._db.execute(
            "SELECT value FROM rules_counters WHERE name = ? AND day = ?", (name, day)
        ).fetchone()
        return int(row[0]) if row else 0

    def add_to_counter(self, name: str, day: str, delta: int = 1) -> int:
        row = self._db.execute(
            "INSERT INTO rules_counters (name, day, value) VALUES (?, ?, ?)"
            " ON CONFLICT (name, day) DO UPDATE SET value = value + excluded.value"
            " RETURNING value",
            (name, day, delta),
        ).fetchone()
        return int(row[0])

    def put_violation(self, violation: ViolationRecord) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO rules_violations (rule_id, device_id, opened_ms, event_id)"
            " VALUES (?, ?, ?, ?)",
            (violation.rule_id, violation.device_id, violation.opened_ms, violation.event_id),
        )

    def violation(self, rule_id: str, device_id: str) -> ViolationRecord | None:
        row = self._db.execute(
            "SELECT rule_id, device_id, opened_ms, event_id FROM rules_violations"
            " WHERE rule_id = ? AND device_id = ?",
            (rule_id, device_id),
        ).fetchone()
        return ViolationRecord(*row) if row else None

    def violations(self) -> list[ViolationRecord]:
        rows = self._db.execute(
            "SELECT rule_id, device_id, opened_ms, event_id FROM rules_violations"
            " ORDER BY rule_id, device_id"
        )
        return [ViolationRecord(*row) for row in rows]

    def delete_violation(self, rule_id: str, device_id: str) -> None:
        self._db.execute(
            "DELETE FROM rules_violations WHERE rule_id = ? AND device_id = ?", (rule_id, device_id)
        )

    def put_ledger_entry(self, entry: LedgerEntry) -> None:
        self._db.execute(
            f"INSERT OR REPLACE INTO rules_ledger ({_LEDGER_COLUMNS})"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                entry.id,
                entry.kind,
                entry.key,
                entry.what,
                entry.where,
                entry.opened_ms,
                entry.deadline_ms,
                entry.closed_ms,
                entry.closed_by,
                entry.closing_note,
                int(entry.overdue_reported),
            ),
        )

    def ledger_entry(self, entry_id: str) -> LedgerEntry | None:
        row = self._db.execute(
            f"SELECT {_LEDGER_COLUMNS} FROM rules_ledger WHERE id = ?", (entry_id,)
        ).fetchone()
        return _ledger_entry(row) if row else None

    def ledger_entries(self, *, open_only: bool = False) -> list[LedgerEntry]:
        where = " WHERE closed_ms IS NULL" if open_only else ""
        rows = self._db.execute(
            f"SELECT {_LEDGER_COLUMNS} FROM rules_ledger{where} ORDER BY opened_ms, id"
        )
        return [_ledger_entry(row) for row in rows]


def _ledger_entry(row: tuple[object, ...]) -> LedgerEntry:
    values = list(row)
    values[-1] = bool(values[-1])
    return LedgerEntry(*values)  # type: ignore[arg-type]  # columns in the dataclass's order


def read_ledger(path: Path, *, open_only: bool = False) -> list[LedgerEntry]:
    """The ledger's entries, read-only (for `schoolgate ledger`; the daemon may be running)."""
    where = " WHERE closed_ms IS NULL" if open_only else ""
    sql = f"SELECT {_LEDGER_COLUMNS} FROM rules_ledger{where} ORDER BY opened_ms, id"
    return [_ledger_entry(row) for row in select_readonly(path, sql, (), "the ledger")]
