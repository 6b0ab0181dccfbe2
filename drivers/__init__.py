"""Device drivers. `REGISTRY` maps a config `kind` to its driver class (a literal dict: no
folder scanning, so what can run is what is listed here)."""

from __future__ import annotations

from drivers.alarm_box import AlarmBox
from drivers.base import DriverFactory

REGISTRY: dict[str, DriverFactory] = {
    "alarm_box": AlarmBox,
}
