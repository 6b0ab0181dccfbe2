"""Panic-alarm latching (GB 50394): latched until a person resets it; repeats are recorded; the
lamp follows the latch; latches survive a restart. The lamp is our own seam, recorded here."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from drivers.base import DeviceTimeout
from gateway import contract
from gateway.events import DeviceRef
from gateway.outbox import Outbox
from gateway.routing import Router
from gateway.rules.latch import AlarmLatches, BoxInfo, UnknownAlarm

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))
BOXES = {
    "box": BoxInfo(DeviceRef("box", "alarm_box", "north"), {0: "desk", 1: "remote"}),
    "drillbox": BoxInfo(DeviceRef("drillbox", "alarm_box", "gym"), {}, drill=True),
}


class Outputs:
    def __init__(self, fail: bool = False) -> None:
        self.state: dict[str, bool] = {}
        self.fail = fail

    async def __call__(self, name: str, on: bool) -> None:
        if self.fail:
            raise DeviceTimeout("no answer")
        self.state[name] = on


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    async with Outbox(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as box:
        yield box


async def test_press_latches_repeat_is_recorded_reset_unlatches(outbox: Outbox) -> None:
    latches = AlarmLatches(outbox, BOXES)
    lamp = Outputs()
    latches.attach_feedback("box", lamp)
    await latches.panic_pressed("box", 0, presses=1, occurred_at_ms=1)
    assert lamp.state == {"lamp": True, "siren": True}
    [latch] = latches.open_alarms
    await latches.panic_pressed("box", 0, presses=2, occurred_at_ms=2)
    assert latches.open_alarms[0].presses == 3
    await latches.panic_pressed("box", 1, presses=1, occurred_at_ms=3)  # another button: new alarm
    assert len(latches.open_alarms) == 2
    await latches.reset(latch.alarm_id, by="guard wang", occurred_at_ms=4)
    assert lamp.state["lamp"] is True  # button 1 is still latched
    await latches.reset_pressed("box", occurred_at_ms=5)
    assert latches.open_alarms == []
    assert lamp.state == {"lamp": False, "siren": False}

    events = [contract.decode_event(r.body) for r in await outbox.claim("police", 100)]
    assert [e["type"] for e in events] == [
        "alarm.panic",
        "alarm.panic_repeated",
        "alarm.panic",
        "alarm.reset",
        "alarm.reset",
    ]
    assert events[0]["id"] == events[0]["alarm_id"] == latch.alarm_id
    assert events[1]["alarm_id"] == latch.alarm_id and events[1]["data"]["presses"] == 3
    assert events[3]["data"]["reset_by"] == "guard wang"
    assert events[4]["data"]["reset_by"] == "reset input"


async def test_reset_of_unknown_alarm_is_refused(outbox: Outbox) -> None:
    latches = AlarmLatches(outbox, BOXES)
    with pytest.raises(UnknownAlarm):
        await latches.reset("nope", by="x", occurred_at_ms=1)


async def test_latches_survive_restart_and_relight_the_lamp(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    routes = Router({"police": ["*"]})
    async with Outbox(path, SITE, routes) as outbox:
        latches = AlarmLatches(outbox, BOXES)
        await latches.panic_pressed("box", 1, presses=1, occurred_at_ms=1)
    async with Outbox(path, SITE, routes) as outbox:
        latches = AlarmLatches(outbox, BOXES)
        lamp = Outputs()
        latches.attach_feedback("box", lamp)
        await latches.restore()
        assert [(a.button, a.presses) for a in latches.open_alarms] == [(1, 1)]
        assert lamp.state["lamp"] is True
        # The contact still closed at the first poll after restart is not a new press.
        await latches.panic_pressed("box", 1, presses=1, occurred_at_ms=2, held_at_start=True)
        assert latches.open_alarms[0].presses == 1


async def test_button_held_at_start_without_a_latch_raises_an_alarm(outbox: Outbox) -> None:
    latches = AlarmLatches(outbox, BOXES)
    await latches.panic_pressed("box", 0, presses=1, occurred_at_ms=1, held_at_start=True)
    assert len(latches.open_alarms) == 1


async def test_a_lamp_that_cannot_be_lit_does_not_lose_the_alarm(outbox: Outbox) -> None:
    latches = AlarmLatches(outbox, BOXES)
    latches.attach_feedback("box", Outputs(fail=True))
    await latches.panic_pressed("box", 0, presses=1, occurred_at_ms=1)
    assert len(latches.open_alarms) == 1
    assert [r.type for r in await outbox.claim("police", 10)] == ["alarm.panic"]


async def test_drill_boxes_mark_their_alarms_as_drills(outbox: Outbox) -> None:
    latches = AlarmLatches(outbox, BOXES)
    await latches.panic_pressed("drillbox", 0, presses=1, occurred_at_ms=1)
    [row] = await outbox.claim("police", 10)
    assert contract.decode_event(row.body)["drill"] is True
