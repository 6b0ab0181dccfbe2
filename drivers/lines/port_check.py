"""Why a serial port will not open, in words an installer can act on.

Owns one question: given a port path that could not be opened, what does the kernel say
(the OSError text of an open attempt) and what should be checked for that error (the adapter,
the port name in the config, the service user's group, another program holding it). Used by
the line owners when opening fails (drivers.lines.modbus, drivers.lines.serial), so the log
names the reason once. It does not open the port for use, and does not retry.
"""

from __future__ import annotations

import errno
import os

_HINTS: dict[int, str] = {
    errno.ENOENT: "check that the USB-RS485 adapter is plugged in and that the line's `port` "
    "names it (ls -l /dev/serial/by-id/)",
    errno.ENODEV: "the adapter was unplugged or its driver is not loaded; plug it in again "
    "(dmesg shows why)",
    errno.ENXIO: "the adapter was unplugged or its driver is not loaded; plug it in again "
    "(dmesg shows why)",
    errno.EACCES: "add the service user to the port's group (usually dialout: "
    "usermod -aG dialout schoolgate) and restart the service",
    errno.EPERM: "add the service user to the port's group (usually dialout: "
    "usermod -aG dialout schoolgate) and restart the service",
    errno.EBUSY: "another program holds the port (fuser -v PORT shows which); stop it",
    errno.ENOTTY: "the path is not a serial port; the line's `port` must name a tty",
}
_DEFAULT_HINT = "check the adapter, the line's `port` and the service user's groups"


def hint_for(error: OSError) -> str:
    """What to check for an OSError met opening a serial port."""
    return _HINTS.get(error.errno or 0, _DEFAULT_HINT)


def describe(error: OSError) -> str:
    """The error's text and what to check, as one sentence for a log line or a message."""
    return f"{error.strerror or error}: {hint_for(error)}"


def open_failure(port: str) -> str | None:
    """Try to open `port` as the service would (read-write, not as the controlling tty, not
    blocking on the modem lines) and close it again: the reason it fails, None if it opens.
    For after a library's own open failed without saying why (pymodbus only logs it)."""
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as exc:
        return describe(exc)
    os.close(fd)
    return None
