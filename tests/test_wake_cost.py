"""bench/wake_cost.py and the wake-up count in bench/procstat.py: what the footprint phase uses to
explain idle CPU as wake-ups a second times the CPU each costs (issue 16)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from tests_support import BENCH, load_bench


def test_every_sleep_of_a_process_is_a_wake_up() -> None:
    procstat = load_bench("procstat")
    before = procstat.wakeups(os.getpid())
    for _ in range(10):
        time.sleep(0.002)
    assert procstat.wakeups(os.getpid()) - before >= 10


def test_the_probe_gives_the_cpu_of_one_wake_up_with_and_without_the_event_loop() -> None:
    result = load_bench("wake_cost").measure(count=20, interval_ms=2.0)
    assert result["count"] == 20 and result["interval_ms"] == 2.0
    assert result["epoll_us_per_wakeup"] > 0 and result["asyncio_us_per_wakeup"] > 0


def test_a_probe_of_no_wake_ups_is_refused_with_a_message() -> None:
    done = subprocess.run(
        [sys.executable, str(BENCH / "wake_cost.py"), "--count", "0"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 2
    assert "--count must be at least 1" in done.stderr and "Traceback" not in done.stderr
