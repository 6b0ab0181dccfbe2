"""A version counter for "something a reader shows has changed": bumped by the parts, awaited by
the reader.

Owns `ChangeCounter`: `bump()` (no await, safe from any code on the loop: a latch, the path
board, a driver's poll) and `wait_past(version)`, which returns as soon as the version is
greater, without polling. The guard's page is the reader today (`gateway.guard_source`); the
counter does not know what changed (the reader builds its view again) and does not coalesce
(the reader decides how often it looks).
"""

from __future__ import annotations

import asyncio


class ChangeCounter:
    def __init__(self) -> None:
        self._version = 0
        self._moved = asyncio.Event()

    @property
    def version(self) -> int:
        return self._version

    def bump(self) -> None:
        self._version += 1
        # A fresh event per version: waiters wake once, later waiters wait for the next bump.
        moved, self._moved = self._moved, asyncio.Event()
        moved.set()

    async def wait_past(self, version: int) -> int:
        """Return the current version as soon as it is greater than `version`."""
        while self._version <= version:
            await self._moved.wait()
        return self._version


def nothing_changed() -> None:
    """The `changed` callback of a part nobody watches (tests, tools)."""
