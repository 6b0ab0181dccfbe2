"""Configuration of a panic alarm box (kind "alarm_box"): the Modbus I/O module with the panic
buttons, its reset input, its lamp, siren and fault outputs, and how often it is polled.

Owns the shape and per-field rules of that one device kind. The check that its line is a Modbus
line spans sections and lives in `edge_config.loader`, from the line types declared here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edge_config.base import ModbusDevice, PollIntervalMs, Strict, require_distinct


class PanicButton(Strict):
    input: int = Field(ge=0, le=65535, description="discrete input address of the button contact")
    name: str = ""
    press_counter_register: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="input register where the module counts presses; catches presses "
        "shorter than the poll interval",
    )


class AlarmBoxDevice(ModbusDevice):
    kind: Literal["alarm_box"]
    poll_interval_ms: PollIntervalMs = 50
    debounce_ms: int = Field(
        default=30,
        ge=0,
        le=5_000,
        description="after a press is taken, further edges of that input are ignored this long",
    )
    buttons: list[PanicButton] = Field(min_length=1)
    reset_input: int | None = Field(default=None, ge=0, le=65535)
    lamp_coil: int | None = Field(default=0, ge=0, le=65535)
    siren_coil: int | None = Field(default=None, ge=0, le=65535)
    fault_coil: int | None = Field(
        default=None, ge=0, le=65535, description="a fault lamp: on while an uplink path is down"
    )

    @model_validator(mode="after")
    def _distinct_inputs(self) -> AlarmBoxDevice:
        inputs = [b.input for b in self.buttons]
        require_distinct(inputs, "two buttons share one discrete input")
        if self.reset_input is not None and self.reset_input in inputs:
            raise ValueError("reset_input is also a panic button input")
        coils = [c for c in (self.lamp_coil, self.siren_coil, self.fault_coil) if c is not None]
        require_distinct(coils, "lamp_coil, siren_coil and fault_coil must be different coils")
        return self
