"""The access controller driver against simulated controllers on a virtual 9600-baud RS-485 bus
(real ptys, real frames), and one end-to-end run: a forced door reaches the police broker."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from drivers.access_codec import Code
from drivers.access_controller import AccessController
from drivers.base import CommandError, DriverContext, PanicPress
from drivers.lines.serial import SerialLine
from edge_config.devices_access import AccessControllerDevice
from edge_config.models import SerialLine as SerialLineConfig
from gateway.core import contract
from gateway.core.events import DeviceRef, Event, Lane, Severity
from gateway.store.routing import Router
from gateway.store.storage import Storage
from simulators.access_controller import SimBus, SimController, serve_serial
from simulators.broker import MosquittoBroker
from simulators.listener import listen
from simulators.vserial import VirtualSerialLink
from tests_support import GatewayProcess

pytestmark = pytest.mark.timeout(60)
SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))


class Sink:
    """The driver's `emit`: keeps events and lets a test await one."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._changed = asyncio.Condition()

    async def emit(self, event: Event) -> Event:
        async with self._changed:
            self.events.append(event)
            self._changed.notify_all()
        return event

    def of(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.type == event_type]

    async def wait(self, event_type: str, count: int = 1, timeout_s: float = 5.0) -> Event:
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(lambda: len(self.of(event_type)) >= count)
        return self.of(event_type)[count - 1]


class NoPanic:
    async def panic_pressed(self, press: PanicPress) -> None:
        raise AssertionError("access controllers never press panic buttons")

    async def reset_pressed(self, *_args: Any, **_kwargs: Any) -> None:
        raise AssertionError("access controllers never press reset")


@dataclass
class Rig:
    sim: SimController
    bus: SimBus
    link: VirtualSerialLink
    line: SerialLine
    sink: Sink
    make: Callable[..., AccessController]
    drivers: list[AccessController] = field(default_factory=list)

    @property
    def driver(self) -> AccessController:
        return self.drivers[0]


def device(address: int = 3, **overrides: Any) -> AccessControllerDevice:
    settings: dict[str, Any] = {
        "kind": "access_controller",
        "line": "doors",
        "address": address,
        "location": "East gate",
        "poll_interval_ms": 20,
        "offline_after_ms": 300,
        "doors": {1: "pedestrian gate", 2: "staff door"},
        "readers": {1: "gate outside", 2: "gate inside"},
    } | overrides
    return AccessControllerDevice.model_validate(settings)


@pytest.fixture
def rig_config() -> dict[str, Any]:
    """Config overrides for the rig's driver; a test parametrizes this name to change them
    (`sim_clock_offset_ms` sets the simulated controller's clock instead)."""
    return {}


@pytest.fixture
async def rig(rig_config: dict[str, Any]) -> AsyncIterator[Rig]:
    """One controller at address 3 on a 9600-baud bus, its driver running and ready."""
    overrides = dict(rig_config)
    sim = SimController(3, clock_offset_ms=overrides.pop("sim_clock_offset_ms", 0))
    sink = Sink()
    async with (
        VirtualSerialLink(baudrate=9600) as link,
        serve_serial([sim], link.device_end, baudrate=9600) as bus,
        SerialLine(
            "doors",
            SerialLineConfig(type="serial", port=link.host_end, baudrate=9600, timeout_ms=150),
        ) as line,
    ):

        def make(address: int = 3, **more: Any) -> AccessController:
            cfg = device(address, **(overrides | more))
            ref = DeviceRef(f"door{address}", "access_controller", cfg.location)
            ctx = DriverContext(ref, NoPanic(), sink.emit, clock_ms, drill=cfg.drill)
            return AccessController(cfg, line, ctx)

        made = Rig(sim, bus, link, line, sink, make)
        async with asyncio.TaskGroup() as tg:
            tasks = [start(tg, made, made.make())]
            await tasks[0][1].wait()
            yield made
            for task, _ in tasks:
                task.cancel()


def start(
    tg: asyncio.TaskGroup, rig: Rig, driver: AccessController
) -> tuple[asyncio.Task[None], asyncio.Event]:
    ready = asyncio.Event()
    rig.drivers.append(driver)
    return tg.create_task(driver.run(ready.set), name=f"driver:{len(rig.drivers)}"), ready


def clock_ms() -> int:
    import time  # noqa: PLC0415 - kept next to its one use: the test clock is the real one

    return time.time_ns() // 1_000_000


