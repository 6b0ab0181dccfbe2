"""The scheduled report block: at the configured time of each site day, build the day's
inspection report, keep it in the store's file and send it as `report.daily`, once.

Owns when a report is due and the exactly-once path: the report is built and kept
(`SqliteReports`, not yet sent) before its event is stored through the durable `append`, then
marked sent. After a restart a day that has a report is never built again; one kept but not
marked sent is stored again with the same event id, unless the event log already has that id
(the crash came between storing and marking), so the bureau gets it once. A day the gateway was
off from its report time to midnight gets no report (nothing is built for past days).

It does not work out figures (gateway.rules.report does) or render them (report_html does).
Reads of the store file run in a worker thread with their own read-only connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from gateway.core.events import Event, Severity, new_event
from gateway.rules.counters import local_day
from gateway.rules.drills import DrillQuarters
from gateway.rules.ledger import Ledger
from gateway.rules.patrol import PatrolTracker
from gateway.rules.report import (
    HEALTH_TYPES,
    REPORT_TYPES,
    LiveFigures,
    RulesFigures,
    build_report,
    report_span,
)
from gateway.rules.report_store import SqliteReports, StoredReport
from gateway.rules.state import RulesState
from gateway.store import report_reads
from gateway.store.outbox import GATEWAY_DEVICE

log = structlog.get_logger(__name__)

REPORT_TYPE = "report.daily"
RETRY_MS = 60_000
"""A report that could not be built or kept is tried again this much later."""
Append = Callable[[Event], Awaitable[Event]]


@dataclass(eq=False, kw_only=True)
class DailyReporter:
    at: time
    tz: ZoneInfo
    state: RulesState
    ledger: Ledger
    patrols: Sequence[PatrolTracker]
    drills: DrillQuarters
    reports: SqliteReports
    store_path: Path
    live: Callable[[], LiveFigures]
    append: Append
    sent: int = field(default=0, init=False)
    _retry_at_ms: int | None = field(default=None, init=False)

    def take(self, event: Event) -> list[Event]:
        return []

    def next_check_ms(self, now_ms: int) -> int:
        if self._retry_at_ms is not None and now_ms < self._retry_at_ms:
            return self._retry_at_ms
        try:
            return self._due_ms(now_ms)
        except sqlite3.Error as exc:
            log.error("daily_report_state_unreadable", error=str(exc))
            self._retry_at_ms = now_ms + RETRY_MS
            return self._retry_at_ms

    def _due_ms(self, now_ms: int) -> int:
        if self.reports.unsent():
            return now_ms
        day = local_day(now_ms, self.tz)
        due_ms = self._at_ms(day)
        if now_ms < due_ms or self.reports.get(day.isoformat()) is not None:
            return due_ms if now_ms < due_ms else self._at_ms(day + timedelta(days=1))
        return now_ms

    async def check(self, now_ms: int) -> list[Event]:
        if self._retry_at_ms is not None and now_ms < self._retry_at_ms:
            return []
        try:
            for kept in self.reports.unsent():
                await self._send(kept)
            day = local_day(now_ms, self.tz)
            if now_ms >= self._at_ms(day) and self.reports.get(day.isoformat()) is None:
                await self._send(await self._build(day, now_ms))
        except Exception:
            self._retry_at_ms = now_ms + RETRY_MS  # never a busy loop on a failing store
            raise
        self._retry_at_ms = None
        return []

    async def _build(self, day: date, now_ms: int) -> StoredReport:
        span = report_span(day, self.at, self.tz)
        path = self.store_path

        def read() -> tuple[
            list[dict[str, object]], dict[str, str], report_reads.StoreFigures | str
        ]:
            try:
                events = report_reads.events_between(
                    path, span.since_ms, span.until_ms, REPORT_TYPES
                )
                before = report_reads.last_type_before(path, span.since_ms, HEALTH_TYPES)
                return events, before, report_reads.store_figures(path)
            except (report_reads.StoreUnreadable, OSError) as exc:
                return [], {}, str(exc)

        events, before, store = await asyncio.to_thread(read)
        rules = RulesFigures(
            ledger=self.ledger.entries(),
            ledger_summary=self.ledger.summary(now_ms),
            open_violations=self.state.violations(),
            patrols=[
                {
                    "plan": p.plan.id,
                    "rounds_done": p.rounds_done(now_ms),
                    "rounds_required": p.plan.rounds_required,
                    "latest": p.plan.latest.isoformat("minutes"),
                }
                for p in self.patrols
            ],
            drills=self.drills.figures(now_ms),
        )
        body = build_report(
            span,
            self.tz,
            events=events,
            health_before=before,
            store=store,
            live=self.live(),
            rules=rules,
        )
        event = new_event(
            REPORT_TYPE, GATEWAY_DEVICE, severity=Severity.INFO, occurred_at_ms=now_ms
        )
        kept = StoredReport(day.isoformat(), now_ms, event.id, body, sent=False)
        self.reports.put(kept)
        return kept

    async def _send(self, kept: StoredReport) -> None:
        try:
            stored = await asyncio.to_thread(report_reads.has_event, self.store_path, kept.event_id)
        except report_reads.StoreUnreadable:
            stored = False  # the log cannot tell: store it (at worst twice, same id)
        if not stored:
            await self.append(
                Event(
                    id=kept.event_id,
                    type=REPORT_TYPE,
                    severity=Severity.INFO,
                    device=GATEWAY_DEVICE,
                    occurred_at_ms=kept.built_ms,
                    data=kept.body,
                )
            )
            self.sent += 1
        self.reports.mark_sent(kept.day)
        log.info("daily_report_sent", day=kept.day, event_id=kept.event_id, already_stored=stored)

    def _at_ms(self, day: date) -> int:
        return int(datetime.combine(day, self.at, tzinfo=self.tz).timestamp() * 1000)
