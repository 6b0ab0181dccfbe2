"""The daemon's `GuardSource` (gateway/guard_source.py): what the page shows follows the real
latches and path board (a real outbox in a temporary file), the version grows and `changed`
wakes on a change within one poll, and the guard's actions go through the latches with who did
them: a reset needs a reason until the police acknowledged, the siren is silenced for the box's
open alarms and stays off, a test press is refused (the daemon has no test mode yet)."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from test_latch import Outputs, deliver_to, stored, wait_stored

from drivers.alarm_box import OutputPattern
from edge_config.loader import parse_config
from edge_config.models import GatewayConfig
from gateway.alarms.latch import AlarmLatches, BoxInfo
from gateway.core import contract
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef
from gateway.guard.view import ActionRefused
from gateway.guard_source import POLL_S, DaemonGuardSource
from gateway.store.routing import Router
from gateway.store.storage import Storage
from gateway.uplink.paths import PathBoard

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))
CONFIG = """
[site]
school_id = "school-1"
gateway_id = "gate-1"
[store]
path = "{store}"
[destinations.police]
host = "127.0.0.1"
client_id = "g1-police"
[destinations.bureau]
host = "127.0.0.1"
client_id = "g1-bureau"
[lines.io]
type = "modbus_tcp"
host = "127.0.0.1"
[devices.box]
kind = "alarm_box"
line = "io"
location = "东门岗亭"
[[devices.box.buttons]]
input = 0
"""


class Parts:
    def __init__(self, config: GatewayConfig, store: Storage, clock: FakeClock) -> None:
        self.outputs = Outputs()
        self.latches = AlarmLatches(
            store.alarms, {"box": BoxInfo(DeviceRef("box", "alarm_box", "东门岗亭"), {0: "desk"})}
        )
        self.latches.attach_feedback("box", self.outputs)
        self.paths = PathBoard(
            ["police", "bureau"], store.outbox, SITE, report_after_s=60, clock=clock
        )
        self.config = config
        self.store = store
        self.clock = clock
        self.source = DaemonGuardSource(
            config, self.latches, self.paths, {}, clock, clock_synchronised=lambda: None
        )

    async def press(self) -> str:
        await self.latches.panic_pressed("box", 0, presses=1, occurred_at_ms=self.clock.wall_ms())
        return self.latches.open_alarms[-1].alarm_id


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    data = tomllib.loads(CONFIG.replace("{store}", str(tmp_path / "o.db")))
    config = parse_config(data, tmp_path / "schoolgate.toml")
    async with Storage(tmp_path / "o.db", SITE, Router({"police": ["*"], "bureau": ["*"]})) as box:
        yield Parts(config, box, FakeClock())


async def test_an_alarm_shows_stored_then_at_the_police_then_acknowledged_by_whom(
    parts: Parts,
) -> None:
    source = parts.source
    assert source.snapshot().alarms == ()
    alarm_id = await parts.press()
    source.refresh()
    (alarm,) = source.snapshot().alarms
    assert (alarm.alarm_id, alarm.box, alarm.place, alarm.stage) == (
        alarm_id,
        "box",
        "东门岗亭",
        "stored",
    )
    await deliver_to(parts.store, parts.latches, "police")
    source.refresh()
    assert source.snapshot().alarms[0].stage == "at_police"
    await parts.latches.acknowledge(
        alarm_id, by="Officer Li", issuer="police-console", command_id="c1", occurred_at_ms=5
    )
    source.refresh()
    alarm = source.snapshot().alarms[0]
    assert (alarm.stage, alarm.acknowledged_by) == ("acknowledged", "Officer Li")
    assert alarm.acknowledged_at is not None


async def test_changed_wakes_within_one_poll_of_a_change_and_not_without_one(
    parts: Parts,
) -> None:
    source = parts.source
    watcher = asyncio.create_task(source.run(), name="guard:watch")
    try:
        start = source.version
        waiting = asyncio.create_task(source.changed(start))
        await parts.clock.run_for(POLL_S * 4)
        assert not waiting.done()  # four polls, nothing changed: no version bump
        await parts.press()
        await parts.clock.run_for(POLL_S)
        assert await asyncio.wait_for(waiting, 1) == start + 1
        parts.paths.up("police")
        await parts.clock.run_for(POLL_S)
        snap = source.snapshot()
        assert snap.version == start + 2
        assert {p.destination: p.state for p in snap.paths} == {"police": "up", "bureau": "down"}
    finally:
        watcher.cancel()
        await asyncio.wait([watcher])


async def test_reset_needs_a_reason_until_acknowledged_and_is_recorded_with_who(
    parts: Parts,
) -> None:
    alarm_id = await parts.press()
    with pytest.raises(ActionRefused) as refused:
        await parts.source.reset(alarm_id, "王师傅", None)
    assert refused.value.reason == "reason_required"
    assert len(parts.latches.open_alarms) == 1
    with pytest.raises(ActionRefused) as unknown:
        await parts.source.reset("no-such-alarm", "王师傅", "x")
    assert unknown.value.reason == "unknown_alarm"
    parts.source.refresh()
    version = parts.source.version
    await parts.source.reset(alarm_id, "王师傅", "误按 已核实")
    assert parts.source.version > version  # an action shows at once, without waiting a poll
    assert parts.source.snapshot().alarms == ()
    (reset,) = await stored(parts.store, "alarm.reset")
    assert reset["data"]["reset_by"] == "王师傅"
    assert reset["data"]["reason"] == "误按 已核实"


async def test_reset_without_a_reason_once_the_police_acknowledged(parts: Parts) -> None:
    alarm_id = await parts.press()
    await parts.latches.acknowledge(
        alarm_id, by="Officer Li", issuer="police-console", command_id="c1", occurred_at_ms=5
    )
    await parts.source.reset(alarm_id, "王师傅", None)
    assert parts.latches.open_alarms == []


async def test_silence_siren_turns_it_off_for_the_alarm_and_it_stays_off(parts: Parts) -> None:
    latches = AlarmLatches(
        parts.store.alarms,
        {"box": BoxInfo(DeviceRef("box", "alarm_box", "东门岗亭"), {0: "desk"})},
        ack_timeout_s=0.05,
    )
    latches.attach_feedback("box", parts.outputs)
    # The same parts, with a short acknowledgement timeout.
    parts.source = DaemonGuardSource(parts.config, latches, parts.paths, {}, parts.clock)
    parts.latches = latches
    with pytest.raises(ActionRefused) as nothing_open:
        await parts.source.silence_siren("box", "王师傅")
    assert nothing_open.value.reason == "not_allowed_now"
    alarm_id = await parts.press()
    timer = asyncio.create_task(latches.run(), name="escalation")
    try:
        await parts.outputs.wait("siren", OutputPattern.STEADY)
        await wait_stored(parts.store, "alarm.escalated")
        parts.source.refresh()
        assert parts.source.snapshot().alarms[0].stage == "escalated"
        await parts.source.silence_siren("box", "王师傅")
        assert parts.outputs.state["siren"] is OutputPattern.OFF
        # A later change of the alarm (the police acknowledge) does not sound it again.
        await latches.acknowledge(
            alarm_id, by="Officer Li", issuer="police-console", command_id="c1", occurred_at_ms=5
        )
        assert parts.outputs.state["siren"] is OutputPattern.OFF
        assert parts.outputs.state["lamp"] is OutputPattern.STEADY
    finally:
        timer.cancel()
        await asyncio.wait([timer])
    (silenced,) = await stored(parts.store, "alarm.siren_silenced")
    assert (silenced["data"]["by"], silenced["alarm_id"]) == ("王师傅", alarm_id)
    assert len(latches.open_alarms) == 1  # still latched


async def test_a_test_press_is_refused_while_the_daemon_has_no_test_mode(parts: Parts) -> None:
    with pytest.raises(ActionRefused) as no_mode:
        await parts.source.test_press("box", "王师傅")
    assert no_mode.value.reason == "no_test_mode"
    with pytest.raises(ActionRefused) as no_box:
        await parts.source.test_press("gate_doors", "王师傅")
    assert no_box.value.reason == "unknown_box"
    assert parts.latches.open_alarms == []


def test_an_unreadable_box_clock_is_unknown_not_unsynchronised(parts: Parts) -> None:
    assert parts.source.snapshot().clock.box_synchronised is None
    assert parts.source.snapshot().clock.gate_offset_s is None
