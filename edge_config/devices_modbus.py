"""Configuration schema of the Modbus device kinds beyond the alarm box: rising bollards
(`bollard`), insert-type bollard sockets (`bollard_sockets`) and generic points (`modbus_points`),
plus the schema of a bollard profile (the register map of one controller model).

Owns the shape and per-field rules of those sections (pydantic v2, `extra="forbid"`). It does not
read profile files (`edge_config.profile_files` does): a device that names a profile resolves it
at validation through the `ProfileSource` the loader puts in pydantic's validation context, so a
bad name or override is refused at startup, and keeps the result. It knows nothing about the line.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from edge_config.base import Ident, ModbusDevice, PollIntervalMs, Strict, require_distinct

Address = int
Position = Literal["down", "rising", "up", "lowering"]
POSITIONS: tuple[Position, ...] = ("down", "rising", "up", "lowering")
Function = Literal["coil", "discrete_input", "holding_register", "input_register"]
DataType = Literal["bool", "int16", "uint16", "int32", "uint32", "float32"]
BIT_FUNCTIONS = ("coil", "discrete_input")
WIDE_TYPES = ("int32", "uint32", "float32")

_BOUND = 1e12
"""Scale, offset and deadband stay within this: a float32 reading times it is still finite."""

_ADDRESS = Field(ge=0, le=65535, description="0-based protocol address (not 40001-style)")


PROFILES_CONTEXT_KEY = "profiles"
"""Where a device model finds its `ProfileSource` in the validation context."""


class ProfileError(ValueError):
    """A profile is unknown or its file is not a valid profile."""


# -- bollard profiles ----------------------------------------------------------------------------


class BitRef(Strict):
    """One bit the controller reports (the EFO input)."""

    table: Literal["discrete_input", "coil"]
    address: int = _ADDRESS


class RegisterRef(Strict):
    table: Literal["holding_register", "input_register"]
    address: int = _ADDRESS


class CounterRef(RegisterRef):
    data_type: Literal["uint16", "uint32"] = "uint16"
    word_order: Literal["big", "little"] = Field(
        default="big", description="uint32 only: 'big' = the first register holds the high word"
    )

    @model_validator(mode="after")
    def _word_order_needs_two_words(self) -> CounterRef:
        if "word_order" in self.model_fields_set and self.data_type == "uint16":
            raise ValueError("word_order only applies to a uint32 counter (data_type = 'uint32')")
        return self


class PositionRef(RegisterRef):
    values: dict[str, Position] = Field(
        description='register value -> position; TOML keys are strings, e.g. "0" = "down"'
    )

    @field_validator("values")
    @classmethod
    def _codes(cls, value: dict[str, Position]) -> dict[str, Position]:
        for key in value:
            if not key.isdigit() or int(key) > 65535:
                raise ValueError(f"key {key!r} is not a register value 0..65535")
        missing = [p for p in ("down", "up") if p not in value.values()]
        if missing:
            raise ValueError(f"no register value maps to {' or '.join(missing)}")
        return value

    def decode(self, raw: int) -> Position | None:
        return self.values.get(str(raw))


class CommandRef(Strict):
    """How a command is given: write `value` to a coil (1 = on) or a holding register."""

    table: Literal["coil", "holding_register"]
    address: int = _ADDRESS
    value: int = Field(default=1, ge=0, le=65535)

    @model_validator(mode="after")
    def _coil_value(self) -> CommandRef:
        if self.table == "coil" and self.value not in (0, 1):
            raise ValueError(f"a coil command writes 0 or 1, not {self.value}")
        return self


class BollardRegisters(Strict):
    """A bollard controller's register map. In a profile, position, raise_command and
    lower_command are required; in a device's `registers` every entry is an override that
    replaces the profile's entry of that name whole."""

    position: PositionRef | None = None
    fault_code: RegisterRef | None = None
    cycle_counter: CounterRef | None = None
    efo_input: BitRef | None = None
    raise_command: CommandRef | None = None
    lower_command: CommandRef | None = None
    emergency_raise_command: CommandRef | None = None

    def merged(self, overrides: BollardRegisters) -> BollardRegisters:
        return self.model_copy(
            update={k: getattr(overrides, k) for k in overrides.model_fields_set}
        )

    def check_complete(self) -> BollardRegisters:
        """Raise ValueError unless this map can drive a bollard."""
        missing = [
            k for k in ("position", "raise_command", "lower_command") if not getattr(self, k)
        ]
        if missing:
            raise ValueError(
                f"no {', '.join(missing)} (a bollard needs position and both commands)"
            )
        commands = {
            name: (ref.table, ref.address, ref.value)
            for name in ("raise_command", "lower_command", "emergency_raise_command")
            if (ref := getattr(self, name)) is not None
        }
        require_distinct(
            commands.values(), f"two commands write the same value to the same place: {commands}"
        )
        return self


