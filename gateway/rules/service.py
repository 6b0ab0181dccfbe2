"""The rules in the daemon's TaskGroup: opens the rules' state on the store's file, loads the
calendar, builds the `RulesEngine` and runs it; and the tap that feeds it the drivers' events.

Owns the start-up of the rules layer and its failure policy: a store file it cannot open (yet)
is logged and tried again with a capped backoff, while the events that arrive meanwhile are
kept (up to `MAX_PENDING`, then the oldest are dropped and counted); nothing here can stop the
alarm path. It does not judge anything (`gateway.rules.engine` and the blocks do).

The calendar was validated by the config loader (`edge_config.rules.rules_errors`); it is read
again here, so a file changed since then is refused at start-up with the same messages.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import structlog

from edge_config.calendar import load_calendar
from edge_config.rules import RulesConfig
from gateway.core.backoff import Backoff
from gateway.core.events import Event
from gateway.rules.calendar import SchoolCalendar
from gateway.rules.engine import RulesContext, RulesEngine
from gateway.rules.sqlite_state import SqliteRulesState

log = structlog.get_logger(__name__)

MAX_PENDING = 10_000

Writer = Callable[[Event], Awaitable[Event]]


class RulesService:
    def __init__(
        self,
        rules: RulesConfig,
        *,
        config_dir: Path,
        store_path: Path,
        tz: ZoneInfo,
        ctx: RulesContext,
    ) -> None:
        self._rules = rules
        self._calendar = SchoolCalendar(load_calendar(rules.calendar_path(config_dir)), tz)
        self._store_path = store_path
        self._ctx = ctx
        self._pending: list[Event] = []
        self.dropped = 0
        self.engine: RulesEngine | None = None

    def on_stored(self, event: Event) -> None:
        if self.engine is not None:
            self.engine.on_stored(event)
            return
        if len(self._pending) >= MAX_PENDING:
            self._pending.pop(0)
            self.dropped += 1
        self._pending.append(event)

    def tap(self, write: Writer) -> Writer:
        """`write` (the outbox's emit or append), and then the event to the rules."""

        async def tapped(event: Event) -> Event:
            stored = await write(event)
            self.on_stored(stored)
            return stored

        return tapped

    async def run(self) -> None:
        state = await self._open_state()
        try:
            engine = RulesEngine(self._rules, self._calendar, state, self._ctx)
            for event in self._pending:
                engine.on_stored(event)
            self._pending.clear()
            self.engine = engine
            await engine.run()
        finally:
            state.close()

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
                await self._ctx.clock.sleep(delay_s)
