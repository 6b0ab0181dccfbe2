"""Path supervision (EN 50136 style): is each destination reachable, and since when.

Owns the state of every uplink path (up or down, since when, last PUBACK, last acknowledgement)
and the rule that a path down longer than `report_after_s` (measured and waited for on the
injected `Clock`) is a fault: a `gateway.path_down` event sent to every *other* destination
whatever their routes, and the local fault output on; `gateway.path_up` (to every destination)
and the output off when it is back. The uplinks report to it; heartbeats read it. It does not
connect anything (the uplinks do) and does not drive a device itself (it is handed the fault
output as a callback).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import structlog

from gateway.core import contract
from gateway.core.changes import nothing_changed
from gateway.core.clock import Clock, SystemClock, wait_until_set
from gateway.core.events import Severity, new_event
from gateway.store.outbox import GATEWAY_DEVICE
from gateway.store.records import EventWriter

log = structlog.get_logger(__name__)

FaultOutput = Callable[[bool], Awaitable[None]]


@dataclass(slots=True)
class PathState:
    up: bool
    since_ms: int
    """When the current state (up or down) began (wall clock, for reports)."""
    since_s: float
    """The same moment on the monotonic clock: deadlines and durations are measured on it."""
    error: str = ""
    last_puback_ms: int | None = None
    last_ack_ms: int | None = None
    reported: bool = False
    """A `gateway.path_down` went out for the current outage."""
    outage_ms: int = 0
    """How long the last outage lasted (set when the path comes back)."""


class PathBoard:
    def __init__(
        self,
        names: Iterable[str],
        outbox: EventWriter,
        site: contract.Site,
        *,
        report_after_s: float,
        fault_output: FaultOutput | None = None,
        clock: Clock | None = None,
        changed: Callable[[], None] = nothing_changed,
    ) -> None:
        self._clock: Clock = SystemClock() if clock is None else clock
        start_ms, start_s = self._clock.wall_ms(), self._clock.monotonic()
        # Every path starts down: one that never comes up is a fault after report_after_s.
        self.paths = {
            name: PathState(up=False, since_ms=start_ms, since_s=start_s, error="not connected yet")
            for name in names
        }
        self._outbox = outbox
        self._site = site
        self._report_after_s = report_after_s
        self._fault_output = fault_output
        self._changed = asyncio.Event()
        self._tell_watchers = changed
        """Told when a path goes up or down (the guard's page shows them)."""
        self.faults_reported = 0

    # -- what the uplinks tell -------------------------------------------------------------------

    def up(self, name: str) -> None:
        path = self.paths[name]
        if not path.up:
            now_s = self._clock.monotonic()
            path.outage_ms = round((now_s - path.since_s) * 1000)
            path.up, path.since_ms, path.since_s, path.error = (
                True,
                self._clock.wall_ms(),
                now_s,
                "",
            )
            self._changed.set()
            self._tell_watchers()

    def down(self, name: str, error: str) -> None:
        path = self.paths[name]
        if path.up:
            path.up, path.since_ms, path.since_s = (
                False,
                self._clock.wall_ms(),
                self._clock.monotonic(),
            )
            self._changed.set()
            self._tell_watchers()
        path.error = error

    def puback(self, name: str) -> None:
        self.paths[name].last_puback_ms = self._clock.wall_ms()

    def acknowledged(self, name: str) -> None:
        self.paths[name].last_ack_ms = self._clock.wall_ms()

    def snapshot(self) -> dict[str, str]:
        return {name: "up" if path.up else "down" for name, path in self.paths.items()}

    @property
    def in_fault(self) -> bool:
        return any(path.reported for path in self.paths.values())

    # -- the supervisor ----------------------------------------------------------------------

    async def run(self) -> None:
        """Report outages that last `report_after_s`, and their end. Sleeps until the next
        deadline or a change; never polls."""
        while True:
            self._changed.clear()
            now_s = self._clock.monotonic()
            deadlines: list[float] = []
            for name, path in self.paths.items():
                if path.up and path.reported:
                    await self._report_up(name, path, self._clock.wall_ms())
                elif not path.up and not path.reported:
                    due_s = path.since_s + self._report_after_s
                    if due_s <= now_s:
                        await self._report_down(name, path)
                    else:
                        deadlines.append(due_s)
            timeout_s = min(deadlines) - now_s if deadlines else None
            await wait_until_set(self._changed, self._clock, timeout_s)

    async def _report_down(self, name: str, path: PathState) -> None:
        path.reported = True
        self.faults_reported += 1
        others = [other for other in self.paths if other != name]
        log.error("path_down", destination=name, error=path.error, down_since_ms=path.since_ms)
        event = new_event(
            "gateway.path_down",
            GATEWAY_DEVICE,
            severity=Severity.MAJOR,
            occurred_at_ms=self._clock.wall_ms(),
            data={
                "destination": name,
                "down_since": contract.iso_ms(path.since_ms, self._site.tz),
                "error": path.error,
            },
        )
        await self._outbox.append(event, destinations=others)
        await self._show_fault()

    async def _report_up(self, name: str, path: PathState, now: int) -> None:
        path.reported = False
        log.info("path_up", destination=name, down_s=path.outage_ms / 1000)
        event = new_event(
            "gateway.path_up",
            GATEWAY_DEVICE,
            severity=Severity.INFO,
            occurred_at_ms=now,
            data={"destination": name, "down_s": round(path.outage_ms / 1000, 3)},
        )
        await self._outbox.append(event, destinations=list(self.paths))
        await self._show_fault()

    async def _show_fault(self) -> None:
        if self._fault_output is not None:
            await self._fault_output(self.in_fault)