async def test_every_controller_event_becomes_a_gateway_event(rig: Rig) -> None:
    sim, sink = rig.sim, rig.sink
    sim.present_card(12345678, reader=1)
    sim.present_card(87654321, reader=2, granted=False)
    sim.open_door(1)
    sim.close_door(1)
    sim.exit_button(2)
    sim.force_door(2)
    sim.hold_door(2)
    sim.tamper()
    tamper = await sink.wait("access.tamper")
    granted, denied = sink.of("access.card")
    assert granted.data | {"controller_seq": 0} == {
        "controller_seq": 0,
        "card": 12345678,
        "reader": 1,
        "reader_name": "gate outside",
        "granted": True,
    }
    assert granted.severity is Severity.INFO and granted.lane is Lane.STATE
    assert denied.data["granted"] is False and denied.data["reason"] == "unknown_card"
    assert denied.severity is Severity.MINOR
    (forced,) = sink.of("access.door_forced")
    assert forced.lane is Lane.ALARM and forced.severity is Severity.CRITICAL
    assert forced.data["door"] == 2 and forced.data["door_name"] == "staff door"
    assert forced.device == DeviceRef("door3", "access_controller", "East gate")
    (held,) = sink.of("access.door_held_open")
    assert held.data["held_s"] >= 30 and held.lane is Lane.STATE
    assert tamper.lane is Lane.ALARM and tamper.severity is Severity.MAJOR
    assert tamper.data["active"] is True
    assert sink.of("access.door_opened")[0].data["door_name"] == "pedestrian gate"
    assert sink.of("access.door_closed")[0].data["door"] == 1
    assert sink.of("access.exit_button")[0].data["door"] == 2
    assert [e.data["controller_seq"] for e in sink.events if e.category == "access"] == list(
        range(1, 9)
    )
    await sim.wait_drained()  # every event acknowledged, so deleted by the controller


async def test_event_time_is_the_controllers_clock(rig: Rig) -> None:
    card = rig.sim.present_card(1)
    event = await rig.sink.wait("access.card")
    assert event.occurred_at_ms == card.time_ms


async def test_a_lost_answer_loses_no_event_and_duplicates_none(rig: Rig) -> None:
    rig.sim.drop_answers = 2
    rig.sim.present_card(1)
    rig.sim.present_card(2)
    await rig.sink.wait("access.card", 2)
    assert rig.sim.sent_events == [1, 1, 1, 2]  # sent until an answer got through
    await rig.sim.wait_drained()
    assert [e.data["card"] for e in rig.sink.of("access.card")] == [1, 2]


async def test_an_event_sent_again_after_our_ack_is_taken_once(rig: Rig) -> None:
    rig.sim.lose_acks = 1  # the controller misses our acknowledgement and repeats the event
    rig.sim.present_card(1)
    rig.sim.present_card(2)
    await rig.sink.wait("access.card", 2)
    assert rig.sim.sent_events[:3] == [1, 1, 2]
    assert [e.data["card"] for e in rig.sink.of("access.card")] == [1, 2]
    assert rig.driver.counters.duplicates == 1


async def test_garbage_and_crc_errors_are_counted_and_the_next_frame_works(rig: Rig) -> None:
    rig.sim.corrupt_answers = 1
    rig.sim.garbage_answers = 2
    rig.link.inject_garbage("to_host", b"\x02\x03\x10noise")
    rig.sim.present_card(7)
    await rig.sink.wait("access.card")
    rig.link.corrupt_next("to_device")  # the request is broken: the controller stays silent
    rig.sim.force_door(1)
    await rig.sink.wait("access.door_forced")
    counters = rig.driver.counters
    assert counters.crc_errors >= 1 and counters.garbage_bytes >= 2
    assert counters.framing_errors >= 1  # the cut frame inside the noise
    assert rig.bus.parser.stats.errors + rig.bus.parser.stats.garbage_bytes >= 1
    assert len(rig.sink.of("access.card")) == 1


async def test_silent_controller_goes_offline_then_online_and_is_greeted_again(rig: Rig) -> None:
    rig.sim.silent = True
    offline = await rig.sink.wait("device.offline")
    assert offline.severity is Severity.MAJOR and "no answer" in offline.data["error"]
    rig.sim.held_open_s = 99  # as after a restart with factory defaults
    rig.sim.silent = False
    online = await rig.sink.wait("device.online")
    assert online.device.id == "door3"
    assert rig.sim.held_open_s == 30  # configured again on contact


async def test_commands_unlock_lockdown_and_release(rig: Rig) -> None:
    driver, sim = rig.driver, rig.sim
    assert await driver.command("unlock", {"door": 1}) == {
        "door": 1,
        "door_name": "pedestrian gate",
        "unlocked": True,
    }
    assert sim.unlocks[1] == 1
    assert await driver.command("lockdown", {}) == {"lockdown": True}
    assert sim.lockdown
    assert (await rig.sink.wait("access.lockdown")).data == {"lockdown": True}
    sim.present_card(55, granted=True)
    refused = await rig.sink.wait("access.card")
    assert refused.data["granted"] is False and refused.data["reason"] == "lockdown"
    with pytest.raises(CommandError, match="locked_down"):
        await driver.command("unlock", {"door": 1})
    assert await driver.command("release_lockdown", {}) == {"lockdown": False}
    assert (await rig.sink.wait("access.lockdown", 2)).data == {"lockdown": False}
    sim.present_card(55)
    assert (await rig.sink.wait("access.card", 2)).data["granted"] is True
    assert sim.unlocks[1] == 1


