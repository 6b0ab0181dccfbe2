"""`schoolgate demo`: the whole simulated gate ends by itself with exit 0 after `--duration`, and
Ctrl-C sent to its whole process group (mosquitto and the gateway get it too) ends it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

DEMO = [sys.executable, "-m", "gateway", "demo"]


def test_demo_runs_presses_and_reports_latency() -> None:
    result = subprocess.run(
        [*DEMO, "--duration", "3", "--press-every", "0.3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "police  alarm.panic" in out and "bureau  alarm.panic" in out
    # The whole loop: the police desk's signed acknowledge, then the guard's reset, both ways.
    assert "bureau  alarm.acknowledged" in out and "police  alarm.reset" in out
    assert "reset on the guard page (PIN)" in out and "reset with the reset key" in out
    # Every device kind shows up: the alarm box, and the life at the gate between presses.
    assert "panic_box" in out and "bureau  access.card" in out
    assert "bollard_1, bollard_2, lane_sockets: Modbus RTU" in out
    # The guard's page is on, on loopback, and answered while the demo ran.
    assert re.search(r"guard page: http://127\.0\.0\.1:\d+/ \(answers; PIN \d+\)", out), out
    summary = re.search(r"(\d+) presses, every one delivered .* p50 [\d.]+ ms, p99 [\d.]+ ms", out)
    assert summary and int(summary.group(1)) >= 2, out


def _group_members(pgid: int) -> list[int]:
    """Live processes (not zombies) in process group `pgid`, read from /proc."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        state, group = fields[0], int(fields[2])
        if group == pgid and state != "Z":
            members.append(int(entry.name))
    return members


@pytest.mark.timeout(90)
def test_ctrl_c_to_the_process_group_ends_cleanly() -> None:
    """A terminal's Ctrl-C reaches every process of the foreground group at once: mosquitto and
    the gateway die with the demo. The demo must still print its summary, exit 0, leave no
    traceback, no temporary folder and no process behind."""
    # A short TMPDIR of its own: pytest's per-worker tmp_path is long enough to push the demo's
    # control socket past the 107 bytes a Unix socket path may have (check-config refuses it).
    with tempfile.TemporaryDirectory(prefix="sgdemo-", dir="/tmp") as short:
        _ctrl_c_ends_cleanly(Path(short))


def _ctrl_c_ends_cleanly(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    demo = subprocess.Popen(
        [*DEMO, "--press-every", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert demo.stdout is not None
    seen = []
    try:
        for line in demo.stdout:  # wait for a sign, not a time: the second press is done
            seen.append(line)
            if line.startswith("  press 2 "):
                break
        else:
            demo.wait(timeout=30)
            assert demo.stderr is not None
            pytest.fail(
                "the demo ended before its second press:\n"
                + "".join(seen)
                + demo.stderr.read()[-3000:]
            )
        os.killpg(demo.pid, signal.SIGINT)
        out, err = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
    out = "".join(seen) + out
    assert demo.returncode == 0, out + err
    assert "Traceback" not in out + err, out + err
    assert "stopped (Ctrl-C)" in out
    assert re.search(r"\d+ presses, every one delivered", out), out
    assert list(tmp_path.iterdir()) == [], "the demo left its temporary folder"
    # The demo waited for its children before it exited: nothing of its group may be alive.
    assert _group_members(demo.pid) == [], "processes left in the demo's group"
