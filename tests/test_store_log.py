"""The durable log's schema: one owner of the SQL, a column for what queries need (with the
migration of a file made before it), and one definition of an open alarm."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.core import contract
from gateway.core.events import DeviceRef, Event, Severity, new_event
from gateway.store.retention import Retention, RetentionPolicy
from gateway.store.routing import Router
from gateway.store.storage import Storage

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))
BOX = DeviceRef("box", "alarm_box", "north gate")
ROUTES = Router({"police": ["alarm.*"], "bureau": ["*"]})
DAY_MS = 86_400_000
ROOT = Path(__file__).resolve().parent.parent

OLD_SCHEMA = """
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
"""The schema as it was before the `button` column (copied, not imported: it must not move)."""


def panic(event_type: str, alarm_id: str, button: int, at_ms: int = 1_000) -> Event:
    return new_event(
        event_type,
        BOX,
        severity=Severity.CRITICAL,
        occurred_at_ms=at_ms,
        data={"button": button, "presses": 1},
        alarm_id=alarm_id,
    )


def old_store(path: Path) -> None:
    """A file written by the gateway before the migration: one open alarm on button 3 and a
    device event, both routed to the bureau."""
    db = sqlite3.connect(path, isolation_level=None)
    db.executescript(OLD_SCHEMA)
    rows = [
        (1, "e1", "alarm.panic", 0, "box", "a1", 1_000, 1_001, {"data": {"button": 3}}),
        (2, "e2", "device.online", 1, "box", None, 1_002, 1_003, {"data": {}}),
    ]
    for seq, id_, type_, lane, device, alarm, at, stored, body in rows:
        db.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (seq, id_, type_, lane, device, alarm, at, stored, json.dumps(body)),
        )
        db.execute(
            "INSERT INTO deliveries(destination, seq, lane) VALUES ('bureau', ?, ?)", (seq, lane)
        )
    db.close()


