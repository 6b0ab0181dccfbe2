"""Panic reactions (issue 12, item 4): a latched panic alarm raises the bollards, locks down the
access controllers and sounds the siren; each action's result is a `rule.action`; a failed or
hanging action is reported (or still running) and never holds the alarm back. The store, the
outbox's `on_stored` hook and the latches are real; the device commands are our own seam."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from test_latch import ROUTES, SITE, Outputs, stored, wait_stored

from drivers.base import DeviceTimeout, PanicPress
from edge_config.rules import PanicConfig, RulesConfig, rules_errors
from gateway.alarms.latch import AlarmLatches, BoxInfo
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Event
from gateway.rules.reactions import PanicReactions
from gateway.store.storage import Storage

BOX = DeviceRef("box", "alarm_box", "north")
DRILL_BOX = DeviceRef("drillbox", "alarm_box", "gym")
BOLLARD_1 = DeviceRef("bollard-1", "bollard", "gate")
BOLLARD_2 = DeviceRef("bollard-2", "bollard", "gate")
ACCESS = DeviceRef("access-east", "access_controller", "east door")
DEVICES = {d.id: d for d in (BOX, DRILL_BOX, BOLLARD_1, BOLLARD_2, ACCESS)}
BOXES = {
    "box": BoxInfo(BOX, {0: "desk"}),
    "drillbox": BoxInfo(DRILL_BOX, {}, drill=True),
}
PANIC = PanicConfig.model_validate(
    {
        "action": [
            {"command": "emergency_raise", "devices": ["bollard-1", "bollard-2"]},
            {"command": "lockdown", "devices": ["access-east"]},
            {"command": "siren", "devices": ["box"]},
        ]
    }
)


class Devices:
    """The device commands a reaction sends (our seam): answered, failed, or held forever."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []
        self.fail: dict[str, Exception] = {}
        self.hang: set[str] = set()

    async def command(
        self, device_id: str, name: str, args: Mapping[str, object]
    ) -> dict[str, object]:
        self.sent.append((device_id, name))
        if device_id in self.hang:
            await asyncio.Event().wait()  # a bollard that never confirms
        if device_id in self.fail:
            raise self.fail[device_id]
        return {"position": "up"} if name == "emergency_raise" else {"lockdown": True}


@contextlib.asynccontextmanager
async def gate(
    tmp_path: Path, devices: Devices, panic: PanicConfig = PANIC
) -> AsyncIterator[tuple[Storage, AlarmLatches, Outputs, PanicReactions]]:
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        latches = AlarmLatches(store.alarms, BOXES)
        latches.attach_feedback("box", box := Outputs())
        reactions = PanicReactions(
            panic,
            DEVICES,
            FakeClock(),
            emit=store.outbox.append,
            command=devices.command,
            siren=latches.sound_siren,
        )
        store.outbox.on_stored = reactions.on_stored
        task = asyncio.create_task(reactions.run(), name="reactions")
        try:
            yield store, latches, box, reactions
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def actions_by_device(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["device"]["id"]: e for e in events}


async def test_a_panic_raises_the_bollards_locks_down_and_sounds_the_siren(
    tmp_path: Path,
) -> None:
    devices = Devices()
    async with gate(tmp_path, devices) as (store, latches, box, _):
        await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=1))
        [alarm] = await stored(store, "alarm.panic")
        actions = actions_by_device(await wait_stored(store, "rule.action", count=4))
        await box.wait("siren", box.state["siren"].STEADY)
    assert sorted(devices.sent) == [
        ("access-east", "lockdown"),
        ("bollard-1", "emergency_raise"),
        ("bollard-2", "emergency_raise"),
    ]
    assert set(actions) == {"bollard-1", "bollard-2", "access-east", "box"}
    for event in actions.values():
        assert event["data"]["ok"] is True
        assert event["data"]["rule"] == "panic"
        assert event["alarm_id"] == alarm["id"]
    assert actions["bollard-1"]["data"]["result"] == {"position": "up"}
    assert actions["box"]["data"]["result"] == {"siren": True}
    assert actions["access-east"]["seq"] > alarm["seq"]  # the alarm was stored first


