"""The daemon's `GuardSource`: what the guard's page shows, read from the running parts.

Owns the translation from the daemon's live state to `gateway.guard.view`'s plain data: the
open alarms and where each is (the latches: stored, at the `ack_destination` broker,
acknowledged by whom and when, escalated), bollards and sockets (the drivers' last reading),
doors (the access controller's last door events), each device's health (online / offline and
since when, counted from when this source first saw the state), the broker paths (the path
board) and the clocks (the access controller's measured offset; the kernel's NTP flag, None
when it cannot be read). It carries out the guard's three actions through the latches, with the
guard's name: reset, silence the siren, and a test press, which puts the gate in test mode for
`[guard] test_press_minutes` through the daemon's own start (the one the control socket's
`test.start` calls), so the guard then presses the box and the police record a test. The page
shows test mode and until when; an alarm raised in it is shown as a test.

How a change reaches the page: the parts bump the daemon's `ChangeCounter` themselves (the
latches at every change of an open alarm, the path board when a path goes up or down, a driver
when a position, socket, door, health or clock offset changes, the rules after each step), and
`changed` awaits it; the snapshot's version is the counter's. Nothing is polled: `run()` (a named
task) only notes, at each bump, when each shown state began (so "since" is right even while no
page is open), and reads the kernel's NTP flag again every `clock_check_s`, since nothing tells
us when it changes.

It does not serve the page (`gateway.guard.server`), and there is no way here to move a bollard
or unlock a door.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from zoneinfo import ZoneInfo

import structlog

from drivers.access_controller import AccessController
from drivers.bollard import Bollard
from drivers.bollard_sockets import BollardSockets
from drivers.polling import DeviceHealth
from edge_config.guard import GuardConfig
from edge_config.models import AlarmBoxDevice, GatewayConfig
from gateway.alarms.latch import AlarmLatches, Latch, UnknownAlarm
from gateway.alarms.test_mode import TestModeError
from gateway.core.changes import ChangeCounter
from gateway.core.clock import Clock
from gateway.guard.view import (
    ActionRefused,
    AlarmStage,
    AlarmView,
    BollardState,
    BollardView,
    ClockView,
    DeviceView,
    DoorState,
    DoorView,
    GateWindowView,
    GuardSnapshot,
    Health,
    OverdueView,
    PathView,
    RulesView,
    ViolationView,
)
from gateway.rules.today import RulesToday
from gateway.uplink.paths import PathBoard

log = structlog.get_logger(__name__)

CLOCK_CHECK_S = 30.0
"""How often the kernel's NTP flag is read again (a change bumps the version)."""

_MOVING = ("rising", "lowering")
_TIME_ERROR = 5
"""`adjtimex`: the clock is not synchronised (<sys/timex.h>)."""


@functools.cache
def _libc() -> ctypes.CDLL:
    # Looked up once: find_library may run ldconfig.
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class TestModeState(Protocol):
    """What the page reads of test mode (`gateway.alarms.test_mode.TestMode`)."""

    @property
    def until_ms(self) -> int | None: ...

    def active(self) -> bool: ...


@dataclass(frozen=True)
class GuardTestMode:
    """Test mode as the page sees it: its state, and the daemon's start (`test_mode_start`,
    the control socket's `test.start` too), called with `minutes` and `by`."""

    __test__ = False  # not a pytest class, whatever its name

    state: TestModeState
    start: Callable[..., Awaitable[int]]


def ntp_synchronised() -> bool | None:
    """Whether the kernel says the system clock is synchronised (any NTP daemon sets it):
    `adjtimex` without changes returns TIME_ERROR (5) while unsynchronised. None when it cannot
    be asked (not Linux, no libc)."""
    try:
        libc = _libc()
        buffer = ctypes.create_string_buffer(512)  # struct timex with modes = 0: read only
        state = int(libc.adjtimex(buffer))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR


