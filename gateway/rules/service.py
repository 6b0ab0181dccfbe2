"""The rules in the daemon's TaskGroup: opens the rules' state on the store's file, loads the
calendar, builds the `RulesEngine` and runs it; and the hook that feeds it every stored event.

Owns the start-up of the rules layer and its failure policy: a store file it cannot open (yet)
is logged and tried again with a capped backoff, while the events that arrive meanwhile are
kept (up to `MAX_PENDING`, then the oldest are dropped and counted); nothing here can stop the
alarm path. It does not judge anything (`gateway.rules.engine` and the blocks do).

The calendar was validated by the config loader (`edge_config.rules.rules_errors`); it is read
again here, so a file changed since then is refused at start-up with the same messages.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from edge_config.calendar import load_calendar
from edge_config.rules import RulesConfig
from gateway.core.backoff import Backoff
from gateway.core.events import Event
from gateway.rules.calendar import SchoolCalendar
from gateway.rules.daily_report import DailyReporter
from gateway.rules.drills import DrillQuarters
from gateway.rules.engine import DevicePolled, RulesEngine, RulesLinks
from gateway.rules.ledger import LedgerError
from gateway.rules.reactions import PanicReactions
from gateway.rules.report_store import SqliteReports
from gateway.rules.sqlite_state import SqliteRulesState
from gateway.rules.today import RulesToday

log = structlog.get_logger(__name__)

MAX_PENDING = 10_000


class RulesService:
    def __init__(
        self,
        rules: RulesConfig,
        links: RulesLinks,
        *,
        config_dir: Path,
        store_path: Path,
        tz: ZoneInfo,
    ) -> None:
        self._rules = rules
        self._links = links
        self._tz = tz
        command, siren = links.command, links.siren
        self.reactions = (
            None
            if rules.panic is None or command is None or siren is None
            else PanicReactions(
                rules.panic,
                links.devices,
                links.clock,
                emit=links.emit,
                command=command,
                siren=siren,
            )
        )
        """Panic reactions: their own task, which needs no rule state (it never waits for it)."""
        self._calendar = SchoolCalendar(load_calendar(rules.calendar_path(config_dir)), tz)
        self._store_path = store_path
        self._pending: list[Event | DevicePolled] = []
        self.dropped = 0
        self.engine: RulesEngine | None = None

    def today(self) -> RulesToday | None:
        """What the guard's page shows of the rules; None until the engine runs."""
        return None if self.engine is None else self.engine.today()

    def on_stored(self, event: Event) -> None:
        """The outbox stored `event` (its `on_stored` hook): to the engine, never blocking."""
        if self.reactions is not None:
            self.reactions.on_stored(event)
        self._take(event)

    def on_device_ready(self, device_id: str) -> None:
        """A driver's first poll is done (after the events it found)."""
        self._take(DevicePolled(device_id))

    def _take(self, item: Event | DevicePolled) -> None:
        if self.engine is not None:
            if isinstance(item, DevicePolled):
                self.engine.on_device_ready(item.device_id)
            else:
                self.engine.on_stored(item)
            return
        if len(self._pending) >= MAX_PENDING:
            self._pending.pop(0)
            self.dropped += 1
        self._pending.append(item)

    async def close_ledger(self, entry_id: str, *, by: str, note: str) -> None:
        if self.engine is None:
            raise LedgerError("the rules' state is not open yet: try again in a moment")
        await self.engine.close_ledger(entry_id, by=by, note=note)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            if self.reactions is not None:
                tg.create_task(self.reactions.run(), name="rules:panic-reactions")
            tg.create_task(self._run_engine(), name="rules:engine")

    async def _run_engine(self) -> None:
        state = await self._open_state()
        reports: SqliteReports | None = None
        try:
            engine = RulesEngine(self._rules, self._calendar, state, self._links)
            drills = DrillQuarters(state, self._tz, self._rules.drills.warn_days_before_quarter_end)
            engine.add_block(drills)
            reports = self._add_daily_report(engine, state, drills)
            self.engine = engine
            pending, self._pending = self._pending, []
            for item in pending:
                self._take(item)
            await engine.run()
        finally:
            state.close()
            if reports is not None:
                reports.close()

    def _add_daily_report(
        self, engine: RulesEngine, state: SqliteRulesState, drills: DrillQuarters
    ) -> SqliteReports | None:
        config = self._rules.daily_report
        append, live = self._links.append, self._links.live
        if config is None or append is None or live is None:
            return None
        reports = SqliteReports(self._store_path)
        engine.add_block(
            DailyReporter(
                at=config.at,
                tz=self._tz,
                state=state,
                ledger=engine.ledger,
                patrols=engine.patrols,
                drills=drills,
                reports=reports,
                store_path=self._store_path,
                live=live,
                append=append,
            )
        )
        return reports

    async def _open_state(self) -> SqliteRulesState:
        backoff = Backoff(base_s=1.0, cap_s=60.0)
        while True:
            try:
                return SqliteRulesState(self._store_path)
            except sqlite3.Error as exc:
                delay_s = backoff.next_delay_s()
                log.error(
                    "rules_state_unavailable",
                    path=str(self._store_path),
                    error=str(exc),
                    retry_in_s=round(delay_s, 3),
                )
                await self._links.clock.sleep(delay_s)
