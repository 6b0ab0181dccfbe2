"""Child for test_disk_full.py, run inside `unshare -rm` so it may mount a tiny tmpfs of its own:
fills the file system under the store, presses an alarm, frees space, and reports (JSON lines).
(A read-only remount is refused while SQLite holds the file open for writing, so the read-only
case is covered in test_store_forward.py through SQLite's own read-only error.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway import logsetup
from gateway.core import contract
from gateway.core.backoff import Backoff
from gateway.core.events import DeviceRef, Severity, new_event
from gateway.store.routing import Router
from gateway.store.storage import Storage
from gateway.uplink import mqtt
from gateway.uplink.destination import Uplink

BOX = DeviceRef("box", "alarm_box", "")


def say(**fields: object) -> None:
    print(json.dumps(fields), flush=True)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    with contextlib.suppress(OSError), filler.open("wb") as out:
        while True:
            out.write(b"\0" * 4096)
            out.flush()
    return filler


async def main(mountpoint: Path, port: int) -> None:
    site = contract.Site("school-1", "gate-1", ZoneInfo("UTC"))
    router = Router({"police": ["lane:alarm", "alarm.*"], "bureau": ["*"]})
    params = mqtt.BrokerParams("127.0.0.1", port, "diskfull")
    db = mountpoint / "outbox.db"
    async with Storage(db, site, router, recover_interval_s=0.1) as store:
        uplink = Uplink("police", params, store.uplink, site, backoff=Backoff(0.05, 0.2))
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(uplink.run()), tg.create_task(store.run())]
            filler = fill(mountpoint)
            # Write until the store notices (the WAL may still have room for a few rows).
            for i in range(5000):
                await store.outbox.append(
                    new_event(
                        "device.online",
                        BOX,
                        severity=Severity.INFO,
                        occurred_at_ms=i,
                        data={"pad": "x" * 500},
                    )
                )
                if store.log.degraded:
                    break
            alarm = await store.outbox.append(
                new_event(
                    "alarm.panic",
                    BOX,
                    severity=Severity.CRITICAL,
                    occurred_at_ms=int(time.time() * 1000),
                    alarm_id="disk",
                )
            )
            say(
                step="alarm",
                id=alarm.id,
                degraded=store.log.degraded,
                reason=store.log.degraded_reason,
            )
            deadline = time.monotonic() + 15
            # Bounded looks at the store: nothing here can be awaited across the seam.
            while await store.log.pending_count("police") and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            say(step="delivered", pending=await store.log.pending_count("police"))
            filler.unlink(missing_ok=True)
            while store.log.degraded and time.monotonic() < deadline + 10:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            say(step="recovered", degraded=store.log.degraded)
            for task in tasks:
                task.cancel()
    with sqlite3.connect(db) as conn:
        types = [
            t for (t,) in conn.execute("SELECT type FROM events WHERE type NOT LIKE 'device.%'")
        ]
        stored = conn.execute("SELECT COUNT(*) FROM events WHERE id=?", (alarm.id,)).fetchone()[0]
    conn.close()
    say(step="final", types=types, alarm_on_disk=stored)


if __name__ == "__main__":
    logsetup.configure(fmt="json", level="debug")  # logs to stderr; stdout carries the report
    where = Path(sys.argv[1])
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", str(where)], check=True)
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
