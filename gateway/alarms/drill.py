"""Drill mode (quarterly emergency drills): while a drill runs, every event the gateway stores
is marked `drill: true`, so receivers do not dispatch.

Owns whether a drill runs and until when, its start and stop events (`gateway.drill_started`,
`gateway.drill_stopped`, stored for the routed destinations and the ones named in `announce_to`:
the police are told of a drill before it starts marking their alarms), and ending it when its
minutes are up. With a `memory` (the store's small values), a running drill's wall-clock end is
kept: after a restart `restore()` takes it up again for the time left of the minutes the police
were told, never longer, and a drill whose end passed while the gateway was off is stopped at
once (`by: "timer"`). Without one, a restart ends a drill silently. It does not mark events
itself (the outbox asks `active()` when it stamps them).
"""

from __future__ import annotations

import asyncio

import structlog

from drivers.base import DeviceMemory
from gateway.core.clock import Clock, SystemClock, wait_until_set
from gateway.core.events import Event, Severity, new_event
from gateway.store.outbox import GATEWAY_DEVICE
from gateway.store.records import EventWriter

log = structlog.get_logger(__name__)

_UNTIL_KEY = "drill_until_ms"
_LENGTH_KEY = "drill_length_ms"


class Drill:
    def __init__(
        self,
        outbox: EventWriter,
        *,
        clock: Clock | None = None,
        minute_ms: int = 60_000,
        memory: DeviceMemory | None = None,
        announce_to: list[str] | None = None,
    ) -> None:
        self._outbox = outbox
        self._memory = memory
        self._announce_to = announce_to
        """Where the start and stop go (None: the routes)."""
        self._clock: Clock = SystemClock() if clock is None else clock
        self._minute_ms = minute_ms
        """How long a drill minute is."""
        self._until_s: float | None = None
        """When the drill ends, on the monotonic clock (a wall step neither ends nor stretches
        it)."""
        self._changed = asyncio.Event()

    def active(self) -> bool:
        return self._until_s is not None and self._clock.monotonic() < self._until_s

    async def restore(self) -> None:
        """Take up a drill that ran when the gateway stopped (see the module's docstring)."""
        if self._memory is None:
            return
        until_ms = await self._memory.recall(_UNTIL_KEY)
        length_ms = await self._memory.recall(_LENGTH_KEY)
        if not until_ms or not length_ms:
            return
        left_ms = min(max(until_ms - self._clock.wall_ms(), 0), length_ms)
        self._until_s = self._clock.monotonic() + left_ms / 1000
        self._changed.set()
        log.warning("drill_restored", left_s=left_ms / 1000)

    async def start(self, *, minutes: int, by: str) -> None:
        # Active before the event is stored: the start is itself a drill event.
        length_ms = minutes * self._minute_ms
        self._until_s = self._clock.monotonic() + length_ms / 1000
        self._changed.set()
        if self._memory is not None:  # kept before the start event's fsync makes it durable
            await self._memory.remember(_LENGTH_KEY, length_ms)
            await self._memory.remember(_UNTIL_KEY, self._clock.wall_ms() + length_ms)
        log.warning("drill_started", minutes=minutes, by=by)
        await self._store("gateway.drill_started", by=by, minutes=minutes)

    async def stop(self, *, by: str) -> None:
        self._until_s = None
        self._changed.set()
        if self._memory is not None:
            await self._memory.remember(_UNTIL_KEY, 0)
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
        event = gateway_notice(event_type, self._clock.wall_ms(), data)
        await self._outbox.append(event, destinations=self._announce_to)


def gateway_notice(event_type: str, at_ms: int, data: dict[str, object]) -> Event:
    """An info event of the gateway itself (a drill's or test mode's start and stop)."""
    return new_event(
        event_type, GATEWAY_DEVICE, severity=Severity.INFO, occurred_at_ms=at_ms, data=data
    )
