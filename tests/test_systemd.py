"""The systemd unit is valid and never gives the police path up (no start limit, restart on any
exit, each stop's reason logged), and the daemon speaks sd_notify: READY=1 once it can take
alarms, WATCHDOG=1 while its event loop turns, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
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


def unit_directives() -> dict[tuple[str, str], list[str]]:
    """(section, key) -> its values in the unit file, in order (a key may repeat)."""
    directives: dict[tuple[str, str], list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        directives.setdefault((section, key.strip()), []).append(value.strip())
    return directives


def test_unit_never_gives_up_restarting() -> None:
    """A crash loop must not end in a "failed" unit: systemd's default start limit (5 starts in
    10 s) would stop the gateway for good. Read from the file, since verify accepts both."""
    directives = unit_directives()
    assert directives[("Unit", "StartLimitIntervalSec")] == ["0"]
    assert ("Service", "StartLimitBurst") not in directives
    assert directives[("Service", "Restart")] == ["always"]
    restart_s = float(directives[("Service", "RestartSec")][0])
    assert 0 < restart_s <= 5
    # systemd 252 here and on Debian 12 / Raspberry Pi OS bookworm: no RestartSteps (254+).
    assert ("Service", "RestartSteps") not in directives
    stop_post = directives[("Service", "ExecStopPost")]
    assert stop_post == ["/opt/schoolgate/venv/bin/schoolgate service-stopped"]


def test_service_stopped_logs_the_reason_of_each_stop() -> None:
    """What ExecStopPost runs: one JSON line with systemd's SERVICE_RESULT, EXIT_CODE and
    EXIT_STATUS; a warning unless the run ended cleanly."""
    schoolgate = str(Path(sys.executable).parent / "schoolgate")
    cases = {
        ("exit-code", "exited", "1"): "warning",
        ("signal", "killed", "KILL"): "warning",
        ("watchdog", "killed", "ABRT"): "warning",
        ("success", "exited", "0"): "info",
    }
    for (result, code, status), level in cases.items():
        env = {**os.environ, "SERVICE_RESULT": result, "EXIT_CODE": code, "EXIT_STATUS": status}
        done = subprocess.run(
            [schoolgate, "service-stopped"], env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        (line,) = done.stderr.splitlines()
        logged = json.loads(line)
        assert logged["event"] == "service_stopped" and logged["level"] == level
        assert (logged["result"], logged["exit_code"], logged["exit_status"]) == (
            result,
            code,
            status,
        )


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
