"""Read-only views of the store for installers and auditors: `schoolgate outbox stats`,
`schoolgate events` and `schoolgate outbox export`.

Owns the plain-text and JSON renderings; the queries are the log's (`sql_upkeep`). It opens the
store file read-only
(`query_only`), so it can run beside the daemon (WAL lets readers and the writer work at once) and
can never change what the daemon will send. It does not know MQTT.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

if TYPE_CHECKING:
    import sqlite_utils

from gateway.core.contract import iso_ms
from gateway.core.events import Lane
from gateway.store import sql_upkeep
from gateway.store.sql_upkeep import EventFilter


class InspectError(Exception):
    """The store cannot be read (missing file, not a store)."""


def open_readonly(path: Path) -> sqlite_utils.Database:
    if not path.exists():
        raise InspectError(f"no store at {path} (has the gateway run with this config?)")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA query_only=ON")
    # Imported here: it costs the daemon ~15 MB of memory, and only these commands use it.
    import sqlite_utils  # noqa: PLC0415

    db = sqlite_utils.Database(conn)
    if "events" not in db.table_names():
        raise InspectError(f"{path} is not a schoolgate store")
    return db


def parse_time(text: str, tz: ZoneInfo) -> int:
    """ISO 8601 date or date-time (local to the site when it has no offset) -> epoch ms."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise InspectError(f"{text!r} is not an ISO 8601 date or time (2026-11-24T08:00)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return int(moment.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class LaneStats:
    destination: str
    lane: str
    pending: int
    oldest_pending_ms: int | None
    last_sent_ms: int | None


def stats(db: sqlite_utils.Database) -> dict[str, Any]:
    rows = sql_upkeep.lane_stats(db.conn)
    lanes = [
        LaneStats(dest, Lane(lane).name.lower(), int(pending or 0), oldest, last)
        for dest, lane, pending, oldest, last in rows
    ]
    meta = sql_upkeep.meta_values(db.conn)
    return {
        "events_stored": sql_upkeep.event_count(db.conn),
        "boot_count": meta.get("boot_count", 0),
        "evicted_undelivered": meta.get("evicted_undelivered", 0),
        "lanes": lanes,
    }


def render_stats(data: dict[str, Any], tz: ZoneInfo, now_ms: int | None = None) -> str:
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    lines = [
        f"events stored: {data['events_stored']}   boots: {data['boot_count']}   "
        f"undelivered events evicted (ever): {data['evicted_undelivered']}",
        f"{'destination':<12} {'lane':<10} {'pending':>8} {'oldest pending':>15}  last sent",
    ]
    for lane in data["lanes"]:
        age = "-" if lane.oldest_pending_ms is None else _age(now - lane.oldest_pending_ms)
        last = "never" if lane.last_sent_ms is None else iso_ms(lane.last_sent_ms, tz)
        lines.append(f"{lane.destination:<12} {lane.lane:<10} {lane.pending:>8} {age:>15}  {last}")
    if not data["lanes"]:
        lines.append("(nothing routed yet)")
    return "\n".join(lines)


def _age(ms: int) -> str:
    seconds = max(ms, 0) // 1000
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172_800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86_400} d"


def events(db: sqlite_utils.Database, flt: EventFilter) -> Iterator[dict[str, Any]]:
    """Stored events, oldest first, each with its delivery state per destination."""
    for body, deliveries in sql_upkeep.select_events(db.conn, flt):
        event = json.loads(body)
        event["deliveries"] = json.loads(deliveries) if deliveries else {}
        yield event


def render_event(event: dict[str, Any], tz: ZoneInfo) -> str:
    sent = []
    for destination, state in sorted(event["deliveries"].items()):
        mark = "sent" if state["sent_at_ms"] is not None else "pending"
        sent.append(f"{destination}:{mark}")
    device = event["device"]["id"]
    drill = " DRILL" if event.get("drill") else ""
    return (
        f"{event['seq']:>8}  {event['occurred_at']}  {event['type']:<24} {device:<14}"
        f" {event['severity']:<8}{drill}  {' '.join(sent) or 'not routed'}"
    )
