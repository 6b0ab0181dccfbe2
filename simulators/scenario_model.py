"""The scenario file format: a TOML timeline of steps a tester writes, and the expectations
checked against what the brokers received. docs/simulators/scenarios.md describes every key.

Owns the schema (pydantic, `extra="forbid"`: a mistyped key is an error, never ignored), the
cross-checks between steps and expectations, and turning validation errors into messages that
name the step or expectation (numbered from 1, as a tester counts `[[step]]` tables) and the
key. It does not run anything: `simulators.scenario` plays and judges.
"""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simulators.gate import BrokerName, DeviceId, LineName

Button = Literal[0, 1]
Numbered = Literal[1, 2]
"""Bollards, sockets, doors and readers are numbered 1 and 2 at the simulated gate."""


class ScenarioError(Exception):
    """The scenario file cannot be read or is not valid; `problems` has one line per problem."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(problems))
        self.path = path
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Step(_Strict):
    at: float | None = Field(
        default=None, ge=0, description="seconds from start; omitted: right after the step before"
    )
    id: str | None = Field(default=None, min_length=1, description="a name for `after`")


class Press(_Step):
    do: Literal["press", "release"]
    button: Button = 0


class Pulse(_Step):
    do: Literal["pulse"]
    button: Button = 0
    ms: int = Field(default=150, ge=1, le=60_000)


class ResetKey(_Step):
    do: Literal["reset_key"]
    ms: int = Field(default=150, ge=1, le=60_000)


class BollardMove(_Step):
    do: Literal["lower_bollard", "raise_bollard", "emergency_raise", "release_efo"]
    bollard: Numbered


class BollardFault(_Step):
    do: Literal["bollard_fault"]
    bollard: Numbered
    code: int = Field(ge=0, le=65535, description="0 clears the fault")


class BollardJam(_Step):
    do: Literal["bollard_jam"]
    bollard: Numbered
    on: bool = True


class Socket(_Step):
    do: Literal["pull_socket", "insert_socket"]
    socket: Numbered


class Card(_Step):
    do: Literal["card"]
    card: int = Field(ge=0, le=0xFFFFFFFF)
    reader: Numbered = 1
    granted: bool = True


class Door(_Step):
    do: Literal["open_door", "close_door", "force_door", "hold_door", "exit_button"]
    door: Numbered = 1


class Tamper(_Step):
    do: Literal["tamper"]
    active: bool = True


class Silent(_Step):
    do: Literal["silent"]
    device: DeviceId
    on: bool = True


class Slow(_Step):
    do: Literal["slow"]
    device: DeviceId
    ms: int = Field(ge=0, le=60_000, description="0 answers on time again")


class Garbage(_Step):
    do: Literal["garbage"]
    line: LineName
    hex: str = Field(default="55aa00ff7e", pattern=r"^([0-9a-fA-F]{2})+$")


class BrokerStep(_Step):
    do: Literal["stop_broker", "start_broker"]
    broker: BrokerName


class Wait(_Step):
    do: Literal["wait"]
    seconds: float = Field(gt=0, le=600)


Step = Annotated[
    Press
    | Pulse
    | ResetKey
    | BollardMove
    | BollardFault
    | BollardJam
    | Socket
    | Card
    | Door
    | Tamper
    | Silent
    | Slow
    | Garbage
    | BrokerStep
    | Wait,
    Field(discriminator="do"),
]


class Expect(_Strict):
    broker: BrokerName
    type: str = Field(
        pattern=r"^[a-z_]+(\.[a-z_]+)*(\.\*)?$", description="an event type, or 'bollard.*'"
    )
    device: DeviceId | None = None
    data: dict[str, Any] = Field(default_factory=dict, description="fields the event's data has")
    historical: bool | None = None
    count: int | None = Field(default=None, ge=0, description="exactly this many distinct events")
    at_least: int | None = Field(default=None, ge=1)
    after: str | int | None = Field(default=None, description="a step id, or its number from 1")
    within: float | None = Field(default=None, gt=0)
    by: float | None = Field(default=None, gt=0, description="seconds from start")
    before: int | None = Field(
        default=None, ge=1, description="another expectation's number: its first event comes later"
    )

    @model_validator(mode="after")
    def _one_way(self) -> Expect:
        if self.count is not None and self.at_least is not None:
            raise ValueError("give count (exactly) or at_least, not both")
        if self.within is not None and self.after is None:
            raise ValueError("within needs after (the step id or number it counts from)")
        if self.by is not None and (self.after is not None or self.within is not None):
            raise ValueError("by (from the start) excludes after / within")
        return self

    @property
    def wanted(self) -> str:
        if self.count is not None:
            return f"exactly {self.count}"
        return f"at least {self.at_least or 1}"

    def matches_type(self, event_type: str) -> bool:
        if self.type.endswith(".*"):
            return event_type.startswith(self.type[:-1])
        return event_type == self.type


class GateSetup(_Strict):
    """What the scenario changes at the simulated gate before the gateway starts."""

    clock_start: datetime | None = Field(
        default=None, description="site local time the gateway's wall clock reads at its start"
    )
    calendar: Path | None = Field(
        default=None, description="copied to the gateway's folder as calendar.toml"
    )
    config: str = Field(default="", description="whole sections appended to the gateway config")

    @model_validator(mode="after")
    def _local_time(self) -> GateSetup:
        if self.clock_start is not None and self.clock_start.tzinfo is not None:
            raise ValueError("clock_start: a local time at the site, without an offset")
        return self


class Scenario(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    gate: GateSetup = GateSetup()
    settle_s: float = Field(
        default=2.0, ge=0, le=600, description="listening after the last step, for open windows"
    )
    step: list[Step] = Field(default_factory=list)
    expect: list[Expect] = Field(default_factory=list)

    @model_validator(mode="after")
    def _cross_checks(self) -> Scenario:
        problems: list[str] = []
        last_at, last_i = 0.0, 0
        ids: dict[str, int] = {}
        for i, step in enumerate(self.step, 1):
            if step.at is not None:
                if step.at < last_at:
                    problems.append(
                        f"step {i}: key 'at': {step.at} is before step {last_i}'s at = {last_at}"
                    )
                last_at, last_i = step.at, i
            if step.id is not None:
                if step.id in ids:
                    problems.append(f"step {i}: key 'id': {step.id!r} is also step {ids[step.id]}")
                ids[step.id] = i
        for i, expect in enumerate(self.expect, 1):
            after = expect.after
            if isinstance(after, str) and after not in ids:
                known = ", ".join(ids) or "none"
                problems.append(f"expect {i}: key 'after': no step has id {after!r} (ids: {known})")
            if isinstance(after, int) and not 1 <= after <= len(self.step):
                problems.append(f"expect {i}: key 'after': no step {after} (1..{len(self.step)})")
            if expect.before is not None and not (
                1 <= expect.before <= len(self.expect) and expect.before != i
            ):
                problems.append(f"expect {i}: key 'before': no other expectation {expect.before}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def step_number(self, after: str | int) -> int:
        """1-based number of the step `after` names (validated to exist)."""
        if isinstance(after, int):
            return after
        return next(i for i, s in enumerate(self.step, 1) if s.id == after)


def load_scenario(path: Path) -> Scenario:
    try:
        with path.open("rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise ScenarioError(path, [f"cannot read it: {exc.strerror}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(path, [f"not valid TOML: {exc}"]) from None
    try:
        scenario = Scenario.model_validate(raw)
    except ValidationError as exc:
        problems = [line for error in exc.errors() for line in _describe(error, raw).splitlines()]
        raise ScenarioError(path, problems) from None
    calendar = scenario.gate.calendar
    if calendar is not None:
        calendar = calendar if calendar.is_absolute() else path.parent / calendar
        if not calendar.is_file():
            raise ScenarioError(path, [f"gate: key 'calendar': no file {calendar}"])
        scenario = scenario.model_copy(
            update={"gate": scenario.gate.model_copy(update={"calendar": calendar})}
        )
    return scenario


def _describe(error: Any, raw: dict[str, Any]) -> str:
    """'step 3 (do = "press"): key 'buton': extra inputs are not permitted'."""
    loc = list(error["loc"])
    message = str(error["msg"])
    if error["type"] == "value_error" and not loc:
        return message.removeprefix("Value error, ")  # the cross-checks name their own place
    where = ""
    if loc and loc[0] in ("step", "expect") and len(loc) > 1 and isinstance(loc[1], int):
        section, index = loc[0], loc[1]
        where = f"{section} {index + 1}"
        rest = loc[2:]
        if section == "step":
            steps = raw.get("step")
            entry = steps[index] if isinstance(steps, list) and index < len(steps) else None
            do = entry.get("do") if isinstance(entry, dict) else None
            if error["type"] == "union_tag_invalid":
                return f"{where}: key 'do': unknown step {do!r} (known: {', '.join(STEP_NAMES)})"
            if error["type"] == "union_tag_not_found":
                return f"{where}: key 'do' is missing (what the step does: press, card, ...)"
            where += f' (do = "{do}")'
            rest = rest[1:]  # the first one is the union member, named by `do`
        loc = rest
    else:
        where = "scenario"
    key = ".".join(str(part) for part in loc)
    message = message.removeprefix("Value error, ")
    return f"{where}: key '{key}': {message}" if key else f"{where}: {message}"


STEP_NAMES: tuple[str, ...] = tuple(
    name
    for model in (
        Press,
        Pulse,
        ResetKey,
        BollardMove,
        BollardFault,
        BollardJam,
        Socket,
        Card,
        Door,
        Tamper,
        Silent,
        Slow,
        Garbage,
        BrokerStep,
        Wait,
    )
    for name in model.model_fields["do"].annotation.__args__  # type: ignore[union-attr]
)
