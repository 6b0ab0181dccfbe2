"""Capped full-jitter exponential backoff (pure; the random source is injectable)."""

from __future__ import annotations

import random
from collections.abc import Callable


class Backoff:
    """Delay before retry n is uniform in [0, min(cap, base * 2**n)] ("full jitter"), so many
    gateways that lost the same broker do not reconnect in lock step."""

    def __init__(
        self,
        base_s: float = 0.2,
        cap_s: float = 10.0,
        rand: Callable[[], float] = random.random,
    ) -> None:
        if base_s <= 0 or cap_s < base_s:
            raise ValueError("backoff needs 0 < base_s <= cap_s")
        self._base_s = base_s
        self._cap_s = cap_s
        self._rand = rand
        self._attempt = 0

    def next_delay_s(self) -> float:
        ceiling = min(self._cap_s, self._base_s * float(1 << min(self._attempt, 32)))
        self._attempt += 1
        return ceiling * self._rand()

    def spread_s(self, window_s: float) -> float:
        """A delay uniform in [0, window_s]: the first retry after a working connection was lost,
        so the many gateways that lost it at the same moment come back spread over the window."""
        return window_s * self._rand()

    def reset(self) -> None:
        self._attempt = 0

    @property
    def attempts(self) -> int:
        return self._attempt
