"""The ONE injected clock: wall time (epoch ms, may step) and monotonic time (seconds, never
steps), and sleeping on the monotonic one.

Owns the `Clock` protocol, `SystemClock` (the real one) and `FakeClock` (tests: time moves only
when the test says so; nothing ever sleeps for real). It does not schedule anything itself: a
caller computes a deadline and sleeps until it (`wait_until_set`: a deadline or a change).

Seams: every timer in the gateway takes a `Clock`; `wall_ms()` is for stamping and for anything
stored (deadlines that must survive a restart), `monotonic()` for measuring durations inside one
process (a wall-clock step must not shorten or stretch a grace period).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Protocol

TEST_WALL_START_VAR = "SCHOOLGATE_TEST_WALL_START_MS"
"""The scenario runner's seam: the daemon's wall clock reads this (epoch ms) when it starts."""


class Clock(Protocol):
    def wall_ms(self) -> int:
        """Epoch milliseconds; may step when the system clock is corrected."""
        ...

    def monotonic(self) -> float:
        """Seconds since an arbitrary origin; never steps, meaningless across a restart."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` of monotonic time."""
        ...


class SystemClock:
    """The real clock."""

    def wall_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ShiftedClock(SystemClock):
    """The real clock with its wall time moved by a fixed offset: a gate whose date was set to
    another day. Monotonic time and sleeps stay real, so every duration is a real one."""

    def __init__(self, offset_ms: int) -> None:
        self.offset_ms = offset_ms

    def wall_ms(self) -> int:
        return super().wall_ms() + self.offset_ms


class ClockSeamRefused(Exception):
    """The test clock was asked for where it must not be used; the message says why."""


def scenario_clock_from_env(environ: Mapping[str, str], store_path: Path) -> ShiftedClock | None:
    """The clock `TEST_WALL_START_VAR` asks for, or None when it is not set. Refused unless the
    store is under the system's temporary folder (where tests and the scenario runner keep it;
    a real gate's store must survive a reboot, so it never is): a box in service cannot be
    given a false date through its environment."""
    raw = environ.get(TEST_WALL_START_VAR)
    if raw is None:
        return None
    temp = Path(tempfile.gettempdir()).resolve()
    if not store_path.resolve().is_relative_to(temp):
        raise ClockSeamRefused(
            f"{TEST_WALL_START_VAR} is a test seam, refused: the store ({store_path}) is not "
            f"under {temp}"
        )
    try:
        start_ms = int(raw)
    except ValueError:
        raise ClockSeamRefused(
            f"{TEST_WALL_START_VAR}: expected epoch milliseconds (got {raw!r})"
        ) from None
    return ShiftedClock(start_ms - SystemClock().wall_ms())


class FakeClock:
    """A clock a test drives. `advance(s)` moves both times forward and wakes, in deadline order,
    every sleeper whose monotonic deadline has passed; `set_wall(ms)` steps the wall clock alone
    (a correction), waking nobody. Woken tasks run when the test yields: `await settle()`.
    `await run_for(s)` advances deadline by deadline and settles in between, so a task that goes
    back to sleep on waking is woken again within the same span, as on a real clock."""

    def __init__(self, *, wall_ms: int = 1_790_000_000_000, monotonic: float = 1_000.0) -> None:
        self._wall_ms = wall_ms
        self._monotonic = monotonic
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._fell_asleep = asyncio.Event()

    def wall_ms(self) -> int:
        return self._wall_ms

    def monotonic(self) -> float:
        return self._monotonic

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._monotonic + seconds, next(self._order), waiter))
        self._fell_asleep.set()
        try:
            await waiter
        finally:
            if not waiter.done():
                waiter.cancel()  # a cancelled sleeper is skipped when its deadline comes

    @property
    def sleepers(self) -> int:
        """How many tasks are asleep on this clock (a test waits for this before advancing)."""
        return sum(1 for _, _, waiter in self._sleepers if not waiter.done())

    async def sleeping(self, count: int = 1) -> None:
        """Until at least `count` tasks sleep on this clock: the positive sign that they have had
        their chance to act and now wait for time to pass (a test bounds this wait itself)."""
        while self.sleepers < count:
            self._fell_asleep.clear()
            await self._fell_asleep.wait()

    def next_deadline(self) -> float | None:
        """The earliest monotonic deadline of a live sleeper, if any."""
        self._drop_done()
        return self._sleepers[0][0] if self._sleepers else None

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("monotonic time never goes back; use set_wall for a wall step")
        target = self._monotonic + seconds
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, waiter = heapq.heappop(self._sleepers)
            if waiter.done():
                continue
            self._move_to(deadline)
            waiter.set_result(None)
        self._move_to(target)

    def set_wall(self, wall_ms: int) -> None:
        """Step the wall clock (an NTP correction, an installer setting the date)."""
        self._wall_ms = wall_ms

    async def settle(self, rounds: int = 20) -> None:
        """Let woken tasks run until they wait again (each round is one pass of the loop)."""
        for _ in range(rounds):
            await asyncio.sleep(0)

    async def run_for(self, seconds: float) -> None:
        """Advance `seconds`, stopping at each sleeper's deadline to let it run."""
        if seconds < 0:
            raise ValueError("monotonic time never goes back")
        target = self._monotonic + seconds
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            self.advance(deadline - self._monotonic)
            await self.settle()
        self.advance(target - self._monotonic)
        await self.settle()

    def _move_to(self, monotonic: float) -> None:
        self._wall_ms += round((monotonic - self._monotonic) * 1000)
        self._monotonic = monotonic

    def _drop_done(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)


async def wait_until_set(event: asyncio.Event, clock: Clock, timeout_s: float | None) -> None:
    """Wait for `event`, or at most `timeout_s` of `clock`'s time (None: no limit): how a timer
    loop sleeps until its next deadline or a change, on whichever clock it was given."""
    if timeout_s is None:
        await event.wait()
        return
    if timeout_s <= 0:
        return

    async def wake() -> None:
        await clock.sleep(timeout_s)
        event.set()

    waker = asyncio.create_task(wake(), name="clock:deadline")
    try:
        await event.wait()
    finally:
        waker.cancel()
        await asyncio.wait([waker])  # never outlives its caller
