"""Child for test_store_faults.py: a gateway's store, latches and police uplink, run in a process
of its own (as `nobody` for the permission cases, since the tests run as root). It starts on the
store it is given, whatever its fault, presses an alarm, and reports in JSON lines on stdout;
after the parent writes `fixed` on stdin it waits until the store is written back, the file's
pending alarm is delivered and its latch is open again, then reports and exits."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from zoneinfo import ZoneInfo

from drivers.base import PanicPress
from gateway import logsetup
from gateway.alarms.latch import AlarmLatches, BoxInfo
from gateway.core import contract
from gateway.core.backoff import Backoff
from gateway.core.events import DeviceRef, Severity, new_event
from gateway.store.routing import Router
from gateway.store.storage import Storage
from gateway.uplink import mqtt
from gateway.uplink.destination import Services, Uplink

SITE = contract.Site("school-1", "gate-1", ZoneInfo("UTC"))
ROUTES = Router({"police": ["lane:alarm", "alarm.*"], "bureau": ["*"]})
BOX = BoxInfo(DeviceRef("box", "alarm_box", "gate"), {0: "desk", 1: "window"})


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


async def until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    async with asyncio.timeout(timeout_s):
        # Bounded looks at the store: pending counts have nothing to await across the seam.
        while not await predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def main(db: Path, port: int, latched: list[str]) -> None:
    params = mqtt.BrokerParams("127.0.0.1", port, "storefault")
    async with Storage(db, SITE, ROUTES, recover_interval_s=0.05) as store:
        latches = AlarmLatches(store.alarms, {"box": BOX})
        await latches.restore()
        uplink = Uplink(
            "police",
            params,
            store.uplink,
            SITE,
            backoff=Backoff(0.05, 0.2),
            services=Services(on_sent=latches.delivered),
        )

        async def reopen() -> None:  # as gateway.app does
            await store.log.store_opened.wait()
            await latches.restore()

        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(uplink.run()),
                tg.create_task(store.run()),
                tg.create_task(reopen()),
            ]
            fault = next(
                (json.loads(r.body)["data"] for r in store.log.spill.rows.values()),
                None,
            )
            say(
                step="started",
                store_open=store.log.store_open,
                degraded=store.log.degraded,
                fault=fault,
            )
            await latches.panic_pressed(
                PanicPress("box", 1, presses=1, occurred_at_ms=time.time_ns() // 10**6)
            )
            new = latches.open_alarms[-1]

            async def delivered() -> bool:
                return await store.log.pending_count("police") == 0

            await until(delivered)
            say(step="delivered", alarm_id=new.alarm_id, seq=min(new.seqs))
            line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
            assert line.strip() == "fixed", line

            async def recovered() -> bool:
                return (
                    not store.log.degraded
                    and await store.log.pending_count("police") == 0
                    and all(a in {lt.alarm_id for lt in latches.open_alarms} for a in latched)
                )

            await until(recovered)
            after = await store.outbox.append(
                new_event("device.online", BOX.device, severity=Severity.INFO, occurred_at_ms=1)
            )
            say(
                step="recovered",
                open_alarms=[latch.alarm_id for latch in latches.open_alarms],
                lamps={lt.alarm_id: lt.lamp.name for lt in latches.open_alarms},
                seq_after=after.seq,
            )
            for task in tasks:
                task.cancel()


_LAZY_IMPORTS = ("concurrent.futures.thread", "encodings.idna", "encodings.ascii")
"""What asyncio, socket and paho import only when first used."""


def drop_to(user: str) -> None:
    """Become `user` (started as root). After every import: the interpreter may live where
    `user` cannot read (/root/.pyenv)."""
    import pwd  # noqa: PLC0415 - only needed here

    for lazy in _LAZY_IMPORTS:
        importlib.import_module(lazy)

    entry = pwd.getpwnam(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)


if __name__ == "__main__":
    logsetup.configure(fmt="json", level="debug")  # logs to stderr; stdout carries the report
    as_user = os.environ.get("STOREFAULT_AS_USER")
    if as_user:
        drop_to(as_user)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]))
