"""A shared RS-485 bus rig: one alarm box and other I/O modules on one emulated-baud RTU line,
polled by the real `AlarmBox` driver and by normal-priority pollers through one `ModbusLine`.

Owns the rig the shared-line test and `bench/shared_line.py` both use: the virtual cable, the
simulated modules (one of them can be dead), the recording line (which unit used the line, in what
order, with what outcome), a stand-in for the gateway's alarm latches that timestamps each
detected press, and the poll tasks. It does not assert anything and does not start the gateway
process or brokers (the bench's end-to-end mode does that itself).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from drivers.alarm_box import AlarmBox
from drivers.base import DriverContext, DriverError, PanicPress
from drivers.lines.arbiter import PRIORITY_NORMAL
from drivers.lines.modbus import ModbusLine
from drivers.pacing import PollPacer
from edge_config.devices_modbus import Function
from edge_config.models import AlarmBoxDevice, ModbusRtuLine, PanicButton
from gateway.core.events import DeviceRef, Event
from simulators.dido import DiDoModule, serve_rtu
from simulators.vserial import VirtualSerialLink

ALARM_UNIT = 1


@dataclass(frozen=True, slots=True)
class Transaction:
    unit: int
    ok: bool


class RecordingLine(ModbusLine):
    """A `ModbusLine` that records each discrete-input read: requests issued per unit, and the
    outcomes in the order the line served them (the line serialises, so completion order is
    wire order)."""

    def __init__(self, name: str, config: ModbusRtuLine) -> None:
        super().__init__(name, config)
        self.issued: Counter[int] = Counter()
        self.completed: Counter[int] = Counter()
        self.trace: list[Transaction] = []
        self._changed = asyncio.Condition()

    async def read(
        self,
        table: Function,
        unit: int,
        address: int,
        count: int,
        *,
        priority: int = PRIORITY_NORMAL,
    ) -> list[int]:
        if table != "discrete_input":
            return await super().read(table, unit, address, count, priority=priority)
        self.issued[unit] += 1
        ok = False
        try:
            bits = await super().read(table, unit, address, count, priority=priority)
            ok = True
            return bits
        finally:
            self.completed[unit] += 1
            self.trace.append(Transaction(unit, ok))
            async with self._changed:
                self._changed.notify_all()

    async def wait_completed(self, unit: int, count: int) -> None:
        """Until `count` reads of `unit` have completed (answered or failed)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.completed[unit] >= count)


@dataclass(frozen=True, slots=True)
class Detection:
    at: float
    """time.monotonic() when the driver reported the press."""
    alarm_reads: int
    """Alarm-box reads completed on the line when the press was reported."""


@dataclass
class PressRecorder:
    """Stands in for the gateway's alarm latches (`drivers.base.PanicSink`)."""

    line: RecordingLine
    detections: asyncio.Queue[Detection] = field(default_factory=asyncio.Queue)
    events: list[Event] = field(default_factory=list)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def panic_pressed(self, press: PanicPress) -> None:
        for _ in range(press.presses):
            self.detections.put_nowait(Detection(time.monotonic(), self.line.completed[ALARM_UNIT]))

    async def reset_pressed(self, device_id: str, *, occurred_at_ms: int) -> None:
        return None

    async def emit(self, event: Event) -> Event:
        self.events.append(event)
        async with self._changed:
            self._changed.notify_all()
        return event

    async def wait_event(self, event_type: str) -> Event:
        """The first event of this type the driver emitted, waiting for it if needed."""
        async with self._changed:
            await self._changed.wait_for(lambda: any(e.type == event_type for e in self.events))
        return next(e for e in self.events if e.type == event_type)