class DaemonGuardSource:
    def __init__(
        self,
        config: GatewayConfig,
        latches: AlarmLatches,
        paths: PathBoard,
        drivers: Mapping[str, object],
        clock: Clock,
        *,
        changes: ChangeCounter,
        test_mode: GuardTestMode,
        rules_today: Callable[[], RulesToday | None] | None = None,
        clock_check_s: float = CLOCK_CHECK_S,
        clock_synchronised: Callable[[], bool | None] = ntp_synchronised,
    ) -> None:
        self._config = config
        self._tz = ZoneInfo(config.site.timezone)
        """Times go to the page in site time: it shows their clock part as it is."""
        self._rules_today = rules_today
        self._latches = latches
        self._paths = paths
        self._drivers = drivers
        self._clock = clock
        self._changes = changes
        self._test_mode = test_mode
        self._test_press_minutes: int = (
            GuardConfig.model_fields["test_press_minutes"].default
            if config.guard is None
            else config.guard.test_press_minutes
        )
        self._clock_check_s = clock_check_s
        self._clock_synchronised = clock_synchronised
        self._synchronised = clock_synchronised()
        self._ack_timeout_ms = round(config.alarms.ack_timeout_s * 1000)
        self._since: dict[tuple[str, str], tuple[str, int]] = {}
        """(part, name) -> (state, wall ms when this source first saw it in that state)."""
        self._built = self._build()
        """The snapshot of the current version: built once per version, whoever asks."""

    # --- GuardSource -------------------------------------------------------------------------
    def snapshot(self) -> GuardSnapshot:
        if self._built.version != self._changes.version:
            self._built = self._build()
        return dataclasses.replace(self._built, now=self._at(self._clock.wall_ms()))

    async def changed(self, after_version: int) -> int:
        return await self._changes.wait_past(after_version)

    async def reset(self, alarm_id: str, by: str, reason: str | None) -> None:
        latch = self._latch(alarm_id)
        reason = (reason or "").strip()
        if not latch.acknowledged and not reason:
            raise ActionRefused("reason_required", alarm_id)
        try:
            await self._latches.reset(
                alarm_id, by=by, occurred_at_ms=self._clock.wall_ms(), reason=reason
            )
        except UnknownAlarm:
            raise ActionRefused("unknown_alarm", alarm_id) from None
        log.info("guard_reset", alarm_id=alarm_id, by=by, reason=reason)

    async def test_press(self, box: str, by: str) -> None:
        """Test mode for `test_press_minutes`, started by `by`; the guard then presses `box`.
        Refused while test mode is on (the press can be made now: nothing to start)."""
        self._box(box)
        minutes = self._test_press_minutes
        try:
            await self._test_mode.start(minutes=minutes, by=by)
        except TestModeError as exc:
            raise ActionRefused("test_mode_on", str(exc)) from None
        log.warning("guard_test_press", box=box, by=by, minutes=minutes)

    async def silence_siren(self, box: str, by: str) -> None:
        self._box(box)
        try:
            await self._latches.silence_siren(box, by=by, occurred_at_ms=self._clock.wall_ms())
        except UnknownAlarm:
            raise ActionRefused("not_allowed_now", f"no open alarm at {box}") from None

    # --- the watcher ----------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._changes.version

    async def run(self) -> None:
        """Until cancelled (a named task in the daemon's TaskGroup): at each bump, note when each
        shown state began; every `clock_check_s`, read the NTP flag again and bump if it moved."""
        seen = self._changes.version
        next_check_s = self._clock.monotonic() + self._clock_check_s
        while True:
            waiting = asyncio.ensure_future(self._changes.wait_past(seen))
            timer = asyncio.ensure_future(
                self._clock.sleep(max(0.0, next_check_s - self._clock.monotonic()))
            )
            try:
                await asyncio.wait({waiting, timer}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (waiting, timer):
                    task.cancel()
                await asyncio.wait({waiting, timer})
            if not waiting.cancelled() and waiting.exception() is None:
                seen = waiting.result()
                self.snapshot()  # notes when what changed began, with no page open too
            if self._clock.monotonic() >= next_check_s:
                next_check_s = self._clock.monotonic() + self._clock_check_s
                synchronised = self._clock_synchronised()
                if synchronised != self._synchronised:
                    self._synchronised = synchronised
                    self._changes.bump()

    # --- building the snapshot ------------------------------------------------------------------
    def _build(self) -> GuardSnapshot:
        now_ms = self._clock.wall_ms()
        offset_ms = next(
            (
                d.clock_offset_ms
                for d in self._drivers.values()
                if isinstance(d, AccessController) and d.clock_offset_ms is not None
            ),
            None,
        )
        return GuardSnapshot(
            version=self._changes.version,
            now=self._at(now_ms),
            gate_name=self._config.site.gateway_id,
            alarms=tuple(self._alarm(latch) for latch in self._latches.open_alarms),
            bollards=tuple(self._bollards(now_ms)),
            doors=tuple(self._doors()),
            devices=tuple(self._devices(now_ms)),
            paths=tuple(
                PathView(name, "up" if path.up else "down", self._at(path.since_ms))
                for name, path in self._paths.paths.items()
            ),
            clock=ClockView(
                None if offset_ms is None else offset_ms / 1000,
                box_synchronised=self._synchronised,
            ),
            rules=self._rules(),
            test_mode_until=self._test_mode_until(),
        )

    def _test_mode_until(self) -> datetime | None:
        state = self._test_mode.state
        until_ms = state.until_ms
        return None if until_ms is None or not state.active() else self._at(until_ms)

    def _rules(self) -> RulesView | None:
        today = None if self._rules_today is None else self._rules_today()
        if today is None:
            return None  # no [rules], or the rules have not started yet
        return RulesView(
            gate_windows=tuple(
                GateWindowView(w.name, w.start.astimezone(self._tz), w.end.astimezone(self._tz))
                for w in today.windows
            ),
            patrols_done=today.patrols_done,
            patrols_target=today.patrols_target,
            open_violations=tuple(
                ViolationView(v.rule_id, self._place(v.device_id), self._at(v.opened_ms))
                for v in today.violations
            ),
            overdue_ledger=tuple(
                OverdueView(e.kind, e.where, self._at(e.deadline_ms)) for e in today.overdue
            ),
        )

    def _alarm(self, latch: Latch) -> AlarmView:
        device = self._config.devices[latch.device_id]
        stage: AlarmStage = "stored"
        if latch.acknowledged:
            stage = "acknowledged"
        elif latch.escalated:
            stage = "escalated"
        elif latch.delivered:
            stage = "at_police"
        acked_at, silenced_at = latch.acknowledged_at_ms, latch.siren_silenced_at_ms
        return AlarmView(
            alarm_id=latch.alarm_id,
            box=latch.device_id,
            place=self._place(latch.device_id),
            raised_at=self._at(latch.raised_at_ms),
            stage=stage,
            test=device.drill or latch.test,
            acknowledged_by=latch.acknowledged_by or None,
            acknowledged_at=None if acked_at is None else self._at(acked_at),
            escalated_at=self._at(latch.raised_at_ms + self._ack_timeout_ms)
            if latch.escalated
            else None,
            siren_silenced_by=latch.siren_silenced_by or None,
            siren_silenced_at=None if silenced_at is None else self._at(silenced_at),
        )

    def _bollards(self, now_ms: int) -> list[BollardView]:
        views = []
        for device_id, driver in self._drivers.items():
            place = self._place(device_id)
            if isinstance(driver, Bollard) and driver.position not in (None, "unknown"):
                state: BollardState = "moving" if driver.position in _MOVING else "up"
                if driver.position == "down":
                    state = "down"
                since = self._seen("bollard", device_id, state, now_ms)
                views.append(BollardView(device_id, place, state, since))
            elif isinstance(driver, BollardSockets) and driver.present is not None:
                for name, present in driver.present.items():
                    key = f"{device_id}/{name}"
                    state = "up" if present else "pulled"
                    views.append(
                        BollardView(
                            key, f"{place} {name}", state, self._seen("socket", key, state, now_ms)
                        )
                    )
        return views

    def _doors(self) -> list[DoorView]:
        views = []
        for device_id, driver in self._drivers.items():
            if not isinstance(driver, AccessController):
                continue
            names = getattr(self._config.devices[device_id], "doors", {})
            for door, (state, at_ms) in sorted(driver.door_states.items()):
                door_state: DoorState = state  # type: ignore[assignment]
                views.append(
                    DoorView(
                        f"{device_id}/{door}",
                        names.get(door, str(door)),
                        door_state,
                        self._at(at_ms),
                    )
                )
        return views

    def _devices(self, now_ms: int) -> list[DeviceView]:
        views = []
        for device_id, driver in self._drivers.items():
            health = getattr(driver, "health", None)  # every polled driver keeps one
            if not isinstance(health, DeviceHealth):
                continue
            device = self._config.devices[device_id]
            state: Health = "online" if health.online else "offline"
            since = self._seen("health", device_id, state, now_ms)
            views.append(
                DeviceView(
                    device_id,
                    device.kind,
                    self._place(device_id),
                    state,
                    since,
                )
            )
        return views

    def _seen(self, part: str, name: str, state: str, now_ms: int) -> datetime:
        known = self._since.get((part, name))
        if known is None or known[0] != state:
            known = (state, now_ms)
            self._since[(part, name)] = known
        return self._at(known[1])

    # --- inside ---------------------------------------------------------------------------------
    def _latch(self, alarm_id: str) -> Latch:
        try:
            return self._latches.open_alarm(alarm_id)
        except UnknownAlarm:
            raise ActionRefused("unknown_alarm", alarm_id) from None

    def _box(self, box: str) -> None:
        if not isinstance(self._config.devices.get(box), AlarmBoxDevice):
            raise ActionRefused("unknown_box", box)

    def _place(self, device_id: str) -> str:
        device = self._config.devices.get(device_id)
        return (device.location if device is not None else "") or device_id

    def _at(self, ms: int) -> datetime:
        return datetime.fromtimestamp(ms / 1000, tz=self._tz)
