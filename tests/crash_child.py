"""Child process for test_crash.py: appends a stream of events to a store until it is killed,
printing each event id once its commit has returned (so the parent knows it is durable)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

from gateway.core import contract
from gateway.core.events import DeviceRef, Severity, new_event
from gateway.store.routing import Router
from gateway.store.storage import Storage

BOX = DeviceRef("box", "alarm_box", "")


async def main(path: Path) -> None:
    site = contract.Site("school-1", "gate-1", ZoneInfo("UTC"))
    router = Router({"police": ["lane:alarm"], "bureau": ["*"]})
    async with Storage(path, site, router) as store:
        print("ready", flush=True)
        n = 0
        while True:
            batch = [
                new_event(
                    "telemetry.t", BOX, severity=Severity.INFO, occurred_at_ms=n, data={"n": n + i}
                )
                for i in range(5)
            ]
            for event in batch:
                store.outbox.submit(event)  # group-committed with the alarm below
            alarm = new_event(
                "alarm.panic", BOX, severity=Severity.CRITICAL, occurred_at_ms=n, alarm_id=str(n)
            )
            await store.outbox.append(alarm)
            sys.stdout.write("".join(f"C {e.id}\n" for e in [*batch, alarm]))
            sys.stdout.flush()
            n += 6


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
