"""The seam between the daemon and the guard's page: `GuardSource`, and the plain data it returns.

Owns what the page can know and do, as the daemon will provide it:

- `snapshot()`: a `GuardSnapshot`, frozen dataclasses of plain values (strings, numbers, aware
  datetimes) with a `version` that grows by one or more at every change;
- `changed(after_version)`: waits until the version is past `after_version` and returns the new
  version; the page's live stream awaits it (no polling), so a change reaches the screen as soon
  as the daemon bumps the version;
- the guard's three actions, each with the name of the guard who did it (the server has checked
  the PIN): `reset`, `test_press`, `silence_siren`. The daemon records each durably and refuses
  one it cannot do with `ActionRefused` and a reason code the page can show (its text is in the
  catalogue as `refused_<reason>`).

There is no action that moves a bollard or unlocks a door, and there must never be one here.

It does not serve the page (`gateway.guard.server`) nor know how the daemon keeps its state; the
in-memory `gateway.guard.memory_source.MemorySource` implements it for tests and screenshots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, Protocol, get_args

AlarmStage = Literal["stored", "at_police", "acknowledged", "escalated"]
"""Where an open alarm is: kept in the box's store only; delivered to the police broker;
acknowledged by the police receiver; escalated (not acknowledged in time)."""

BollardState = Literal["up", "down", "moving", "pulled"]
"""`pulled`: an insert-type bollard taken out of its socket (it must be put back: 随拔随插)."""

DoorState = Literal["closed", "open", "held_open", "forced"]
Health = Literal["online", "offline"]
PathState = Literal["up", "down"]
RefusalReason = Literal[
    "unknown_alarm",
    "unknown_box",
    "reason_required",
    "not_allowed_now",
    "daemon_busy",
    "test_mode_on",
]

ALARM_STAGES: tuple[str, ...] = get_args(AlarmStage)
BOLLARD_STATES: tuple[str, ...] = get_args(BollardState)
DOOR_STATES: tuple[str, ...] = get_args(DoorState)
HEALTHS: tuple[str, ...] = get_args(Health)
PATH_STATES: tuple[str, ...] = get_args(PathState)
REFUSAL_REASONS: tuple[str, ...] = get_args(RefusalReason)


class ActionRefused(Exception):
    """The daemon will not do a guard's action; `reason` is one of `RefusalReason`."""

    def __init__(self, reason: RefusalReason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: RefusalReason = reason


@dataclass(frozen=True)
class AlarmView:
    alarm_id: str
    box: str  # the device id of the alarm box
    place: str  # where the box is, as the installer named it ("东门岗亭")
    raised_at: datetime
    stage: AlarmStage
    test: bool = False  # a test press or a drill, announced to the police beforehand
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    escalated_at: datetime | None = None
    siren_silenced_by: str | None = None  # a guard silenced the box's siren for this alarm
    siren_silenced_at: datetime | None = None
    reset_by: str | None = None  # set once reset; a reset alarm leaves the page
    reset_at: datetime | None = None


@dataclass(frozen=True)
class BollardView:
    device: str
    place: str
    state: BollardState
    since: datetime


@dataclass(frozen=True)
class DoorView:
    device: str
    place: str
    state: DoorState
    since: datetime


@dataclass(frozen=True)
class DeviceView:
    device: str
    kind: str  # "alarm_box", "bollard", "access", ...
    place: str
    health: Health
    since: datetime


@dataclass(frozen=True)
class PathView:
    destination: str  # "police", "bureau"
    state: PathState
    since: datetime


@dataclass(frozen=True)
class ClockView:
    gate_offset_s: float | None  # the gate's clock minus the box's; None: not known yet
    box_synchronised: bool | None  # whether the box's own clock is synchronised (NTP); None:
    # it cannot be read (the page says "unknown")


@dataclass(frozen=True)
class GateWindowView:
    name: str
    opens_at: datetime
    closes_at: datetime


@dataclass(frozen=True)
class ViolationView:
    rule: str  # the rule's id, as the installer named it
    place: str
    since: datetime


@dataclass(frozen=True)
class OverdueView:
    kind: str  # the ledger kind: "device_offline", or a window rule's `ledger_kind`
    place: str
    due_at: datetime


@dataclass(frozen=True)
class RulesView:
    """Only with `[rules]`: today's gate windows, the patrol rounds done against the day's
    target, the open rule violations and the overdue ledger entries."""

    gate_windows: tuple[GateWindowView, ...] = ()
    patrols_done: int = 0
    patrols_target: int = 0
    open_violations: tuple[ViolationView, ...] = ()
    overdue_ledger: tuple[OverdueView, ...] = ()


@dataclass(frozen=True)
class GuardSnapshot:
    version: int
    now: datetime  # the box's time when the snapshot was taken ("for how long" counts from it)
    gate_name: str = ""
    alarms: tuple[AlarmView, ...] = ()  # open alarms, any order: the page shows the newest first
    bollards: tuple[BollardView, ...] = ()
    doors: tuple[DoorView, ...] = ()
    devices: tuple[DeviceView, ...] = ()
    paths: tuple[PathView, ...] = ()
    clock: ClockView = field(default_factory=lambda: ClockView(None, box_synchronised=False))
    rules: RulesView | None = None
    test_mode_until: datetime | None = None  # the gate is in test mode until then: every event
    # (a press too) is marked as a test; None: not in test mode


class GuardSource(Protocol):
    """What the daemon gives the guard's page. Every method is called on the daemon's loop."""

    def snapshot(self) -> GuardSnapshot:
        """What the page shows now; cheap (called once per change per connected page)."""
        ...

    async def changed(self, after_version: int) -> int:
        """Return the current version as soon as it is greater than `after_version`."""
        ...

    async def reset(self, alarm_id: str, by: str, reason: str | None) -> None:
        """Reset a latched alarm by hand. Without a reason only once the police acknowledged it
        (else `ActionRefused("reason_required")`)."""
        ...

    async def test_press(self, box: str, by: str) -> None:
        """Put the gate in test mode (announced to the police) so that the guard's next press
        of `box` is an alarm marked as a test; `ActionRefused("test_mode_on")` while it is on."""
        ...

    async def silence_siren(self, box: str, by: str) -> None:
        """Silence the local siren of `box`; the alarm itself stays latched."""
        ...