class BollardProfile(Strict):
    """One shipped profile file (edge_config/profiles/NAME.toml)."""

    kind: Literal["bollard"]
    name: Ident
    vendor: str = ""
    description: str = ""
    registers: BollardRegisters

    @model_validator(mode="after")
    def _complete(self) -> BollardProfile:
        self.registers.check_complete()
        return self


class ProfileSource(Protocol):
    """Where device models find a named profile; raises ProfileError for an unusable one."""

    def bollard_profile(self, name: str) -> BollardProfile: ...

    def points_profile(self, name: str) -> PointsProfile: ...


def _profile_source(info: ValidationInfo) -> ProfileSource:
    context = info.context
    source = context.get(PROFILES_CONTEXT_KEY) if isinstance(context, dict) else None
    if source is None:
        # A programming error, not an installer's: the loader always gives the profiles.
        raise ValueError(
            "profile: no profiles to resolve it from; validate with "
            "context=edge_config.profile_files.validation_context()"
        )
    return source  # type: ignore[no-any-return]  # the context is a plain dict


# -- devices -------------------------------------------------------------------------------------


class BollardDevice(ModbusDevice):
    kind: Literal["bollard"]
    poll_interval_ms: PollIntervalMs = 200
    profile: Ident = Field(
        default="generic_bollard", description="a file in edge_config/profiles/, without .toml"
    )
    registers: BollardRegisters = BollardRegisters()
    travel_timeout_ms: int = Field(
        default=10_000,
        ge=100,
        le=300_000,
        description="a bollard not at its commanded position after this long is stuck",
    )

    _register_map: BollardRegisters | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _profile_resolves(self, info: ValidationInfo) -> BollardDevice:
        try:
            profile = _profile_source(info).bollard_profile(self.profile)
        except ProfileError as exc:
            raise ValueError(f"profile: {exc}") from None
        try:
            merged = profile.registers.merged(self.registers).check_complete()
        except ValueError as exc:
            raise ValueError(f"registers (profile {self.profile!r} + overrides): {exc}") from None
        self._register_map = merged
        return self

    def register_map(self) -> BollardRegisters:
        """The profile's map with this device's overrides, as resolved at validation."""
        if self._register_map is None:  # only a model built without validation has none
            raise ProfileError(f"profile {self.profile!r} was not resolved (model not validated)")
        return self._register_map

    @model_validator(mode="after")
    def _timeout_covers_polls(self) -> BollardDevice:
        if self.travel_timeout_ms < 2 * self.poll_interval_ms:
            raise ValueError(
                f"travel_timeout_ms ({self.travel_timeout_ms}) must be at least two polls "
                f"(2 x poll_interval_ms = {2 * self.poll_interval_ms})"
            )
        return self


class BollardSocket(Strict):
    input: int = Field(ge=0, le=65535, description="discrete input of the socket's sensor")
    name: str = Field(min_length=1)


class BollardSocketsDevice(ModbusDevice):
    kind: Literal["bollard_sockets"]
    poll_interval_ms: PollIntervalMs = 200
    present_when: Literal["closed", "open"] = Field(
        default="closed", description="sensor state that means a bollard is in its socket"
    )
    sockets: list[BollardSocket] = Field(min_length=1)

    @model_validator(mode="after")
    def _distinct(self) -> BollardSocketsDevice:
        inputs = [s.input for s in self.sockets]
        require_distinct(inputs, "sockets: two sockets share one discrete input")
        names = [s.name for s in self.sockets]
        require_distinct(names, "sockets: two sockets have the same name")
        return self


