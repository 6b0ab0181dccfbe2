"""The device kinds the configuration knows: the one list of them.

Owns `DeviceConfig`, the union of every kind's config model (each model says its `kind` and, in
its `line_types`, which line types it can talk over), and what is derived from that list: the
kind names and `line_types_for`. A new kind is a new model in an `edge_config.devices_*` module
and one entry in `DeviceConfig`; its driver is paired with it in `drivers.KINDS` (a test checks
that every kind has one). It does not know the drivers, and checks nothing across sections (the
loader does, with `line_types_for`).
"""

from __future__ import annotations

from typing import Annotated, get_args

from pydantic import Field

from edge_config.base import LineType
from edge_config.devices_access import AccessControllerDevice
from edge_config.devices_alarm import AlarmBoxDevice
from edge_config.devices_modbus import BollardDevice, BollardSocketsDevice, ModbusPointsDevice

AnyDevice = (
    AlarmBoxDevice
    | AccessControllerDevice
    | BollardDevice
    | BollardSocketsDevice
    | ModbusPointsDevice
)
"""Every device kind's config model: the one list of kinds."""

DeviceConfig = Annotated[AnyDevice, Field(discriminator="kind")]
"""A `[devices.NAME]` section: the model is picked by its `kind`."""

DEVICE_MODELS: tuple[type[AnyDevice], ...] = get_args(AnyDevice)


def kind_of(model: type[AnyDevice]) -> str:
    """The `kind` value a config model takes (its `kind: Literal[...]` field)."""
    (name,) = get_args(model.model_fields["kind"].annotation)
    return str(name)


LINE_TYPES: dict[str, tuple[LineType, ...]] = {
    kind_of(model): model.line_types for model in DEVICE_MODELS
}
"""Kind name -> the line types its devices can talk over."""

KIND_NAMES: frozenset[str] = frozenset(LINE_TYPES)


def line_types_for(kind: str) -> tuple[LineType, ...]:
    """Which line types a device kind can talk over."""
    return LINE_TYPES[kind]
