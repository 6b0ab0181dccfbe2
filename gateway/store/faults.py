"""Why the store cannot be opened, and what an installer does about it.

Owns the store's error types and the diagnosis of a file this process cannot open or write: a
directory where the file should be, a folder that cannot be created, a file, WAL or folder owned
by another user or not writable, a lock held by another process. Each gets a cause and a one-line
fix (`chown schoolgate: /var/lib/schoolgate/outbox.db`). It only looks (stat, access); it never
changes a file. It does not decide what the gateway does meanwhile (`outbox` does) and knows
nothing of corrupt files (`store` moves those aside).
"""

from __future__ import annotations

import os
import pwd
import sqlite3
from pathlib import Path


class StoreError(Exception):
    """The store cannot be used (not open, closed, or not openable)."""


class StoreUnavailable(StoreError):
    """The file cannot be opened or written by this process; it was left exactly as it was."""

    def __init__(self, path: Path, error: str, cause: str, hint: str) -> None:
        super().__init__(f"cannot open store {path}: {error}")
        self.path = path
        self.error = error
        self.cause = cause
        """`is_directory`, `folder_missing`, `not_writable`, `locked` or `cannot_open`."""
        self.hint = hint
        """What an installer does, e.g. `chown schoolgate: /var/lib/schoolgate/outbox.db`."""


STORAGE_ERRORS = (sqlite3.OperationalError, sqlite3.DatabaseError, OSError)
"""What a write may raise when the disk is full, read-only or failing."""

_LOCK_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def unavailable(path: Path, error: str, exc: BaseException | None = None) -> StoreUnavailable:
    cause, hint = diagnose(path, exc)
    return StoreUnavailable(path, error, cause, hint)


def check_access(path: Path) -> None:
    """Raise `StoreUnavailable` when this process could not write the file, its WAL or shared
    memory index, or its folder: checked before SQLite opens anything, which would otherwise
    create an empty WAL beside a file it then finds read-only."""
    candidates = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
    if any(c.exists() and not os.access(c, os.R_OK | os.W_OK) for c in candidates) or (
        path.parent.is_dir() and not os.access(path.parent, os.W_OK | os.X_OK)
    ):
        raise unavailable(path, "permission denied")


def diagnose(path: Path, exc: BaseException | None = None) -> tuple[str, str]:
    """`(cause, hint)` for a store file that could not be opened or written."""
    user = _user_name()
    if path.is_dir():
        return (
            "is_directory",
            f"store.path {path} is a directory: point store.path at a file, e.g. "
            f"{path / 'outbox.db'}",
        )
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _LOCK_CODES:
        return (
            "locked",
            f"another process holds the lock on {path}: stop it (`fuser -v {path}` names it; "
            "is a second gateway running?)",
        )
    folder = path.parent
    if not folder.is_dir():
        blocker = next((p for p in folder.parents if p.exists()), None)
        if folder.exists() or (blocker is not None and not blocker.is_dir()):
            where = folder if folder.exists() else blocker
            return (
                "folder_missing",
                f"{where} is a file, not a folder: move it away or point store.path elsewhere",
            )
        return "folder_missing", f"mkdir -p {folder} && chown {user}: {folder}"
    for candidate in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if candidate.exists() and not os.access(candidate, os.R_OK | os.W_OK):
            return "not_writable", _fix_for(candidate, user, "u+rw")
    if not os.access(folder, os.W_OK | os.X_OK):
        return "not_writable", _fix_for(folder, user, "u+rwx")
    return "cannot_open", f"check that {user} can read and write {path} and its folder"


def _fix_for(path: Path, user: str, mode: str) -> str:
    try:
        owner = path.stat().st_uid
    except OSError:
        owner = -1
    if owner == os.geteuid():
        return f"chmod {mode} {path}"
    return f"chown {user}: {path}"


def _user_name() -> str:
    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())
