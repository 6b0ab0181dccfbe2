"""The asyncio protocol of one open port or socket of a line owner.

Owns only the hand-over: the bytes that arrive and the loss of the port go to the owner's
callbacks, and `lost` tells when the port is released (a serial port closes in a thread). Used by
`drivers.lines.serial.SerialLine` and `drivers.lines.modbus_transport.ModbusClient`; it does not
read, frame, time or reopen anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable


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
