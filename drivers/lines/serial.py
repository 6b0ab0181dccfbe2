"""The single owner of one plain serial line (RS-485 or RS-232) carrying a request/answer protocol
of its own framing, such as the access controllers' (drivers.access_codec).

Owns the port (opened lazily through pyserial-asyncio-fast, reopened after a failure, locked
against a second opener), the lock that keeps one transaction on the wire at a time, the silence
kept between frames, the answer timeout, translating port failures into the typed errors of
`drivers.base`, logging a failure once per state change, and counters.

It does not frame or parse bytes: each transaction brings an `AnswerReader` that consumes what
arrives and says when the answer is complete. It does not retry or back off (drivers do).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import serial
import structlog

from drivers.base import LineError
from drivers.lines import port_check
from drivers.lines.deadline import answer_within
from drivers.lines.health import RequestCounts
from drivers.lines.link import PortLink, open_serial
from drivers.lines.modbus import inter_frame_gap_s
from drivers.lines.owner import LineOwner, Turn
from edge_config.models import SerialLine as SerialLineConfig

T_co = TypeVar("T_co", covariant=True)
T = TypeVar("T")


class AnswerReader(Protocol[T_co]):
    """Consumes the bytes that arrive after a request; returns the answer once it is complete,
    None while it is not. Frames that are not the awaited answer (a late answer to an earlier
    request, another unit's traffic) are the reader's to skip."""

    def feed(self, data: bytes) -> T_co | None: ...


@dataclass(frozen=True, slots=True)
class SerialLineStats(RequestCounts):
    opens: int
    stray_bytes: int
    """Bytes that arrived while no transaction was waiting (late answers, noise)."""


class SerialLine(LineOwner):
    """One serial port; every transaction with any unit on it goes through here, one at a time."""

    def __init__(
        self,
        name: str,
        config: SerialLineConfig,
        *,
        log: structlog.typing.FilteringBoundLogger | None = None,
    ) -> None:
        super().__init__(name, "serial", log)
        self._config = config
        self._lock = asyncio.Lock()
        self._gap_s = inter_frame_gap_s(
            config.baudrate,
            bytesize=config.bytesize,
            parity=config.parity,
            stopbits=config.stopbits,
        )
        self._transport: asyncio.Transport | None = None
        self._port: PortLink | None = None
        self._waiting: tuple[AnswerReader[object], asyncio.Future[object]] | None = None
        self._last_activity = 0.0
        """Monotonic time of the last byte seen or transaction ended; the gap counts from here."""
        self._rx_seen = False
        self._opens = 0
        self._stray_bytes = 0

    @property
    def stats(self) -> SerialLineStats:
        return SerialLineStats(*self._health.counts, self._opens, self._stray_bytes)

    @property
    def connected(self) -> bool:
        return self._transport is not None and not self._transport.is_closing()

    @property
    def timeout_ms(self) -> int:
        return self._config.timeout_ms

    # -- lifecycle (connect, close, drop_connection: `drivers.lines.owner.LineOwner`; dropping
    # the port serves a USB adapter re-plugged, or a driver state that a reopen clears) ------

    def _turn(self) -> Turn:
        return self._lock

    # -- transactions ------------------------------------------------------------------------

    async def transact(
        self,
        request: bytes | Callable[[], bytes],
        reader: AnswerReader[T],
        *,
        unit: int | None = None,
        timeout_ms: int | None = None,
    ) -> T:
        """Send `request` and return what `reader` makes of the bytes that come back.

        `request` may be a function that builds the bytes once the line is ours, for a request
        that carries the time it is sent (setting a clock). Raises DeviceTimeout if nothing came
        back in time, DeviceProtocolError if bytes came but no answer the reader accepts,
        LineError if the port cannot be opened or is lost. `unit` only names the unit in logs.
        """
        timeout_s = (timeout_ms if timeout_ms is not None else self._config.timeout_ms) / 1000
        return await self._attempt(unit, self._lock, self._send, request, reader, timeout_s)

    async def _send(
        self, request: bytes | Callable[[], bytes], reader: AnswerReader[T], timeout_s: float
    ) -> T:
        """One transaction, on the port opened if need be. Caller holds the lock."""
        # Both checks inline: once per transaction, and nearly always already satisfied.
        transport = self._transport
        if self._closed or transport is None or transport.is_closing():
            transport = await self._ensure_open()
        if self._last_activity + self._gap_s > time.monotonic():
            await self._keep_gap()
        data = request() if callable(request) else request
        return await self._exchange(transport, data, reader, timeout_s)

    async def _exchange(
        self,
        transport: asyncio.Transport,
        request: bytes,
        reader: AnswerReader[T],
        timeout_s: float,
    ) -> T:
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._waiting = (reader, future)  # type: ignore[assignment]  # T is erased while waiting
        self._rx_seen = False
        try:
            transport.write(request)
            return await answer_within(future, timeout_s, line=self.name, rx_seen=self._seen)
        finally:
            self._waiting = None
            self._last_activity = max(self._last_activity, time.monotonic())

    def _seen(self) -> bool:
        return self._rx_seen

    async def _ensure_open(self) -> asyncio.Transport:
        """The open transport; opens the port if needed. Caller holds the lock."""
        if self._closed:
            raise LineError(f"line {self.name} is closed")
        if self._transport is not None and not self._transport.is_closing():
            return self._transport
        cfg = self._config
        port = PortLink(self._on_data, self._on_lost)
        try:
            transport = await open_serial(port, cfg)
        except (OSError, ValueError, serial.SerialException) as exc:
            reason = port_check.open_failure(cfg.port) or str(exc)
            raise LineError(f"cannot open line {self.name} ({cfg.port}): {reason}") from exc
        self._transport, self._port = transport, port
        self._opens += 1
        self._last_activity = time.monotonic()
        return transport

    async def _shut(self) -> None:
        transport, port = self._transport, self._port
        self._transport = self._port = None
        if transport is not None and port is not None:
            # abort, not close: nothing we would still want to flush, and close() waits for
            # the driver to drain, which a wedged adapter may never do.
            transport.abort()
            await port.lost  # pyserial-asyncio closes the port in a task; let it finish

    async def _keep_gap(self) -> None:
        """Wait until the line has been silent for 3.5 characters since the last byte or
        transaction, so a request never runs into the tail of an answer on RS-485."""
        # Physical time on the wire, on purpose not the injected Clock: the inter-frame gap is
        # how long the RS-485 line must stay silent, and a fake clock cannot make it shorter.
        # Not a poller: each sleep is exactly the time left, and repeats only if a byte arrived.
        while (wait_s := self._last_activity + self._gap_s - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait_s)

    # -- called by the PortLink -----------------------------------------------------------------

    def _on_data(self, data: bytes) -> None:
        self._last_activity = time.monotonic()
        if self._waiting is None:
            self._stray_bytes += len(data)
            return
        reader, future = self._waiting
        self._rx_seen = True
        answer = reader.feed(data)
        if answer is not None and not future.done():
            future.set_result(answer)

    def _on_lost(self, port: PortLink, exc: Exception | None) -> None:
        if port is self._port:  # the port broke under us (unplugged), not closed by us
            self._transport = self._port = None
        if self._waiting is not None and not self._waiting[1].done():
            self._waiting[1].set_exception(
                LineError(f"line {self.name}: port lost ({exc or 'closed'})")
            )
