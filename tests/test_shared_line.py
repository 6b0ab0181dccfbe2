"""The alarm box and four other devices on one emulated 9600-baud RS-485 line, one of them dead.

Asserts what the scheduling guarantees, not how fast this machine is: every press is detected by
the first alarm-box read issued after it, the alarm box is polled several times as often as the
others, a dead unit never costs the alarm box more than one timeout between two of its polls, and
a dead device backs off and comes back when it answers. The latency numbers are measured by
`bench/shared_line.py`.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from simulators.shared_bus import ALARM_UNIT, SharedBus, shared_bus

pytestmark = pytest.mark.timeout(60)

PRESSES = 15
DEAD = 5
LIVE = (2, 3, 4)


async def press_and_detect(bus: SharedBus) -> float:
    """One press held until detected, then released and seen released; the latency in s."""
    issued_before = bus.line.issued[ALARM_UNIT]
    pressed_at = time.monotonic()
    bus.alarm_module.press(0)
    detection = await asyncio.wait_for(bus.recorder.detections.get(), timeout=5)
    # A read issued after the press cannot miss it; one issued before it may.
    assert detection.alarm_reads <= issued_before + 1
    bus.alarm_module.release(0)
    # Two more reads: the one in flight may have sampled before the release, the next one not.
    await bus.line.wait_completed(ALARM_UNIT, bus.line.completed[ALARM_UNIT] + 2)
    return detection.at - pressed_at


async def test_alarm_box_keeps_priority_on_a_shared_line_with_a_dead_unit() -> None:
    async with shared_bus(dead_units=(DEAD,)) as bus:
        await asyncio.wait_for(bus.alarm_ready.wait(), timeout=5)
        for unit in LIVE:
            await asyncio.wait_for(bus.pollers[unit].answered.wait(), timeout=5)
        await asyncio.wait_for(bus.pollers[DEAD].went_offline.wait(), timeout=5)
        latencies = [await press_and_detect(bus) for _ in range(PRESSES)]
        for unit in LIVE:  # the others still get the line
            await bus.line.wait_completed(unit, bus.line.completed[unit] + 2)
        trace = list(bus.line.trace)
        reads = dict(bus.line.completed)

    assert len(latencies) == PRESSES and bus.recorder.detections.empty()
    assert bus.recorder.events == []  # the box never went offline
    for unit in LIVE:
        assert reads[ALARM_UNIT] >= 2 * reads[unit], reads
        assert bus.pollers[unit].failures == 0
    # Backing off, the dead unit is asked far less often than the live ones.
    assert reads[DEAD] < min(reads[unit] for unit in LIVE), reads
    # Between two alarm-box polls the line served at most one failed request.
    failures_in_a_row = 0
    for transaction in trace:
        if transaction.unit == ALARM_UNIT:
            assert transaction.ok
            failures_in_a_row = 0
        elif not transaction.ok:
            failures_in_a_row += 1
            assert transaction.unit == DEAD and failures_in_a_row <= 1


async def test_dead_alarm_box_backs_off_and_is_back_when_it_answers() -> None:
    async with shared_bus(dead_units=()) as bus:
        await asyncio.wait_for(bus.alarm_ready.wait(), timeout=5)
        bus.alarm_module.silent = True
        await asyncio.wait_for(bus.recorder.wait_event("device.offline"), timeout=5)
        # While it is offline, the live devices share the line and the box is asked rarely.
        before = dict(bus.line.completed)
        for unit in LIVE:
            await bus.line.wait_completed(unit, before[unit] + 15)
        attempts_offline = bus.line.completed[ALARM_UNIT] - before[ALARM_UNIT]
        bus.alarm_module.silent = False
        await asyncio.wait_for(bus.recorder.wait_event("device.online"), timeout=5)
        # Back on its cadence: presses are detected again.
        await press_and_detect(bus)

    assert [e.type for e in bus.recorder.events] == ["device.offline", "device.online"]
    # On its 50 ms cadence (plus a 100 ms timeout each) it would have been asked about 22 times.
    assert attempts_offline < 12, attempts_offline
