"""The systemd unit is valid, and the daemon speaks sd_notify: READY=1 once it can take alarms,
WATCHDOG=1 while its event loop turns, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule, serve_tcp
from tests_support import GatewayProcess

UNIT = Path(__file__).parent.parent / "systemd" / "schoolgate.service"


def test_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of systemd on every Debian and Raspberry Pi OS"
    # Point the unit at this checkout's interpreter so verify can check the commands exist.
    unit = tmp_path / "schoolgate.service"
    unit.write_text(
        UNIT.read_text().replace("/opt/schoolgate/venv/bin", str(Path(sys.executable).parent))
    )
    result = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Type=notify" in UNIT.read_text() and "WatchdogSec=" in UNIT.read_text()


async def test_daemon_notifies_ready_watchdog_and_stopping(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    sock_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(sock_path))
    receiver.setblocking(False)
    loop = asyncio.get_running_loop()
    module = DiDoModule(unit_id=1)
    try:
        async with serve_tcp(module) as (_, port):
            gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
            # WATCHDOG_USEC of 0.2 s: a ping every 0.1 s.
            gateway.start(env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "200000"})
            seen: list[bytes] = []
            async with asyncio.timeout(15):
                while b"WATCHDOG=1" not in seen or seen.count(b"WATCHDOG=1") < 2:
                    seen.append(await loop.sock_recv(receiver, 256))
            assert seen[0] == b"READY=1"
            assert await gateway.stop() == 0
            async with asyncio.timeout(5):
                while seen[-1] != b"STOPPING=1":
                    seen.append(await loop.sock_recv(receiver, 256))
    finally:
        receiver.close()
