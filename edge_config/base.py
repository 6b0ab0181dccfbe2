"""The base every configuration section builds on: the strict model and the id type.

Owns `Strict` (unknown keys are errors, nothing is coerced), `Ident` (an id that may appear in
an MQTT topic), the bounds of numbers several sections share (`Port`, `TimeoutMs`,
`PollIntervalMs`), `require_distinct` (the check that a list names nothing twice) and the fields
every device section has (`DeviceBase`, `ModbusDevice`). Every schema
module imports these from here, so no schema module needs another one's internals; it owns no
section itself.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from edge_config.fields import MAX_PORT

_ID = r"^[a-z0-9][a-z0-9_-]{0,62}$"
Ident = Annotated[str, Field(pattern=_ID)]
"""Ids end up in MQTT topics, so they are restricted to lower-case letters, digits, _ and -."""

Port = Annotated[int, Field(ge=1, le=MAX_PORT)]
"""A TCP port (a broker's, a Modbus TCP module's)."""
TimeoutMs = Annotated[int, Field(ge=10, le=30_000)]
"""How long a line waits for an answer to one request."""
PollIntervalMs = Annotated[int, Field(ge=5, le=60_000)]
"""How often a polled device is read."""

LineType = Literal["modbus_tcp", "modbus_rtu", "serial"]
"""The `type` of a `[lines.NAME]` section: what a device kind says it can talk over."""
MODBUS_LINE_TYPES: tuple[LineType, ...] = ("modbus_tcp", "modbus_rtu")


class Strict(BaseModel):
    """The base of every section: unknown keys are errors, and nothing is coerced (`true` is not
    a number, `"30"` is neither a number nor a boolean, `inf` and `nan` are not numbers)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


def require_distinct(values: Collection[Hashable], message: str) -> None:
    """Raise ValueError(`message`) (pydantic reports it at the validator's place) if any value
    stands in `values` twice."""
    if len(set(values)) != len(values):
        raise ValueError(message)


class DeviceBase(Strict):
    """The fields every device section has, whatever its kind."""

    line: Ident
    location: str = ""
    offline_after_ms: int = Field(default=3_000, ge=100, le=600_000)
    drill: bool = Field(default=False, description="mark every event of this device as a drill")


class ModbusDevice(DeviceBase):
    """A device on a Modbus line, as one unit of it."""

    line_types: ClassVar[tuple[LineType, ...]] = MODBUS_LINE_TYPES
    unit_id: int = Field(default=1, ge=0, le=247)
