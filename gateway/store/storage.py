"""The store put together: one durable log, its delivery queue and the outbox over one file.

Owns building the three parts and wiring them (the log's notices go to the outbox, which stores
them as events; the log's file opening goes to the queue, which wakes its senders), opening and
closing them in order, their two loops (`run`), and the views that hand an audience needing two
parts exactly its protocol (`records.AlarmStore`, `records.UplinkStore`,
`records.LogMaintenance`). It serves no audience itself: writers take `outbox`, the drain takes
`queue`, heartbeats and replay, latches and retention take their view, drivers `log.memory`.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from gateway.core import contract
from gateway.core.clock import Clock
from gateway.core.events import Event
from gateway.core.lifecycle import AsyncResource
from gateway.store.delivery import Deliveries
from gateway.store.log import DurableLog
from gateway.store.outbox import Marks, Outbox
from gateway.store.records import AlarmProgress, OpenAlarm, UplinkStore
from gateway.store.routing import Router

_T = TypeVar("_T")


class Storage(AsyncResource):
    def __init__(
        self,
        path: Path,
        site: contract.Site,
        router: Router,
        *,
        batch_delay_ms: int = 50,
        spill_limit: int = 50_000,
        recover_interval_s: float = 1.0,
        signer: Callable[[bytes], bytes] | None = None,
        marks: Marks | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.log = DurableLog(
            path,
            router.destinations,
            spill_limit=spill_limit,
            recover_interval_s=recover_interval_s,
            clock=clock,
        )
        self.queue = Deliveries(self.log, router.destinations)
        self.outbox = Outbox(
            self.log,
            self.queue,
            site,
            router,
            batch_delay_ms=batch_delay_ms,
            signer=signer,
            marks=marks,
            clock=clock,
        )
        self.log.on_notice = self.outbox.notice
        self.log.on_open = self.queue.file_opened
        self.alarms = AlarmView(self.outbox, self.log)
        self.uplink = UplinkStore(self.queue, self.log)
        self.maintenance = MaintenanceView(self.outbox, self.log)

    async def open(self) -> None:
        await self.log.open()
        await self.outbox.flush()  # what opening reported (a fault) is stored before anything

    async def recover(self) -> bool:
        """One try of the disk now (`log.recover`), its notice stored. True when recovered."""
        recovered = await self.log.recover()
        await self.outbox.flush()
        return recovered

    async def close(self) -> None:
        await self.outbox.flush()
        if self.log.degraded:
            await self.recover()  # a last try: what is only in memory is lost at exit
        await self.log.close()

    async def run(self) -> None:
        """The group commit and the retry of a failing disk, until cancelled."""
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.outbox.run(), name="outbox:flush")
            tg.create_task(self.log.run(), name="store:recovery")


class AlarmView:
    """`records.AlarmStore`: the latches write through the outbox and read the log."""

    def __init__(self, outbox: Outbox, log: DurableLog) -> None:
        self._outbox = outbox
        self._log = log

    async def append(self, event: Event, *, destinations: list[str] | None = None) -> Event:
        return await self._outbox.append(event, destinations=destinations)

    async def open_alarms(self) -> list[OpenAlarm]:
        return await self._log.open_alarms()

    async def alarm_progress(
        self, destination: str, alarm_ids: Sequence[str]
    ) -> list[AlarmProgress]:
        return await self._log.alarm_progress(destination, alarm_ids)


class MaintenanceView:
    """`records.LogMaintenance`: retention runs its statements on the log and reports through
    the outbox."""

    def __init__(self, outbox: Outbox, log: DurableLog) -> None:
        self._outbox = outbox
        self._log = log

    @property
    def store_open(self) -> bool:
        return self._log.store_open

    async def append(self, event: Event, *, destinations: list[str] | None = None) -> Event:
        return await self._outbox.append(event, destinations=destinations)

    async def call(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        return await self._log.call(fn)
