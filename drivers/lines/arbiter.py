"""Who gets a shared line next: a small priority lock with a bound on overtaking.

Owns the order in which waiting requests are granted the line: the highest priority first, first
come first served within a priority, and no starvation: a waiter that later arrivals have
overtaken `max_overtakes` times is served before anyone who arrived after it. It does not know
Modbus, time or devices; `drivers.lines.modbus.ModbusLine` holds one arbiter per line.

Why a bound on overtakes rather than time-based aging: it is deterministic (no clock), and it
gives each waiter a guarantee in requests rather than seconds: at most `max_overtakes`
higher-priority requests go before it, on top of the requests that were already ahead of it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.core.lifecycle import AsyncResource

PRIORITY_NORMAL = 0
PRIORITY_ALARM = 10
"""Alarm boxes: a press must not wait behind bollard and I/O polls."""

DEFAULT_MAX_OVERTAKES = 4


@dataclass(eq=False, slots=True)
class _Waiter:
    priority: int
    granted: asyncio.Future[None] = field(repr=False)
    overtaken: int = 0


class LineArbiter:
    """`async with arbiter.turn(priority):` holds the line; one holder at a time."""

    def __init__(self, max_overtakes: int = DEFAULT_MAX_OVERTAKES) -> None:
        if max_overtakes < 1:
            raise ValueError("max_overtakes must be at least 1")
        self._max_overtakes = max_overtakes
        self._busy = False
        self._waiters: list[_Waiter] = []
        """In arrival order. A line has a handful of devices, so linear scans are cheapest."""
        self.grants = 0
        self.overtaken_grants = 0
        """Grants given to a waiter because it had been overtaken too often (a starvation save)."""

    def locked(self) -> bool:
        return self._busy

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def turn(self, priority: int = PRIORITY_NORMAL) -> _Turn:
        return _Turn(self, priority)

    def _try_acquire(self) -> bool:
        """Take a free line at once: no Future, no suspension (the common, uncontended case)."""
        if self._busy or self._waiters:
            return False
        self._busy = True
        self.grants += 1
        return True

    async def _acquire(self, priority: int) -> None:
        waiter = _Waiter(priority, asyncio.get_running_loop().create_future())
        self._waiters.append(waiter)
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter.granted.done() and not waiter.granted.cancelled():
                self._release()  # granted just as we were cancelled: pass the line on
            elif waiter in self._waiters:  # a release may have dropped it already
                self._waiters.remove(waiter)
            raise

    def _release(self) -> None:
        if not self._waiters:
            self._busy = False
            return
        # A waiter whose task was cancelled keeps its place until that task runs again; when
        # many are cancelled at once (shutdown) the line must not be granted to one of them.
        self._waiters = [w for w in self._waiters if not w.granted.done()]
        if not self._waiters:
            self._busy = False
            return
        chosen = self._next()
        index = self._waiters.index(chosen)
        for earlier in self._waiters[:index]:
            earlier.overtaken += 1
        del self._waiters[index]
        self.grants += 1
        chosen.granted.set_result(None)  # the line stays busy: it passes straight to `chosen`

    def _next(self) -> _Waiter:
        for waiter in self._waiters:  # the oldest starving waiter first
            if waiter.overtaken >= self._max_overtakes:
                self.overtaken_grants += 1
                return waiter
        best = self._waiters[0]
        for waiter in self._waiters[1:]:
            if waiter.priority > best.priority:  # strictly greater keeps FIFO within a priority
                best = waiter
        return best


class _Turn(AsyncResource):
    """`LineArbiter.turn()`: a plain async context manager rather than an @asynccontextmanager
    generator, which costs an async generator (and the event loop's bookkeeping of it) per
    request; a line that is free is taken without creating a Future or suspending."""

    __slots__ = ("_arbiter", "_priority")

    def __init__(self, arbiter: LineArbiter, priority: int) -> None:
        self._arbiter = arbiter
        self._priority = priority

    async def open(self) -> None:
        if not self._arbiter._try_acquire():
            await self._arbiter._acquire(self._priority)

    async def close(self) -> None:
        self._arbiter._release()
