"""The asyncio protocol of one open port or socket of a line owner.

Owns only the hand-over: the bytes that arrive and the loss of the port go to the owner's
callbacks, and `lost` tells when the port is released (a serial port closes in a thread); and
opening a serial port the one way both owners do. Used by `drivers.lines.serial.SerialLine` and
`drivers.lines.modbus_transport.ModbusClient`; it does not read, frame, time or reopen anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from serial_asyncio_fast import create_serial_connection

from edge_config.models import ModbusRtuLine
from edge_config.models import SerialLine as SerialLineConfig


class PortLink(asyncio.Protocol):
    """One open port; the owner tells a link it has since replaced by identity in `on_lost`."""

    def __init__(
        self,
        on_data: Callable[[bytes], None],
        on_lost: Callable[[PortLink, Exception | None], None],
    ) -> None:
        self._on_data = on_data
        self._on_lost = on_lost
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self._on_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._on_lost(self, exc)


async def open_serial(link: PortLink, cfg: ModbusRtuLine | SerialLineConfig) -> asyncio.Transport:
    """The line's port, opened for `link`. Raises what pyserial raises (OSError, ValueError,
    serial.SerialException); the owner says which line could not be opened."""
    transport, _ = await create_serial_connection(
        asyncio.get_running_loop(),
        lambda: link,
        cfg.port,
        baudrate=cfg.baudrate,
        bytesize=cfg.bytesize,
        parity=cfg.parity,
        stopbits=cfg.stopbits,
        exclusive=True,  # one owner per line: a second opener gets an error, not a share
    )
    return transport
