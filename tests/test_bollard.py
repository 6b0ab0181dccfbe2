"""The rising-bollard driver against the simulated controller, over Modbus TCP and RTU, with both
shipped profiles; and one end-to-end run through the real gateway and mosquitto."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from driver_support import Recorder, modbus_line, running
from drivers.base import CommandError, DriverError
from drivers.bollard import Bollard
from edge_config.devices_modbus import BollardDevice
from edge_config.profile_files import validation_context
from gateway.core.events import DeviceRef, Lane, Severity
from simulators.bollard import GENERIC, VENDOR_B, BollardController, serve_tcp
from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule
from simulators.listener import listen
from tests_support import GatewayProcess

pytestmark = pytest.mark.timeout(30)
UNIT = 2


@dataclass
class Rig:
    sim: BollardController
    driver: Bollard
    events: Recorder


def bollard_config(**overrides: Any) -> BollardDevice:
    values: dict[str, Any] = {
        "kind": "bollard",
        "line": "io",
        "unit_id": UNIT,
        "poll_interval_ms": 20,
        "offline_after_ms": 300,
        "travel_timeout_ms": 1_500,
    }
    return BollardDevice.model_validate(values | overrides, context=validation_context())


@pytest.fixture(params=["tcp", "rtu"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def rig(transport: str) -> AsyncIterator[Rig]:
    sim = BollardController(UNIT, position="up", travel_ms=120)
    async with modbus_line(transport, sim) as line:
        events = Recorder()
        driver = Bollard(
            bollard_config(), line, events.context(DeviceRef("b1", "bollard", "East gate"))
        )
        yield Rig(sim, driver, events)


@pytest.mark.parametrize(
    ("layout", "profile"), [(GENERIC, "generic_bollard"), (VENDOR_B, "vendor_b")]
)
async def test_each_profile_reads_and_drives_its_controller(
    transport: str, layout: Any, profile: str
) -> None:
    sim = BollardController(UNIT, layout=layout, position="down", travel_ms=100)
    sim.cycles = 70_000  # above 16 bits: the word order of the counter matters
    async with modbus_line(transport, sim) as line:
        events = Recorder()
        driver = Bollard(
            bollard_config(profile=profile), line, events.context(DeviceRef("b1", "bollard"))
        )
        async with running(driver):
            first = await events.wait("bollard.state")
            assert first.data == {"position": "down", "previous": None, "cycles": 70_000}
            assert await driver.command("raise", {}) == {"position": "up", "cycles": 70_001}
            assert sim.position == "up"
            await events.wait("bollard.raised")
            assert await driver.command("lower", {}) == {"position": "down", "cycles": 70_001}
            await events.wait("bollard.lowered")
            assert await driver.command("emergency_raise", {}) == {
                "position": "up",
                "cycles": 70_002,
            }
    assert sim.commands == ["raise", "lower", "emergency_raise"]
    positions = [e.data["position"] for e in events.of("bollard.state")]
    assert positions == ["down", "rising", "up", "lowering", "down", "rising", "up"]
    assert events.of("bollard.stuck") == []


async def test_a_bollard_lowered_at_the_controller_is_reported(rig: Rig) -> None:
    async with running(rig.driver):
        await rig.events.wait("bollard.state")
        rig.sim.operate("lower")  # the guard's local push button
        lowered = await rig.events.wait("bollard.lowered")
    assert lowered.data == {"previous": "lowering", "cycles": 0}
    assert lowered.device == DeviceRef("b1", "bollard", "East gate")
    assert lowered.severity == Severity.INFO and lowered.lane == Lane.STATE
    assert rig.events.types() == [
        "bollard.state",
        "bollard.state",
        "bollard.state",
        "bollard.lowered",
    ]
    # What the guard's page shows changed: online, then each position, each before its event.
    assert rig.events.changes == [0, 0, 1, 2], rig.events.changes


async def test_efo_input_is_an_alarm(rig: Rig) -> None:
    rig.sim.operate("lower")
    await rig.sim.wait_position("down")
    async with running(rig.driver):
        await rig.events.wait("bollard.state")
        rig.sim.press_efo()
        alarm = await rig.events.wait("bollard.emergency_raise")
        await rig.events.wait("bollard.raised")
        rig.sim.release_efo()
    assert alarm.data == {"source": "input"}
    assert alarm.severity == Severity.CRITICAL and alarm.lane == Lane.ALARM
    assert len(rig.events.of("bollard.emergency_raise")) == 1


async def test_emergency_raise_command_is_an_alarm_and_is_confirmed(rig: Rig) -> None:
    rig.sim.operate("lower")
    await rig.sim.wait_position("down")
    result = await rig.driver.command("emergency_raise", {})
    assert result == {"position": "up", "cycles": 1}
    (alarm,) = rig.events.of("bollard.emergency_raise")
    assert alarm.data == {"source": "command"} and alarm.lane == Lane.ALARM
    assert alarm.severity == Severity.CRITICAL


async def test_jammed_bollard_fails_the_command_with_one_stuck_event(rig: Rig) -> None:
    rig.sim.jammed = True
    async with running(rig.driver):
        await rig.events.wait("bollard.state")
        with pytest.raises(CommandError, match="bollard is lowering, not down"):
            await rig.driver.command("lower", {})
    (stuck,) = rig.events.of("bollard.stuck")
    assert stuck.severity == Severity.MAJOR
    assert stuck.data == {
        "target": "down",
        "position": "lowering",
        "command": "lower",
        "travel_timeout_ms": 1_500,
    }
    assert rig.events.of("bollard.lowered") == []


async def test_a_movement_nobody_commanded_is_watched_too(rig: Rig) -> None:
    rig.sim.jammed = True
    async with running(rig.driver):
        await rig.events.wait("bollard.state")
        rig.sim.operate("lower")
        stuck = await rig.events.wait("bollard.stuck")
    assert stuck.data["command"] is None and stuck.data["target"] == "down"


async def test_a_bollard_too_slow_for_travel_timeout_is_stuck(rig: Rig) -> None:
    rig.sim.travel_ms = 10_000  # moving, but would take far longer than travel_timeout_ms
    with pytest.raises(CommandError):
        await rig.driver.command("lower", {})
    assert rig.events.of("bollard.stuck")[0].data["position"] == "lowering"


async def test_fault_code_and_its_clearing(rig: Rig) -> None:
    async with running(rig.driver):
        await rig.events.wait("bollard.state")
        rig.sim.fault_code = 7
        fault = await rig.events.wait("bollard.fault")
        rig.sim.fault_code = 9
        other = await rig.events.wait("bollard.fault", lambda e: e.data["code"] == 9)
        rig.sim.fault_code = 0
        cleared = await rig.events.wait("bollard.fault_cleared")
    assert fault.data == {"code": 7, "previous_code": 0} and fault.severity == Severity.MAJOR
    assert other.data == {"code": 9, "previous_code": 7}
    assert cleared.data == {"previous_code": 9}


async def test_silent_controller_goes_offline_and_back_online(rig: Rig) -> None:
    async with running(rig.driver):
        await rig.events.wait("bollard.state")
        changes = len(rig.events.changes)
        rig.sim.silent = True
        offline = await rig.events.wait("device.offline")
        assert len(rig.events.changes) == changes + 1  # offline shows on the guard's page
        with pytest.raises(DriverError):
            await rig.driver.command("raise", {})  # nobody answers the write
        rig.sim.silent = False
        await rig.events.wait("device.online")
        assert len(rig.events.changes) == changes + 2
    assert offline.severity == Severity.MAJOR
    assert rig.sim.commands == []


async def test_commands_are_checked(rig: Rig) -> None:
    with pytest.raises(CommandError, match="no command 'open'"):
        await rig.driver.command("open", {})
    with pytest.raises(CommandError, match="takes no arguments"):
        await rig.driver.command("raise", {"fast": True})
    assert rig.sim.commands == []


async def test_a_profile_without_an_emergency_command_refuses_it(transport: str) -> None:
    sim = BollardController(UNIT)
    async with modbus_line(transport, sim) as line:
        config = bollard_config(registers={"emergency_raise_command": None})
        driver = Bollard(config, line, Recorder().context(DeviceRef("b1", "bollard")))
        with pytest.raises(CommandError, match="no emergency_raise_command"):
            await driver.command("emergency_raise", {})


# -- end to end ----------------------------------------------------------------------------------

BOLLARD_DEVICE = """
[devices.gate_bollard]
kind = "bollard"
line = "io"
unit_id = 2
location = "East gate, vehicle lane"
poll_interval_ms = 50
travel_timeout_ms = 2000
"""


@pytest.mark.timeout(60)
async def test_lowering_reaches_the_bureau_through_the_real_gateway(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    # The gateway's template brings its alarm box (unit 1); the bollard shares the TCP line.
    sim = BollardController(UNIT, position="up", travel_ms=200)
    async with serve_tcp({1: DiDoModule(1), UNIT: sim}) as (_, port):
        gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
        gateway.config.write_text(gateway.config.read_text() + BOLLARD_DEVICE)
        async with listen("bureau", bureau_broker.host, bureau_broker.port) as bureau:
            gateway.start()
            try:
                first = await bureau.wait_event(
                    lambda e: e["type"] == "bollard.state", timeout_s=15
                )
                sim.operate("lower")
                lowered = await bureau.wait_event(lambda e: e["type"] == "bollard.lowered")
            finally:
                assert await gateway.stop() == 0
    assert first["data"]["position"] == "up"
    assert lowered["device"] == {
        "id": "gate_bollard",
        "kind": "bollard",
        "location": "East gate, vehicle lane",
    }
    assert lowered["data"] == {"previous": "lowering", "cycles": 0}
