"""The store's faults told apart (issue 10, defect 2 and class 5). A truly corrupt file is moved
aside; a file that merely cannot be opened or written (permissions, another owner, a read-only
file or folder, a lock held by another process, a directory, a folder that cannot be created, a
WAL owned by another user) is never touched: the gateway starts in memory, sends the alarms
pressed meanwhile to a real mosquitto broker, and once the fault is fixed writes them back, sends
the file's own pending alarm and opens its latch again.

Each case runs the store, latches and uplink in a child process (`storefault_child.py`); the
tests run as root, which no permission stops, so the permission cases run that child as
`nobody` (it drops to it with setuid after its imports)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.base import PanicPress
from gateway.alarms.latch import AlarmLatches, BoxInfo
from gateway.core import contract
from gateway.core.events import DeviceRef
from gateway.store.routing import Router
from gateway.store.storage import Storage
from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule
from simulators.listener import listen
from tests_support import GatewayProcess

CHILD = Path(__file__).parent / "storefault_child.py"
REPO = Path(__file__).parent.parent
SITE = contract.Site("school-1", "gate-1", ZoneInfo("UTC"))
ROUTES = Router({"police": ["lane:alarm", "alarm.*"], "bureau": ["*"]})
BOX = BoxInfo(DeviceRef("box", "alarm_box", "gate"), {0: "desk", 1: "window"})
AS_ROOT = os.geteuid() == 0
pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder `nobody` can reach (pytest's tmp_path is private to root), owned by the user the
    child runs as, as a service user's state folder is."""
    base = Path(tempfile.mkdtemp(prefix="schoolgate-storefault-"))
    base.chmod(0o755)
    store = base / "state"
    store.mkdir()
    if AS_ROOT:
        _chown(store, "nobody")
    try:
        yield store
    finally:
        for path in [base, *base.rglob("*")]:  # a case may leave a folder 0500
            with contextlib.suppress(OSError):
                path.chmod(0o700 if path.is_dir() else 0o600)
        shutil.rmtree(base)


def _chown(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid)


