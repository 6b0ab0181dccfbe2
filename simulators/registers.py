"""A simulated Modbus unit with free register tables: the stand-in for "any device" an installer
maps with generic points (meters, sensors, a vendor's status words).

Owns four tables (coils, discrete inputs, holding registers, input registers), each `size` long
from address 0, helpers that encode typed values into register words the way a device would
(written with `struct`, independently of `drivers.codecs`, so tests check one against the other),
and the `silent` / `delay_ms` knobs of `UnitBase`. Serving is `simulators.modbus_serve`.
"""

from __future__ import annotations

import struct

from pymodbus.constants import ExcCodes
from pymodbus.simulator import DataType, SimData, SimDevice

from simulators.dido import _pack_bits
from simulators.modbus_serve import UnitBase, serve_rtu, serve_tcp

__all__ = ["RegisterBank", "encode", "serve_rtu", "serve_tcp"]

_FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}


def encode(
    value: float, data_type: str, *, byte_order: str = "big", word_order: str = "big"
) -> list[int]:
    """Register words holding `value` as `data_type` in the given byte and word order."""
    fmt = _FORMATS[data_type]
    packed = struct.pack(">" + fmt, value if fmt == "f" else int(value))
    words = [packed[i : i + 2] for i in range(0, len(packed), 2)]
    if byte_order == "little":
        words = [w[::-1] for w in words]
    if word_order == "little":
        words.reverse()
    return [int.from_bytes(w, "big") for w in words]


class RegisterBank(UnitBase):
    """Tests set values with `set_*` and read back what the master wrote."""

    def __init__(self, unit_id: int = 1, *, size: int = 64) -> None:
        super().__init__(unit_id)
        self.size = size
        self.coils = [False] * size
        self.discrete_inputs = [False] * size
        self.holding = [0] * size
        self.inputs = [0] * size

    def set_value(
        self,
        table: str,
        address: int,
        value: float,
        data_type: str = "uint16",
        *,
        byte_order: str = "big",
        word_order: str = "big",
    ) -> None:
        """Store a typed value in 'holding_register' or 'input_register' at `address`."""
        words = encode(value, data_type, byte_order=byte_order, word_order=word_order)
        target = self.holding if table == "holding_register" else self.inputs
        target[address : address + len(words)] = words

    def sim_device(self) -> SimDevice:
        def bits() -> list[SimData]:
            return [SimData(0, values=[False] * self.size, datatype=DataType.BITS)]

        def regs() -> list[SimData]:
            return [SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)]

        return SimDevice(
            id=self.unit_id, simdata=(bits(), bits(), regs(), regs()), action=self._on_access
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
        if (refused := await self._admit(function_code, set_values)) is not None:
            return refused
        if set_values is not None and function_code in {5, 15}:
            self.coils[address : address + len(set_values)] = [bool(v) for v in set_values]
        elif set_values is not None:
            self.holding[address : address + len(set_values)] = [int(v) for v in set_values]
        if function_code in {1, 5, 15}:
            registers[: (self.size + 15) // 16] = _pack_bits(self.coils)
        elif function_code == 2:
            registers[: (self.size + 15) // 16] = _pack_bits(self.discrete_inputs)
        elif function_code in {3, 6, 16}:
            registers[: self.size] = self.holding
        else:
            registers[: self.size] = self.inputs
        return None
