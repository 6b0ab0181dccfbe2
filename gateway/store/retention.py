"""Bounded disk: the size cap, the optional age cap for undelivered rows, and the local record.

Owns what is deleted from the store and in which order: events delivered everywhere and older
than `retain_days` are pruned (the school's local record is kept that long); over the size cap,
the oldest delivered rows go first, then the oldest undelivered telemetry, then undelivered state.
Undelivered alarms are never evicted, nor any event of an alarm that is still latched. Every
eviction of undelivered data is counted (persistently), logged once per episode and reported as a
`gateway.eviction` event, which the default routes send to the bureau.

Work is done in small chunks on the store thread so that an alarm's append never waits behind a
long delete. The statements themselves are the log's (`sql_upkeep`; an open alarm is defined
once, in `sql`). It does not append rows or send anything itself.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from gateway.core.clock import Clock, SystemClock
from gateway.core.events import Lane, Severity, new_event
from gateway.store import sql_upkeep
from gateway.store.outbox import GATEWAY_DEVICE
from gateway.store.records import LogMaintenance
from gateway.store.sql_upkeep import used_bytes

__all__ = ["EvictionReport", "Retention", "RetentionPolicy", "used_bytes"]
log = structlog.get_logger(__name__)
_CHUNK = 2000
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    max_bytes: int
    retain_ms: int = 90 * _DAY_MS
    max_age_ms: int | None = None


@dataclass(slots=True)
class EvictionReport:
    pruned: int = 0
    """Delivered rows past the retention period."""
    evicted_delivered: int = 0
    evicted_undelivered: dict[str, int] = field(default_factory=dict)
    """Lane name -> rows removed before every destination had them."""

    @property
    def lost(self) -> int:
        return sum(self.evicted_undelivered.values())


def _evict_undelivered(lane: Lane, before_ms: int | None) -> Callable[[sqlite3.Connection], int]:
    return lambda db: sql_upkeep.evict_undelivered_chunk(db, lane, before_ms, _CHUNK)


def _evict_delivered(after_seq: int) -> Callable[[sqlite3.Connection], tuple[int, int]]:
    return lambda db: sql_upkeep.evict_delivered_chunk(db, after_seq, _CHUNK)


class Retention:
    def __init__(
        self,
        outbox: LogMaintenance,
        policy: RetentionPolicy,
        *,
        check_interval_s: float = 10.0,
        clock: Clock | None = None,
    ) -> None:
        self._outbox = outbox
        self._clock: Clock = clock or SystemClock()
        """The interval between checks (monotonic), the age cut-offs and the eviction's stamp."""
        self._policy = policy
        self._interval_s = check_interval_s
        self._in_episode = False

    async def run(self) -> None:
        while True:
            await self.enforce()
            await self._clock.sleep(self._interval_s)

    async def enforce(self, now_ms: int | None = None) -> EvictionReport:
        now = self._clock.wall_ms() if now_ms is None else now_ms
        report = EvictionReport()
        if not self._outbox.store_open:
            return report  # nothing on disk to keep small while the file cannot be opened
        call = self._outbox.call
        while chunk := await call(
            lambda db: sql_upkeep.prune_chunk(db, now - self._policy.retain_ms, _CHUNK)
        ):
            report.pruned += chunk
        if self._policy.max_age_ms is not None:
            for lane in (Lane.TELEMETRY, Lane.STATE):
                cutoff = now - self._policy.max_age_ms
                while n := await call(_evict_undelivered(lane, cutoff)):
                    name = lane.name.lower()
                    report.evicted_undelivered[name] = report.evicted_undelivered.get(name, 0) + n
        if await call(used_bytes) > self._policy.max_bytes:
            await self._enforce_size(report)
        await self._report(report)
        return report

    async def _enforce_size(self, report: EvictionReport) -> None:
        call = self._outbox.call
        cap = self._policy.max_bytes
        after = 0
        while await call(used_bytes) > cap:
            deleted, after = await call(_evict_delivered(after))
            report.evicted_delivered += deleted
            if after == 0:
                break
        for lane in (Lane.TELEMETRY, Lane.STATE):
            while await call(used_bytes) > cap:
                n = await call(_evict_undelivered(lane, None))
                if not n:
                    break
                name = lane.name.lower()
                report.evicted_undelivered[name] = report.evicted_undelivered.get(name, 0) + n

    async def _report(self, report: EvictionReport) -> None:
        if report.pruned or report.evicted_delivered:
            log.info(
                "store_pruned", pruned=report.pruned, evicted_delivered=report.evicted_delivered
            )
        if not report.lost:
            self._in_episode = False
            return
        if not self._in_episode:
            # Once per episode in the log; every time in the bureau's record.
            self._in_episode = True
            log.error("undelivered_events_evicted", **report.evicted_undelivered)
        await self._outbox.append(
            new_event(
                "gateway.eviction",
                GATEWAY_DEVICE,
                severity=Severity.MAJOR,
                occurred_at_ms=self._clock.wall_ms(),
                data={"evicted_undelivered": dict(report.evicted_undelivered)},
            )
        )
