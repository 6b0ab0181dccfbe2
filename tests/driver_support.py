"""Running one driver in-process for its tests: a recording `emit` (our own seam), a stub
`PanicSink`, and a context manager that runs the poll loop until the test ends."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from drivers.base import DriverContext, PanicPress
from drivers.lines.modbus import ModbusLine
from edge_config.models import ModbusRtuLine, ModbusTcpLine
from gateway.core.events import DeviceRef, Event
from simulators import modbus_serve
from simulators.vserial import VirtualSerialLink


class NoPanics:
    """The PanicSink of drivers that never report panic buttons."""

    async def panic_pressed(self, press: PanicPress) -> None:
        raise AssertionError("this driver has no panic buttons")

    async def reset_pressed(self, device_id: str, **_kwargs: Any) -> None:
        raise AssertionError("this driver has no reset input")


class Recorder:
    """Collects emitted events; tests await the ones they expect instead of sleeping."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()
        self._seq = 0
        self.changes: list[int] = []
        """For each `changed()` the driver called: how many events it had emitted by then."""

    def changed(self) -> None:
        self.changes.append(len(self.events))

    async def emit(self, event: Event) -> Event:
        self._seq += 1
        stored = dataclasses.replace(event, seq=self._seq)
        async with self._changed:
            self.events.append(stored)
            self._changed.notify_all()
        return stored

    def of(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.type == event_type]

    def types(self) -> list[str]:
        return [e.type for e in self.events]

    async def wait(
        self,
        event_type: str,
        where: Callable[[Event], bool] = lambda _e: True,
        *,
        after: int = 0,
        timeout_s: float = 5.0,
    ) -> Event:
        """The first event of `event_type` matching `where` among events[after:]."""

        def found() -> Event | None:
            return next((e for e in self.events[after:] if e.type == event_type and where(e)), None)

        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: found() is not None)
        event = found()
        assert event is not None
        return event

    def context(self, device: DeviceRef, *, drill: bool = False) -> DriverContext:
        return DriverContext(
            device=device,
            panic=NoPanics(),
            emit=self.emit,
            clock_ms=lambda: time.time_ns() // 1_000_000,
            drill=drill,
            changed=self.changed,
        )


class Runnable(Protocol):
    async def run(self, ready: Callable[[], None]) -> None: ...


@contextlib.asynccontextmanager
async def running(
    driver: Runnable, *, wait_ready: bool = True, ready_timeout_s: float = 5.0
) -> AsyncIterator[None]:
    """Run the driver's poll loop for the body of the `async with`; by default waits for its
    first successful poll."""
    ready = asyncio.Event()
    task = asyncio.create_task(driver.run(ready.set), name="driver-under-test")
    try:
        if wait_ready:
            async with asyncio.timeout(ready_timeout_s):
                await ready.wait()
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.asynccontextmanager
async def modbus_line(
    transport: str,
    units: modbus_serve.SimUnit | Mapping[int, modbus_serve.SimUnit],
    *,
    timeout_ms: int = 200,
) -> AsyncIterator[ModbusLine]:
    """Serve `units` over Modbus TCP, or RTU through a virtual serial cable at 19200 baud, and
    yield the gateway's line to them."""
    async with contextlib.AsyncExitStack() as stack:
        config: ModbusTcpLine | ModbusRtuLine
        if transport == "tcp":
            host, port = await stack.enter_async_context(modbus_serve.serve_tcp(units))
            config = ModbusTcpLine(type="modbus_tcp", host=host, port=port, timeout_ms=timeout_ms)
        else:
            link = await stack.enter_async_context(VirtualSerialLink(baudrate=19200))
            await stack.enter_async_context(
                modbus_serve.serve_rtu(units, link.device_end, baudrate=19200)
            )
            config = ModbusRtuLine(
                type="modbus_rtu", port=link.host_end, baudrate=19200, timeout_ms=timeout_ms
            )
        yield await stack.enter_async_context(ModbusLine(transport, config))
