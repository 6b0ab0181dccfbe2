"""`schoolgate demo --duration` runs the whole simulated gate and ends by itself with exit 0."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_runs_presses_and_reports_latency() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "demo", "--duration", "3", "--press-every", "0.3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "police  alarm.panic" in out and "bureau  alarm.panic" in out
    # Every device kind shows up: the alarm box, and the life at the gate between presses.
    assert "panic_box" in out and "bureau  access.card" in out
    assert "bollard_1, bollard_2, lane_sockets: Modbus RTU" in out
    # The guard's page is on, on loopback, and answered while the demo ran.
    assert re.search(r"guard page: http://127\.0\.0\.1:\d+/ \(answers; PIN \d+\)", out), out
    summary = re.search(r"(\d+) presses, every one delivered .* p50 [\d.]+ ms, p99 [\d.]+ ms", out)
    assert summary and int(summary.group(1)) >= 2, out
