"""The event model: what a police or bureau receiver learns about the gate. Pure data.

Owns the `Event` record, its priority lane, severity, and the time-ordered event id (UUIDv7).
It does not encode events for the wire (that is `contract`) nor store them (that is `outbox`).
"""

from __future__ import annotations

import enum
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any


class Severity(enum.StrEnum):
    CRITICAL = "critical"
    MAJOR = "major"
    MINOR = "minor"
    INFO = "info"


class Lane(enum.IntEnum):
    """Priority class; a lower value is always sent first within a destination."""

    ALARM = 0
    STATE = 1
    TELEMETRY = 2


_ALARM_TYPES = frozenset(
    {
        "alarm.panic",
        "alarm.panic_repeated",
        "alarm.escalated",
        "bollard.emergency_raise",
        "bollard.breach",
        "bollard.not_reinserted",  # 随拔随插: an insert-type bollard not back in time
        "access.door_forced",
        "access.tamper",
    }
)
"""The alarm lane: sent before anything else. Everything not telemetry is the state lane
(`alarm.reset`, `alarm.acknowledged`, `gateway.path_down` / `path_up`, `gateway.drill_started` /
`drill_stopped`, ...)."""
_TELEMETRY_PREFIXES = ("telemetry.", "heartbeat.", "report.")
_STATE_REPORTS = frozenset({"report.daily"})
"""Reports kept as records (the bureau checks the school by them), not evicted as telemetry."""


def lane_of(event_type: str) -> Lane:
    if event_type in _ALARM_TYPES:
        return Lane.ALARM
    if event_type.startswith(_TELEMETRY_PREFIXES) and event_type not in _STATE_REPORTS:
        return Lane.TELEMETRY
    return Lane.STATE


@dataclass(frozen=True, slots=True)
class DeviceRef:
    id: str
    kind: str
    location: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened at the gate. `seq` is given by the outbox when it is stored."""

    id: str
    type: str
    severity: Severity
    device: DeviceRef
    occurred_at_ms: int
    data: dict[str, Any] = field(default_factory=dict)
    drill: bool = False
    alarm_id: str | None = None
    """The latched alarm this event belongs to (the id of the alarm's first event)."""
    test: bool = False
    """Stored while the gate is in test mode (commissioning, the walk test): do not dispatch."""
    seq: int | None = None

    @property
    def lane(self) -> Lane:
        return lane_of(self.type)

    @property
    def category(self) -> str:
        return self.type.split(".", 1)[0]


class _UUID7:
    """UUIDv7 ids (RFC 9562): 48-bit ms timestamp, then a counter so ids made in the same
    millisecond still sort in creation order, then random bits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def __call__(self, now_ms: int | None = None) -> str:
        ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        with self._lock:
            if ms <= self._last_ms:
                # Same (or an earlier, after a clock step back) millisecond: keep ordering.
                ms = self._last_ms
                self._counter += 1
                if self._counter > 0xFFF:
                    ms += 1
                    self._counter = 0
            else:
                self._counter = 0
            self._last_ms = ms
            counter = self._counter
        rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
        value = (ms & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand
        return str(uuid.UUID(int=value))


new_event_id = _UUID7()


def new_event(
    type: str,
    device: DeviceRef,
    *,
    severity: Severity,
    occurred_at_ms: int,
    data: dict[str, Any] | None = None,
    drill: bool = False,
    alarm_id: str | None = None,
) -> Event:
    return Event(
        id=new_event_id(),
        type=type,
        severity=severity,
        device=device,
        occurred_at_ms=occurred_at_ms,
        data=data or {},
        drill=drill,
        alarm_id=alarm_id,
    )
