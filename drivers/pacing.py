"""When a device's next poll is due: the poll cadence, and how a failing device yields the line.

Owns the delay a driver's poll loop sleeps after each poll: the configured interval while the
device answers (skipping missed slots rather than bursting), at least a whole interval after a
failed poll (the failure already cost the line up to one timeout, so the device does not ask
again at once), and a capped full-jitter exponential backoff while the device is offline or its
line is down, so a dead unit's timeouts do not eat a shared line. The first answer ends the
backoff. Pure apart from the injectable clock and random source; it does not sleep, poll, or
decide when a device is offline (the driver does, from its `offline_after_ms`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from gateway.core.backoff import Backoff

OFFLINE_POLL_CAP_S = 2.0
"""Longest gap between two polls of an offline device: it is back online within about this."""


class PollPacer:
    def __init__(
        self,
        interval_s: float,
        *,
        offline_cap_s: float = OFFLINE_POLL_CAP_S,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._interval_s = interval_s
        self._clock = clock
        self._backoff = Backoff(base_s=interval_s, cap_s=max(offline_cap_s, interval_s), rand=rand)
        self._next_at = clock()

    @property
    def backing_off(self) -> bool:
        return self._backoff.attempts > 0

    def answered(self) -> float:
        """The device answered: seconds until its next slot on the fixed cadence."""
        self._backoff.reset()
        now = self._clock()
        self._next_at = max(self._next_at + self._interval_s, now)  # skip missed slots
        return self._next_at - now

    def answered_with_more(self) -> float:
        """The device answered and has more waiting (a buffered event): ask again at once; the
        cadence starts over from now."""
        self._backoff.reset()
        self._next_at = self._clock()
        return 0.0

    def failed(self, *, back_off: bool) -> float:
        """A poll failed: seconds to wait before the next one. `back_off` while the device is
        offline or its line is down; otherwise one interval."""
        delay = self._interval_s
        if back_off:
            # Full jitter may draw less than one interval; never ask sooner than the cadence.
            delay = max(delay, self._backoff.next_delay_s())
        self._next_at = self._clock() + delay
        return delay
