"""Insert-type bollards ("随拔随插"): removable bollards standing in ground sockets, each socket
with a presence sensor wired to an input of a Modbus DI module (docs/drivers/bollard_sockets.md).

Owns the poll loop of one DI module's sockets and the `bollard.pulled` / `bollard.inserted`
events (plus `device.offline` / `device.online`). It does not judge whether a pull is allowed at
this hour (school rules do) and does not own the line.
"""

from __future__ import annotations

from collections.abc import Mapping

from drivers.base import CommandError, DriverContext
from drivers.codecs import span
from drivers.lines.modbus import ModbusLine
from drivers.polling import PolledDriver
from edge_config.devices_modbus import BollardSocketsDevice
from gateway.core.events import Severity


class BollardSockets(PolledDriver[BollardSocketsDevice, ModbusLine]):
    kind = "bollard_sockets"

    def __init__(self, config: BollardSocketsDevice, line: ModbusLine, ctx: DriverContext) -> None:
        super().__init__(config, line, ctx)
        self._start, self._count = span(s.input for s in config.sockets)
        self._changed = ctx.changed
        self.present: dict[str, bool] | None = None
        """Socket name -> a bollard stands in it; None before the first poll."""

    async def command(self, name: str, args: Mapping[str, object]) -> dict[str, object]:
        raise CommandError("bollard_sockets takes no commands (the sensors are read-only)")

    async def poll_once(self) -> None:
        bits = await self._line.read("discrete_input", self._cfg.unit_id, self._start, self._count)
        await self._health.answered()
        closed_means_present = self._cfg.present_when == "closed"
        now = {
            s.name: bits[s.input - self._start] == closed_means_present for s in self._cfg.sockets
        }
        previous, self.present = self.present, now
        if now != previous:
            self._changed()
        for socket in self._cfg.sockets:
            here = now[socket.name]
            if previous is None:
                if not here:  # an empty socket at start: receivers may have missed the pull
                    await self._emit("bollard.pulled", socket.name, socket.input, initial=True)
            elif here != previous[socket.name]:
                kind = "bollard.inserted" if here else "bollard.pulled"
                await self._emit(kind, socket.name, socket.input)

    async def _emit(self, kind: str, name: str, input_: int, *, initial: bool = False) -> None:
        data: dict[str, object] = {"socket": name, "input": input_}
        if initial:
            data["initial"] = True
        await self._health.emit(kind, Severity.INFO, **data)
