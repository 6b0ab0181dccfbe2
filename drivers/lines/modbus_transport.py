"""The connection of one Modbus line, TCP or RTU over a serial port, and its one open request.

Owns opening the socket or port (asyncio's TCP connection, pyserial-asyncio-fast's serial port,
opened exclusively), sending one request at a time, the RTU inter-frame gap before each send,
handing the bytes that arrive to the framing (`drivers.lines.modbus_framing`) until the answer
is whole, the request's deadline (`drivers.lines.deadline`, a timer on the answer's future), and
turning the loss of the connection into LineError. Bytes that are not the answer are counted
and skipped; a late answer is never given to the next request (TCP: its transaction id; RTU:
the receive buffer is emptied at each send, and late bytes push the next send back by the gap).

It does not arbitrate between callers (`drivers.lines.arbiter`), log, count failures per unit,
retry or reconnect on its own (`drivers.lines.modbus.ModbusLine` does). Nothing is formatted
on the request path unless a request fails.
"""

from __future__ import annotations

import asyncio
import time

import serial
from pymodbus.pdu import ModbusPDU

from drivers.base import DeviceProtocolError, DriverError, LineError
from drivers.lines.deadline import answer_within
from drivers.lines.link import PortLink, open_serial
from drivers.lines.modbus_framing import RtuFraming, Skipped, TcpFraming
from edge_config.models import ModbusRtuLine, ModbusTcpLine


class ModbusClient:
    """`await connect()`, then `await exchange(request)` one at a time (the caller serialises)."""

    def __init__(
        self, name: str, config: ModbusTcpLine | ModbusRtuLine, *, gap_s: float = 0.0
    ) -> None:
        self.name = name
        self._config = config
        self._gap_s = gap_s
        self._timeout_s = config.timeout_ms / 1000
        self._framing = RtuFraming() if isinstance(config, ModbusRtuLine) else TcpFraming()
        self.target = (
            config.port if isinstance(config, ModbusRtuLine) else f"{config.host}:{config.port}"
        )
        self._transport: asyncio.Transport | None = None
        self._connection: PortLink | None = None
        self._buffer = bytearray()
        self._pending: tuple[ModbusPDU, asyncio.Future[ModbusPDU]] | None = None
        self._tid = 0
        self.skipped = Skipped()
        self.rx_seen = False
        """Bytes arrived during the current request: tells garbage from silence."""
        self.last_activity = 0.0
        """Monotonic time of the last byte seen or request ended; the RTU gap counts from here."""

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    async def connect(self) -> None:
        """Open the socket or port; LineError (naming the target and why) if it cannot."""
        await self.close()  # a port half-closed by a loss is released before it is opened again
        cfg = self._config
        loop = asyncio.get_running_loop()
        connection = PortLink(self._on_data, self._on_lost)
        transport: asyncio.Transport
        try:
            async with asyncio.timeout(self._timeout_s):
                if isinstance(cfg, ModbusRtuLine):
                    transport = await open_serial(connection, cfg)
                else:
                    transport, _ = await loop.create_connection(
                        lambda: connection, cfg.host, cfg.port
                    )
        except (OSError, ValueError, serial.SerialException) as exc:  # TimeoutError is an OSError
            raise LineError(f"cannot open line {self.name} ({self.target}): {exc!r}") from exc
        self._transport, self._connection = transport, connection
        self._buffer.clear()
        self.last_activity = time.monotonic()

    async def close(self) -> None:
        """Close the socket or port and wait until it is released (a serial port closes in a
        thread; opened exclusively, it cannot be opened again before)."""
        transport, connection = self._transport, self._connection
        self._transport = self._connection = None
        if self._pending is not None and not self._pending[1].done():
            # The loss of this connection is no longer the current one's: say it here.
            self._pending[1].set_exception(LineError(f"line {self.name} closed ({self.target})"))
        if transport is not None:
            transport.abort()  # nothing still worth sending; a wedged adapter may never drain
        if connection is not None:
            await connection.lost

    async def exchange(self, request: ModbusPDU) -> ModbusPDU:
        """Send `request` and return its answer (an exception response is an answer). Raises
        DeviceTimeout, DeviceProtocolError (garbage, or an undecodable answer) or LineError.
        ValueError, before anything is sent, for a request pymodbus cannot encode."""
        if self.last_activity + self._gap_s > time.monotonic():
            await self._keep_gap()
        transport = self._transport  # after the gap: the connection may have been lost meanwhile
        if transport is None or transport.is_closing():
            raise LineError(f"line {self.name}: connection lost ({self.target})")
        self._tid = self._tid % 0xFFFF + 1
        request.transaction_id = self._tid
        frame = self._framing.frame(request)
        if self._buffer:  # what is left belongs to no request any more
            self.skipped.stray_bytes += len(self._buffer)
            self._buffer.clear()
        future: asyncio.Future[ModbusPDU] = asyncio.get_running_loop().create_future()
        self._pending = (request, future)
        self.rx_seen = False
        try:
            transport.write(frame)
            return await answer_within(
                future, self._timeout_s, line=self.name, rx_seen=self._rx_seen
            )
        finally:
            self._pending = None
            self.last_activity = max(self.last_activity, time.monotonic())

    def _rx_seen(self) -> bool:
        return self.rx_seen

    async def _keep_gap(self) -> None:
        """Wait until the line has been silent for t3.5 since the last byte or request.

        Late bytes (an answer after its timeout) push the start of the next frame back, so they
        cannot run into it."""
        # Physical time on the wire, on purpose not the injected Clock: the inter-frame gap is
        # how long the RS-485 line must stay silent, and a fake clock cannot make it shorter.
        # Not a poller: each sleep is exactly the time left, and repeats only if a byte arrived.
        while (wait_s := self.last_activity + self._gap_s - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait_s)

    # -- called by the PortLink -----------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        # Only the open connection delivers: closing aborts it, which stops its reading at once.
        self.last_activity = time.monotonic()
        buffer = self._buffer
        buffer += data
        pending = self._pending
        if pending is None:
            return  # nobody asked: counted as stray when the next request is sent
        request, future = pending
        self.rx_seen = True
        if future.done():
            return
        # Untrusted bytes: whatever the framing makes of them ends this request, never the
        # connection or the event loop's reading of it.
        try:
            answer = self._framing.find(buffer, request, self.skipped)
        except DriverError as exc:
            future.set_exception(exc)
        except Exception as exc:  # a bug on bytes we did not foresee: a counted refusal
            self.skipped.malformed += 1
            buffer.clear()
            future.set_exception(DeviceProtocolError(f"line {self.name}: bad answer: {exc!r}"))
        else:
            if answer is not None:
                future.set_result(answer)

    def _on_lost(self, connection: PortLink, exc: Exception | None) -> None:
        if connection is not self._connection:
            return
        self._transport = self._connection = None
        if self._pending is not None and not self._pending[1].done():
            self._pending[1].set_exception(
                LineError(f"line {self.name}: connection lost ({self.target}): {exc or 'closed'}")
            )
