"""An in-memory `GuardSource`: the page's state held in a dict, for tests and screenshots.

Owns nothing of the daemon: a test (or the screenshot script) sets what the page shows with
`put_alarm`, `put_bollard`, ..., and every call bumps the version and wakes `changed`. The guard's
actions are kept in `actions` (who did what, in order) and applied the way the daemon would:
a reset removes the alarm, refused without a reason until the police acknowledged it; a test
press puts the gate in test mode for `test_press_minutes`, refused while it is on.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from gateway.guard.view import (
    ActionRefused,
    AlarmView,
    BollardView,
    ClockView,
    DeviceView,
    DoorView,
    GuardSnapshot,
    PathView,
    RulesView,
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class RecordedAction:
    action: str  # "reset", "test_press", "silence_siren"
    target: str  # the alarm id or the box
    by: str
    reason: str | None = None


class MemorySource:
    def __init__(
        self,
        *,
        gate_name: str = "",
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        test_press_minutes: int = 5,
    ) -> None:
        self._now = now
        self._test_press = timedelta(minutes=test_press_minutes)
        self._version = 0
        self._bumped = asyncio.Event()
        self._state = GuardSnapshot(version=0, now=now(), gate_name=gate_name)
        self.actions: list[RecordedAction] = []

    # --- GuardSource -------------------------------------------------------------------------
    def snapshot(self) -> GuardSnapshot:
        return dataclasses.replace(self._state, version=self._version, now=self._now())

    async def changed(self, after_version: int) -> int:
        while self._version <= after_version:
            await self._bumped.wait()
        return self._version

    async def reset(self, alarm_id: str, by: str, reason: str | None) -> None:
        alarm = self._alarm(alarm_id)
        if alarm.stage != "acknowledged" and not reason:
            raise ActionRefused("reason_required", alarm_id)
        self.actions.append(RecordedAction("reset", alarm_id, by, reason))
        self._set(alarms=tuple(a for a in self._state.alarms if a.alarm_id != alarm_id))

    async def test_press(self, box: str, by: str) -> None:
        self._box(box)
        until = self._state.test_mode_until
        if until is not None and until > self._now():
            raise ActionRefused("test_mode_on", f"until {until.isoformat()}")
        self.actions.append(RecordedAction("test_press", box, by))
        self._set(test_mode_until=self._now() + self._test_press)

    async def silence_siren(self, box: str, by: str) -> None:
        self._box(box)
        self.actions.append(RecordedAction("silence_siren", box, by))
        self._bump()

    # --- what a test sets ------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    def put_alarm(self, alarm: AlarmView) -> None:
        self._put("alarms", alarm, lambda a: a.alarm_id)

    def update_alarm(self, alarm_id: str, **changes: object) -> None:
        self.put_alarm(dataclasses.replace(self._alarm(alarm_id), **changes))  # type: ignore[arg-type]

    def put_bollard(self, bollard: BollardView) -> None:
        self._put("bollards", bollard, lambda b: b.device)

    def put_door(self, door: DoorView) -> None:
        self._put("doors", door, lambda d: d.device)

    def put_device(self, device: DeviceView) -> None:
        self._put("devices", device, lambda d: d.device)

    def put_path(self, path: PathView) -> None:
        self._put("paths", path, lambda p: p.destination)

    def set_clock(self, clock: ClockView) -> None:
        self._set(clock=clock)

    def set_rules(self, rules: RulesView | None) -> None:
        self._set(rules=rules)

    def set_test_mode(self, until: datetime | None) -> None:
        self._set(test_mode_until=until)

    # --- inside ------------------------------------------------------------------------------
    def _alarm(self, alarm_id: str) -> AlarmView:
        for alarm in self._state.alarms:
            if alarm.alarm_id == alarm_id:
                return alarm
        raise ActionRefused("unknown_alarm", alarm_id)

    def _box(self, box: str) -> None:
        if not any(d.device == box and d.kind == "alarm_box" for d in self._state.devices):
            raise ActionRefused("unknown_box", box)

    def _put(self, part: str, item: _T, key: Callable[[_T], str]) -> None:
        """`item` in place of the one of `part` with the same key (or added), last."""
        others = tuple(x for x in getattr(self._state, part) if key(x) != key(item))
        self._set(**{part: (*others, item)})

    def _set(self, **changes: object) -> None:
        self._state = dataclasses.replace(self._state, **changes)  # type: ignore[arg-type]
        self._bump()

    def _bump(self) -> None:
        self._version += 1
        bumped, self._bumped = self._bumped, asyncio.Event()
        bumped.set()
