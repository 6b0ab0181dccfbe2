"""Drill mode (quarterly emergency drills): while a drill runs, every event the gateway stores
is marked `drill: true`, so receivers do not dispatch.

Owns whether a drill runs and until when, its start and stop events (`gateway.drill_started`,
`gateway.drill_stopped`), and ending it when its minutes are up. In memory: a restart ends a
drill (the safe side: real alarms are never marked as drills by a drill that outlived its
reason). It does not mark events itself (the outbox asks `active()` when it stamps them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from gateway.core.events import Severity, new_event
from gateway.store.outbox import GATEWAY_DEVICE
from gateway.store.records import EventWriter

log = structlog.get_logger(__name__)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Drill:
    def __init__(
        self, outbox: EventWriter, *, clock_ms: Callable[[], int] = _now_ms, minute_ms: int = 60_000
    ) -> None:
        self._outbox = outbox
        self._clock_ms = clock_ms
        self._minute_ms = minute_ms
        """How long a drill minute is (tests shorten it)."""
        self._until_ms = 0
        self._changed = asyncio.Event()

    def active(self) -> bool:
        return self._clock_ms() < self._until_ms

    async def start(self, *, minutes: int, by: str) -> None:
        # Active before the event is stored: the start is itself a drill event.
        self._until_ms = self._clock_ms() + minutes * self._minute_ms
        self._changed.set()
        log.warning("drill_started", minutes=minutes, by=by)
        await self._store("gateway.drill_started", by=by, minutes=minutes)

    async def stop(self, *, by: str) -> None:
        self._until_ms = 0
        self._changed.set()
        log.warning("drill_stopped", by=by)
        await self._store("gateway.drill_stopped", by=by)

    async def run(self) -> None:
        """End a drill when its minutes are up. Sleeps until then; woken by a start or stop."""
        while True:
            self._changed.clear()
            timeout: float | None = None
            if self._until_ms:
                remaining_ms = self._until_ms - self._clock_ms()
                if remaining_ms <= 0:
                    await self.stop(by="timer")
                    continue
                timeout = remaining_ms / 1000
            try:
                async with asyncio.timeout(timeout):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def _store(self, event_type: str, **data: object) -> None:
        event = new_event(
            event_type,
            GATEWAY_DEVICE,
            severity=Severity.INFO,
            occurred_at_ms=self._clock_ms(),
            data=dict(data),
        )
        await self._outbox.append(event)
