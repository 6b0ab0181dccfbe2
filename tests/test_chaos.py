"""The chaos soak, short version (issue 6): 45 seconds of the whole simulated gate under a known
stream of events while brokers restart, the gateway is SIGKILLed, devices go quiet, the RS-485
line gets garbage and CRC errors and the store's disk fills up. Then: nothing routed is lost,
a repeat is always the same event, every press is stored, alarms stay latched until the guard
resets them, and each lane arrives in `seq` order. The latency is printed, never asserted.
`bench/chaos --minutes N` is the long version (simulators/chaos.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.chaos import FAULT_KINDS, ChaosSettings, run_chaos

SEED = 20261124
pytestmark = [pytest.mark.long(50), pytest.mark.timeout(150)]  # 45 s of chaos, start, drain, checks


async def test_45_seconds_of_chaos_lose_nothing(tmp_path: Path) -> None:
    report = await run_chaos(
        ChaosSettings(seconds=45, seed=SEED, fault_gap_s=(1.0, 3.0)), tmp_path / "chaos"
    )
    print(f"\nchaos soak, seed {SEED}:\n{report.text()}")
    assert report.failures() == []
    assert report.lost_total == 0
    assert sum(report.pending_at_end.values()) == 0
    assert report.duplicate_mismatches == []
    assert report.presses_missing == 0
    assert report.latch_violations == []
    assert report.order_violations == []
    # The soak proves something only if it did cause events and faults of every kind.
    assert sum(report.presses_made) >= 10
    assert report.alarms_raised >= 3 and report.alarms_reset >= 1
    assert set(report.faults) == set(FAULT_KINDS), report.faults
    assert report.delivered["police"] == report.routed["police"] > 0
    assert report.delivered["bureau"] == report.routed["bureau"] > report.routed["police"]