async def test_a_failed_and_a_hanging_action_never_hold_back_the_alarm_or_the_others(
    tmp_path: Path,
) -> None:
    devices = Devices()
    devices.fail["bollard-1"] = DeviceTimeout("no answer from unit 3")
    devices.hang.add("bollard-2")
    async with gate(tmp_path, devices) as (store, latches, _box, reactions):
        await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=1))
        assert len(await stored(store, "alarm.panic")) == 1  # stored, queued for the police
        actions = actions_by_device(await wait_stored(store, "rule.action", count=3))
        assert actions["bollard-1"]["data"]["ok"] is False
        assert actions["bollard-1"]["data"]["error"] == "no answer from unit 3"
        assert actions["bollard-1"]["severity"] == "major"
        assert actions["access-east"]["data"]["ok"] is True
        assert "bollard-2" not in actions  # still waiting for its read-back
        # A second alarm meanwhile is latched and stored at once, like the first.
        await latches.panic_pressed(PanicPress("drillbox", 0, presses=1, occurred_at_ms=2))
        assert len(await stored(store, "alarm.panic")) == 2
        assert reactions.reacted == 0


async def test_a_box_without_a_siren_is_reported_as_a_failed_action(tmp_path: Path) -> None:
    devices = Devices()
    async with gate(tmp_path, devices) as (store, latches, box, _):
        box.wired = ("lamp",)
        await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=1))
        actions = actions_by_device(await wait_stored(store, "rule.action", count=4))
    assert actions["box"]["data"]["ok"] is False
    assert "no siren wired" in actions["box"]["data"]["error"]


async def test_a_drill_alarm_and_other_boxes_do_not_react_unless_configured(
    tmp_path: Path,
) -> None:
    devices = Devices()
    only_box = PANIC.model_copy(update={"boxes": ["box"], "during_drill": True})
    async with gate(tmp_path, devices, only_box) as (store, latches, _box, reactions):
        await latches.panic_pressed(PanicPress("drillbox", 0, presses=1, occurred_at_ms=1))
        await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=2))
        await wait_stored(store, "rule.action", count=4)
        assert reactions.reacted == 1  # the box's alarm, not the drill box's (not listed)
    devices = Devices()
    (tmp_path / "2").mkdir()
    async with gate(tmp_path / "2", devices) as (store, latches, _box, reactions):
        await latches.panic_pressed(PanicPress("drillbox", 0, presses=1, occurred_at_ms=1))
        await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=2))
        await wait_stored(store, "rule.action", count=4)  # the positive sign: box's reacted
        assert devices.sent.count(("access-east", "lockdown")) == 1  # the drill did not


@pytest.mark.parametrize(
    ("action", "error"),
    [
        ({"command": "lockdown", "devices": ["bollard-1"]}, "'lockdown' is not for a bollard"),
        ({"command": "siren", "devices": ["nowhere"]}, "no device 'nowhere'"),
    ],
)
def test_a_reaction_a_device_cannot_do_is_refused_by_the_config(
    tmp_path: Path, action: dict[str, Any], error: str
) -> None:
    (tmp_path / "calendar.toml").write_text(
        "year_start = 2026-09-01\nyear_end = 2027-08-31\n[weekdays]\n"
    )

    class Device:
        def __init__(self, kind: str) -> None:
            self.kind = kind

    rules = RulesConfig.model_validate(
        {"calendar_file": "calendar.toml", "panic": {"action": [action]}}
    )
    errors = rules_errors(rules, {d.id: Device(d.kind) for d in DEVICES.values()}, tmp_path)
    assert len(errors) == 1
    assert errors[0].startswith("rules.panic.action[0]")
    assert error in errors[0]


async def test_a_store_hook_that_raises_is_logged_and_the_alarm_is_stored(tmp_path: Path) -> None:
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:

        def broken(event: Event) -> None:
            raise RuntimeError("bug in a reader")

        store.outbox.on_stored = broken
        latches = AlarmLatches(store.alarms, BOXES)
        await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=1))
        assert len(await stored(store, "alarm.panic")) == 1
