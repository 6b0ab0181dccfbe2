"""Drill mode (quarterly emergency drills): while a drill runs, every event the gateway stores
is marked `drill: true`, so receivers do not dispatch.

Owns whether a drill runs and until when, its start and stop events (`gateway.drill_started`,
`gateway.drill_stopped`), and ending it when its minutes are up. In memory: a restart ends a
drill (the safe side: real alarms are never marked as drills by a drill that outlived its
reason). It does not mark events itself (the outbox asks `active()` when it stamps them).
"""

from __future__ import annotations

import asyncio

import structlog

from gateway.core.clock import Clock, SystemClock, wait_until_set
from gateway.core.events import Event, Severity, new_event
from gateway.store.outbox import GATEWAY_DEVICE
from gateway.store.records import EventWriter

log = structlog.get_logger(__name__)


class Drill:
    def __init__(
        self, outbox: EventWriter, *, clock: Clock | None = None, minute_ms: int = 60_000
    ) -> None:
        self._outbox = outbox
        self._clock: Clock = SystemClock() if clock is None else clock
        self._minute_ms = minute_ms
        """How long a drill minute is."""
        self._until_s: float | None = None
        """When the drill ends, on the monotonic clock (a wall step neither ends nor stretches
        it)."""
        self._changed = asyncio.Event()

    def active(self) -> bool:
        return self._until_s is not None and self._clock.monotonic() < self._until_s

    async def start(self, *, minutes: int, by: str) -> None:
        # Active before the event is stored: the start is itself a drill event.
        self._until_s = self._clock.monotonic() + minutes * self._minute_ms / 1000
        self._changed.set()
        log.warning("drill_started", minutes=minutes, by=by)
        await self._store("gateway.drill_started", by=by, minutes=minutes)

    async def stop(self, *, by: str) -> None:
        self._until_s = None
        self._changed.set()
        log.warning("drill_stopped", by=by)
        await self._store("gateway.drill_stopped", by=by)

    async def run(self) -> None:
        """End a drill when its minutes are up. Sleeps until then; woken by a start or stop."""
        while True:
            self._changed.clear()
            timeout_s: float | None = None
            if self._until_s is not None:
                timeout_s = self._until_s - self._clock.monotonic()
                if timeout_s <= 0:
                    await self.stop(by="timer")
                    continue
            await wait_until_set(self._changed, self._clock, timeout_s)

    async def _store(self, event_type: str, **data: object) -> None:
        await self._outbox.append(gateway_notice(event_type, self._clock.wall_ms(), data))


def gateway_notice(event_type: str, at_ms: int, data: dict[str, object]) -> Event:
    """An info event of the gateway itself (a drill's or test mode's start and stop)."""
    return new_event(
        event_type, GATEWAY_DEVICE, severity=Severity.INFO, occurred_at_ms=at_ms, data=data
    )
