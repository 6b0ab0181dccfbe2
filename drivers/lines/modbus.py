"""The single owner of one Modbus line: a Modbus TCP connection or an RS-485 port with many units.

Owns the pymodbus client of the line, the arbiter that keeps one request on the wire at a time and
grants the line by priority (`drivers.lines.arbiter`: alarm boxes first, no starvation), the RTU
inter-frame gap, (re)opening the line on demand, translating every pymodbus failure into the
typed errors of `drivers.base`, logging a failure once per state change, and request counters.

It does not retry, sleep between attempts or back off (the driver loops own that policy, see
`drivers.pacing`), does not know what a register means (drivers and `drivers.codecs` do), and
does not poll on its own. Every request is bounded by the line's `timeout_ms`, so a silent unit
costs the others at most one timeout per request it is sent.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import structlog
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient, ModbusBaseClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType
from pymodbus.pdu import ModbusPDU

from drivers.base import (
    DeviceException,
    DeviceProtocolError,
    DeviceTimeout,
    DriverError,
    LineError,
)
from drivers.lines import port_check
from drivers.lines.arbiter import PRIORITY_NORMAL, LineArbiter
from drivers.lines.modbus_guard import defuse_rtu, defuse_tcp
from edge_config.models import ModbusRtuLine, ModbusTcpLine
from gateway.core.cancel import honour_dropped_cancel
from gateway.core.lifecycle import AsyncResource

T = TypeVar("T")
ReadTap = Callable[[int, str, int, Sequence[int]], None]
"""`(unit, table, address, values)` of a read that succeeded; bits come as bools (0 / 1)."""

_MIN_GAP_S = 0.00175
"""Modbus over serial line spec 2.5.1.1: above 19200 baud t3.5 is fixed at 1.75 ms."""


@dataclass(frozen=True, slots=True)
class LineStats:
    requests: int
    failures: int
    timeouts: int
    malformed: int = 0
    """Answers pymodbus could not have decoded, defused (drivers.lines.modbus_guard)."""


def inter_frame_gap_s(
    baudrate: int, *, bytesize: int = 8, parity: str = "N", stopbits: int = 1
) -> float:
    """The RTU 3.5-character silence that separates two frames, in seconds."""
    if baudrate > 19200:
        return _MIN_GAP_S
    bits_per_char = 1 + bytesize + (0 if parity == "N" else 1) + stopbits
    return 3.5 * bits_per_char / baudrate


class ModbusLine(AsyncResource):
    """One Modbus line; every request to any unit on it goes through here, one at a time."""

    def __init__(
        self,
        name: str,
        config: ModbusTcpLine | ModbusRtuLine,
        *,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._log: structlog.typing.FilteringBoundLogger = (
            log if log is not None else structlog.get_logger()
        ).bind(line=name)
        self._arbiter = LineArbiter()
        self._client: ModbusBaseClient | None = None
        self._closed = False
        if isinstance(config, ModbusRtuLine):
            self._gap_s = inter_frame_gap_s(
                config.baudrate,
                bytesize=config.bytesize,
                parity=config.parity,
                stopbits=config.stopbits,
            )
            self._target = config.port
            self._defuse = defuse_rtu
        else:
            self._gap_s = 0.0  # TCP frames are delimited by the MBAP header, no silence needed
            self._target = f"{config.host}:{config.port}"
            self._defuse = defuse_tcp
        self.tap: ReadTap | None = None
        """Told every read that succeeded (`schoolgate watch`); must not block or raise."""
        self._last_activity = 0.0
        """Monotonic time of the last byte seen or transaction ended; the gap counts from here."""
        self._rx_seen = False
        """Bytes arrived during the current transaction: tells garbage from silence."""
        self._failing: set[int | None] = set()
        """Units (None: the line itself) whose failure is already logged."""
        self._requests = 0
        self._failures = 0
        self._timeouts = 0
        self._malformed = 0

    @property
    def stats(self) -> LineStats:
        return LineStats(self._requests, self._failures, self._timeouts, self._malformed)

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    # -- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the line; raises LineError if the port or connection cannot be opened."""
        async with self._arbiter.turn():
            self._closed = False
            try:
                await self._ensure_open()
            except LineError as exc:
                self._note_failure(None, exc)
                raise

    async def close(self) -> None:
        """Close the line. Requests raise LineError until `connect()` is called again."""
        # No lock: closing must not wait behind a request; that request then fails with LineError.
        self._closed = True
        if self._client is not None:
            self._client.close()

    open = connect
    """`async with line:` connects it and closes it on the way out (`AsyncResource`)."""

    async def drop_connection(self) -> None:
        """Close the current TCP connection; the next request opens a fresh one. For a peer that
        stopped answering: a TCP connection to a rebooted module can stay half-open forever.

        A no-op on a serial line: a port does not go half-open, and reopening it for one silent
        unit would only disturb the other units on the bus."""
        if isinstance(self._config, ModbusRtuLine):
            return
        async with self._arbiter.turn():
            if self._client is not None:
                self._client.close()
                self._client = None

    # -- requests ----------------------------------------------------------------------------

    # `priority`: when several requests wait for the line, the highest goes first (see
    # `drivers.lines.arbiter`); PRIORITY_NORMAL unless the caller is an alarm box.

    async def read_discrete_inputs(
        self, unit: int, address: int, count: int, *, priority: int = PRIORITY_NORMAL
    ) -> list[bool]:
        return await self._request(
            unit,
            lambda c: c.read_discrete_inputs(address, count=count, device_id=unit),
            lambda r: _bits(r, count),
            priority,
            read=("discrete_input", address),
        )

    async def read_coils(
        self, unit: int, address: int, count: int, *, priority: int = PRIORITY_NORMAL
    ) -> list[bool]:
        return await self._request(
            unit,
            lambda c: c.read_coils(address, count=count, device_id=unit),
            lambda r: _bits(r, count),
            priority,
            read=("coil", address),
        )

    async def read_input_registers(
        self, unit: int, address: int, count: int, *, priority: int = PRIORITY_NORMAL
    ) -> list[int]:
        return await self._request(
            unit,
            lambda c: c.read_input_registers(address, count=count, device_id=unit),
            lambda r: _registers(r, count),
            priority,
            read=("input_register", address),
        )

    async def read_holding_registers(
        self, unit: int, address: int, count: int, *, priority: int = PRIORITY_NORMAL
    ) -> list[int]:
        return await self._request(
            unit,
            lambda c: c.read_holding_registers(address, count=count, device_id=unit),
            lambda r: _registers(r, count),
            priority,
            read=("holding_register", address),
        )

    async def write_coil(
        self, unit: int, address: int, value: bool, *, priority: int = PRIORITY_NORMAL
    ) -> None:
        await self._request(
            unit, lambda c: c.write_coil(address, value, device_id=unit), _no_result, priority
        )

    async def write_register(
        self, unit: int, address: int, value: int, *, priority: int = PRIORITY_NORMAL
    ) -> None:
        await self._request(
            unit, lambda c: c.write_register(address, value, device_id=unit), _no_result, priority
        )

    # -- internals ---------------------------------------------------------------------------

    async def _request(
        self,
        unit: int,
        call: Callable[[ModbusBaseClient], Awaitable[ModbusPDU]],
        parse: Callable[[ModbusPDU], T],
        priority: int,
        read: tuple[str, int] | None = None,
    ) -> T:
        if not 0 <= unit <= 247:
            raise ValueError(f"unit id {unit} outside 0..247")
        async with self._arbiter.turn(priority):
            self._requests += 1
            try:
                # Both checks inline: once per request, and nearly always already satisfied.
                client = self._client
                if self._closed or client is None or not client.connected:
                    client = await self._ensure_open()
                if self._last_activity + self._gap_s > time.monotonic():
                    await self._keep_gap()
                response = await self._transact(client, call)
                if response.isError():
                    raise DeviceException(
                        unit, response.function_code & 0x7F, response.exception_code
                    )
                result = parse(response)
            except DriverError as exc:
                self._failures += 1
                if isinstance(exc, DeviceTimeout):
                    self._timeouts += 1
                self._note_failure(None if isinstance(exc, LineError) else unit, exc)
                raise
            if self._failing:
                self._note_ok(unit)
            if read is not None and self.tap is not None:
                self.tap(unit, read[0], read[1], result)  # type: ignore[arg-type]
            return result

    async def _ensure_open(self) -> ModbusBaseClient:
        """The connected client; opens the line once if needed. Caller holds the line."""
        if self._closed:
            raise LineError(f"line {self.name} is closed")
        if self._client is None:
            self._client = self._make_client()
        if not self._client.connected:
            opened = await self._client.connect()
            honour_dropped_cancel()  # connect waits with asyncio.wait_for too (gateway.core.cancel)
            if not opened:
                raise LineError(f"cannot open line {self.name} ({self._target}){self._why()}")
        return self._client

    def _why(self) -> str:
        """pymodbus only logs why a serial port would not open (and we silence its log): ask
        the port ourselves, so the line's one failure message names the reason and the fix."""
        if not isinstance(self._config, ModbusRtuLine):
            return ""
        reason = port_check.open_failure(self._config.port)
        return "" if reason is None else f": {reason}"

    def _make_client(self) -> ModbusBaseClient:
        cfg = self._config
        timeout_s = cfg.timeout_ms / 1000
        client: ModbusBaseClient
        # retries=0 and reconnect_delay=0: retry and reconnect policy belongs to our loops, and
        # pymodbus would otherwise keep a background reconnect task alive.
        if isinstance(cfg, ModbusRtuLine):
            client = AsyncModbusSerialClient(
                cfg.port,
                framer=FramerType.RTU,
                baudrate=cfg.baudrate,
                bytesize=cfg.bytesize,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                name=self.name,
                timeout=timeout_s,
                retries=0,
                reconnect_delay=0,
                trace_packet=self._trace_packet,
            )
        else:
            client = AsyncModbusTcpClient(
                cfg.host,
                port=cfg.port,
                name=self.name,
                timeout=timeout_s,
                retries=0,
                reconnect_delay=0,
                trace_packet=self._trace_packet,
            )
        # pymodbus drops a TCP connection after retries+3 unanswered requests in a row; one silent
        # unit behind a TCP gateway would then break the line for all. Timeouts stay timeouts.
        client.set_max_no_responses(sys.maxsize)
        return client

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        # pymodbus calls this with every frame sent and with its receive buffer on every arrival.
        if sending:
            self._rx_seen = False
        else:
            self._rx_seen = True
            self._last_activity = time.monotonic()
            data, defused = self._defuse(data)
            if defused:
                self._malformed += defused
                self._log.debug("modbus_answer_malformed", answer=data.hex())
        return data

    async def _keep_gap(self) -> None:
        """Wait until the line has been silent for t3.5 since the last byte or transaction.

        Late bytes (a reply after our timeout) push the start of the next frame back, so they
        cannot run into it. pymodbus itself clears its receive buffer when it sends and skips RTU
        frames from other unit ids, but does not wait for the line to go quiet.
        """
        # Physical time on the wire, on purpose not the injected Clock: the inter-frame gap is
        # how long the RS-485 line must stay silent, and a fake clock cannot make it shorter.
        # Not a poller: each sleep is exactly the time left, and repeats only if a byte arrived.
        while (wait_s := self._last_activity + self._gap_s - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait_s)

    async def _transact(
        self, client: ModbusBaseClient, call: Callable[[ModbusBaseClient], Awaitable[ModbusPDU]]
    ) -> ModbusPDU:
        self._rx_seen = False
        try:
            response = await call(client)
        except ConnectionException as exc:
            raise LineError(f"line {self.name}: {exc}") from exc
        except ModbusIOException as exc:
            # pymodbus reports "no valid answer in time" as ModbusIOException. A CRC error or a
            # reply from another unit is silently discarded by its framer, so it also ends here;
            # whether any byte came back tells garbage from silence.
            if not client.connected:
                raise LineError(f"line {self.name}: connection lost ({self._target})") from exc
            if self._rx_seen:
                raise DeviceProtocolError(f"line {self.name}: no valid reply: {exc}") from exc
            raise DeviceTimeout(
                f"line {self.name}: no answer within {self._config.timeout_ms} ms"
            ) from exc
        except ModbusException as exc:
            raise DeviceProtocolError(f"line {self.name}: {exc}") from exc
        except OSError as exc:
            raise LineError(f"line {self.name}: {exc}") from exc
        else:
            honour_dropped_cancel()  # pymodbus waited with asyncio.wait_for (gateway.core.cancel)
            return response
        finally:
            self._last_activity = max(self._last_activity, time.monotonic())

    def _note_failure(self, unit: int | None, exc: DriverError) -> None:
        if unit in self._failing:
            return
        self._failing.add(unit)
        event = "modbus_line_failing" if unit is None else "modbus_unit_failing"
        self._log.warning(event, unit=unit, error=str(exc), error_type=type(exc).__name__)

    def _note_ok(self, unit: int) -> None:
        if None in self._failing:
            self._failing.discard(None)
            self._log.info("modbus_line_recovered")
        if unit in self._failing:
            self._failing.discard(unit)
            self._log.info("modbus_unit_recovered", unit=unit)


def _no_result(_response: ModbusPDU) -> None:
    return None


def _bits(response: ModbusPDU, count: int) -> list[bool]:
    # Replies carry whole bytes, so pymodbus pads bits to a multiple of 8.
    if len(response.bits) < count:
        raise DeviceProtocolError(f"asked for {count} bits, got {len(response.bits)}")
    return [bool(b) for b in response.bits[:count]]


def _registers(response: ModbusPDU, count: int) -> list[int]:
    if len(response.registers) != count:
        raise DeviceProtocolError(f"asked for {count} registers, got {len(response.registers)}")
    return list(response.registers)
