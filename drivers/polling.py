"""The poll loop and device health shared by every polled driver (alarm box, bollard, bollard
sockets, generic points, access controller).

Owns `PolledDriver`, the part of a driver that every polled kind shares (its health and its
`run`), the poll loop (cadence and backoff from `drivers.pacing.PollPacer`; a poll that says more is
waiting is followed at once), a device's `device.offline` / `device.online` events after
`offline_after_ms` of silence (with the driver's `on_offline` step: a Modbus driver drops its
connection in case it is half-open), a helper that emits an event for the device, and
`read_table`, which reads any of the four Modbus tables by name. It does not know what a
device's registers or frames mean, and does not own the line.
"""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

import structlog

from drivers.base import DriverContext, DriverError, LineError
from drivers.lines.modbus import ModbusLine
from drivers.lines.serial import SerialLine
from drivers.pacing import PollPacer
from edge_config.devices_modbus import BIT_FUNCTIONS, Function
from gateway.core.events import Event, Severity, new_event


async def read_table(
    line: ModbusLine, unit: int, table: Function, address: int, count: int
) -> list[int]:
    """Read `count` items of one Modbus table; bits come back as 0 / 1 (ints, not bools: the
    values end up in events' JSON)."""
    values = await line.read(table, unit, address, count)
    return [int(v) for v in values] if table in BIT_FUNCTIONS else values


class DeviceHealth:
    """Online/offline bookkeeping of one polled device."""

    def __init__(
        self,
        ctx: DriverContext,
        offline_after_ms: int,
        *,
        on_offline: Callable[[], Awaitable[None]],
    ) -> None:
        self._ctx = ctx
        self._on_offline = on_offline
        """Called once the device has gone offline (after its event)."""
        self._offline_after_ms = offline_after_ms
        self._log = structlog.get_logger(__name__).bind(device=ctx.device.id)
        self.online: bool | None = None
        """None until the first poll: the first answer is not an `online` event."""
        self._last_ok = time.monotonic()
        self.polls = 0
        self.failures = 0
        self.last_answer_ms: int | None = None
        """Wall ms of the device's last answer (what `schoolgate status` shows)."""
        self.since_ms: int | None = None
        """Wall ms since when `online` has been what it is (None until the first poll)."""
        self.last_error = ""
        """The last failure's sentence ("" once the device answers again)."""

    async def emit(self, event_type: str, severity: Severity, **data: Any) -> Event:
        return await self._ctx.emit(
            new_event(
                event_type,
                self._ctx.device,
                severity=severity,
                occurred_at_ms=self._ctx.clock_ms(),
                data=data,
                drill=self._ctx.drill,
            )
        )

    async def answered(self) -> None:
        self.polls += 1
        self._last_ok = time.monotonic()
        self.last_answer_ms = self._ctx.clock_ms()
        self.last_error = ""
        if self.online is not True:
            was, self.online = self.online, True
            self.since_ms = self.last_answer_ms
            self._ctx.changed()
            if was is False:
                self._log.info("device_online")
                await self.emit("device.online", Severity.INFO)

    async def failed(self, exc: DriverError) -> None:
        self.failures += 1
        self.last_error = str(exc)
        silent_s = time.monotonic() - self._last_ok
        if self.online is not False and silent_s * 1000 >= self._offline_after_ms:
            self.online = False
            self.since_ms = self._ctx.clock_ms()
            self._ctx.changed()
            self._log.warning("device_offline", error=str(exc), silent_s=round(silent_s, 3))
            await self.emit("device.offline", Severity.MAJOR, error=str(exc))
            await self._on_offline()


async def poll_forever(
    poll_once: Callable[[], Awaitable[bool | None]],
    *,
    interval_ms: int,
    health: DeviceHealth,
    ready: Callable[[], None],
) -> None:
    """Call `poll_once` every `interval_ms` until cancelled; `ready()` after the first success.
    `poll_once` calls `health.answered()` itself, as soon as the device has answered; it returns
    True when the device has more waiting (a buffered event), and is then called again at once."""
    # Offline (or its line down), the device is polled less often so its timeouts leave a
    # shared line to the others; its first answer brings back the normal cadence.
    pacer = PollPacer(interval_ms / 1000)
    was_ready = False
    while True:
        try:
            more = await poll_once()
            delay = pacer.answered_with_more() if more else pacer.answered()
            if not was_ready:
                was_ready = True
                ready()
        except LineError as exc:
            await health.failed(exc)
            delay = pacer.failed(back_off=True)  # the port or socket is gone: do not spin
        except DriverError as exc:
            await health.failed(exc)
            delay = pacer.failed(back_off=health.online is False)
        await asyncio.sleep(delay)


class PollTimes(Protocol):
    """The two timings every polled device's config carries."""

    @property
    def poll_interval_ms(self) -> int: ...

    @property
    def offline_after_ms(self) -> int: ...


C = TypeVar("C", bound=PollTimes)
L = TypeVar("L", bound=ModbusLine | SerialLine)


class PolledDriver(ABC, Generic[C, L]):
    """What every polled driver shares: its config `C`, its line `L`, its context and logger,
    its device's health (with the poll and failure counts) and `Driver.run`, which polls it
    every `poll_interval_ms` through `poll_forever`."""

    def __init__(
        self,
        config: C,
        line: L,
        ctx: DriverContext,
        *,
        on_offline: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """`on_offline`: what to do once the device went offline; by default the line drops its
        connection, in case it is a half-open TCP one."""
        self._cfg = config
        self._line = line
        self._ctx = ctx
        self._log = structlog.get_logger(type(self).__module__).bind(device=ctx.device.id)
        self._health = DeviceHealth(
            ctx, config.offline_after_ms, on_offline=on_offline or line.drop_connection
        )

    @property
    def health(self) -> DeviceHealth:
        return self._health

    @property
    def polls(self) -> int:
        return self._health.polls

    @property
    def failures(self) -> int:
        return self._health.failures

    async def run(self, ready: Callable[[], None]) -> None:
        await poll_forever(
            self._poll_turn,
            interval_ms=self._cfg.poll_interval_ms,
            health=self._health,
            ready=ready,
        )

    async def _poll_turn(self) -> bool | None:
        """One turn of the poll loop: one poll, unless the driver has more to do per turn."""
        return await self.poll_once()

    @abstractmethod
    async def poll_once(self) -> bool | None:
        """Read the device once and report what changed; calls `health.answered()` as soon as
        the device has answered. True when the device has more waiting (see `poll_forever`)."""
