"""The alarm box driver in-process against the DI/DO simulator: press counters across restarts,
a module whose counter restarted, and outputs that never hold up the next read."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from driver_support import Recorder, modbus_line, running
from drivers.alarm_box import AlarmBox
from edge_config.models import AlarmBoxDevice, PanicButton
from gateway import contract
from gateway.events import DeviceRef
from gateway.outbox import Outbox
from gateway.routing import Router
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

    async def panic_pressed(self, device_id: str, button: int, **kw: Any) -> None:
        self.pressed.append({"button": button, **kw})

    async def reset_pressed(self, device_id: str, **kw: Any) -> None:
        self.pressed.append({"reset": True, **kw})


async def test_counter_value_is_remembered_so_a_press_while_stopped_is_reported(
    tmp_path: Path,
) -> None:
    module = DiDoModule(unit_id=1)
    async with (
        Outbox(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as outbox,
        modbus_line("tcp", {1: module}) as line,
    ):
        memory = outbox.memory("box")
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
        Outbox(tmp_path / "o.db", SITE, Router({"police": ["*"]})) as outbox,
        modbus_line("tcp", {1: module}) as line,
    ):
        memory = outbox.memory("box")
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