async def _latched_pending_alarm(db: Path, *, keep_wal: bool = False) -> str:
    """A store holding one panic alarm nobody received and nobody reset; its id. `keep_wal`:
    with a committed transaction still in its WAL, as after a kill."""
    async with Storage(db, SITE, ROUTES) as store:
        latches = AlarmLatches(store.alarms, {"box": BOX})
        await latches.panic_pressed(
            PanicPress("box", 0, presses=1, occurred_at_ms=time.time_ns() // 10**6)
        )
        alarm_id = latches.open_alarms[0].alarm_id
    if keep_wal:
        conn = sqlite3.connect(db, isolation_level=None)
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'boot_count'")
        copies = {p: p.read_bytes() for p in (db, Path(f"{db}-wal"))}
        conn.close()  # checkpoints and deletes the WAL: put the pair back as it was
        for path, data in copies.items():
            path.write_bytes(data)
    return alarm_id


def _fingerprint(folder: Path) -> dict[str, str]:
    """Every name under the folder with a hash of its bytes (folders: '/')."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.name.endswith("-shm"):
            continue  # SQLite's shared-memory index, rebuilt by any reader
        with contextlib.suppress(PermissionError):
            found[str(path.relative_to(folder))] = (
                "/" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
            )
    return found


@dataclass
class Case:
    cause: str
    hint: str
    """A piece of the hint the gateway must give."""
    break_it: Callable[[Path], Any]
    fix: Callable[[Path], Any]
    db_at: Callable[[Path], Path] = lambda d: d / "outbox.db"
    pending: bool = True
    """The file holds a pending, latched alarm before the fault."""
    as_nobody: bool = False
    keep_wal: bool = False


def _hold_lock(db: Path) -> subprocess.Popen[str]:
    """Another process holding BEGIN EXCLUSIVE on the file until told to let go."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys\n"
            f"db = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
            "db.execute('BEGIN EXCLUSIVE')\n"
            "print('locked', flush=True)\n"
            "sys.stdin.readline()\n"
            "db.execute('ROLLBACK')\n"
            "db.close()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


_lockers: dict[Path, subprocess.Popen[str]] = {}


def _lock(d: Path) -> None:
    _lockers[d] = _hold_lock(d / "outbox.db")


def _unlock(d: Path) -> None:
    proc = _lockers.pop(d)
    proc.communicate("go\n", timeout=10)


def _make_directory(d: Path) -> None:
    (d / "outbox.db").mkdir()
    (d / "outbox.db" / "keep.txt").write_text("an installer's file")


def _parent_is_file(d: Path) -> None:
    (d / "blocker").write_text("not a folder")


CASES = {
    "file_read_only": Case(
        "not_writable",
        "chmod u+rw",
        lambda d: (d / "outbox.db").chmod(0o400),
        lambda d: (d / "outbox.db").chmod(0o600),
        as_nobody=True,
    ),
    "folder_read_only": Case(
        "not_writable",
        "chmod u+rwx",
        lambda d: d.chmod(0o500),
        lambda d: d.chmod(0o755),
        as_nobody=True,
    ),
    "owned_by_another_user": Case(
        "not_writable",
        "chown nobody: ",
        lambda d: _chown(d / "outbox.db", "root"),
        lambda d: _chown(d / "outbox.db", "nobody"),
        as_nobody=True,
    ),
    "wal_owned_by_another_user": Case(
        "not_writable",
        "-wal",
        lambda d: _chown(d / "outbox.db-wal", "root"),
        lambda d: _chown(d / "outbox.db-wal", "nobody"),
        as_nobody=True,
        keep_wal=True,
    ),
    "locked_by_another_process": Case("locked", "another process holds the lock", _lock, _unlock),
    "path_is_a_directory": Case(
        "is_directory",
        "is a directory",
        _make_directory,
        lambda d: (d / "outbox.db").rename(d / "moved-by-installer"),
        pending=False,
    ),
    "missing_folder_under_a_file": Case(
        "folder_missing",
        "is a file, not a folder",
        _parent_is_file,
        lambda d: (d / "blocker").unlink(),
        db_at=lambda d: d / "blocker" / "sub" / "outbox.db",
        pending=False,
    ),
}


@contextlib.asynccontextmanager
async def _child(
    db: Path, port: int, latched: list[str], *, as_nobody: bool, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(CHILD),
            str(db),
            str(port),
            *latched,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            cwd=REPO,
            env={**os.environ, "STOREFAULT_AS_USER": "nobody" if as_nobody else ""},
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def _report(proc: asyncio.subprocess.Process, step: str, log: Path) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 40)
    assert line, f"child ended before {step}:\n{log.read_text()[-4000:]}"
    report: dict[str, Any] = json.loads(line)
    assert report["step"] == step, report
    return report


@pytest.mark.parametrize("name", list(CASES))
async def test_a_store_that_cannot_be_opened_is_never_touched_and_loses_nothing(
    name: str, workdir: Path, tmp_path: Path, police_broker: MosquittoBroker
) -> None:
    case = CASES[name]
    if case.as_nobody and not AS_ROOT:
        pytest.skip("dropping to another user needs root (the suite runs as root in CI)")
    db = case.db_at(workdir)
    latched = []
    if case.pending:
        latched.append(await _latched_pending_alarm(db, keep_wal=case.keep_wal))
        if AS_ROOT:
            for path in [workdir, *workdir.rglob("*")]:
                _chown(path, "nobody")
    case.break_it(workdir)
    before = _fingerprint(workdir)
    log = tmp_path / "child.log"
    try:
        async with (
            listen("police", police_broker.host, police_broker.port) as police,
            _child(db, police_broker.port, latched, as_nobody=case.as_nobody, log=log) as proc,
        ):
            started = await _report(proc, "started", log)
            assert started["store_open"] is False and started["degraded"] is True
            fault = started["fault"]
            assert fault["fault"] == "cannot_open" and fault["cause"] == case.cause, fault
            assert case.hint in fault["hint"], fault
            pressed = await _report(proc, "delivered", log)
            await police.wait_event(lambda e: e["id"] == pressed["alarm_id"])
            # Started, sending from memory, and the file not renamed, deleted or written.
            assert _fingerprint(workdir) == before
            assert not list(workdir.rglob("*.corrupt-*"))
            case.fix(workdir)
            assert proc.stdin is not None
            proc.stdin.write(b"fixed\n")
            recovered = await _report(proc, "recovered", log)
            # The file's pending alarm reaches the police at last.
            olds = [await police.wait_event(lambda e: e["id"] in latched) for _ in latched]
            assert all(o["type"] == "alarm.panic" and o["historical"] is True for o in olds)
            assert await asyncio.wait_for(proc.wait(), 20) == 0, log.read_text()[-4000:]
    finally:
        if name == "locked_by_another_process" and workdir in _lockers:
            _unlock(workdir)
    # The latch from the file is open again (lamp blinking: at the police now), beside the new.
    assert set(recovered["open_alarms"]) == {*latched, pressed["alarm_id"]}
    assert all(recovered["lamps"][a] == "SLOW" for a in latched), recovered
    assert recovered["seq_after"] > pressed["seq"]  # seqs keep growing past the memory's
    with sqlite3.connect(db) as conn:
        rows = dict(conn.execute("SELECT id, seq FROM events WHERE type='alarm.panic'").fetchall())
        types = [t for (t,) in conn.execute("SELECT type FROM events ORDER BY seq")]
    conn.close()
    assert set(rows) == {*latched, pressed["alarm_id"]}  # written back beside the file's own
    assert all(rows[a] < rows[pressed["alarm_id"]] for a in latched)  # no seq reused
    assert "gateway.storage_fault" in types and "gateway.storage_recovered" in types
    assert not list(workdir.rglob("*.corrupt-*"))


async def test_a_truly_corrupt_file_is_the_only_one_moved_aside(
    workdir: Path, tmp_path: Path, police_broker: MosquittoBroker
) -> None:
    db = workdir / "outbox.db"
    garbage = os.urandom(64 * 1024)
    db.write_bytes(garbage)
    log = tmp_path / "child.log"
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        _child(db, police_broker.port, [], as_nobody=False, log=log) as proc,
    ):
        started = await _report(proc, "started", log)
        assert started["store_open"] is True and started["degraded"] is False
        pressed = await _report(proc, "delivered", log)
        await police.wait_event(lambda e: e["id"] == pressed["alarm_id"])
        assert proc.stdin is not None
        proc.stdin.write(b"fixed\n")
        await _report(proc, "recovered", log)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
    (moved,) = workdir.glob("outbox.db.corrupt-*")
    assert moved.read_bytes() == garbage  # kept for the auditor, byte for byte
    with sqlite3.connect(db) as conn:
        fault = conn.execute(
            "SELECT json_extract(body, '$.data.fault') FROM events WHERE type=?",
            ("gateway.storage_fault",),
        ).fetchone()
    conn.close()
    assert fault == ("corrupt_database",)


