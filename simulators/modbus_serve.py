"""Serving any simulated Modbus unit (bollard controller, register bank, DI/DO module) over
Modbus TCP or RTU, and the fault knobs every unit shares.

Owns `SimUnit` (what a server needs from a unit), `UnitBase` (the `silent` / `delay_ms` knobs and
the bookkeeping that lets a closed server leave no task behind), and `serve_tcp` / `serve_rtu`,
which accept a mix of unit types on one bus (a `DiDoModule` is a `SimUnit` too; `simulators.dido`
re-exports them). It does not simulate any device itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Protocol

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

WRITE_FUNCTIONS = {5, 6, 15, 16}
_NOBODY = 0
"""pymodbus routes unknown unit ids to device 0; ours answers nothing (see `_answer_filter`)."""


def _tcp_unit(frame: bytes) -> int:
    return frame[6] if len(frame) > 6 else _NOBODY  # MBAP: tid(2) proto(2) len(2) unit(1)


def _rtu_unit(frame: bytes) -> int:
    return frame[0] if frame else _NOBODY


class SimUnit(Protocol):
    unit_id: int
    silent: bool

    def sim_device(self) -> SimDevice: ...

    async def _finish_answers(self) -> None: ...


class UnitBase:
    """Fault knobs read on every request: `silent` (no answer, writes ignored) and `delay_ms`."""

    def __init__(self, unit_id: int) -> None:
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit id {unit_id} outside 1..247")
        self.unit_id = unit_id
        self.silent = False
        self.delay_ms = 0
        self._stop_delays = asyncio.Event()
        self._answering: set[asyncio.Task[object]] = set()

    async def _admit(self, function_code: int, set_values: object) -> ExcCodes | None:
        """Call first in every `action` hook: applies the fault knobs. Not None: stop there."""
        if (task := asyncio.current_task()) is not None:
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        if self.silent:
            return ExcCodes.DEVICE_FAILURE  # never reaches the wire: the answer filter drops it
        # pymodbus follows a write with a read-back of the same request; delay only once.
        if self.delay_ms > 0 and not (function_code in WRITE_FUNCTIONS and set_values is None):
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop_delays.wait(), self.delay_ms / 1000)
        return None

    async def _finish_answers(self) -> None:
        """Cut delays short and let pymodbus's handler tasks end, so a closed server leaves none."""
        self._stop_delays.set()
        if self._answering:
            await asyncio.wait(set(self._answering))
        self._stop_delays.clear()


def _by_unit(units: SimUnit | Mapping[int, SimUnit]) -> dict[int, SimUnit]:
    if not isinstance(units, Mapping):
        return {units.unit_id: units}
    for unit, module in units.items():
        if unit != module.unit_id:
            raise ValueError(f"unit with id {module.unit_id} listed under {unit}")
    return dict(units)


def _devices(units: dict[int, SimUnit]) -> list[SimDevice]:
    async def answer_nothing(*_args: object) -> ExcCodes:
        return ExcCodes.GATEWAY_NO_RESPONSE  # dropped by the answer filter like any unknown unit

    nobody = SimDevice(
        id=_NOBODY,
        simdata=[SimData(0, values=0, datatype=DataType.REGISTERS)],
        action=answer_nothing,
    )
    return [nobody, *(unit.sim_device() for unit in units.values())]


def _answer_filter(
    units: dict[int, SimUnit], unit_of: Callable[[bytes], int]
) -> Callable[[bool, bytes], bytes]:
    def trace_packet(sending: bool, data: bytes) -> bytes:
        if not sending:
            return data
        unit = units.get(unit_of(data))
        return b"" if unit is None or unit.silent else data

    return trace_packet


@asynccontextmanager
async def serve_tcp(
    units: SimUnit | Mapping[int, SimUnit], host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[tuple[str, int]]:
    """Serve units over Modbus TCP; yields the (host, port) actually listened on."""
    by_unit = _by_unit(units)
    server = ModbusTcpServer(
        _devices(by_unit), address=(host, port), trace_packet=_answer_filter(by_unit, _tcp_unit)
    )
    await server.serve_forever(background=True)
    try:
        # serve_forever keeps the asyncio.Server as its "transport"; port 0 resolves there.
        bound_port: int = server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        yield host, bound_port
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]  # unannotated in pymodbus
        for unit in by_unit.values():
            await unit._finish_answers()


@asynccontextmanager
async def serve_rtu(
    units: SimUnit | Mapping[int, SimUnit],
    port_path: str,
    *,
    baudrate: int = 9600,
    bytesize: int = 8,
    parity: str = "N",
    stopbits: int = 1,
) -> AsyncIterator[None]:
    """Serve units as RTU slaves on one serial line (several unit ids share an RS-485 bus)."""
    by_unit = _by_unit(units)
    server = ModbusSerialServer(
        _devices(by_unit),
        framer=FramerType.RTU,
        port=port_path,
        baudrate=baudrate,
        bytesize=bytesize,
        parity=parity,
        stopbits=stopbits,
        trace_packet=_answer_filter(by_unit, _rtu_unit),
    )
    await server.serve_forever(background=True)
    try:
        yield
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]  # unannotated in pymodbus
        for unit in by_unit.values():
            await unit._finish_answers()
