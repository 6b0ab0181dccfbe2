"""A simulated rising-bollard controller that physically moves, over Modbus TCP or RTU; and the
insert-type bollard socket sensors (a DI/DO module whose inputs are the sockets).

Owns the controller's state (position, travel in progress, fault code, cycle counter, EFO input),
the two register layouts it can present (`GENERIC`, matching profile `generic_bollard`, and
`VENDOR_B`, matching profile `vendor_b`; written out here, independently of the profile files, so
tests check one against the other), and its fault knobs. Serving is `simulators.modbus_serve`.
It does not know about the gateway or the driver. docs/simulators/bollard.md has the maps.

Movement: a raise (Modbus command, local button or EFO) makes the position `rising`, and
`travel_ms` later `up` (EFO: `efo_travel_ms`); a lower likewise through `lowering` to `down`. A
command reverses a movement in progress. Each arrival at `up` counts one cycle.
Fault knobs: `fault_code` (reported as is), `jammed` (a movement starts but never arrives),
`silent` and `delay_ms` (see `UnitBase`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.dido import DiDoModule, _pack_bits
from simulators.modbus_serve import UnitBase, serve_rtu, serve_tcp

Position = Literal["down", "rising", "up", "lowering"]
Command = Literal["raise", "lower", "emergency_raise"]
COMMANDS: tuple[Command, ...] = ("raise", "lower", "emergency_raise")

__all__ = ["GENERIC", "VENDOR_B", "BollardController", "Layout", "SocketSensors"]
__all__ += ["serve_rtu", "serve_tcp"]


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a controller model keeps things. Status registers are consecutive from
    `status_address`: position, fault code, then the uint32 cycle counter (two registers)."""

    name: str
    status_table: Literal["input_register", "holding_register"]
    status_address: int
    position_codes: Mapping[Position, int]
    counter_high_word_first: bool
    efo_input: int
    command_coils: Mapping[Command, int] | None
    """Self-clearing command coils (write 1), or None when commands go to a register."""
    command_register: int | None
    command_codes: Mapping[Command, int]


GENERIC = Layout(
    name="generic",
    status_table="input_register",
    status_address=0,
    position_codes={"down": 0, "rising": 1, "up": 2, "lowering": 3},
    counter_high_word_first=True,
    efo_input=0,
    command_coils={"raise": 0, "lower": 1, "emergency_raise": 2},
    command_register=None,
    command_codes={},
)
VENDOR_B = Layout(
    name="vendor_b",
    status_table="holding_register",
    status_address=100,
    position_codes={"up": 1, "down": 2, "rising": 4, "lowering": 8},
    counter_high_word_first=False,
    efo_input=3,
    command_coils=None,
    command_register=110,
    command_codes={"raise": 1, "lower": 2, "emergency_raise": 5},
)
LAYOUTS = {"generic": GENERIC, "vendor_b": VENDOR_B}


