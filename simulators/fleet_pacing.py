"""How fast the fleet simulator opens connections (issue 15): thousands of simulated gateways in
one process must not all dial a broker in the same second.

Owns `ConnectPacer`: at most `rate_per_s` connection attempts start per second (in the order they
ask), and at most `window` are in their handshake (CONNECT, SUBSCRIBE, the first PUBACK) at once,
so a broker that answers slowly makes the next attempts wait instead of piling more handshakes
onto it (and timing them all out). Time is the injected clock. It does not connect (each
`SimGateway` does, inside `attempt()`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from gateway.core.clock import Clock, SystemClock

DEFAULT_CONNECT_RATE_PER_S = 100.0
"""What a 2-core machine with a 3-node RabbitMQ cluster takes: at 5,000 at once it connected at
most 104 (keepalive timeouts); at this rate 5,000 start within 50 s."""
DEFAULT_CONNECT_WINDOW = 100
"""Handshakes open at once: a second's worth at the default rate."""


class ConnectPacer:
    def __init__(
        self,
        rate_per_s: float = DEFAULT_CONNECT_RATE_PER_S,
        window: int = DEFAULT_CONNECT_WINDOW,
        clock: Clock | None = None,
    ) -> None:
        if not rate_per_s > 0:
            raise ValueError(f"connect rate must be above 0 per second (got {rate_per_s})")
        if window < 1:
            raise ValueError(f"connect window must be at least 1 (got {window})")
        self.rate_per_s = rate_per_s
        self.window = window
        self._clock: Clock = clock or SystemClock()
        self._interval_s = 1.0 / rate_per_s
        self._next_start: float | None = None
        self._turn = asyncio.Lock()
        self._open = asyncio.Semaphore(window)
        self.started = 0
        self.in_handshake = 0

    @contextlib.asynccontextmanager
    async def attempt(self) -> AsyncIterator[None]:
        """The block is one connection attempt's handshake: it starts at the rate's next free
        moment and once fewer than `window` handshakes are open."""
        async with self._turn:  # one at a time through the rate, in the order they asked
            now = self._clock.monotonic()
            start = now if self._next_start is None else max(now, self._next_start)
            self._next_start = start + self._interval_s
            await self._clock.sleep(start - now)
        # After the rate: a stalled broker holds the window, and the attempts already let
        # through the rate start as its handshakes finish, at the pace it answers.
        async with self._open:
            self.started += 1
            self.in_handshake += 1
            try:
                yield
            finally:
                self.in_handshake -= 1
