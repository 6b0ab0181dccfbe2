"""Window rules: devices and the state they must be in outside (or inside) the school calendar's
gate windows, with a grace period. Rising bollards up outside gate windows; insert-type bollards
in their sockets outside the windows; access controllers locked down at night.

Owns judging device states against the calendar: a deviation that lasts past the grace opens a
`rule.violation` (once; the open violation is kept in `RulesState`, so a restart does not repeat
it) and its end a `rule.restored`; the configured actions are returned as data. It performs no
I/O: the caller runs the actions (`SendCommand` through the command registry, `OpenLedger` /
`CloseLedger` through `gateway.rules.ledger`, `Emit` to the outbox) and reports each result.

Seam: `WindowRule(spec, calendar, state, clock)`; feed `observe(device_id, state)` on every state
change and call `check()` after sleeping `next_check_in_s()`; both return actions. The grace is
measured on the monotonic clock (a clock step does not shorten it); a deviation not yet past its
grace is not stored: after a restart its grace starts again (at worst one grace late).
A device whose state was never observed is not judged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from gateway.core.clock import Clock
from gateway.core.events import DeviceRef, Event, Severity, new_event
from gateway.rules.calendar import SchoolCalendar
from gateway.rules.state import RulesState, ViolationRecord


@dataclass(frozen=True, slots=True)
class SendCommand:
    device: DeviceRef
    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OpenLedger:
    kind: str
    key: str
    what: str
    where: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class CloseLedger:
    key: str
    evidence: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Emit:
    event: Event


Action = SendCommand | OpenLedger | CloseLedger | Emit


@dataclass(frozen=True, slots=True)
class CommandTemplate:
    """A command sent to each device concerned (e.g. name="raise")."""

    name: str
    args: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WindowRuleSpec:
    id: str
    devices: tuple[DeviceRef, ...]
    required_state: str
    applies: Literal["outside", "inside"] = "outside"
    """When the required state applies: outside the gate windows, or inside them."""
    grace_s: float = 300.0
    on_violation: tuple[CommandTemplate, ...] = ()
    """Commands sent to the deviating device when its violation opens."""
    at_window_end: tuple[CommandTemplate, ...] = ()
    """Commands sent, when the requirement starts, to devices not already compliant."""
    ledger_kind: str | None = "rule_violation"
    """Open a ledger entry per violation (closed when restored); None: no ledger entry."""
    severity: Severity = Severity.MAJOR


class WindowRule:
    def __init__(
        self, spec: WindowRuleSpec, calendar: SchoolCalendar, state: RulesState, clock: Clock
    ) -> None:
        self.spec = spec
        self._calendar = calendar
        self._state = state
        self._clock = clock
        self._devices = {d.id: d for d in spec.devices}
        self._states: dict[str, str] = {}
        self._deviating_since: dict[str, float] = {}
        self._required_before: bool | None = None

    def required_now(self) -> bool:
        """Whether the required state applies at this moment (it is outside/inside a window)."""
        at = datetime.fromtimestamp(self._clock.wall_ms() / 1000, self._calendar.tz)
        if not self._calendar.covers(at.date()):
            return False  # no calendar for this date: nothing is required (the loader warns)
        in_window = self._calendar.in_window(at) is not None
        return in_window if self.spec.applies == "inside" else not in_window

    def observe(self, device_id: str, state: str) -> list[Action]:
        if device_id not in self._devices:
            return []
        self._states[device_id] = state
        return self.check()

    def check(self) -> list[Action]:
        required = self.required_now()
        actions: list[Action] = []
        if required and self._required_before is False:
            actions += self._window_end_commands()
        self._required_before = required
        for device_id in sorted(self._states):
            actions += self._judge(device_id, required)
        return actions

    def next_check_in_s(self) -> float | None:
        """Seconds until a grace runs out or the calendar changes, whichever is first."""
        now = self._clock.monotonic()
        waits = [
            since + self.spec.grace_s - now
            for device_id, since in self._deviating_since.items()
            if self._state.violation(self.spec.id, device_id) is None
        ]
        at = datetime.fromtimestamp(self._clock.wall_ms() / 1000, self._calendar.tz)
        change = self._calendar.next_change(at) if self._calendar.covers(at.date()) else None
        if change is not None:
            waits.append((change - at).total_seconds())
        return max(min(waits), 0.0) if waits else None

    def _window_end_commands(self) -> list[Action]:
        return [
            SendCommand(self._devices[device_id], command.name, command.args)
            for device_id, state in sorted(self._states.items())
            if state != self.spec.required_state
            for command in self.spec.at_window_end
        ]

    def _judge(self, device_id: str, required: bool) -> list[Action]:
        state = self._states[device_id]
        compliant = not required or state == self.spec.required_state
        open_violation = self._state.violation(self.spec.id, device_id)
        if compliant:
            self._deviating_since.pop(device_id, None)
            return self._restore(device_id, open_violation, state) if open_violation else []
        since = self._deviating_since.setdefault(device_id, self._clock.monotonic())
        if open_violation is not None or self._clock.monotonic() - since < self.spec.grace_s:
            return []
        return self._violate(device_id, state)

    def _violate(self, device_id: str, state: str) -> list[Action]:
        device = self._devices[device_id]
        now_ms = self._clock.wall_ms()
        event = self._event("rule.violation", device, self.spec.severity, state)
        self._state.put_violation(ViolationRecord(self.spec.id, device_id, now_ms, event.id))
        actions: list[Action] = [Emit(event)]
        actions += [SendCommand(device, c.name, c.args) for c in self.spec.on_violation]
        if self.spec.ledger_kind is not None:
            what = f"{device_id} is {state}, must be {self.spec.required_state}"
            where = device.location or device_id
            actions.append(
                OpenLedger(self.spec.ledger_kind, self._ledger_key(device_id), what, where, now_ms)
            )
        return actions

    def _restore(self, device_id: str, violation: ViolationRecord, state: str) -> list[Action]:
        self._state.delete_violation(self.spec.id, device_id)
        event = self._event("rule.restored", self._devices[device_id], Severity.INFO, state)
        event.data["violation_id"] = violation.event_id
        event.data["violation_ms"] = violation.opened_ms
        actions: list[Action] = [Emit(event)]
        if self.spec.ledger_kind is not None:
            evidence = f"{device_id} reported {state}"
            actions.append(CloseLedger(self._ledger_key(device_id), evidence, event.occurred_at_ms))
        return actions

    def _ledger_key(self, device_id: str) -> str:
        return f"rule:{self.spec.id}:{device_id}"

    def _event(self, type: str, device: DeviceRef, severity: Severity, state: str) -> Event:
        data: dict[str, Any] = {
            "rule": self.spec.id,
            "required_state": self.spec.required_state,
            "state": state,
            "applies": self.spec.applies,
            "grace_s": self.spec.grace_s,
        }
        return new_event(
            type, device, severity=severity, occurred_at_ms=self._clock.wall_ms(), data=data
        )
