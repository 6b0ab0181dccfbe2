"""What the daily inspection report reads from the store file, read-only: the events of a span
by type, each device's last health event before it, whether an event id is stored, the outbox
backlog, the file's size and the disk's, and SQLite's own integrity check.

Owns these read-only views (their statements are `sql_upkeep`'s) and nothing else. Each call
opens its own read-only connection (`mode=ro`), so it may run in a worker thread beside the
daemon's writer (WAL lets readers and the writer work at once) and can never change what the
daemon sends. Plain sqlite3: the daemon does not load sqlite_utils. It does not judge or render
anything (gateway.rules.report does).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.core.events import Lane
from gateway.store import sql_upkeep

INTEGRITY_LINES = 5
"""At most this many problems of `PRAGMA quick_check` are kept."""


class StoreUnreadable(Exception):
    """The store file cannot be read (the message says why)."""


@dataclass(frozen=True, slots=True)
class Backlog:
    destination: str
    lane: str
    pending: int
    oldest_pending_ms: int | None


@dataclass(frozen=True, slots=True)
class StoreFigures:
    integrity: list[str]
    """["ok"], or SQLite's first problems."""
    file_bytes: int
    """The store file with its WAL."""
    disk_free_bytes: int
    disk_total_bytes: int
    backlog: list[Backlog] = field(default_factory=list)


@contextlib.contextmanager
def _readonly(path: Path) -> Iterator[sqlite3.Connection]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreUnreadable(f"cannot open {path} read-only: {exc}") from None
    try:
        yield db
    except sqlite3.Error as exc:
        raise StoreUnreadable(f"cannot read {path}: {exc}") from None
    finally:
        db.close()


def events_between(
    path: Path, since_ms: int, until_ms: int, types: Sequence[str]
) -> list[dict[str, Any]]:
    """The stored bodies of the events of `types` that occurred in [since_ms, until_ms), oldest
    first, each with `occurred_at_ms` added."""
    with _readonly(path) as db:
        rows = sql_upkeep.bodies_between(db, since_ms, until_ms, types)
    return [json.loads(body) | {"occurred_at_ms": int(at)} for at, body in rows]


def last_type_before(path: Path, before_ms: int, types: Sequence[str]) -> dict[str, str]:
    """Each device's last event type among `types` before `before_ms` (e.g. its health)."""
    with _readonly(path) as db:
        rows = sql_upkeep.last_type_per_device(db, before_ms, types)
    return {str(device): str(kind) for device, kind in rows}


def has_event(path: Path, event_id: str) -> bool:
    with _readonly(path) as db:
        return sql_upkeep.has_event_id(db, event_id)


def store_figures(path: Path) -> StoreFigures:
    """The outbox backlog, sizes and the integrity check (`quick_check`: every page and index
    entry read once, without the slow cross-checks of `integrity_check`)."""
    with _readonly(path) as db:
        problems = [
            str(row[0]) for row in db.execute("PRAGMA quick_check").fetchmany(INTEGRITY_LINES)
        ]
        backlog = [
            Backlog(dest, Lane(lane).name.lower(), int(pending or 0), oldest)
            for dest, lane, pending, oldest, _ in sql_upkeep.lane_stats(db)
        ]
    wal = path.with_name(path.name + "-wal")
    size = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    disk = shutil.disk_usage(path.parent)
    return StoreFigures(
        integrity=problems,
        file_bytes=size,
        disk_free_bytes=disk.free,
        disk_total_bytes=disk.total,
        backlog=backlog,
    )
