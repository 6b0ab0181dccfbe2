"""A simulated Modbus DI/DO module: the cheap 8-in/8-out RS-485/TCP I/O boards installers wire
panic buttons and lamps to.

Owns the module's state (input contacts, relay outputs, press counters) and its fault knobs.
Serving it over Modbus TCP or RTU is `simulators.modbus_serve`'s (re-exported here). It does not
know about alarms or the gateway, and does not own a serial port pair (`simulators.vserial` does).

Register map (unit id = `DiDoModule.unit_id`; N inputs, M outputs, default 8 and 8):

    discrete inputs  0..N-1  input contacts (True = button pressed / contact closed)
    coils            0..M-1  relay outputs; by convention coil 0 = lamp, coil 1 = siren
    input registers  0..N-1  rising-edge press counter of input i (uint16, wraps at 65536)
    holding register 0       module address (returns the unit id; read-only)

Anything else answers exception 2 (ILLEGAL DATA ADDRESS), with one quirk inherited from pymodbus,
which stores bits in 16-bit words: reading discrete inputs or coils between N (or M) and 15
answers False instead of an exception. Writing coils at M or above is rejected.

Fault knobs, read on every request: `silent` (the module does not answer and ignores writes, like
a dead module) and `delay_ms` (the answer leaves this much later). Both work on TCP and RTU: the
delay is taken in pymodbus's datastore `action` hook, silence in the server's `trace_packet` hook,
which drops the outgoing frame. Requests to unit ids that no module serves are never answered.
"""

from __future__ import annotations

import asyncio
from contextlib import suppress

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.modbus_serve import serve_rtu, serve_tcp

__all__ = ["DiDoModule", "serve_rtu", "serve_tcp"]

_WRITE_FUNCTIONS = {5, 6, 15, 16}
"""pymodbus routes unknown unit ids to device 0; ours answers nothing (see `_answer_filter`)."""


class DiDoModule:
    """One simulated I/O module; tests drive its inputs and watch its outputs."""

    def __init__(self, unit_id: int = 1, *, inputs: int = 8, outputs: int = 8) -> None:
        if not 1 <= unit_id <= 247:
            raise ValueError(f"unit id {unit_id} outside 1..247")
        self.unit_id = unit_id
        self.silent = False
        self.delay_ms = 0
        self._inputs = [False] * inputs
        self._coils = [False] * outputs
        self._counters = [0] * inputs
        self.input_reads = 0
        """How many times a master has read the inputs (function 2): a test's sign that a poll
        saw what it set, instead of a sleep."""
        self._input_read = asyncio.Condition()
        self._coil_waiters: list[tuple[int, bool, asyncio.Future[None]]] = []
        self._stop_delays = asyncio.Event()
        self._answering: set[asyncio.Task[object]] = set()

    # -- test API ----------------------------------------------------------------------------

    def press(self, i: int) -> None:
        if not self._inputs[i]:
            self._counters[i] = (self._counters[i] + 1) % 65536
        self._inputs[i] = True

    def release(self, i: int) -> None:
        self._inputs[i] = False

    async def pulse(self, i: int, ms: int = 100) -> None:
        self.press(i)
        try:
            await asyncio.sleep(ms / 1000)
        finally:
            self.release(i)

    async def wait_input_reads(self, count: int, timeout_s: float = 2.0) -> None:
        """Until a master has read the inputs `count` times in all."""
        async with asyncio.timeout(timeout_s), self._input_read:
            await self._input_read.wait_for(lambda: self.input_reads >= count)

    def input(self, i: int) -> bool:
        return self._inputs[i]

    def inputs(self) -> list[bool]:
        return list(self._inputs)

    def coil(self, i: int) -> bool:
        return self._coils[i]

    def coils(self) -> list[bool]:
        return list(self._coils)

    def counter(self, i: int) -> int:
        return self._counters[i]

    def counters(self) -> list[int]:
        return list(self._counters)

    async def wait_coil(self, i: int, value: bool, timeout_s: float = 1.0) -> None:
        """Return once coil `i` has `value`; raises TimeoutError after `timeout_s`."""
        if self._coils[i] == value:
            return
        waiter = (i, value, asyncio.get_running_loop().create_future())
        self._coil_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[2], timeout_s)
        finally:
            self._coil_waiters.remove(waiter)

    # -- Modbus side -------------------------------------------------------------------------

    def sim_device(self) -> SimDevice:
        """This module as a pymodbus SimDevice; the registers there are refreshed from our state."""
        return SimDevice(
            id=self.unit_id,
            simdata=(
                [SimData(0, values=[False] * len(self._coils), datatype=DataType.BITS)],
                [SimData(0, values=[False] * len(self._inputs), datatype=DataType.BITS)],
                [SimData(0, values=self.unit_id, datatype=DataType.REGISTERS, readonly=True)],
                [SimData(0, count=len(self._inputs), values=0, datatype=DataType.REGISTERS)],
            ),
            action=self._on_access,
        )

    async def _on_access(
        self,
        function_code: int,
        _start_address: int,
        address: int,
        _count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before each datastore access; `registers` is the whole block."""
        if (task := asyncio.current_task()) is not None:
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)
        if self.silent:
            return ExcCodes.DEVICE_FAILURE  # never reaches the wire: the answer filter drops it
        # A write is followed by a read-back of the same request; delay the request only once.
        if self.delay_ms > 0 and not (function_code in _WRITE_FUNCTIONS and set_values is None):
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop_delays.wait(), self.delay_ms / 1000)
        if function_code in {5, 15} and set_values is not None:
            if address + len(set_values) > len(self._coils):
                return ExcCodes.ILLEGAL_ADDRESS
            for offset, value in enumerate(set_values):
                self._set_coil(address + offset, bool(value))
        if function_code in {1, 5, 15}:
            _store(registers, _pack_bits(self._coils))
        elif function_code == 2:
            _store(registers, _pack_bits(self._inputs))
            self.input_reads += 1
            async with self._input_read:
                self._input_read.notify_all()
        elif function_code == 4:
            _store(registers, self._counters)
        else:
            _store(registers, [self.unit_id])
        return None

    def _set_coil(self, i: int, value: bool) -> None:
        self._coils[i] = value
        for coil, wanted, future in self._coil_waiters:
            if coil == i and wanted == value and not future.done():
                future.set_result(None)

    async def _finish_answers(self) -> None:
        """Cut delays short and let pymodbus's handler tasks end, so a closed server leaves none."""
        self._stop_delays.set()
        if self._answering:
            await asyncio.wait(set(self._answering))
        self._stop_delays.clear()


def _pack_bits(bits: list[bool]) -> list[int]:
    """Bits into 16-bit words, bit 0 first: the layout of pymodbus's bit blocks."""
    words = [0] * ((len(bits) + 15) // 16)
    for i, bit in enumerate(bits):
        if bit:
            words[i // 16] |= 1 << (i % 16)
    return words


def _store(registers: list[int], values: list[int]) -> None:
    registers[: len(values)] = values
