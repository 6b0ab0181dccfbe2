"""The daily reports kept in the store's file (table `rules_reports`): one row per site day with
the report, the id of the `report.daily` event that carries it and whether that event is stored.

Owns the table and the "report due" state: a day with a row has its report built (never built
twice, so its figures do not change after it was sent); a row not yet marked `sent` is sent again
with the same event id after a restart (gateway.rules.daily_report checks the event log first,
so it is stored once). Its own autocommit connection, like `SqliteRulesState`. `read_reports` is
the read-only view for `schoolgate report` (the daemon may be running).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.rules.sqlite_state import connect, select_readonly

SCHEMA = """
CREATE TABLE IF NOT EXISTS rules_reports (
    day TEXT PRIMARY KEY, built_ms INTEGER NOT NULL, event_id TEXT NOT NULL,
    body TEXT NOT NULL, sent INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StoredReport:
    day: str
    built_ms: int
    event_id: str
    body: dict[str, Any]
    sent: bool


class SqliteReports:
    def __init__(self, path: Path) -> None:
        self._db = connect(path, SCHEMA)

    def close(self) -> None:
        self._db.close()

    def get(self, day: str) -> StoredReport | None:
        row = self._db.execute(
            "SELECT day, built_ms, event_id, body, sent FROM rules_reports WHERE day = ?", (day,)
        ).fetchone()
        return _report(row) if row else None

    def put(self, report: StoredReport) -> None:
        self._db.execute(
            "INSERT INTO rules_reports (day, built_ms, event_id, body, sent) VALUES (?,?,?,?,?)",
            (
                report.day,
                report.built_ms,
                report.event_id,
                json.dumps(report.body, ensure_ascii=False),
                int(report.sent),
            ),
        )

    def mark_sent(self, day: str) -> None:
        self._db.execute("UPDATE rules_reports SET sent = 1 WHERE day = ?", (day,))

    def unsent(self) -> list[StoredReport]:
        rows = self._db.execute(
            "SELECT day, built_ms, event_id, body, sent FROM rules_reports WHERE sent = 0"
            " ORDER BY day"
        )
        return [_report(row) for row in rows]


def _report(row: tuple[Any, ...]) -> StoredReport:
    day, built_ms, event_id, body, sent = row
    return StoredReport(str(day), int(built_ms), str(event_id), json.loads(body), bool(sent))


def read_reports(path: Path, day: str | None = None) -> list[StoredReport]:
    """The stored reports (of `day` only, when given), oldest first, read-only."""
    where, params = (" WHERE day = ?", (day,)) if day is not None else ("", ())
    sql = f"SELECT day, built_ms, event_id, body, sent FROM rules_reports{where} ORDER BY day"
    return [_report(row) for row in select_readonly(path, sql, params, "the reports")]
