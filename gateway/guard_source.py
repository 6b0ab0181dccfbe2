"""The daemon's `GuardSource`: what the guard's page shows, read from the running parts.

Owns the translation from the daemon's live state to `gateway.guard.view`'s plain data: the
open alarms and where each is (the latches: stored, at the `ack_destination` broker,
acknowledged by whom and when, escalated), bollards and sockets (the drivers' last reading),
doors (the access controller's last door events), each device's health (online / offline and
since when, counted from when this source first saw the state), the broker paths (the path
board) and the clocks (the access controller's measured offset; the kernel's NTP flag, None
when it cannot be read). It carries out the guard's three actions through the latches, with the
guard's name: reset, silence the siren; a test press is refused (`no_test_mode`) until the
daemon has a test mode.

How a change reaches the page: `run()` (a named task of the daemon) rebuilds the snapshot every
`poll_s` (250 ms) and bumps the version when it differs from the last one; an action bumps at
once. Polling, not hooks, so the latches, path board and drivers need no callback into this
module (the brief allows either; a version counter bumped by the parts is the better next step).

It does not serve the page (`gateway.guard.server`), and there is no way here to move a bollard
or unlock a door.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import structlog

from drivers.access_controller import AccessController
from drivers.bollard import Bollard
from drivers.bollard_sockets import BollardSockets
from drivers.polling import DeviceHealth
from edge_config.models import AlarmBoxDevice, GatewayConfig
from gateway.alarms.latch import AlarmLatches, Latch, UnknownAlarm
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
    GuardSnapshot,
    Health,
    PathView,
)
from gateway.uplink.paths import PathBoard

log = structlog.get_logger(__name__)

POLL_S = 0.25
"""How often the snapshot is rebuilt and compared: a change shows within this (plus the page's
own round trip), well inside the 500 ms the page promises."""

_MOVING = ("rising", "lowering")
_TIME_ERROR = 5
"""`adjtimex`: the clock is not synchronised (<sys/timex.h>)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def ntp_synchronised() -> bool | None:
    """Whether the kernel says the system clock is synchronised (any NTP daemon sets it):
    `adjtimex` without changes returns TIME_ERROR (5) while unsynchronised. None when it cannot
    be asked (not Linux, no libc)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
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
        poll_s: float = POLL_S,
        clock_synchronised: Callable[[], bool | None] = ntp_synchronised,
    ) -> None:
        self._config = config
        self._latches = latches
        self._paths = paths
        self._drivers = drivers
        self._clock = clock
        self._poll_s = poll_s
        self._clock_synchronised = clock_synchronised
        self._ack_timeout_ms = round(config.alarms.ack_timeout_s * 1000)
        self._since: dict[tuple[str, str], tuple[str, int]] = {}
        """(part, name) -> (state, wall ms when this source first saw it in that state)."""
        self._version = 0
        self._bumped = asyncio.Event()
        self._last = self._content(self._build())

    # --- GuardSource -------------------------------------------------------------------------
    def snapshot(self) -> GuardSnapshot:
        return dataclasses.replace(self._build(), version=self._version)

    async def changed(self, after_version: int) -> int:
        while self._version <= after_version:
            await self._bumped.wait()
        return self._version

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
        self.refresh()

    async def test_press(self, box: str, by: str) -> None:
        self._box(box)
        log.info("guard_test_press_refused", box=box, by=by)
        raise ActionRefused("no_test_mode", "the daemon has no test mode yet")

    async def silence_siren(self, box: str, by: str) -> None:
        self._box(box)
        try:
            await self._latches.silence_siren(box, by=by, occurred_at_ms=self._clock.wall_ms())
        except UnknownAlarm:
            raise ActionRefused("not_allowed_now", f"no open alarm at {box}") from None
        self.refresh()

    # --- the watcher ----------------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._version

    async def run(self) -> None:
        """Rebuild the snapshot every `poll_s` and bump the version when it changed; runs until
        cancelled (a named task in the daemon's TaskGroup)."""
        while True:
            await self._clock.sleep(self._poll_s)
            self.refresh()

    def refresh(self) -> None:
        content = self._content(self._build())
        if content != self._last:
            self._last = content
            self._version += 1
            bumped, self._bumped = self._bumped, asyncio.Event()
            bumped.set()

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
            version=self._version,
            now=_at(now_ms),
            gate_name=self._config.site.gateway_id,
            alarms=tuple(self._alarm(latch) for latch in self._latches.open_alarms),
            bollards=tuple(self._bollards(now_ms)),
            doors=tuple(self._doors()),
            devices=tuple(self._devices(now_ms)),
            paths=tuple(
                PathView(name, "up" if path.up else "down", _at(path.since_ms))
                for name, path in self._paths.paths.items()
            ),
            clock=ClockView(
                None if offset_ms is None else offset_ms / 1000,
                box_synchronised=self._clock_synchronised(),
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
        acked_at = latch.acknowledged_at_ms
        return AlarmView(
            alarm_id=latch.alarm_id,
            box=latch.device_id,
            place=device.location or latch.device_id,
            raised_at=_at(latch.raised_at_ms),
            stage=stage,
            test=device.drill,
            acknowledged_by=latch.acknowledged_by or None,
            acknowledged_at=None if acked_at is None else _at(acked_at),
            escalated_at=_at(latch.raised_at_ms + self._ack_timeout_ms)
            if latch.escalated
            else None,
        )

    def _bollards(self, now_ms: int) -> list[BollardView]:
        views = []
        for device_id, driver in self._drivers.items():
            place = self._config.devices[device_id].location or device_id
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
                        f"{device_id}/{door}", names.get(door, str(door)), door_state, _at(at_ms)
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
                    device.location or device_id,
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
        return _at(known[1])

    @staticmethod
    def _content(snapshot: GuardSnapshot) -> GuardSnapshot:
        return dataclasses.replace(snapshot, version=0, now=_EPOCH)

    # --- inside ---------------------------------------------------------------------------------
    def _latch(self, alarm_id: str) -> Latch:
        try:
            return self._latches.open_alarm(alarm_id)
        except UnknownAlarm:
            raise ActionRefused("unknown_alarm", alarm_id) from None

    def _box(self, box: str) -> None:
        if not isinstance(self._config.devices.get(box), AlarmBoxDevice):
            raise ActionRefused("unknown_box", box)


def _at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)
