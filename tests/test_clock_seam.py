"""The scenario runner's clock seam (`SCHOOLGATE_TEST_WALL_START_MS`): the daemon's wall clock
starts at a set time, durations stay real; refused (exit 2, no traceback) where a real gate keeps
its store, and refused when the value is not epoch milliseconds."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from gateway.core.clock import (
    TEST_WALL_START_VAR,
    ClockSeamRefused,
    ShiftedClock,
    SystemClock,
    scenario_clock_from_env,
)

IN_TEMP = Path(tempfile.gettempdir()) / "schoolgate-seam" / "outbox.db"
START_MS = 1_796_000_000_000  # 2026-12-01, some days from the real clock either way


def test_without_the_variable_there_is_no_seam() -> None:
    assert scenario_clock_from_env({}, IN_TEMP) is None


def test_the_wall_clock_starts_at_the_set_time_and_monotonic_time_is_real() -> None:
    clock = scenario_clock_from_env({TEST_WALL_START_VAR: str(START_MS)}, IN_TEMP)
    assert isinstance(clock, ShiftedClock)
    real = SystemClock()
    # Read between two readings of the real clock: shifted by exactly the offset.
    before = real.wall_ms()
    shifted = clock.wall_ms()
    after = real.wall_ms()
    assert before + clock.offset_ms <= shifted <= after + clock.offset_ms
    assert clock.wall_ms() >= START_MS
    before_s = real.monotonic()
    assert before_s <= clock.monotonic() <= real.monotonic()  # not shifted


def test_refused_where_a_real_gate_keeps_its_store() -> None:
    with pytest.raises(ClockSeamRefused, match=f"{TEST_WALL_START_VAR} is a test seam, refused"):
        scenario_clock_from_env(
            {TEST_WALL_START_VAR: str(START_MS)}, Path("/var/lib/schoolgate/outbox.db")
        )


def test_refused_when_not_epoch_milliseconds() -> None:
    with pytest.raises(ClockSeamRefused, match="expected epoch milliseconds \\(got 'monday'\\)"):
        scenario_clock_from_env({TEST_WALL_START_VAR: "monday"}, IN_TEMP)


CONFIG = """\
[site]
school_id = "school-7"
gateway_id = "gate-east"
timezone = "Asia/Shanghai"

[store]
path = "{store}"

[destinations.police]
host = "127.0.0.1"
port = 1
client_id = "p"

[destinations.bureau]
host = "127.0.0.1"
port = 1
client_id = "b"
"""


def test_the_daemon_refuses_the_seam_with_its_store_in_service(tmp_path: Path) -> None:
    config = tmp_path / "schoolgate.toml"
    config.write_text(CONFIG.format(store="/var/lib/schoolgate-never-made/outbox.db"))
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        env={**os.environ, TEST_WALL_START_VAR: str(START_MS)},
        capture_output=True,
        text=True,
        timeout=30,  # a daemon that started anyway fails the test here, it does not hang it
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"refused: {TEST_WALL_START_VAR} is a test seam" in result.stderr
    assert "Traceback" not in result.stderr
