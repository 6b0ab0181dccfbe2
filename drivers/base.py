"""The seam between the gateway core and device drivers.

Owns the driver error hierarchy, the `Driver` protocol every device kind implements, and the
`DriverContext` a driver receives (where to send events, which line it talks over). It does not
talk to any hardware and does not know MQTT or SQLite.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import KW_ONLY, dataclass
from typing import Protocol

from gateway.core.changes import nothing_changed
from gateway.core.events import DeviceRef, Event


class DriverError(Exception):
    """Base of every failure a driver or line reports."""


class LineError(DriverError):
    """The line itself is unusable: the serial port or TCP connection cannot be opened or broke."""


class DeviceTimeout(DriverError):
    """A unit on the line did not answer within its timeout."""


class DeviceProtocolError(DriverError):
    """A unit answered with something that is not a valid reply (CRC, wrong unit, garbage)."""


class DeviceException(DriverError):
    """A unit answered with a Modbus exception response."""

    def __init__(self, unit: int, function_code: int, exception_code: int) -> None:
        super().__init__(
            f"unit {unit} answered function 0x{function_code:02x} "
            f"with exception code {exception_code}"
        )
        self.unit = unit
        self.function_code = function_code
        self.exception_code = exception_code


@dataclass(frozen=True, slots=True)
class PanicPress:
    """What an alarm box saw of one button: `presses` presses, at `occurred_at_ms`."""

    device_id: str
    button: int
    _: KW_ONLY
    presses: int
    occurred_at_ms: int
    held_at_start: bool = False
    """The contact was already closed at the driver's first poll (it opens an alarm only if
    none is latched)."""


class PanicSink(Protocol):
    """Where an alarm box reports button presses; the gateway's alarm latches implement it."""

    async def panic_pressed(self, press: PanicPress) -> None: ...

    async def reset_pressed(self, device_id: str, *, occurred_at_ms: int) -> None: ...


class DeviceMemory(Protocol):
    """Small integers a driver keeps across restarts (a module's press-counter values)."""

    async def recall(self, key: str) -> int | None: ...

    async def remember(self, key: str, value: int) -> None: ...


@dataclass(frozen=True, slots=True)
class DriverContext:
    device: DeviceRef
    panic: PanicSink
    emit: Callable[[Event], Awaitable[Event]]
    """Store an event. An alarm is on disk when this returns (with its seq); other lanes are
    queued for the group commit (bounded delay) and returned without waiting for it."""
    clock_ms: Callable[[], int]
    """Wall-clock milliseconds since the epoch; injected so tests control time."""
    drill: bool = False
    memory: DeviceMemory | None = None
    """None where nothing persists (unit tests); the gateway gives the outbox's store."""
    store: Callable[[Event], Awaitable[Event]] | None = None
    """Store an event durably, whatever its lane (on disk when this returns). For events a
    device forgets once we acknowledge them; None where nothing persists (then `emit`)."""
    changed: Callable[[], None] = nothing_changed
    """Called when what the guard's page shows of the device changed (position, sockets,
    doors, health, clock offset): the daemon bumps its `ChangeCounter`. Must not block."""


class CommandError(DriverError):
    """A command was refused: unknown name, bad arguments, or the device did not confirm it."""


class Driver(Protocol):
    async def run(self, ready: Callable[[], None]) -> None:
        """Poll the device until cancelled; call `ready()` after the first successful poll."""
        ...

    async def command(self, name: str, args: Mapping[str, object]) -> dict[str, object]:
        """Carry out a command (`raise`, `unlock`, `lamp`...) and return what was confirmed.
        Raises CommandError for an unknown or refused command, DriverError if the line fails."""
        ...
