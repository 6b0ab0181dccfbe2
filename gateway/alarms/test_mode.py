"""Test mode (commissioning and the walk test): while it is on, every event the gateway stores is
marked `test: true`, so receivers record presses without dispatching anyone.

Owns whether test mode is on and until when, its announcements (`gateway.test_started` before
anything is marked, `gateway.test_stopped` when it ends: by hand, by its timer, or found expired
at start-up), and ending it when its minutes are up. Unlike a drill, the end time is stored (in
the store's `meta` table, wall ms of the injected clock), so a restart neither ends a walk test
early nor lets it outlive its minutes: a gateway that was down when the time ran out announces
the end as soon as it is back. It does not mark events itself (the outbox asks `active()` when it
stamps them) and does not time presses (the receipts are read from the store: gateway.store.sql).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Protocol

import structlog

from gateway.alarms.drill import gateway_notice
from gateway.core import contract
from gateway.core.changes import nothing_changed
from gateway.core.clock import Clock, wait_until_set
from gateway.core.events import Event
from gateway.store.records import EventWriter

log = structlog.get_logger(__name__)

UNTIL_KEY = "test_mode_until_ms"
MAX_MINUTES = 240
"""A walk test of a large school takes an hour or two; longer is a mistake, not a test."""


class TestModeError(Exception):
    """A start while on, or a stop while off; the message says what to do instead."""

    __test__ = False  # not a pytest class, whatever its name


class Memory(Protocol):
    """Where the end time is kept (`gateway.store.log.DurableLog.memory`)."""

    async def recall(self, key: str) -> int | None: ...

    async def remember(self, key: str, value: int) -> None: ...


class TestMode:
    __test__ = False  # not a pytest class, whatever its name

    def __init__(
        self,
        outbox: EventWriter,
        memory: Memory,
        site: contract.Site,
        *,
        clock: Clock,
        minute_ms: int = 60_000,
        changed: Callable[[], None] = nothing_changed,
    ) -> None:
        self._outbox, self._memory, self._clock = outbox, memory, clock
        self._tz = site.tz
        self._minute_ms = minute_ms
        self._until_ms: int | None = None
        """When test mode ends, wall ms of the injected clock (what is stored)."""
        self._changed = asyncio.Event()
        self._tell = changed
        """Told at every start and end (the guard's page shows test mode)."""
        self.ended = asyncio.Event()
        """Set once an end is announced (stored); cleared by a start."""

    @property
    def until_ms(self) -> int | None:
        return self._until_ms

    def active(self) -> bool:
        return self._until_ms is not None and self._clock.wall_ms() < self._until_ms

    async def restore(self) -> None:
        """Read the stored end time (at start-up, before the drivers run). One that passed
        while the gateway was down is ended (and announced) here, so nothing is marked."""
        stored = await self._memory.recall(UNTIL_KEY)
        self._until_ms = stored or None
        if self._until_ms is None:
            return
        if not self.active():
            await self.stop(by="timer")
            return
        log.warning("test_mode_restored", until=self._at(self._until_ms))
        self._changed.set()
        self._tell()

    async def start(self, *, minutes: int, by: str) -> int:
        """Announce, then mark: the receivers have `gateway.test_started` before any event of
        the test. Returns the end time (wall ms)."""
        if not 1 <= minutes <= MAX_MINUTES:
            raise TestModeError(f"minutes must be 1..{MAX_MINUTES}, not {minutes}")
        if self.active():
            raise TestModeError(
                f"test mode is already on until {self._at(self._until_ms or 0)}; "
                "`schoolgate test stop` first"
            )
        until_ms = self._clock.wall_ms() + minutes * self._minute_ms
        await self._store("gateway.test_started", by=by, minutes=minutes, until=self._at(until_ms))
        await self._memory.remember(UNTIL_KEY, until_ms)
        self._until_ms = until_ms
        self.ended.clear()
        self._changed.set()
        self._tell()
        log.warning("test_mode_started", minutes=minutes, by=by, until=self._at(until_ms))
        return until_ms

    async def stop(self, *, by: str) -> None:
        """Unmark, then announce, then forget the stored end: a stop cut short by a shutdown
        is announced again at the next start rather than never."""
        if self._until_ms is None:
            raise TestModeError("test mode is not on")
        self._until_ms = None
        self._changed.set()
        self._tell()
        log.warning("test_mode_stopped", by=by)
        await self._store("gateway.test_stopped", by=by)
        await self._memory.remember(UNTIL_KEY, 0)
        self.ended.set()

    async def run(self) -> None:
        """End test mode when its time is up (on the injected clock); woken by start or stop."""
        while True:
            self._changed.clear()
            timeout_s: float | None = None
            if self._until_ms is not None:
                timeout_s = (self._until_ms - self._clock.wall_ms()) / 1000
                if timeout_s <= 0:
                    await self.stop(by="timer")
                    continue
            await wait_until_set(self._changed, self._clock, timeout_s)

    def _at(self, ms: int) -> str:
        return contract.iso_ms(ms, self._tz)

    async def _store(self, event_type: str, **data: object) -> Event:
        event = gateway_notice(event_type, self._clock.wall_ms(), data)
        # Marked by hand: the start is stored before test mode is on, the stop after it is off,
        # and both belong to the test.
        return await self._outbox.append(replace(event, test=True))
