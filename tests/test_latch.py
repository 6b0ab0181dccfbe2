"""Panic-alarm latching (GB 50394) and the acknowledgement loop: latched until a person resets
it; repeats are recorded; the lamp tells how far the newest alarm has got (fast blinking, slow
after the police broker's PUBACK, steady once acknowledged, off at reset); an alarm nobody
acknowledges in time is escalated once, with the siren; all of it survives a restart. The lamp
and siren are our own seam (`FeedbackSetter`), recorded here; the store is a real one."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.alarm_box import OutputPattern
from drivers.base import DeviceTimeout, PanicPress
from gateway.alarms.latch import AlarmLatches, BoxInfo, UnknownAlarm
from gateway.core import contract
from gateway.core.clock import FakeClock
from gateway.core.events import DeviceRef, Lane, lane_of
from gateway.store.routing import Router
from gateway.store.storage import Storage

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))
BOXES = {
    "box": BoxInfo(DeviceRef("box", "alarm_box", "north"), {0: "desk", 1: "remote"}),
    "drillbox": BoxInfo(DeviceRef("drillbox", "alarm_box", "gym"), {}, drill=True),
}
ROUTES = Router({"police": ["*"], "bureau": ["*"]})
FAST, SLOW, STEADY, OFF = (
    OutputPattern.FAST,
    OutputPattern.SLOW,
    OutputPattern.STEADY,
    OutputPattern.OFF,
)


class Outputs:
    """A box's lamp and siren as the latch drives them; `wired` are the outputs it has."""

    def __init__(self, fail: bool = False, wired: tuple[str, ...] = ("lamp", "siren")) -> None:
        self.state: dict[str, OutputPattern] = {}
        self.fail = fail
        self.wired = wired
        self._changed = asyncio.Condition()

    async def __call__(self, name: str, pattern: OutputPattern) -> bool:
        if self.fail:
            raise DeviceTimeout("no answer")
        if name not in self.wired:
            return False
        async with self._changed:
            self.state[name] = pattern
            self._changed.notify_all()
        return True

    async def wait(self, name: str, pattern: OutputPattern, timeout_s: float = 5.0) -> None:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: self.state.get(name) is pattern)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@contextlib.asynccontextmanager
async def escalation_timer(latches: AlarmLatches) -> AsyncIterator[None]:
    task = asyncio.create_task(latches.run(), name="escalation-timer")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def stored(store: Storage, event_type: str | None = None) -> list[dict[str, Any]]:
    """Every stored event routed to the bureau (which never acknowledges anything here)."""
    events = [contract.decode_event(r.body) for r in await store.queue.claim("bureau", 1000)]
    return [e for e in events if event_type is None or e["type"] == event_type]


async def wait_stored(store: Storage, event_type: str, count: int = 1) -> list[dict[str, Any]]:
    """The stored events of `event_type`, once there are `count` of them (the escalation timer
    sounds the siren just before it stores its event)."""
    stored_one = store.queue.wakeup("bureau")  # set whenever a row is stored for the bureau
    async with asyncio.timeout(5):
        while True:
            stored_one.clear()
            if len(found := await stored(store, event_type)) >= count:
                return found
            await stored_one.wait()


async def deliver_to(store: Storage, latches: AlarmLatches, destination: str) -> None:
    """What an uplink does after its broker's PUBACK: mark the rows sent, tell the latches."""
    seqs = [row.seq for row in await store.queue.claim(destination, 1000)]
    await store.queue.mark_sent(destination, seqs)
    await latches.delivered(destination, seqs)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Storage]:
    async with Storage(tmp_path / "o.db", SITE, ROUTES) as store:
        yield store