@pytest.mark.parametrize(
    ("name", "args", "message"),
    [
        ("unlock", {}, "missing argument door"),
        ("unlock", {"door": 9}, "no door 9"),
        ("unlock", {"door": True}, "door must be an integer"),
        ("unlock", {"door": 1, "open_s": 300}, "open_s must be"),
        ("set_clock", {"time_ms": "soon"}, "integer time_ms"),
        ("raise", {}, "no command 'raise'"),
    ],
)
async def test_bad_commands_are_refused(
    rig: Rig, name: str, args: dict[str, object], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        await rig.driver.command(name, args)
    assert sum(rig.sim.unlocks.values()) == 0


async def test_a_command_whose_answer_is_lost_is_done_once(rig: Rig) -> None:
    rig.sim.drop_answers = 1
    assert (await rig.driver.command("unlock", {"door": 2}))["unlocked"] is True
    assert rig.sim.unlocks[2] == 1  # the retry had the same seq: answered, not done again


async def test_read_and_set_clock(rig: Rig) -> None:
    read = await rig.driver.command("read_clock", {})
    assert abs(int(str(read["skew_ms"]))) < 1_000
    target = clock_ms() + 3_600_000
    assert await rig.driver.command("set_clock", {"time_ms": target}) == {"time_ms": target}
    assert rig.sim.clock_sets[-1] == target
    assert abs(rig.sim.clock_offset_ms - 3_600_000) < 1_000


@pytest.mark.parametrize("rig_config", [{"sim_clock_offset_ms": -5_000}])
async def test_clock_skew_beyond_the_bound_is_corrected_and_reported(rig: Rig) -> None:
    corrected = await rig.sink.wait("access.clock_corrected")
    assert -6_000 < corrected.data["skew_ms"] < -4_000
    assert corrected.data["max_clock_skew_ms"] == 1_000
    assert abs(rig.sim.clock_offset_ms) < 1_000
    assert len(rig.sim.clock_sets) == 1


@pytest.mark.parametrize("rig_config", [{"clock_check_interval_s": 1}])
async def test_clock_is_checked_periodically(rig: Rig) -> None:
    assert rig.sink.of("access.clock_corrected") == []  # in time at start: left alone
    rig.sim.clock_offset_ms = 2_500  # the controller's clock jumps
    corrected = await rig.sink.wait("access.clock_corrected", timeout_s=5)
    assert 2_000 < corrected.data["skew_ms"] < 3_000


@pytest.mark.parametrize("rig_config", [{"held_open_alarm_s": 1}])
async def test_held_open_time_is_configured_and_reported_by_the_controller(rig: Rig) -> None:
    assert rig.sim.held_open_s == 1
    rig.sim.open_door(1)
    held = await rig.sink.wait("access.door_held_open", timeout_s=5)
    assert held.data["door"] == 1 and held.data["held_s"] >= 1


async def test_two_controllers_share_one_bus(rig: Rig) -> None:
    other = SimController(4)
    rig.bus.controllers[4] = other
    async with asyncio.TaskGroup() as tg:
        task, ready = start(tg, rig, rig.make(4))
        await ready.wait()
        other.force_door(1)
        rig.sim.force_door(2)
        await rig.sink.wait("access.door_forced", 2)
        task.cancel()
    by_device = {e.device.id: e.data["door"] for e in rig.sink.of("access.door_forced")}
    assert by_device == {"door3": 2, "door4": 1}


async def test_a_clock_that_cannot_be_set_is_reported_once_until_a_correction_succeeds(
    rig: Rig,
) -> None:
    rig.sim.clock_offset_ms = 60_000  # after the greeting: the check below is the one to see it
    rig.sim.unsupported = {Code.SET_CLOCK}
    await rig.driver.check_clock()
    refused = rig.sink.of("access.clock_not_correctable")
    assert len(refused) == 1
    assert refused[0].severity is Severity.MAJOR
    assert 59_000 < refused[0].data["skew_ms"] < 61_000
    assert "unknown_command" in refused[0].data["error"]
    await rig.driver.check_clock()  # refused again: the fault is already reported
    assert len(rig.sink.of("access.clock_not_correctable")) == 1
    rig.sim.unsupported = set()
    await rig.driver.check_clock()  # the controller takes it now: the correction closes it
    assert len(rig.sink.of("access.clock_corrected")) == 1
    assert abs(rig.sim.clock_offset_ms) < 1_000
    rig.sim.clock_offset_ms = 60_000
    rig.sim.unsupported = {Code.SET_CLOCK}
    await rig.driver.check_clock()  # a new spell after a success: reported again
    assert len(rig.sink.of("access.clock_not_correctable")) == 2


async def test_a_controller_refusing_configure_and_clock_is_still_polled(rig: Rig) -> None:
    old_firmware = SimController(4, clock_offset_ms=60_000)
    old_firmware.unsupported = {Code.CONFIGURE, Code.READ_CLOCK}
    rig.bus.controllers[4] = old_firmware
    async with asyncio.TaskGroup() as tg:
        task, ready = start(tg, rig, rig.make(4))
        await ready.wait()
        old_firmware.force_door(1)
        forced = await rig.sink.wait("access.door_forced")
        task.cancel()
    assert forced.device.id == "door4"
    assert old_firmware.clock_sets == [] and rig.sink.of("access.clock_corrected") == []
    with pytest.raises(CommandError, match="unknown_command"):
        await rig.drivers[1].command("read_clock", {})


# -- end to end --------------------------------------------------------------------------------

ACCESS_DEVICE = """
[lines.doors]
type = "serial"
port = "{port}"
baudrate = 9600
timeout_ms = 200

[devices.gate_doors]
kind = "access_controller"
line = "doors"
address = 3
location = "East gate"
poll_interval_ms = 50
doors = {{ 1 = "pedestrian gate" }}
readers = {{ 1 = "gate outside" }}
"""


async def test_forced_door_reaches_the_police(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    sim = SimController(3, doors=[1])
    async with (
        VirtualSerialLink(baudrate=9600) as link,
        serve_serial(sim, link.device_end, baudrate=9600),
        listen("police", police_broker.host, police_broker.port) as police,
    ):
        # The alarm box of the shared template is left without a line it can reach: a gate
        # whose box is down still reports its doors.
        gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=9)
        text = gateway.config.read_text().replace(
            'routes = ["alarm.*", "device.*"]',
            'routes = ["alarm.*", "device.*", "access.door_forced", "access.tamper"]',
        )
        gateway.config.write_text(text + ACCESS_DEVICE.format(port=link.host_end))
        gateway.start()
        try:
            await police.wait_for(
                lambda m: m.topic.endswith("/status") and m.json["online"] is True, timeout_s=15
            )
            sim.force_door(1)
            forced = await police.wait_event(
                lambda e: e["type"] == "access.door_forced", timeout_s=15
            )
        finally:
            assert await gateway.stop() == 0
    assert forced["device"] == {
        "id": "gate_doors",
        "kind": "access_controller",
        "location": "East gate",
    }
    assert forced["severity"] == "critical"
    assert forced["data"]["door_name"] == "pedestrian gate"


async def test_an_event_is_on_disk_before_the_controller_is_told_to_drop_it(
    tmp_path: Path,
) -> None:
    """Regression (found by the chaos soak): the driver acknowledged a card swipe as soon as it
    was queued for the group commit, so a SIGKILL within the batch delay lost it for good (the
    controller drops what we acknowledged). Stored with a long batch delay: when the controller
    has let go of the event, the event must already be in the store file."""
    sim = SimController(3)
    routes = Router({"police": ["alarm.*"], "bureau": ["*"]})
    # The group commit would wait 30 s: only a durable store puts the swipe on disk sooner.
    store = Storage(tmp_path / "o.db", SITE, routes, batch_delay_ms=30_000)
    async with (
        store,
        VirtualSerialLink(baudrate=9600) as link,
        serve_serial([sim], link.device_end, baudrate=9600),
        SerialLine(
            "doors",
            SerialLineConfig(type="serial", port=link.host_end, baudrate=9600, timeout_ms=150),
        ) as line,
    ):
        cfg = device(3)
        ref = DeviceRef("door3", "access_controller", cfg.location)
        ctx = DriverContext(ref, NoPanic(), store.outbox.emit, clock_ms, store=store.outbox.append)
        driver = AccessController(cfg, line, ctx)
        ready = asyncio.Event()
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(driver.run(ready.set))
            flusher = tg.create_task(store.run())
            await ready.wait()
            sim.present_card(42)
            await sim.wait_drained()  # the controller got our acknowledgement
            db = sqlite3.connect(tmp_path / "o.db")
            try:
                stored = db.execute("SELECT count(*) FROM events WHERE type='access.card'")
                assert stored.fetchone()[0] == 1, "acknowledged before it was stored"
            finally:
                db.close()
            task.cancel()
            flusher.cancel()