class BollardController(UnitBase):
    """One bollard and its controller; tests drive it and watch its position."""

    def __init__(
        self,
        unit_id: int = 1,
        *,
        layout: Layout = GENERIC,
        position: Literal["down", "up"] = "up",
        travel_ms: int = 300,
        efo_travel_ms: int = 100,
    ) -> None:
        super().__init__(unit_id)
        self.layout = layout
        self.position: Position = position
        self.travel_ms = travel_ms
        self.efo_travel_ms = efo_travel_ms
        self.fault_code = 0
        self.jammed = False
        self.cycles = 0
        self.efo_input = False
        self.commands: list[Command] = []
        """Every command taken over Modbus, in order (local operation is not listed)."""
        self._arrival: asyncio.TimerHandle | None = None
        self._waiters: list[tuple[Position, asyncio.Future[None]]] = []

    # -- test API ----------------------------------------------------------------------------

    def operate(self, command: Command) -> None:
        """What the controller does when told, by Modbus or by its local push buttons."""
        if command == "lower":
            self._move("down", self.travel_ms)
        else:
            travel = self.efo_travel_ms if command == "emergency_raise" else self.travel_ms
            self._move("up", travel)

    def press_efo(self) -> None:
        """The emergency fast operation signal goes active: the bollard shoots up."""
        self.efo_input = True
        self.operate("emergency_raise")

    def release_efo(self) -> None:
        self.efo_input = False

    async def wait_position(self, position: Position, timeout_s: float = 2.0) -> None:
        """Return once the bollard is at `position`; raises TimeoutError after `timeout_s`."""
        if self.position == position:
            return
        waiter = (position, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter[1], timeout_s)
        finally:
            self._waiters.remove(waiter)

    def stop(self) -> None:
        """Cancel a movement in progress (the controller loses power mid-travel)."""
        if self._arrival is not None:
            self._arrival.cancel()
            self._arrival = None

    # -- physics -----------------------------------------------------------------------------

    def _move(self, target: Literal["down", "up"], travel_ms: int) -> None:
        if self.position == target:
            return
        self.stop()
        self._set_position("rising" if target == "up" else "lowering")
        loop = asyncio.get_running_loop()
        self._arrival = loop.call_later(travel_ms / 1000, self._arrive, target)

    def _arrive(self, target: Literal["down", "up"]) -> None:
        self._arrival = None
        if self.jammed:
            return  # stays rising / lowering: the stuck bollard the driver must report
        if target == "up":
            self.cycles = (self.cycles + 1) % (1 << 32)
        self._set_position(target)

    def _set_position(self, position: Position) -> None:
        self.position = position
        for wanted, future in self._waiters:
            if wanted == position and not future.done():
                future.set_result(None)

    # -- Modbus side -------------------------------------------------------------------------

    def status_registers(self) -> list[int]:
        high, low = self.cycles >> 16, self.cycles & 0xFFFF
        counter = [high, low] if self.layout.counter_high_word_first else [low, high]
        return [self.layout.position_codes[self.position], self.fault_code, *counter]

    def sim_device(self) -> SimDevice:
        lay = self.layout
        status = SimData(lay.status_address, count=4, values=0, datatype=DataType.REGISTERS)
        spare = SimData(0, values=0, datatype=DataType.REGISTERS, readonly=True)
        holding = [status] if lay.status_table == "holding_register" else [spare]
        if lay.command_register is not None:
            # One block from the status registers to the command register, so the pymodbus
            # block layout stays simple; the gap in between is refused in `_on_access`.
            first = holding[0].address
            holding = [
                SimData(first, count=lay.command_register - first + 1, datatype=DataType.REGISTERS)
            ]
        inputs = [status] if lay.status_table == "input_register" else [spare]
        coils = len(lay.command_coils or {}) or 1
        return SimDevice(
            id=self.unit_id,
            simdata=(
                [SimData(0, values=[False] * coils, datatype=DataType.BITS)],
                [SimData(0, values=[False] * (lay.efo_input + 1), datatype=DataType.BITS)],
                holding,
                inputs,
            ),
            action=self._on_access,
        )

    async def _on_access(  # noqa: PLR0917  # pymodbus calls the action hook positionally
        self,
        function_code: int,
        start_address: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before each datastore access; `registers` is the whole block."""
        if (refused := await self._admit(function_code, set_values)) is not None:
            return refused
        if set_values is not None:
            return self._write(function_code, address, [int(v) for v in set_values])
        return self._refresh(function_code, start_address, address, count, registers)

    def _write(self, function_code: int, address: int, values: list[int]) -> ExcCodes | None:
        lay = self.layout
        if function_code in {5, 15}:
            by_coil = {coil: name for name, coil in (lay.command_coils or {}).items()}
            if any(address + i not in by_coil for i in range(len(values))):
                return ExcCodes.ILLEGAL_ADDRESS
            for offset, value in enumerate(values):
                if value:
                    self._take(by_coil[address + offset])
            return None
        by_code = {code: name for name, code in lay.command_codes.items()}
        if address != lay.command_register or len(values) != 1:
            return ExcCodes.ILLEGAL_ADDRESS  # only the command register is writable
        if values[0] not in by_code:
            return ExcCodes.ILLEGAL_VALUE
        self._take(by_code[values[0]])
        return None

    def _refresh(
        self, function_code: int, start_address: int, address: int, count: int, registers: list[int]
    ) -> ExcCodes | None:
        """Copy the controller's state into the block pymodbus is about to answer from."""
        lay = self.layout
        if function_code in {1, 5, 15}:
            registers[:] = [0] * len(registers)  # command coils clear themselves once taken
        elif function_code == 2:
            bits = [False] * (lay.efo_input + 1)
            bits[lay.efo_input] = self.efo_input
            registers[: (len(bits) + 15) // 16] = _pack_bits(bits)
        else:
            table = "holding_register" if function_code in {3, 6, 16} else "input_register"
            if lay.status_table != table:
                return None
            base = lay.status_address - start_address
            registers[base : base + 4] = self.status_registers()
            if lay.command_register is not None and table == "holding_register":
                registers[lay.command_register - start_address] = 0  # cleared once taken
                if address + count - 1 > lay.status_address + 3 and address < lay.command_register:
                    return ExcCodes.ILLEGAL_ADDRESS  # the unmapped gap
        return None

    def _take(self, command: Command) -> None:
        self.commands.append(command)
        self.operate(command)


class SocketSensors(DiDoModule):
    """Insert-type bollard sockets: a DI module whose input i is closed while socket i holds
    its bollard."""

    def __init__(self, unit_id: int = 1, *, sockets: int = 8, all_present: bool = True) -> None:
        super().__init__(unit_id, inputs=sockets, outputs=1)
        if all_present:
            for i in range(sockets):
                self.insert(i)

    def pull(self, i: int) -> None:
        self.release(i)

    def insert(self, i: int) -> None:
        self.press(i)

    def present(self, i: int) -> bool:
        return self.input(i)
