"""The version half of a `GuardSource`: a number that grows with every change the page must
show, and the wait for it to pass the version a page last saw.

Owns only the counter and its wake-up; what counts as a change is the source's (the daemon's
compares snapshots, the in-memory one bumps on every call).
"""

from __future__ import annotations

import asyncio


class Versioned:
    def __init__(self) -> None:
        self._version = 0
        self._bumped = asyncio.Event()

    @property
    def version(self) -> int:
        return self._version

    async def changed(self, after_version: int) -> int:
        """The current version as soon as it is greater than `after_version`."""
        while self._version <= after_version:
            await self._bumped.wait()
        return self._version

    def _bump(self) -> None:
        self._version += 1
        # A fresh Event per version: every waiter of this one wakes, none misses the next.
        bumped, self._bumped = self._bumped, asyncio.Event()
        bumped.set()
