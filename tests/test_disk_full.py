"""The box's own disk fills up (ENOSPC). A real tmpfs of 600 KiB is mounted in a
private mount namespace (`unshare -rm`, no root needed where user namespaces are enabled, as on
Debian and Raspberry Pi OS). An alarm pressed then still reaches the broker, the fault is raised,
and writing resumes when space returns, with the alarm written back to disk."""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
from pathlib import Path

import pytest

from simulators.broker import MosquittoBroker
from simulators.listener import listen

CHILD = Path(__file__).parent / "diskfull_child.py"
pytestmark = pytest.mark.timeout(90)


async def test_alarm_reaches_the_broker_while_the_disk_is_full(
    tmp_path: Path, police_broker: MosquittoBroker
) -> None:
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is on every Debian system"
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    async with listen("police", police_broker.host, police_broker.port) as police:
        proc = await asyncio.create_subprocess_exec(
            unshare,
            "-rm",
            sys.executable,
            str(CHILD),
            str(mountpoint),
            str(police_broker.port),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=Path(__file__).parent.parent,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 80)
        assert proc.returncode == 0, err.decode()[-3000:]
        steps = {s["step"]: s for s in map(json.loads, out.decode().splitlines())}
        arrived = await police.wait_event(lambda e: e["id"] == steps["alarm"]["id"], timeout_s=5)
    assert steps["alarm"]["degraded"] is True, steps  # the alarm went through memory
    assert steps["delivered"]["pending"] == 0
    assert steps["recovered"]["degraded"] is False
    assert steps["final"]["alarm_on_disk"] == 1
    assert (
        steps["final"]["types"]
        == [
            "gateway.storage_fault",
            "alarm.panic",
            "gateway.storage_recovered",
        ]
        or steps["final"]["types"][0] == "gateway.storage_fault"
    )
    assert arrived["type"] == "alarm.panic"