class Poller:
    """A normal-priority device (a bollard, an I/O module): reads its inputs on a cadence with
    the drivers' pacing, and goes offline after a silence like a driver does."""

    def __init__(
        self, line: ModbusLine, unit: int, *, interval_s: float, offline_after_s: float
    ) -> None:
        self.unit = unit
        self.answers = 0
        self.failures = 0
        self.online: bool | None = None
        self.answered = asyncio.Event()
        self.went_offline = asyncio.Event()
        self._line = line
        self._interval_s = interval_s
        self._offline_after_s = offline_after_s

    async def run(self) -> None:
        pacer = PollPacer(self._interval_s)
        last_ok = time.monotonic()
        while True:
            try:
                await self._line.read("discrete_input", self.unit, 0, 8)
            except DriverError:
                self.failures += 1
                if time.monotonic() - last_ok >= self._offline_after_s:
                    self.online = False
                    self.went_offline.set()
                delay = pacer.failed(back_off=self.online is False)
            else:
                last_ok = time.monotonic()
                self.answers += 1
                self.online = True
                self.answered.set()
                delay = pacer.answered()
            await asyncio.sleep(delay)


@dataclass
class SharedBus:
    link: VirtualSerialLink
    line: RecordingLine
    alarm_module: DiDoModule
    modules: dict[int, DiDoModule]
    """The other devices' modules by unit id."""
    alarm_box: AlarmBox
    recorder: PressRecorder
    pollers: dict[int, Poller]
    alarm_ready: asyncio.Event


@asynccontextmanager
async def shared_bus(
    *,
    baudrate: int = 9600,
    timeout_ms: int = 100,
    other_units: tuple[int, ...] = (2, 3, 4, 5),
    dead_units: tuple[int, ...] = (5,),
    alarm_poll_ms: int = 50,
    other_poll_ms: int = 200,
    offline_after_ms: int = 500,
) -> AsyncIterator[SharedBus]:
    """The bus with every device being polled; the polls stop when the block exits."""
    alarm_module = DiDoModule(ALARM_UNIT)
    modules = {unit: DiDoModule(unit) for unit in other_units}
    for unit in dead_units:
        modules[unit].silent = True
    async with AsyncExitStack() as stack:
        link = await stack.enter_async_context(VirtualSerialLink(baudrate=baudrate))
        await stack.enter_async_context(
            serve_rtu({ALARM_UNIT: alarm_module, **modules}, link.device_end, baudrate=baudrate)
        )
        config = ModbusRtuLine.model_validate(
            {
                "type": "modbus_rtu",
                "port": link.host_end,
                "baudrate": baudrate,
                "timeout_ms": timeout_ms,
            }
        )
        line = await stack.enter_async_context(RecordingLine("bus", config))
        recorder = PressRecorder(line)
        box_config = AlarmBoxDevice(
            kind="alarm_box",
            line="bus",
            unit_id=ALARM_UNIT,
            poll_interval_ms=alarm_poll_ms,
            debounce_ms=0,  # presses here come one poll apart at most; no contact bounce
            offline_after_ms=offline_after_ms,
            buttons=[PanicButton(input=0, name="desk")],
        )
        ctx = DriverContext(
            device=DeviceRef("box", "alarm_box"),
            panic=recorder,
            emit=recorder.emit,
            clock_ms=lambda: time.time_ns() // 1_000_000,
        )
        alarm_box = AlarmBox(box_config, line, ctx)
        pollers = {
            unit: Poller(
                line,
                unit,
                interval_s=other_poll_ms / 1000,
                offline_after_s=offline_after_ms / 1000,
            )
            for unit in other_units
        }
        alarm_ready = asyncio.Event()
        # A poll task that crashes ends the group and so the caller's block: it fails loudly.
        async with asyncio.TaskGroup() as polls:
            tasks = [polls.create_task(alarm_box.run(alarm_ready.set), name="poll-alarm-box")]
            tasks += [polls.create_task(p.run(), name=f"poll-unit-{u}") for u, p in pollers.items()]
            try:
                yield SharedBus(
                    link, line, alarm_module, modules, alarm_box, recorder, pollers, alarm_ready
                )
            finally:
                for task in tasks:
                    task.cancel()
