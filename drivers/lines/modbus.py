"""The single owner of one Modbus line: a Modbus TCP connection or an RS-485 port with many units.

Owns the line's request/answer path: building each request as a pymodbus PDU, the arbiter that
keeps one request on the wire at a time and grants the line by priority (`drivers.lines.arbiter`:
alarm boxes first, no starvation), (re)opening the line on demand, the typed errors of
`drivers.base` for exception answers and short replies, logging a failure once per state change,
and request counters. The bytes, the RTU inter-frame gap and the deadline are our transport's
(`drivers.lines.modbus_transport`, on pymodbus's framers and PDU classes).

It does not retry, sleep between attempts or back off (the driver loops own that policy, see
`drivers.pacing`), does not know what a register means (drivers and `drivers.codecs` do), and
does not poll on its own. Every request is bounded by the line's `timeout_ms`, so a silent unit
costs the others at most one timeout per request it is sent.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog
from pymodbus.pdu import ModbusPDU
from pymodbus.pdu.bit_message import (
    ReadCoilsRequest,
    ReadDiscreteInputsRequest,
    WriteSingleCoilRequest,
)
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
    WriteSingleRegisterRequest,
)

from drivers.base import (
    DeviceException,
    DeviceProtocolError,
    LineError,
)
from drivers.lines import port_check
from drivers.lines.arbiter import PRIORITY_NORMAL, LineArbiter
from drivers.lines.health import RequestCounts
from drivers.lines.modbus_framing import Skipped
from drivers.lines.modbus_transport import ModbusClient
from drivers.lines.owner import LineOwner, Turn
from edge_config.devices_modbus import Function
from edge_config.models import ModbusRtuLine, ModbusTcpLine

T = TypeVar("T")
ReadTap = Callable[[int, str, int, Sequence[int]], None]
"""`(unit, table, address, values)` of a read that succeeded; bits come as bools (0 / 1)."""

_MIN_GAP_S = 0.00175
"""Modbus over serial line spec 2.5.1.1: above 19200 baud t3.5 is fixed at 1.75 ms."""


@dataclass(frozen=True, slots=True)
class LineStats(RequestCounts):
    malformed: int = 0
    """Answers by their header that pymodbus could not decode (drivers.lines.modbus_framing)."""
    late_answers: int = 0
    """TCP answers to an earlier request (another transaction id), skipped."""
    stray_bytes: int = 0
    """Garbage, broken frames and leftovers skipped while looking for an answer."""


def inter_frame_gap_s(
    baudrate: int, *, bytesize: int = 8, parity: str = "N", stopbits: int = 1
) -> float:
    """The RTU 3.5-character silence that separates two frames, in seconds."""
    if baudrate > 19200:
        return _MIN_GAP_S
    bits_per_char = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return 3.5 * bits_per_char / baudrate


class ModbusLine(LineOwner):
    """One Modbus line; every request to any unit on it goes through here, one at a time."""

    def __init__(
        self,
        name: str,
        config: ModbusTcpLine | ModbusRtuLine,
        *,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        super().__init__(name, "modbus", log)
        self._config = config
        self._arbiter = LineArbiter()
        self._client: ModbusClient | None = None
        self.tap: ReadTap | None = None
        """Told every read that succeeded (`schoolgate watch`); must not block or raise."""

    @property
    def stats(self) -> LineStats:
        skipped = self._client.skipped if self._client is not None else Skipped()
        return LineStats(
            *self._health.counts,
            skipped.malformed,
            skipped.late_answers,
            skipped.stray_bytes,
        )

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    # -- lifecycle (connect, close: `drivers.lines.owner.LineOwner`) ------------------------

    async def drop_connection(self) -> None:
        """Close the current TCP connection; the next request opens a fresh one. For a peer that
        stopped answering: a TCP connection to a rebooted module can stay half-open forever.

        A no-op on a serial line: a port does not go half-open, and reopening it for one silent
        unit would only disturb the other units on the bus."""
        if isinstance(self._config, ModbusRtuLine):
            return
        await super().drop_connection()

    def _turn(self) -> Turn:
        return self._arbiter.turn()

    async def _shut(self) -> None:
        if self._client is not None:
            await self._client.close()

    # -- requests ----------------------------------------------------------------------------

    # `priority`: when several requests wait for the line, the highest goes first (see
    # `drivers.lines.arbiter`); PRIORITY_NORMAL unless the caller is an alarm box.

    async def read(
        self,
        table: Function,
        unit: int,
        address: int,
        count: int,
        *,
        priority: int = PRIORITY_NORMAL,
    ) -> list[int]:
        """`count` items of one Modbus table from `address`; bits come as bools (0 / 1)."""
        make, parse = _READS[table]
        request = make(address=address, count=count, dev_id=_unit(unit))
        values = await self._request(unit, request, priority, parse, count)
        if self.tap is not None:
            self.tap(unit, table, address, values)
        return values

    async def write_coil(
        self, unit: int, address: int, value: bool, *, priority: int = PRIORITY_NORMAL
    ) -> None:
        request = WriteSingleCoilRequest(address=address, bits=[value], dev_id=_unit(unit))
        await self._request(unit, request, priority, _no_result, 1)

    async def write_register(
        self, unit: int, address: int, value: int, *, priority: int = PRIORITY_NORMAL
    ) -> None:
        request = WriteSingleRegisterRequest(address=address, registers=[value], dev_id=_unit(unit))
        await self._request(unit, request, priority, _no_result, 1)

    # -- internals ---------------------------------------------------------------------------

    async def _request(
        self,
        unit: int,
        request: ModbusPDU,
        priority: int,
        parse: Callable[[ModbusPDU, int], T],
        count: int,
    ) -> T:
        turn = self._arbiter.turn(priority)
        return await self._attempt(unit, turn, self._exchange, unit, request, parse, count)

    async def _exchange(
        self, unit: int, request: ModbusPDU, parse: Callable[[ModbusPDU, int], T], count: int
    ) -> T:
        """One request and its answer. Caller holds the line."""
        # Inline: once per request, and nearly always already satisfied.
        client = self._client
        if self._closed or client is None or not client.connected:
            client = await self._ensure_open()
        response = await client.exchange(request)
        if response.isError():
            raise DeviceException(unit, response.function_code & 0x7F, response.exception_code)
        return parse(response, count)

    async def _ensure_open(self) -> ModbusClient:
        """The connected client; opens the line once if needed. Caller holds the line."""
        if self._closed:
            raise LineError(f"line {self.name} is closed")
        if self._client is None:
            self._client = ModbusClient(self.name, self._config, gap_s=self._inter_frame_gap_s())
        if not self._client.connected:
            try:
                await self._client.connect()  # LineError naming the target and the reason
            except LineError as exc:
                raise LineError(f"{exc}{self._why()}") from exc.__cause__
        return self._client

    def _why(self) -> str:
        """What the kernel's error means for a serial port and what to check (the installer's
        one failure message names the fix)."""
        if not isinstance(self._config, ModbusRtuLine):
            return ""
        reason = port_check.open_failure(self._config.port)
        return "" if reason is None else f"; {reason}"

    def _inter_frame_gap_s(self) -> float:
        cfg = self._config
        if isinstance(cfg, ModbusRtuLine):
            return inter_frame_gap_s(
                cfg.baudrate, bytesize=cfg.bytesize, parity=cfg.parity, stopbits=cfg.stopbits
            )
        return 0.0  # TCP frames are delimited by the MBAP header, no silence needed


def _unit(unit: int) -> int:
    if not 0 <= unit <= 247:
        raise ValueError(f"unit id {unit} outside 0..247")
    return unit


def _no_result(_response: ModbusPDU, _count: int) -> None:
    return None


def _bits(response: ModbusPDU, count: int) -> list[int]:
    # Replies carry whole bytes, so pymodbus pads bits to a multiple of 8.
    if len(response.bits) < count:
        raise DeviceProtocolError(f"asked for {count} bits, got {len(response.bits)}")
    return [bool(b) for b in response.bits[:count]]


def _registers(response: ModbusPDU, count: int) -> list[int]:
    if len(response.registers) != count:
        raise DeviceProtocolError(f"asked for {count} registers, got {len(response.registers)}")
    return list(response.registers)


_READS: dict[Function, tuple[type[ModbusPDU], Callable[[ModbusPDU, int], list[int]]]] = {
    "coil": (ReadCoilsRequest, _bits),
    "discrete_input": (ReadDiscreteInputsRequest, _bits),
    "holding_register": (ReadHoldingRegistersRequest, _registers),
    "input_register": (ReadInputRegistersRequest, _registers),
}
"""Each table's request and the parse of its answer (function codes 1 to 4)."""
