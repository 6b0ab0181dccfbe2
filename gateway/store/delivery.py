"""The delivery queue: what each destination's sender takes next, and when to look.

Owns the per-destination wake-ups (any row, an alarm row), the lanes that got rows since a sender
last asked (`take_new_lane`), claim and mark_sent (the drain's only dependency,
`records.DeliveryQueue`), and the backfill of a file opened late: its pending rows lie below the
seqs stamped in memory meanwhile, under every sender's cursor, and are handed out by cursors of
their own (`_Backfill`). It does not store anything nor know which medium holds a row (`log`),
and does not route (`outbox` tells it which destination got a row of which lane).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import replace

from gateway.core.events import Lane
from gateway.store.log import DurableLog
from gateway.store.records import PendingDelivery
from gateway.store.sql import ClaimQuery


class Deliveries:
    """`records.DeliveryQueue` over a `DurableLog`."""

    def __init__(self, log: DurableLog, destinations: Sequence[str]) -> None:
        self._log = log
        self._wakeups = {name: asyncio.Event() for name in destinations}
        self._alarm_wakeups = {name: asyncio.Event() for name in destinations}
        self._new_lanes: dict[str, set[Lane]] = {name: set() for name in destinations}
        self._backfill: dict[str, _Backfill] = {}

    def queued(self, destination: str, lane: Lane) -> None:
        """A row of `lane` was stored for `destination` (the outbox says so after each write)."""
        self._new_lanes[destination].add(lane)
        self._wakeups[destination].set()
        if lane is Lane.ALARM:
            self._alarm_wakeups[destination].set()

    def file_opened(self, floor: int | None) -> None:
        """The log's file opened: every sender looks again (a restart resumes whatever each
        destination had pending). `floor`: it opened late, its pending rows lie below it."""
        if floor is not None:
            self._backfill = {name: _Backfill(floor) for name in self._wakeups}
        for wakeup in [*self._wakeups.values(), *self._alarm_wakeups.values()]:
            wakeup.set()

    def wakeup(self, destination: str) -> asyncio.Event:
        """Set whenever a row is queued for `destination`; the uplink clears it."""
        return self._wakeups[destination]

    def alarm_wakeup(self, destination: str) -> asyncio.Event:
        """Set whenever an alarm-lane row is queued for `destination`."""
        return self._alarm_wakeups[destination]

    def take_new_lane(self, destination: str, among: Sequence[Lane] = tuple(Lane)) -> Lane | None:
        """The highest-priority lane of `among` that got a row for `destination` since the last
        call, if any (and forget those lanes): lets a sender see that something more urgent
        arrived while it drains a backlog."""
        new = self._new_lanes[destination]
        if not new:  # the common case, asked once per message sent
            return None
        found = [lane for lane in among if lane in new]
        new.difference_update(found)
        return min(found) if found else None

    async def claim(
        self,
        destination: str,
        limit: int,
        after: dict[Lane, int] | None = None,
        lanes: Sequence[Lane] = tuple(Lane),
    ) -> list[PendingDelivery]:
        """The next rows for `destination`: alarms first, then state, then telemetry, each lane
        in `seq` order, skipping rows at or below `after[lane]` (already claimed by the caller),
        only from `lanes`. Each row's attempt counter is incremented."""
        backfill = self._backfill.get(destination)
        rows = await self._log.claim(
            destination,
            limit,
            after or {},
            lanes,
            plan=None if backfill is None else backfill.claim_run,
        )
        if backfill is not None and backfill.done:
            # Another sender of this destination may have finished it in the same turn.
            self._backfill.pop(destination, None)
        return rows

    async def mark_sent(self, destination: str, seqs: Sequence[int]) -> None:
        """Record the broker's PUBACK of these rows: they are not handed out again."""
        await self._log.mark_sent(destination, seqs)


class _Backfill:
    """Claims of a destination after a file opened late: its pending rows lie below `floor`
    (the first seq stamped in memory), under the claimer's cursors. They are handed out by a
    cursor of their own per lane; a claimer whose cursor for a lane is 0 is new (a reconnect)
    and gets that lane's rows from the start again."""

    def __init__(self, floor: int) -> None:
        self.floor = floor
        self.handed: dict[Lane, int] = {}
        self.exhausted: set[Lane] = set()
        self.done = False

    def claim_run(self, query: ClaimQuery) -> Callable[[sqlite3.Connection], list[PendingDelivery]]:
        def run(db: sqlite3.Connection) -> list[PendingDelivery]:
            for lane in query.lanes:
                if query.after.get(lane, 0) == 0:
                    self.handed[lane] = 0
                    self.exhausted.discard(lane)
            old = replace(query, after=dict(self.handed), below=self.floor).run(db)
            rows = old
            if len(old) < query.limit:
                # Every lane asked for was looked at: those without a row have none left.
                self.exhausted.update(set(query.lanes) - {row.lane for row in old})
                above = {ln: max(query.after.get(ln, 0), self.floor - 1) for ln in query.lanes}
                rows = old + replace(query, limit=query.limit - len(old), after=above).run(db)
                rows.sort(key=lambda r: (r.lane, r.seq))
            for row in old:
                self.handed[row.lane] = max(self.handed.get(row.lane, 0), row.seq)
            self.done = self.exhausted == set(Lane)
            return rows

        return run
