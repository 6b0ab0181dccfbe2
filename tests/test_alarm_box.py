"""The alarm box driver in-process against the DI/DO simulator: press counters across restarts,
a module whose counter restarted, outputs that never hold up the next read, a lamp that really
blinks on the module's coil, and the whole acknowledgement loop (box, latches, a real store):
fast blinking, slow once at the police, steady when acknowledged, the siren on escalation, off at
reset."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from driver_support import Recorder, modbus_line, running
from drivers.alarm_box import AlarmBox, OutputPattern
from drivers.base import PanicPress
from edge_config.models import AlarmBoxDevice, PanicButton
from gateway.alarms.latch import AlarmLatches, BoxInfo
from gateway.core import contract
from gateway.core.events import DeviceRef
from gateway.store.routing import Router
from gateway.store.storage import Storage
from simulators.dido import DiDoModule

SITE = contract.Site("school-1", "gate-1", ZoneInfo("UTC"))
CONFIG = AlarmBoxDevice(
    kind="alarm_box",
    line="io",
    poll_interval_ms=20,
    buttons=[PanicButton(input=0, press_counter_register=0)],
    lamp_coil=0,
)


class Presses:
    """Records what the box reports (the PanicSink is our own seam)."""

    def __init__(self) -> None:
        self.pressed: list[dict[str, Any]] = []

    async def panic_pressed(self, press: PanicPress) -> None:
        self.pressed.append(
            {
                "button": press.button,
                "presses": press.presses,
                "occurred_at_ms": press.occurred_at_ms,
            }
            | ({"held_at_start": True} if press.held_at_start else {})
        )

    async def reset_pressed(self, device_id: str, **kw: Any) -> None:
        self.pressed.append({"reset": True, **kw})


async def test_counter_value_is_remembered_so_a_press_while_stopped_is_reported(
    tmp_path: Path,
) -> None:
    module = DiDoModule(unit_id=1)
    async with (
        Storage(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as store,
        modbus_line("tcp", {1: module}) as line,
    ):
        memory = store.log.memory("box")
        sink, recorder = Presses(), Recorder()
        ctx = dataclasses.replace(
            recorder.context(DeviceRef("box", "alarm_box")), panic=sink, memory=memory
        )
        async with running(AlarmBox(CONFIG, line, ctx)):
            pass  # the first poll saw counter 0 and stored it
        assert await memory.recall("counter:0") == 0
        module.press(0)
        module.release(0)  # a press shorter than any poll, while no driver runs
        async with running(AlarmBox(CONFIG, line, ctx)):
            pass
        assert sink.pressed == [
            {"button": 0, "presses": 1, "occurred_at_ms": sink.pressed[0]["occurred_at_ms"]}
        ]
        assert await memory.recall("counter:0") == 1


async def test_module_whose_counter_restarted_reports_its_new_count_not_thousands(
    tmp_path: Path,
) -> None:
    module = DiDoModule(unit_id=1)
    for _ in range(2):
        module.press(0)
        module.release(0)
    async with (
        Storage(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as store,
        modbus_line("tcp", {1: module}) as line,
    ):
        memory = store.log.memory("box")
        await memory.remember("counter:0", 500)  # before the module lost power
        sink, recorder = Presses(), Recorder()
        ctx = dataclasses.replace(
            recorder.context(DeviceRef("box", "alarm_box")), panic=sink, memory=memory
        )
        async with running(AlarmBox(CONFIG, line, ctx)):
            pass
    assert [p["presses"] for p in sink.pressed] == [2]


async def test_the_lamp_asked_for_by_the_latch_is_written_by_the_poll_loop() -> None:
    module = DiDoModule(unit_id=1)
    async with modbus_line("tcp", {1: module}) as line:
        recorder = Recorder()
        box = AlarmBox(
            CONFIG,
            line,
            dataclasses.replace(recorder.context(DeviceRef("box", "alarm_box")), panic=Presses()),
        )
        async with running(box):
            await box.set_output("lamp", True)  # returns at once: no line I/O
            await module.wait_coil(0, True, timeout_s=2)
            result = await box.command("lamp", {"on": False})  # an installer: written now
            assert result == {"lamp": False} and module.coil(0) is False


# -- the lamp's patterns and the acknowledgement loop -----------------------------------------

FULL = CONFIG.model_copy(update={"siren_coil": 1, "reset_input": 7})
LAMP, SIREN = 0, 1


async def toggles(module: DiDoModule, coil: int, count: int, *, window_s: float = 5.0) -> None:
    """Return once `coil` has changed `count` times; fail if that takes longer than `window_s`
    (generous: a blink rate is not measured here, only that the coil blinks)."""
    async with asyncio.timeout(window_s):
        for _ in range(count):
            await module.wait_coil(coil, not module.coil(coil), timeout_s=window_s)


async def stays(module: DiDoModule, coil: int, value: bool, box: AlarmBox, polls: int = 10) -> None:
    """`coil` keeps `value` for `polls` polls of `box` (longer than a fast blink's half period)."""
    until = box.polls + polls
    async with asyncio.timeout(5):
        while box.polls < until:
            assert module.coil(coil) is value
            await asyncio.sleep(0.005)


async def test_the_lamp_blinks_on_the_module_fast_slow_steady_off() -> None:
    module = DiDoModule(unit_id=1)
    async with modbus_line("tcp", {1: module}) as line:
        ctx = dataclasses.replace(
            Recorder().context(DeviceRef("box", "alarm_box")), panic=Presses()
        )
        box = AlarmBox(CONFIG, line, ctx)
        async with running(box):
            assert await box.set_pattern("siren", OutputPattern.STEADY) is False  # not wired
            assert await box.set_pattern("lamp", OutputPattern.FAST) is True
            await toggles(module, LAMP, 4)
            await box.set_pattern("lamp", OutputPattern.SLOW)
            await toggles(module, LAMP, 2)
            await box.set_pattern("lamp", OutputPattern.STEADY)
            await module.wait_coil(LAMP, True)
            await stays(module, LAMP, True, box)
            await box.set_pattern("lamp", OutputPattern.FAST)
            await toggles(module, LAMP, 2)
            result = await box.command("lamp", {"on": False})  # an installer: steady off, now
            assert result == {"lamp": False} and module.coil(LAMP) is False
            assert box.pattern("lamp") is OutputPattern.OFF
            await stays(module, LAMP, False, box)


@contextlib.asynccontextmanager
async def gate(
    tmp_path: Path, module: DiDoModule, *, ack_timeout_s: float = 30.0
) -> AsyncIterator[tuple[AlarmBox, AlarmLatches, Storage]]:
    """The box, the latches (escalation timer running) and a real store, as the app wires them."""
    async with (
        Storage(tmp_path / "o.db", SITE, Router({"police": ["*"], "bureau": ["*"]})) as store,
        modbus_line("tcp", {1: module}) as line,
    ):
        info = BoxInfo(DeviceRef("box", "alarm_box"), {0: "desk"})
        latches = AlarmLatches(store.alarms, {"box": info}, ack_timeout_s=ack_timeout_s)
        ctx = dataclasses.replace(
            Recorder().context(DeviceRef("box", "alarm_box")), panic=latches, emit=store.outbox.emit
        )
        box = AlarmBox(FULL, line, ctx)
        latches.attach_feedback("box", box.set_pattern)
        timer = asyncio.create_task(latches.run(), name="escalation-timer")
        try:
            async with running(box):
                yield box, latches, store
        finally:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer


async def stored(store: Storage, event_type: str) -> dict[str, Any]:
    """The first stored event of `event_type`, once there is one."""
    stored_one = store.queue.wakeup("bureau")  # set whenever a row is stored for the bureau
    async with asyncio.timeout(5):
        while True:
            stored_one.clear()
            for row in await store.queue.claim("bureau", 1000):
                if row.type == event_type:
                    return contract.decode_event(row.body)
            await stored_one.wait()


async def test_acknowledgement_loop_on_the_module(tmp_path: Path) -> None:
    module = DiDoModule(unit_id=1)
    async with gate(tmp_path, module) as (box, latches, store):
        module.press(0)
        panic = await stored(store, "alarm.panic")
        await toggles(module, LAMP, 3)  # stored, not yet at the police: fast
        assert box.pattern("lamp") is OutputPattern.FAST

        seqs = [row.seq for row in await store.queue.claim("police", 100)]
        await store.queue.mark_sent("police", seqs)
        await latches.delivered("police", seqs)  # the police broker's PUBACK
        assert box.pattern("lamp") is OutputPattern.SLOW
        await toggles(module, LAMP, 2)

        await latches.acknowledge(
            panic["alarm_id"], by="Officer Li", issuer="police", command_id="c", occurred_at_ms=1
        )
        await module.wait_coil(LAMP, True)
        await stays(module, LAMP, True, box)
        assert module.coil(SIREN) is False  # acknowledged: no escalation, no siren

        module.release(0)
        module.press(7)  # the guard's reset key
        await stored(store, "alarm.reset")
        await module.wait_coil(LAMP, False)
        await stays(module, LAMP, False, box)


async def test_an_unacknowledged_alarm_sounds_the_siren_on_the_module(tmp_path: Path) -> None:
    module = DiDoModule(unit_id=1)
    async with gate(tmp_path, module, ack_timeout_s=0.2) as (box, _latches, store):
        module.press(0)
        await stored(store, "alarm.panic")
        assert module.coil(SIREN) is False  # silent until nobody acknowledged it in time
        await module.wait_coil(SIREN, True, timeout_s=5)
        escalated = await stored(store, "alarm.escalated")
        assert escalated["data"]["siren"] is True and escalated["severity"] == "critical"
        assert box.pattern("lamp") is OutputPattern.FAST  # still not at the police
        module.release(0)
        module.press(7)
        await module.wait_coil(SIREN, False, timeout_s=5)
        assert box.pattern("lamp") is OutputPattern.OFF


async def test_the_counter_is_remembered_only_after_its_press_is_reported() -> None:
    """Regression (found reading the code during the chaos soak): the new counter value was
    stored before the press's alarm; a crash in between made the new value the baseline after
    the restart, and the press was never reported."""
    log: list[str] = []

    class Memory:
        """The driver's DeviceMemory seam, writing into the shared log."""

        def __init__(self) -> None:
            self.values: dict[str, int] = {}

        async def recall(self, key: str) -> int | None:
            return self.values.get(key)

        async def remember(self, key: str, value: int) -> None:
            self.values[key] = value
            log.append(f"remember {key}={value}")

    class Sink(Presses):
        async def panic_pressed(self, press: PanicPress) -> None:
            log.append(f"pressed {press.presses}")
            await super().panic_pressed(press)

    module = DiDoModule(unit_id=1)
    async with modbus_line("tcp", {1: module}) as line:
        sink, recorder = Sink(), Recorder()
        ctx = dataclasses.replace(
            recorder.context(DeviceRef("box", "alarm_box")), panic=sink, memory=Memory()
        )
        async with running(AlarmBox(CONFIG, line, ctx)):
            module.press(0)
            module.release(0)
            async with asyncio.timeout(5):
                while "remember counter:0=1" not in log:  # noqa: ASYNC110 - the driver's pace
                    await asyncio.sleep(0.01)
    assert log == ["remember counter:0=0", "pressed 1", "remember counter:0=1"]