async def test_the_gateway_starts_on_an_unopenable_store_forwards_and_writes_back(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
    gateway.db.mkdir()  # store.path names a directory: an installer's slip
    (gateway.db / "keep.txt").write_text("not ours")
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
        gateway.running(police, clean_exit=True),
    ):
        fault = await bureau.wait_event(lambda e: e["type"] == "gateway.storage_fault")
        assert fault["data"]["fault"] == "cannot_open", fault
        assert fault["data"]["cause"] == "is_directory" and "outbox.db" in fault["data"]["hint"]
        await gateway.wait_ready()
        await module.pulse(0, 150)
        alarm = await police.wait_event(lambda e: e["type"] == "alarm.panic")
        assert (gateway.db / "keep.txt").read_text() == "not ours"  # never touched
        gateway.db.rename(tmp_path / "moved-by-installer")  # the fix
        assert await gateway.wait_stored("alarm.panic") == alarm["id"]  # written back
        await bureau.wait_event(lambda e: e["type"] == "gateway.storage_recovered")
    assert "store_unavailable" in gateway.log_text()
    # check-config refuses this path; the daemon starts all the same and says why in its log
    assert "config_warning" in gateway.log_text() and "is a directory" in gateway.log_text()
    assert (tmp_path / "moved-by-installer" / "keep.txt").read_text() == "not ours"
