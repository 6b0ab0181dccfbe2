"""The SQLite file behind the outbox: opening it, its schema, its worker thread, and what to do
when the file itself is bad.

Owns the connection (used only on one worker thread, so the event loop never blocks on an fsync),
the pragmas (WAL; `synchronous=FULL` so every commit is on disk when it returns), the
boot counter, and the recovery from a corrupt file: it is moved aside, a fresh file is created and
the caller is told, so the gateway never refuses to start because of its own buffer. It does not
know what rows mean nor hold any SQL over them (`sql` owns the schema and every statement).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import structlog

from gateway.core.clock import Clock, SystemClock
from gateway.store import faults as store_faults
from gateway.store.faults import STORAGE_ERRORS, StoreError, StoreUnavailable
from gateway.store.sql import in_transaction, prepare

__all__ = ["STORAGE_ERRORS", "StoreError", "StoreUnavailable", "in_transaction"]  # re-exported
_T = TypeVar("_T")
log = structlog.get_logger(__name__)

_OPEN_BUSY_TIMEOUT_S = 1.0
_BUSY_TIMEOUT_MS = 5000


class _CorruptFile(sqlite3.DatabaseError):
    """Our own integrity check failed (SQLite's `quick_check` did not answer `ok`)."""


@dataclass(frozen=True, slots=True)
class OpenResult:
    boot_count: int
    moved_aside: Path | None
    """Where a corrupt file was moved, when one was found at start."""
    reason: str = ""


def seq_floor(clock: Clock) -> int:
    """Where seqs start when the seqs already issued cannot be read (a file moved aside, or one
    that cannot be opened yet): the wall clock in ms, past any seq a receiver could have seen
    unless more than one event per ms was stored on average since the epoch."""
    return clock.wall_ms()


_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def is_corrupt(exc: sqlite3.Error) -> bool:
    """True only for a file whose contents are bad, never for one that cannot be opened."""
    if isinstance(exc, _CorruptFile):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _CORRUPT_CODES


class _Worker:
    """The store's one thread. Jobs run one at a time; an urgent job (an alarm's commit) runs
    before every normal job still waiting (delivery bookkeeping of a backlog drain)."""

    def __init__(self, name: str) -> None:
        self._jobs: list[tuple[int, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._ready = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], _T], *, urgent: bool) -> asyncio.Future[_T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[_T] = loop.create_future()

        def settle(result: _T | None, error: BaseException | None) -> None:
            if future.cancelled():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def job() -> None:
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting coroutine
                loop.call_soon_threadsafe(settle, None, exc)
            else:
                loop.call_soon_threadsafe(settle, result, None)

        with self._ready:
            if self._closed:
                raise StoreError("the store is closed")
            heapq.heappush(self._jobs, (0 if urgent else 1, next(self._order), job))
            self._ready.notify()
        return future

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._closed:
                    self._ready.wait()
                if not self._jobs:
                    return
                _, _, job = heapq.heappop(self._jobs)
            job()

    def close(self) -> None:
        with self._ready:
            self._closed = True
            self._ready.notify()
        self._thread.join()


class _Checkpointer:
    """Copies the WAL into the database file from a thread and connection of its own, so that
    no commit (an alarm's least of all) pays for a checkpoint. Automatic checkpoints are off on
    the writer's connection."""

    def __init__(self, path: Path, every_commits: int = 200, every_s: float = 1.0) -> None:
        self._path = path
        self._every_commits = every_commits
        self._every_s = every_s
        self._commits = 0
        self._due = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="outbox-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._commits += 1
        if self._commits >= self._every_commits:
            self._commits = 0
            self._due.set()

    def _run(self) -> None:
        db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            while not self._stop:
                self._due.wait(self._every_s)  # a timer too, for a trickle of commits
                self._due.clear()
                if self._stop:
                    break
                with contextlib.suppress(sqlite3.Error):  # busy or full: the next round retries
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def close(self) -> None:
        self._stop = True
        self._due.set()
        self._thread.join()


class Store:
    def __init__(self, path: Path, *, clock: Clock | None = None) -> None:
        self.path = path
        self._clock: Clock = clock or SystemClock()
        self._worker = _Worker("outbox")
        self._db: sqlite3.Connection | None = None
        self._checkpointer: _Checkpointer | None = None

    def seq_floor(self) -> int:
        """`seq_floor` on this store's clock."""
        return seq_floor(self._clock)

    async def call(self, fn: Callable[[sqlite3.Connection], _T], *, urgent: bool = False) -> _T:
        """Run `fn(connection)` on the store's thread; `urgent` jumps the queue."""
        result = await self._worker.submit(lambda: fn(self._conn()), urgent=urgent)
        if self._checkpointer is not None:
            self._checkpointer.committed()
        return result

    async def open(self) -> OpenResult:
        result = await self._worker.submit(self._open_sync, urgent=True)
        self._checkpointer = _Checkpointer(self.path)
        return result

    async def close(self) -> None:
        def close_sync() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        try:
            await self._worker.submit(close_sync, urgent=False)
        finally:
            self._worker.close()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    def _open_sync(self) -> OpenResult:
        if self.path.is_dir():
            raise store_faults.unavailable(self.path, "store.path is a directory")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise store_faults.unavailable(self.path, str(exc)) from exc
        store_faults.check_access(self.path)
        moved: Path | None = None
        reason = ""
        try:
            db = self._connect_and_check()
        except sqlite3.Error as exc:
            if not is_corrupt(exc):
                # Cannot open or write is not corrupt: the file (with its pending and latched
                # alarms) is left exactly as it is; the caller holds events in memory meanwhile.
                raise store_faults.unavailable(self.path, str(exc), exc) from exc
            # Corrupt or not a database: keep it for the auditor, start afresh, say so.
            reason = str(exc)
            moved = self._move_aside()
            log.error("store_corrupt_moved_aside", path=str(self.path), to=str(moved), error=reason)
            try:
                db = self._connect_and_check()
            except sqlite3.Error as again:
                raise store_faults.unavailable(self.path, str(again), again) from again
        if moved is not None:
            # The old seqs are unknown now; jump past any a receiver may have seen so that no
            # seq is ever issued twice (a receiver sees a gap, which is the truth).
            floor = self.seq_floor()
            db.execute(
                "INSERT OR REPLACE INTO sqlite_sequence(name, seq) VALUES ('events', ?)", (floor,)
            )
            db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES ('boot_count', ?)", (floor // 1000,)
            )
        try:
            db.execute(
                "INSERT INTO meta(key, value) VALUES('boot_count', 1) "
                "ON CONFLICT(key) DO UPDATE SET value = value + 1"
            )
            (boot,) = db.execute("SELECT value FROM meta WHERE key='boot_count'").fetchone()
            db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        except sqlite3.Error as exc:  # read-only, locked by another process, WAL not ours
            db.close()
            raise store_faults.unavailable(self.path, str(exc), exc) from exc
        self._db = db
        return OpenResult(boot_count=int(boot), moved_aside=moved, reason=reason)

    def _move_aside(self) -> Path:
        moved = self.path.with_name(f"{self.path.name}.corrupt-{self._clock.wall_ms()}")
        try:
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{self.path}{suffix}")
                if src.exists():
                    src.rename(Path(f"{moved}{suffix}"))
        except OSError as exc:  # a corrupt file in a folder we may not write
            raise store_faults.unavailable(self.path, f"corrupt, cannot move aside: {exc}") from exc
        return moved

    def _connect_and_check(self) -> sqlite3.Connection:
        # A short busy wait while opening: a lock held by another process must not keep the
        # gateway (and its alarms) from starting; the normal wait is set once open.
        db = sqlite3.connect(
            self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=_OPEN_BUSY_TIMEOUT_S,
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA wal_autocheckpoint=0")  # `_Checkpointer` does it, off this thread
            # FULL: every commit is fsynced. Lower lanes are batched (group commit) so a burst
            # still costs one fsync.
            db.execute("PRAGMA synchronous=FULL")
            (ok,) = db.execute("PRAGMA quick_check").fetchone()
            if ok != "ok":
                raise _CorruptFile(f"integrity check failed: {ok}")
            prepare(db)  # the schema is `sql`'s: created, or migrated from an older file
            # sqlite_sequence exists only after the first AUTOINCREMENT table is created.
        except BaseException:
            db.close()
            raise
        return db