async def test_press_latches_repeat_is_recorded_reset_unlatches(store: Storage) -> None:
    latches = AlarmLatches(store.alarms, BOXES)
    lamp = Outputs()
    latches.attach_feedback("box", lamp)
    await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=1))
    assert lamp.state == {"lamp": FAST, "siren": OFF}  # the siren waits for an escalation
    [latch] = latches.open_alarms
    await latches.panic_pressed(PanicPress("box", 0, presses=2, occurred_at_ms=2))
    assert latches.open_alarms[0].presses == 3
    await latches.panic_pressed(
        PanicPress("box", 1, presses=1, occurred_at_ms=3)
    )  # another button: new alarm
    assert len(latches.open_alarms) == 2
    await latches.reset(latch.alarm_id, by="guard wang", occurred_at_ms=4)
    assert lamp.state["lamp"] is FAST  # button 1 is still latched
    await latches.reset_pressed("box", occurred_at_ms=5)
    assert latches.open_alarms == []
    assert lamp.state == {"lamp": OFF, "siren": OFF}

    events = await stored(store)
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


async def test_lamp_fast_then_slow_at_the_police_then_steady_when_acknowledged_then_off(
    store: Storage,
) -> None:
    latches = AlarmLatches(store.alarms, BOXES)
    lamp = Outputs()
    latches.attach_feedback("box", lamp)
    await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=1_000))
    [alarm] = latches.open_alarms
    assert lamp.state["lamp"] is FAST

    await deliver_to(store, latches, "bureau")  # another broker's PUBACK does not count
    await latches.delivered("police", [9999])  # nor a seq that is no alarm's
    assert lamp.state["lamp"] is FAST
    await deliver_to(store, latches, "police")
    assert lamp.state["lamp"] is SLOW

    await latches.acknowledge(
        alarm.alarm_id,
        by="Officer Li",
        issuer="police-console",
        command_id="cmd-1",
        occurred_at_ms=4_500,
    )
    assert lamp.state == {"lamp": STEADY, "siren": OFF}
    await deliver_to(store, latches, "police")  # the acknowledgement's own PUBACK
    assert lamp.state["lamp"] is STEADY

    # A second alarm on the box: the lamp shows the newest one, then the older one again.
    await latches.panic_pressed(PanicPress("box", 1, presses=1, occurred_at_ms=5_000))
    assert lamp.state["lamp"] is FAST
    newest = latches.open_alarms[-1]
    await latches.reset(newest.alarm_id, by="guard wang", occurred_at_ms=6_000)
    assert lamp.state["lamp"] is STEADY
    await latches.reset(alarm.alarm_id, by="guard wang", occurred_at_ms=7_000)
    assert lamp.state["lamp"] is OFF

    [ack] = await stored(store, "alarm.acknowledged")
    assert ack["alarm_id"] == alarm.alarm_id and ack["severity"] == "info"
    assert ack["device"]["id"] == "box"
    assert ack["data"] == {
        "by": "Officer Li",
        "issuer": "police-console",
        "command_id": "cmd-1",
        "after_ms": 3_500,
    }
    assert lane_of("alarm.acknowledged") is Lane.STATE


async def test_acknowledge_of_an_unknown_alarm_is_refused_and_twice_is_once(
    store: Storage,
) -> None:
    latches = AlarmLatches(store.alarms, BOXES)
    with pytest.raises(UnknownAlarm):
        await latches.acknowledge("nope", by="x", issuer="k", command_id="c", occurred_at_ms=1)
    await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=1))
    [alarm] = latches.open_alarms
    for command_id in ("c1", "c2"):
        await latches.acknowledge(
            alarm.alarm_id, by="Li", issuer="k", command_id=command_id, occurred_at_ms=2
        )
    [ack] = await stored(store, "alarm.acknowledged")
    assert ack["data"]["command_id"] == "c1"
    await latches.reset(alarm.alarm_id, by="x", occurred_at_ms=3)
    with pytest.raises(UnknownAlarm):  # a reset alarm is no longer open
        await latches.acknowledge(
            alarm.alarm_id, by="Li", issuer="k", command_id="c3", occurred_at_ms=4
        )


async def test_reset_of_unknown_alarm_is_refused(store: Storage) -> None:
    latches = AlarmLatches(store.alarms, BOXES)
    with pytest.raises(UnknownAlarm):
        await latches.reset("nope", by="x", occurred_at_ms=1)


