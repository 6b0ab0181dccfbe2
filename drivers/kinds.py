"""The device kinds the gateway can run: each kind's config model paired with its line owner and
its driver class, typed so that mypy refuses a driver handed another kind's config.

Owns `DeviceKind[C, L]` (config model `C`, line owner `L`, and a driver that takes exactly those)
and `KINDS`, the table of every kind, keyed by the `kind` its config model takes. The list of
kinds and the line types each accepts are the configuration's (`edge_config.kinds`); a test
checks this table covers each of them. It does not build lines (`drivers.lines`) nor talk to
devices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from drivers.access_controller import AccessController
from drivers.alarm_box import AlarmBox
from drivers.base import Driver, DriverContext, DriverError
from drivers.bollard import Bollard
from drivers.bollard_sockets import BollardSockets
from drivers.lines import Line
from drivers.lines.modbus import ModbusLine
from drivers.lines.serial import SerialLine
from drivers.modbus_points import ModbusPoints
from edge_config.base import Strict
from edge_config.devices_access import AccessControllerDevice
from edge_config.devices_alarm import AlarmBoxDevice
from edge_config.devices_modbus import BollardDevice, BollardSocketsDevice, ModbusPointsDevice
from edge_config.kinds import AnyDevice, kind_of

C = TypeVar("C", bound=Strict)
L = TypeVar("L", ModbusLine, SerialLine)


class WrongKind(DriverError):
    """A device's config or line is not what its kind's driver takes (a loader check missed)."""


@dataclass(frozen=True, slots=True)
class DeviceKind(Generic[C, L]):
    config: type[C]
    line: type[L]
    driver: Callable[[C, L, DriverContext], Driver]

    @property
    def name(self) -> str:
        return kind_of(self.config)  # type: ignore[arg-type]  # every C is one of AnyDevice

    def build(self, config: AnyDevice, line: Line, ctx: DriverContext) -> Driver:
        """The driver of one device. The loader has checked the line's type against the kind;
        this checks it again at the seam, so a mismatch is a typed error, not a crash later."""
        if not isinstance(config, self.config):
            raise WrongKind(f"{type(config).__name__} handed to a {self.name} driver")
        if not isinstance(line, self.line):
            raise WrongKind(
                f"a {self.name} needs a {self.line.__name__}, not {type(line).__name__}"
            )
        return self.driver(config, line, ctx)


KINDS: dict[str, DeviceKind[Any, Any]] = {
    kind.name: kind
    for kind in (
        DeviceKind(AlarmBoxDevice, ModbusLine, AlarmBox),
        DeviceKind(AccessControllerDevice, SerialLine, AccessController),
        DeviceKind(BollardDevice, ModbusLine, Bollard),
        DeviceKind(BollardSocketsDevice, ModbusLine, BollardSockets),
        DeviceKind(ModbusPointsDevice, ModbusLine, ModbusPoints),
    )
}
"""Kind name -> its config model, line owner and driver (a literal table: no folder scanning, so
what can run is what is listed here)."""


def build_driver(config: AnyDevice, line: Line, ctx: DriverContext) -> Driver:
    """The driver of one configured device, over its line."""
    return KINDS[config.kind].build(config, line, ctx)