async def test_an_old_store_gets_the_button_column_filled_once_from_the_body(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    old_store(path)
    async with Storage(path, SITE, ROUTES) as store:
        [alarm] = await store.log.open_alarms()
        new = await store.outbox.append(panic("alarm.panic", "a2", button=5))
        assert await store.log.pending_count("bureau") == 3  # the old rows are still there to send
    assert (alarm.alarm_id, alarm.button) == ("a1", 3)
    check = sqlite3.connect(path)
    try:
        found = check.execute("SELECT seq, button FROM events ORDER BY seq").fetchall()
    finally:
        check.close()
    assert found == [(1, 3), (2, None), (new.seq, 5)]


async def test_reopening_a_migrated_store_keeps_its_rows_and_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old_store(path)
    async with Storage(path, SITE, ROUTES):
        pass
    async with Storage(path, SITE, ROUTES) as store:  # the migration does not run twice
        [alarm] = await store.log.open_alarms()
    assert alarm.button == 3


async def test_open_alarms_come_from_the_button_column_not_the_payload(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    async with Storage(path, SITE, ROUTES) as store:
        await store.outbox.append(panic("alarm.panic", "a1", button=2))
    check = sqlite3.connect(path, isolation_level=None)
    try:  # the payload no longer says which button: only the column does
        check.execute("UPDATE events SET body = '{}'")
    finally:
        check.close()
    async with Storage(path, SITE, ROUTES) as store:
        [alarm] = await store.log.open_alarms()
    assert alarm.button == 2


def step(event_type: str, alarm_id: str, by: str, at_ms: int) -> Event:
    return new_event(
        event_type, BOX, severity=Severity.INFO, occurred_at_ms=at_ms,
        data={"button": 0, "by": by}, alarm_id=alarm_id,
    )  # fmt: skip


async def test_alarm_progress_tells_who_acknowledged_and_silenced_and_when(tmp_path: Path) -> None:
    """What the latches restore after a restart: the acknowledgement's and the silenced siren's
    who and when, from the `actor` column (not the payload)."""
    path = tmp_path / "o.db"
    async with Storage(path, SITE, ROUTES) as store:
        await store.outbox.append(panic("alarm.panic", "a1", button=0, at_ms=1_000))
        await store.outbox.append(step("alarm.siren_silenced", "a1", "王师傅", 2_000))
        await store.outbox.append(step("alarm.acknowledged", "a1", "张警官", 3_000))
    check = sqlite3.connect(path, isolation_level=None)
    try:
        check.execute("UPDATE events SET body = '{}'")
    finally:
        check.close()
    async with Storage(path, SITE, ROUTES) as store:
        progress = await store.log.alarm_progress("police", ["a1"])
    assert [(p.type, p.actor, p.occurred_at_ms) for p in progress] == [
        ("alarm.panic", "", 1_000),
        ("alarm.siren_silenced", "王师傅", 2_000),
        ("alarm.acknowledged", "张警官", 3_000),
    ]


async def test_an_old_store_gets_the_actor_column_filled_once_from_the_body(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    old_store(path)
    db = sqlite3.connect(path, isolation_level=None)
    body = {"data": {"button": 3, "by": "张警官"}}
    db.execute(
        "INSERT INTO events VALUES (3, 'e3', 'alarm.acknowledged', 0, 'box', 'a1', 1500, 1501, ?)",
        (json.dumps(body, ensure_ascii=False),),
    )
    db.close()
    async with Storage(path, SITE, ROUTES) as store:
        progress = await store.log.alarm_progress("police", ["a1"])
    assert [(p.type, p.actor, p.occurred_at_ms) for p in progress] == [
        ("alarm.panic", "", 1_000),
        ("alarm.acknowledged", "张警官", 1_500),
    ]


async def test_retention_keeps_every_alarm_the_latches_restore(tmp_path: Path) -> None:
    """One definition of an open alarm: an alarm known only by a repeated press (its first press
    was stored under another id) is restored by the latches, so retention must keep it."""
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        repeated = await store.outbox.append(
            panic("alarm.panic_repeated", "r", button=1, at_ms=DAY_MS)
        )
        reset_alarm = await store.outbox.append(
            panic("alarm.panic", "done", button=0, at_ms=DAY_MS)
        )
        reset = await store.outbox.append(panic("alarm.reset", "done", button=0, at_ms=DAY_MS))
        seqs = [e.seq or 0 for e in (repeated, reset_alarm, reset)]
        for destination in ("police", "bureau"):
            await store.queue.mark_sent(destination, seqs)
        restored = {alarm.alarm_id for alarm in await store.log.open_alarms()}
        policy = RetentionPolicy(max_bytes=1 << 30, retain_ms=90 * DAY_MS)
        report = await Retention(store.maintenance, policy).enforce(now_ms=100 * DAY_MS)
        kept = await store.log.call(lambda db: [s for (s,) in db.execute("SELECT seq FROM events")])
    assert restored == {"r"}
    assert report.pruned == 2  # the reset alarm's two events
    assert kept == [repeated.seq]


def test_only_the_log_holds_sql_over_events_and_deliveries() -> None:
    statement = re.compile(r"\b(FROM|INTO|UPDATE|JOIN|TABLE)\s+(events|deliveries)\b")
    owners = {"gateway/store/sql.py", "gateway/store/sql_upkeep.py"}
    found = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "gateway").rglob("*.py")
        if statement.search(path.read_text())
    }
    assert found == owners


def test_no_query_parses_the_wire_payload() -> None:
    uses = {
        str(path.relative_to(ROOT)): path.read_text().count("json_extract(body")
        for path in (ROOT / "gateway").rglob("*.py")
    }
    # Only the one-off migrations of a file stored before the `button` and `actor` columns.
    assert {name: n for name, n in uses.items() if n} == {"gateway/store/sql.py": 2}