async def test_an_alarm_not_acknowledged_in_time_is_escalated_once_with_the_siren(
    store: Storage,
) -> None:
    clock = FakeClock()
    latches = AlarmLatches(store.alarms, BOXES, ack_timeout_s=30, clock=clock)
    box, drillbox = Outputs(), Outputs()
    latches.attach_feedback("box", box)
    latches.attach_feedback("drillbox", drillbox)
    async with escalation_timer(latches):
        # Acknowledged in time: never escalated. Raised first, so its deadline passes first.
        await latches.panic_pressed(
            PanicPress("drillbox", 0, presses=1, occurred_at_ms=clock.wall_ms())
        )
        [in_time] = latches.open_alarms
        await clock.run_for(10)
        await latches.acknowledge(
            in_time.alarm_id, by="Li", issuer="k", command_id="c", occurred_at_ms=clock.wall_ms()
        )
        await latches.panic_pressed(PanicPress("box", 1, presses=2, occurred_at_ms=clock.wall_ms()))
        # Just short of the deadline the timer has had its chance and sleeps on, nothing stored.
        await clock.run_for(29.999)
        assert clock.next_deadline() == pytest.approx(clock.monotonic() + 0.001)
        assert await stored(store, "alarm.escalated") == []
        assert box.state.get("siren", OFF) is OFF
        await clock.run_for(0.001)
        await box.wait("siren", STEADY)
        [escalated] = await wait_stored(store, "alarm.escalated")
    assert box.state["lamp"] is FAST  # not at the police yet: still fast
    assert drillbox.state == {"lamp": STEADY, "siren": OFF}

    late = latches.open_alarms[-1]
    assert escalated["alarm_id"] == late.alarm_id
    assert escalated["severity"] == "critical" and escalated["device"]["id"] == "box"
    assert lane_of("alarm.escalated") is Lane.ALARM
    data = escalated["data"]
    assert data["after_s"] == 30
    assert data == {
        "button": 1,
        "button_name": "remote",
        "presses": 2,
        "after_s": data["after_s"],
        "siren": True,
    }
    # The escalation reaching the police counts as the alarm being there.
    [row] = [r for r in await store.queue.claim("police", 100) if r.type == "alarm.escalated"]
    await latches.delivered("police", [row.seq])
    assert box.state["lamp"] is SLOW
    await latches.reset(late.alarm_id, by="guard wang", occurred_at_ms=clock.wall_ms())
    assert box.state == {"lamp": OFF, "siren": OFF}


@pytest.mark.parametrize(
    ("escalate_siren", "wired"),
    [(False, ("lamp", "siren")), (True, ("lamp",))],
    ids=["siren not wanted", "box without a siren"],
)
async def test_escalation_says_when_no_siren_sounded(
    store: Storage, escalate_siren: bool, wired: tuple[str, ...]
) -> None:
    clock = FakeClock()
    latches = AlarmLatches(
        store.alarms, BOXES, ack_timeout_s=30, escalate_siren=escalate_siren, clock=clock
    )
    outputs = Outputs(wired=wired)
    latches.attach_feedback("box", outputs)
    async with escalation_timer(latches):
        await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=clock.wall_ms()))
        await clock.run_for(30)
        [escalated] = await wait_stored(store, "alarm.escalated")
    assert escalated["data"]["siren"] is False
    assert outputs.state.get("siren", OFF) is OFF


