"""Insert-type bollard sockets: a DI module's inputs as sockets, over Modbus TCP and RTU."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from driver_support import Recorder, modbus_line, running
from drivers.base import CommandError
from drivers.bollard_sockets import BollardSockets
from edge_config.devices_modbus import BollardSocketsDevice
from gateway.core.events import DeviceRef, Lane
from simulators.bollard import SocketSensors

pytestmark = pytest.mark.timeout(30)
UNIT = 4


def sockets_config(**overrides: Any) -> BollardSocketsDevice:
    values: dict[str, Any] = {
        "kind": "bollard_sockets",
        "line": "io",
        "unit_id": UNIT,
        "poll_interval_ms": 20,
        "offline_after_ms": 300,
        "sockets": [
            {"input": 2, "name": "lane 1 left"},
            {"input": 3, "name": "lane 1 right"},
            {"input": 5, "name": "lane 2"},
        ],
    }
    return BollardSocketsDevice.model_validate(values | overrides)


@pytest.fixture(params=["tcp", "rtu"])
async def sensors(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SocketSensors, Any]]:
    module = SocketSensors(UNIT)
    async with modbus_line(str(request.param), module) as line:
        yield module, line


async def test_pull_and_insert(sensors: tuple[SocketSensors, Any]) -> None:
    module, line = sensors
    events = Recorder()
    driver = BollardSockets(
        sockets_config(), line, events.context(DeviceRef("s", "bollard_sockets"))
    )
    async with running(driver):
        assert events.events == []  # all present at start: nothing to tell
        module.pull(3)
        pulled = await events.wait("bollard.pulled")
        module.insert(3)
        inserted = await events.wait("bollard.inserted")
        module.pull(6)  # an input that is no socket
        module.pull(5)
        await events.wait("bollard.pulled", lambda e: e.data["socket"] == "lane 2")
    assert pulled.data == {"socket": "lane 1 right", "input": 3}
    assert inserted.data == {"socket": "lane 1 right", "input": 3}
    assert pulled.lane == Lane.STATE
    assert events.types() == ["bollard.pulled", "bollard.inserted", "bollard.pulled"]
    assert driver.present == {"lane 1 left": True, "lane 1 right": True, "lane 2": False}
    # The guard's page is told: online and first reading, then each pull or insert before its
    # event; input 6 (no socket) changes nothing shown.
    assert events.changes == [0, 0, 0, 1, 2]


async def test_empty_sockets_at_start_are_reported_once(sensors: tuple[SocketSensors, Any]) -> None:
    module, line = sensors
    module.pull(2)
    events = Recorder()
    driver = BollardSockets(
        sockets_config(), line, events.context(DeviceRef("s", "bollard_sockets"))
    )
    await driver.poll_once()
    await driver.poll_once()
    assert [e.data for e in events.events] == [
        {"socket": "lane 1 left", "input": 2, "initial": True}
    ]


async def test_sensor_polarity_open_means_present(sensors: tuple[SocketSensors, Any]) -> None:
    module, line = sensors
    for i in range(8):
        module.pull(i)  # open contacts: with present_when = "open" every bollard is in
    events = Recorder()
    config = sockets_config(present_when="open")
    driver = BollardSockets(config, line, events.context(DeviceRef("s", "bollard_sockets")))
    await driver.poll_once()
    module.insert(5)
    await driver.poll_once()
    assert [(e.type, e.data["socket"]) for e in events.events] == [("bollard.pulled", "lane 2")]


async def test_silent_module_goes_offline_and_back(sensors: tuple[SocketSensors, Any]) -> None:
    module, line = sensors
    events = Recorder()
    driver = BollardSockets(
        sockets_config(), line, events.context(DeviceRef("s", "bollard_sockets"))
    )
    async with running(driver):
        module.silent = True
        await events.wait("device.offline")
        module.silent = False
        await events.wait("device.online")
    with pytest.raises(CommandError):
        await driver.command("raise", {})
