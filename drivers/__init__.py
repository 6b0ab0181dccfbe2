"""Device drivers. `REGISTRY` maps a config `kind` to its driver class (a literal dict: no
folder scanning, so what can run is what is listed here)."""

from __future__ import annotations

from drivers.access_controller import AccessController
from drivers.alarm_box import AlarmBox
from drivers.base import DriverFactory
from drivers.bollard import Bollard
from drivers.bollard_sockets import BollardSockets
from drivers.modbus_points import ModbusPoints

REGISTRY: dict[str, DriverFactory] = {
    "alarm_box": AlarmBox,
    "access_controller": AccessController,
    "bollard": Bollard,
    "bollard_sockets": BollardSockets,
    "modbus_points": ModbusPoints,
}
