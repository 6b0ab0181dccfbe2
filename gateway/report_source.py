"""What the daily inspection report reads from the running parts: each device's health and clock
offset (its driver), each broker path's state and last acknowledgements (`PathBoard`), and the
gateway's own clock synchronisation (the kernel's, through `adjtimex`).

Owns these reads and nothing else; it changes nothing. gateway.app hands `live_figures` to the
rules (gateway.rules.daily_report), which cannot see drivers or uplinks themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Mapping
from typing import Any

from drivers.access_controller import AccessController
from drivers.base import Driver
from drivers.polling import DeviceHealth
from gateway.core.events import DeviceRef
from gateway.rules.report import DeviceLive, LiveFigures, PathLive
from gateway.uplink.paths import PathBoard

TIME_ERROR = 5
"""adjtimex's answer when the clock is not synchronised (linux/timex.h)."""
STA_UNSYNC = 0x0040


class _Timex(ctypes.Structure):
    # struct timex of linux/timex.h: the fields read here, then room for the rest.
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("rest", ctypes.c_byte * 256),
    ]


def clock_sync_state(
    answer: int, status: int, max_error_us: int, est_error_us: int
) -> dict[str, Any]:
    """The report's `gateway_clock` from what adjtimex said (pure)."""
    return {
        "synchronised": answer != TIME_ERROR and not status & STA_UNSYNC,
        "max_error_ms": max_error_us / 1000,
        "estimated_error_ms": est_error_us / 1000,
    }


def read_clock_sync() -> dict[str, Any]:
    """The kernel's view of the system clock's synchronisation (read only: modes = 0)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        timex = _Timex()
        answer = libc.adjtimex(ctypes.byref(timex))
    except (OSError, AttributeError) as exc:
        return {"synchronised": None, "error": f"adjtimex unavailable: {exc}"}
    if answer < 0:
        return {"synchronised": None, "error": f"adjtimex failed: errno {ctypes.get_errno()}"}
    return clock_sync_state(answer, timex.status, timex.maxerror, timex.esterror)


def live_figures(
    devices: Mapping[str, DeviceRef], drivers: Mapping[str, Driver], paths: PathBoard
) -> LiveFigures:
    live = {}
    for device_id, ref in devices.items():
        driver = drivers.get(device_id)
        health = getattr(driver, "health", None)  # every polled driver keeps one
        state = "unknown"
        if isinstance(health, DeviceHealth) and health.online is not None:
            state = "online" if health.online else "offline"
        offset = driver.clock_offset_ms if isinstance(driver, AccessController) else None
        live[device_id] = DeviceLive(ref.kind, ref.location, state, offset)
    return LiveFigures(
        devices=live,
        paths={
            name: PathLive(p.up, p.since_ms, p.last_puback_ms, p.last_ack_ms)
            for name, p in paths.paths.items()
        },
        clock_sync=read_clock_sync(),
    )