async def test_latches_survive_restart_with_their_lamp_siren_and_acknowledgement(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.db"
    clock = FakeClock()
    now_ms = clock.wall_ms
    async with Storage(path, SITE, ROUTES) as store:
        latches = AlarmLatches(store.alarms, BOXES, ack_timeout_s=30, clock=clock)
        latches.attach_feedback("box", box := Outputs())
        async with escalation_timer(latches):
            await latches.panic_pressed(PanicPress("box", 1, presses=1, occurred_at_ms=now_ms()))
            await clock.run_for(30)
            await wait_stored(store, "alarm.escalated")
        [escalated] = latches.open_alarms
        # No timer now: the next two are neither escalated nor at risk of it.
        await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=now_ms()))
        acknowledged = latches.open_alarms[-1]
        await latches.acknowledge(
            acknowledged.alarm_id, by="Li", issuer="k", command_id="c", occurred_at_ms=now_ms()
        )
        await deliver_to(store, latches, "police")  # everything so far is at the police
        await latches.panic_pressed(PanicPress("drillbox", 0, presses=1, occurred_at_ms=now_ms()))
        delivered = latches.open_alarms[-1]
        await deliver_to(store, latches, "police")
        await latches.panic_pressed(PanicPress("drillbox", 1, presses=1, occurred_at_ms=now_ms()))
        undelivered = latches.open_alarms[-1]
        assert box.state == {"lamp": STEADY, "siren": STEADY}

    async with Storage(path, SITE, ROUTES) as store:
        latches = AlarmLatches(store.alarms, BOXES, ack_timeout_s=30, clock=clock)
        latches.attach_feedback("box", box := Outputs())
        latches.attach_feedback("drillbox", drillbox := Outputs())
        await latches.restore()
        assert [a.alarm_id for a in latches.open_alarms] == [
            escalated.alarm_id,
            acknowledged.alarm_id,
            delivered.alarm_id,
            undelivered.alarm_id,
        ]
        states = [(a.delivered, a.acknowledged, a.escalated) for a in latches.open_alarms]
        assert states == [
            (True, False, True),
            (True, True, False),
            (True, False, False),
            (False, False, False),
        ]
        # The box's newest alarm is acknowledged, an older one escalated: steady, siren on.
        assert box.state == {"lamp": STEADY, "siren": STEADY}
        assert drillbox.state == {"lamp": FAST, "siren": OFF}
        await latches.reset(undelivered.alarm_id, by="x", occurred_at_ms=now_ms())
        assert drillbox.state["lamp"] is SLOW  # its other alarm is at the police

        # The contact still closed at the first poll after restart is not a new press.
        await latches.panic_pressed(
            PanicPress("box", 1, presses=1, occurred_at_ms=now_ms(), held_at_start=True)
        )
        assert latches.open_alarms[0].presses == 1

        # The timer escalates the one that is due (delivered, not acknowledged), and not the
        # acknowledged or already escalated ones, whose deadlines passed before.
        async with escalation_timer(latches):
            await clock.run_for(30)
            await drillbox.wait("siren", STEADY)
            escalations = [e["alarm_id"] for e in await wait_stored(store, "alarm.escalated", 2)]
        assert escalations == [escalated.alarm_id, delivered.alarm_id]


async def test_button_held_at_start_without_a_latch_raises_an_alarm(store: Storage) -> None:
    latches = AlarmLatches(store.alarms, BOXES)
    await latches.panic_pressed(
        PanicPress("box", 0, presses=1, occurred_at_ms=1, held_at_start=True)
    )
    assert len(latches.open_alarms) == 1


async def test_a_lamp_that_cannot_be_lit_does_not_lose_the_alarm(store: Storage) -> None:
    clock = FakeClock()
    latches = AlarmLatches(store.alarms, BOXES, ack_timeout_s=30, clock=clock)
    latches.attach_feedback("box", Outputs(fail=True))
    async with escalation_timer(latches):
        await latches.panic_pressed(PanicPress("box", 0, presses=1, occurred_at_ms=clock.wall_ms()))
        await clock.run_for(30)
        [escalated] = await wait_stored(store, "alarm.escalated")
    assert len(latches.open_alarms) == 1
    assert [r.type for r in await store.queue.claim("police", 10)] == [
        "alarm.panic",
        "alarm.escalated",
    ]
    assert escalated["data"]["siren"] is False  # it could not be sounded


async def test_drill_boxes_mark_their_alarms_as_drills(store: Storage) -> None:
    latches = AlarmLatches(store.alarms, BOXES)
    await latches.panic_pressed(PanicPress("drillbox", 0, presses=1, occurred_at_ms=1))
    [row] = await store.queue.claim("police", 10)
    assert contract.decode_event(row.body)["drill"] is True