class ModbusPoint(Strict):
    name: Ident
    function: Function
    address: int = _ADDRESS
    data_type: DataType | None = Field(
        default=None, description="default: bool for coil/discrete_input, uint16 for registers"
    )
    bit: int | None = Field(default=None, ge=0, le=15, description="a bool taken from a register")
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = Field(default=1.0, ge=-_BOUND, le=_BOUND)
    offset: float = Field(default=0.0, ge=-_BOUND, le=_BOUND)
    unit: str = ""
    report: Literal["on_change", "interval", "both"] = "on_change"
    deadband: float | None = Field(default=None, ge=0, le=_BOUND)
    interval_ms: int | None = Field(default=None, ge=100, le=86_400_000)

    @property
    def type(self) -> DataType:
        if self.data_type is not None:
            return self.data_type
        return "bool" if self.function in BIT_FUNCTIONS else "uint16"

    @property
    def register_count(self) -> int:
        return 2 if self.type in WIDE_TYPES else 1

    @model_validator(mode="after")
    def _consistent(self) -> ModbusPoint:
        given = self.model_fields_set
        kind = self.type
        if self.function in BIT_FUNCTIONS and kind != "bool":
            raise ValueError(
                f"a {self.function} is one bit: data_type must be 'bool', not {kind!r}"
            )
        if self.bit is not None and (self.function in BIT_FUNCTIONS or kind != "bool"):
            raise ValueError("bit picks a bool out of a register: needs a register and 'bool'")
        if self.function not in BIT_FUNCTIONS and kind == "bool" and self.bit is None:
            raise ValueError("a bool from a register needs bit (0..15)")
        numeric_only = {"scale", "offset", "deadband", "byte_order"} & given
        if kind == "bool" and numeric_only:
            verb = "applies" if len(numeric_only) == 1 else "apply"
            raise ValueError(f"{', '.join(sorted(numeric_only))} only {verb} to numeric points")
        if "word_order" in given and kind not in WIDE_TYPES:
            raise ValueError(
                f"word_order only applies to 2-register types ({', '.join(WIDE_TYPES)}), "
                f"not {kind!r}"
            )
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.address + self.register_count - 1 > 65535:
            raise ValueError(f"a {kind} needs 2 registers: address {self.address} is the last one")
        if self.report == "on_change" and self.interval_ms is not None:
            raise ValueError("interval_ms needs report = 'interval' or 'both'")
        if self.report != "on_change" and self.interval_ms is None:
            raise ValueError(f"report = {self.report!r} needs interval_ms")
        if self.report == "interval" and self.deadband is not None:
            raise ValueError("deadband applies to report = 'on_change' or 'both'")
        return self


class PointsProfile(Strict):
    """A shipped points profile (edge_config/profiles/NAME.toml with kind = "modbus_points"): the
    points of one device model, so a new device of that model needs one line of config."""

    kind: Literal["modbus_points"]
    name: Ident
    vendor: str = ""
    description: str = ""
    points: list[ModbusPoint] = Field(min_length=1)


class ModbusPointsDevice(ModbusDevice):
    kind: Literal["modbus_points"]
    poll_interval_ms: int = Field(default=1_000, ge=5, le=3_600_000)
    offline_after_ms: int = Field(default=5_000, ge=100, le=3_600_000)
    profile: Ident | None = Field(
        default=None, description="a points profile in edge_config/profiles/, without .toml"
    )
    points: list[ModbusPoint] = Field(
        default_factory=list,
        description="points of this device; with a profile, a point of the same name replaces "
        "the profile's, others are added",
    )

    _resolved: list[ModbusPoint] | None = PrivateAttr(default=None)

    def resolved_points(self) -> list[ModbusPoint]:
        """The profile's points with this device's replacements and additions."""
        if self._resolved is None:  # only a model built without validation has none
            raise ProfileError(f"profile {self.profile!r} was not resolved (model not validated)")
        return list(self._resolved)

    @model_validator(mode="after")
    def _resolve_points(self, info: ValidationInfo) -> ModbusPointsDevice:
        if self.profile is None and not self.points:
            raise ValueError("give points, or a profile that has them")
        points = list(self.points)
        if self.profile is not None:
            try:
                base = _profile_source(info).points_profile(self.profile).points
            except ProfileError as exc:
                raise ValueError(f"profile: {exc}") from None
            own = {p.name: p for p in self.points}
            points = [own.pop(p.name, p) for p in base] + list(own.values())
        names = [p.name for p in points]
        if dup := sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"points: names must be unique; repeated: {', '.join(dup)}")
        for i, point in enumerate(points):
            if point.interval_ms is not None and point.interval_ms < self.poll_interval_ms:
                raise ValueError(
                    f"points[{i}].interval_ms ({point.interval_ms}) is shorter than "
                    f"poll_interval_ms ({self.poll_interval_ms})"
                )
        self._resolved = points
        return self
