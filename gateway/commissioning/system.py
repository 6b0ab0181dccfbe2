"""Doctor's steps about the box itself: each serial port (present, its group, the service user in
it, opens at the configured settings), the store (integrity check, WAL mode, free disk) and the
box's own clock synchronisation.

Owns those probes. Blocking calls (opening a port, SQLite, statvfs) run in a thread, each bounded
by a timeout. The store is opened read-only: doctor never changes it.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import serial

from edge_config.checks import group_name
from edge_config.models import GatewayConfig, ModbusRtuLine, SerialLine
from gateway.commissioning.files import Account
from gateway.commissioning.report import Report

MIB = 1024 * 1024
FREE_FAIL_BYTES = 8 * MIB
"""Below this the store cannot take a burst of events: the daemon holds them in memory."""
FREE_WARN_BYTES = 128 * MIB
TIMESYNC_FLAG = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR = 5
"""adjtimex(2) returns TIME_ERROR while the kernel clock is not synchronised."""

T = TypeVar("T")


async def _in_thread(fn: Callable[[], T], timeout_s: float) -> T:
    async with asyncio.timeout(timeout_s):
        return await asyncio.to_thread(fn)


# -- serial ports ------------------------------------------------------------------------------


async def check_serial_ports(
    config: GatewayConfig, user: Account, report: Report, *, timeout_s: float
) -> None:
    seen: set[str] = set()
    for name, line in config.lines.items():
        if not isinstance(line, ModbusRtuLine | SerialLine) or line.port in seen:
            continue
        seen.add(line.port)
        await _check_port(name, line, user, report, timeout_s)


async def _check_port(
    name: str, line: ModbusRtuLine | SerialLine, user: Account, report: Report, timeout_s: float
) -> None:
    section = f"serial {line.port}"
    if "://" in line.port:
        report.ok(section, "pyserial URL", "not a device file; only the open is checked")
    else:
        path = Path(line.port)
        try:
            info = os.stat(path)
        except OSError as exc:
            report.fail(
                section,
                "present",
                f"lines.{name}.port: {exc.strerror or exc}",
                "plug the adapter in (dmesg | tail shows its name), or correct "
                f"lines.{name}.port; /dev/serial/by-id/ names survive a reboot",
            )
            return
        if not stat.S_ISCHR(info.st_mode):
            report.fail(section, "present", "not a character device", f"correct lines.{name}.port")
            return
        group = group_name(info.st_gid)
        report.ok(section, "present", f"group {group}, mode {stat.S_IMODE(info.st_mode):04o}")
        if not user.can(path, os.R_OK | os.W_OK):
            report.fail(
                section,
                f"user {user.name} may open it",
                f"{user.name} is not in group {group} and the mode does not let it",
                f"usermod -a -G {group} {user.name} (then restart the service)",
            )
            return
        report.ok(section, f"user {user.name} may open it")
    settings = f"{line.baudrate} {line.bytesize}{line.parity}{line.stopbits}"

    def open_port() -> None:
        port = serial.serial_for_url(
            line.port,
            baudrate=line.baudrate,
            bytesize=line.bytesize,
            parity=line.parity,
            stopbits=line.stopbits,
            timeout=0,
            exclusive=False,
        )
        port.close()

    try:
        await _in_thread(open_port, timeout_s)
    except (serial.SerialException, OSError, ValueError, TimeoutError) as exc:
        report.fail(
            section,
            f"opens at {settings}",
            str(exc) or "timed out",
            "another program may hold the port (fuser -v " + line.port + "); check the "
            "adapter supports these settings",
        )
        return
    report.ok(section, f"opens at {settings}")


# -- the store ---------------------------------------------------------------------------------

FreeBytes = Callable[[Path], int]


def disk_free_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


def _existing_folder(path: Path) -> Path:
    folder = path.absolute().parent
    while not folder.exists():
        folder = folder.parent
    return folder


def _inspect_db(path: Path) -> tuple[str, str] | None:
    """(quick_check result, journal mode), read-only; None when there is no store yet."""
    if not path.exists():
        return None
    db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=2.0)
    try:
        ok = db.execute("PRAGMA quick_check").fetchone()[0]
        mode = db.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        db.close()
    return str(ok), str(mode)


def _store_steps(ok: str, mode: str, report: Report) -> None:
    section = "store"
    if ok != "ok":
        report.fail(
            section,
            "integrity check",
            f"quick_check: {ok}",
            "systemctl restart schoolgate: the daemon moves a corrupt store aside "
            "(outbox.db.corrupt-*) and starts a new one; keep the old file for the record",
        )
    else:
        report.ok(section, "integrity check", "quick_check ok")
    if mode.lower() != "wal":
        report.warn(
            section,
            "WAL mode",
            f"journal_mode is {mode}",
            "the daemon sets WAL when it opens the store: start the service once",
        )
    else:
        report.ok(section, "WAL mode")


async def check_store(
    path: Path, report: Report, *, timeout_s: float, free_bytes: FreeBytes = disk_free_bytes
) -> None:
    """The store's steps, then the free disk (also when the store would not open: a full disk
    is a reason it may not)."""
    section = "store"
    try:
        found = await _in_thread(lambda: _inspect_db(path), timeout_s)
    except (sqlite3.Error, TimeoutError) as exc:
        report.fail(
            section,
            "opens",
            str(exc) or "timed out",
            "if the free disk step fails, free space first (opening needs a little); else stop "
            "the service and look at the file: the daemon moves a corrupt store aside and "
            "starts a new one",
        )
    else:
        if found is None:
            report.ok(section, str(path), "not created yet: the daemon creates it at first start")
        else:
            _store_steps(*found, report)
    try:
        folder = await _in_thread(lambda: _existing_folder(path), timeout_s)
        free = await _in_thread(lambda: free_bytes(folder), timeout_s)
    except (OSError, TimeoutError) as exc:
        report.fail(section, "free disk", str(exc) or "timed out", f"check the disk of {path}")
        return
    text = f"{free / MIB:.1f} MiB free on {folder}"
    fix = (
        f"free space on the disk of {folder} (journalctl --vacuum-size=100M, apt-get clean), or "
        "move store.path to a larger disk"
    )
    if free < FREE_FAIL_BYTES:
        report.fail(
            section,
            "free disk",
            f"{text}: the disk is full; new events are held in memory only",
            fix,
        )
    elif free < FREE_WARN_BYTES:
        report.warn(section, "free disk", f"{text}: little room for an outage's backlog", fix)
    else:
        report.ok(section, "free disk", text)


# -- the box's own clock -----------------------------------------------------------------------


def _timedatectl() -> bool | None:
    tool = shutil.which("timedatectl")
    if tool is None:
        return None
    done = subprocess.run(
        [tool, "show", "-p", "NTPSynchronized", "--value"],
        capture_output=True,
        text=True,
        timeout=5,
        check=False,
    )
    value = done.stdout.strip()
    if done.returncode != 0 or value not in ("yes", "no"):
        return None  # present, but no systemd to ask (a container)
    return value == "yes"


def _adjtimex() -> bool | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    libc = ctypes.CDLL(name, use_errno=True)
    buffer = ctypes.create_string_buffer(512)  # struct timex is ~208 bytes; modes = 0: read only
    state = libc.adjtimex(buffer)
    if state < 0:
        return None
    return bool(state != _TIME_ERROR)


def clock_sync() -> tuple[bool | None, str]:
    """(synchronised, how it was asked): timedatectl, then timesyncd's flag file, then the
    kernel's adjtimex state."""
    synced = _timedatectl()
    if synced is not None:
        return synced, "timedatectl NTPSynchronized"
    if TIMESYNC_FLAG.parent.exists():
        return TIMESYNC_FLAG.exists(), str(TIMESYNC_FLAG)
    synced = _adjtimex()
    return synced, "adjtimex(2) clock state"


async def check_clock(report: Report, *, timeout_s: float) -> None:
    try:
        synced, source = await _in_thread(clock_sync, timeout_s)
    except (OSError, subprocess.SubprocessError, TimeoutError) as exc:
        report.warn("clock", "synchronised", f"cannot tell: {exc}", "timedatectl status")
        return
    fix = (
        "enable time sync: timedatectl set-ntp true (systemd-timesyncd), or chrony; events "
        "carry this box's time and receivers refuse commands outside a 40 s window"
    )
    if synced is None:
        report.warn("clock", "synchronised", f"cannot tell ({source} unavailable)", fix)
    elif synced:
        report.ok("clock", "synchronised", f"per {source}")
    else:
        report.fail("clock", "synchronised", f"not synchronised, per {source}", fix)
