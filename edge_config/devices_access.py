"""Configuration of an access controller (kind "access_controller"): which serial line and bus
address it answers on, how often it is polled, its doors and readers, and its clock policy.

Owns the shape and per-field rules of that one device kind. The check that its line is a
`serial` line spans sections and lives in `edge_config.loader`, from the line types declared
here.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, field_validator

from edge_config.base import DeviceBase, LineType

_NAMED = "names keyed by number, e.g. {1 = 'main gate'}"

KeyNumber = Annotated[int, Field(strict=False)]
"""A number written as a TOML key: TOML keys are always strings, so this one is parsed."""


class AccessControllerDevice(DeviceBase):
    kind: Literal["access_controller"]
    line_types: ClassVar[tuple[LineType, ...]] = ("serial",)
    address: int = Field(ge=1, le=254, description="the controller's address on its RS-485 bus")
    poll_interval_ms: int = Field(default=100, ge=10, le=60_000)
    doors: dict[KeyNumber, str] = Field(
        min_length=1, description=f"the doors the controller drives: {_NAMED}"
    )
    readers: dict[KeyNumber, str] = Field(
        default_factory=dict, description=f"card readers: {_NAMED}"
    )
    held_open_alarm_s: int = Field(
        default=30,
        ge=1,
        le=3_600,
        description="the controller reports a door held open longer than this",
    )
    clock_check_interval_s: int = Field(default=300, ge=1, le=86_400)
    max_clock_skew_ms: int = Field(default=1_000, ge=50, le=3_600_000)
    command_attempts: int = Field(
        default=2,
        ge=1,
        le=5,
        description="tries of a command whose answer does not come (same seq: never done twice)",
    )

    @field_validator("doors", "readers")
    @classmethod
    def _numbers_fit_a_byte(cls, value: dict[KeyNumber, str]) -> dict[KeyNumber, str]:
        for number in value:
            if not 1 <= number <= 255:
                raise ValueError(f"number {number} outside 1..255")
        return value
