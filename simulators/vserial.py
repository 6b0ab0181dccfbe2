"""A virtual serial cable: two pseudo-terminals joined by an in-process bridge.

Owns the two pty pairs, the bridge that copies bytes between their master ends on the event loop
(add_reader/add_writer, no threads), optional wire-time emulation at a baud rate, and fault hooks
(garbage, a corrupted frame, a dropped direction). It does not speak Modbus and does not open the
slave ends for anyone: a simulator opens `device_end`, the gateway opens `host_end`, both real
/dev/pts/N paths that pyserial accepts.

Directions are named from the gateway's point of view: "to_device" carries requests,
"to_host" carries answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections import deque
from typing import Literal

from gateway.core.lifecycle import AsyncResource

Direction = Literal["to_device", "to_host"]
BITS_PER_CHAR = 10
"""Wire time per byte: start + 8 data + stop, the usual 8N1 framing."""


class _Pipe:
    """One direction of the cable: reads a master fd, delivers to the other master fd."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, src: int, dst: int, baudrate: int | None
    ) -> None:
        self._loop = loop
        self._src = src
        self._dst = dst
        self._baudrate = baudrate
        self._wire_free_at = 0.0
        """Loop time when the emulated wire finishes the bytes already on it."""
        self._out = bytearray()
        self._writing = False
        self._on_wire: deque[asyncio.TimerHandle] = deque()
        self.dropping = False
        self.corrupt_next = False

    def start(self) -> None:
        self._loop.add_reader(self._src, self._on_readable)

    def stop(self) -> None:
        self._loop.remove_reader(self._src)
        if self._writing:
            self._loop.remove_writer(self._dst)
        for handle in self._on_wire:
            handle.cancel()
        self._on_wire.clear()

    def _on_readable(self) -> None:
        try:
            data = os.read(self._src, 4096)
        except OSError:  # EIO while no slave end is open: nothing to carry
            return
        if not data or self.dropping:
            return
        if self.corrupt_next:
            self.corrupt_next = False
            # Flipping the last byte of the frame breaks its CRC but keeps its unit and length.
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        self.send(data)

    def send(self, data: bytes) -> None:
        """Put bytes on the wire; with a baud rate they arrive after their transmission time."""
        if self._baudrate is None:
            self._deliver(data)
            return
        start = max(self._loop.time(), self._wire_free_at)
        self._wire_free_at = start + len(data) * BITS_PER_CHAR / self._baudrate
        self._on_wire.append(self._loop.call_at(self._wire_free_at, self._arrive, data))

    def _arrive(self, data: bytes) -> None:
        # Arrival times strictly increase, so the handle firing now is the oldest one.
        self._on_wire.popleft()
        self._deliver(data)

    def _deliver(self, data: bytes) -> None:
        self._out += data
        self._flush()

    def _flush(self) -> None:
        try:
            written = os.write(self._dst, self._out) if self._out else 0
        except BlockingIOError:
            written = 0
        del self._out[:written]
        # The pty buffer is full when nobody reads the far end; wait for room instead of spinning.
        if self._out and not self._writing:
            self._loop.add_writer(self._dst, self._flush)
            self._writing = True
        elif not self._out and self._writing:
            self._loop.remove_writer(self._dst)
            self._writing = False


class VirtualSerialLink(AsyncResource):
    """`async with VirtualSerialLink(baudrate=9600) as link:` then open `link.device_end` and
    `link.host_end` with pyserial (or pymodbus) like two ends of an RS-485 cable."""

    def __init__(self, baudrate: int | None = None) -> None:
        self.baudrate = baudrate
        self.device_end = ""
        self.host_end = ""
        self._fds: list[int] = []
        self._pipes: dict[Direction, _Pipe] = {}

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        device_master, device_slave = os.openpty()
        host_master, host_slave = os.openpty()
        # Our own slave fds stay open: a pty master reads EIO whenever no slave is open, which
        # would happen each time the simulator or gateway closes and reopens its end.
        self._fds = [device_master, device_slave, host_master, host_slave]
        for slave in (device_slave, host_slave):
            tty.setraw(slave)  # no echo, no CR/LF translation, no signals: bytes pass untouched
        for master in (device_master, host_master):
            os.set_blocking(master, False)
        self.device_end = os.ttyname(device_slave)
        self.host_end = os.ttyname(host_slave)
        self._pipes = {
            "to_device": _Pipe(loop, host_master, device_master, self.baudrate),
            "to_host": _Pipe(loop, device_master, host_master, self.baudrate),
        }
        for pipe in self._pipes.values():
            pipe.start()

    async def close(self) -> None:
        for pipe in self._pipes.values():
            pipe.stop()
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds = []

    # -- fault hooks ---------------------------------------------------------------------------

    def inject_garbage(self, direction: Direction, data: bytes) -> None:
        """Send bytes nobody wrote (line noise) in `direction`."""
        self._pipes[direction].send(data)

    def corrupt_next(self, direction: Direction) -> None:
        """Flip the last byte of the next chunk (a whole frame in practice): a CRC error."""
        self._pipes[direction].corrupt_next = True

    def drop(self, direction: Direction, on: bool) -> None:
        """While on, everything sent in `direction` is lost (a cut wire)."""
        self._pipes[direction].dropping = on
