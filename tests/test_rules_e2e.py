"""End to end: an insert-type bollard left out of its socket past its 随拔随插 timer, through the
real gateway process (with `[rules]`), simulated socket sensors on Modbus TCP and real mosquitto
brokers: `bollard.not_reinserted` reaches the bureau on the alarm lane; putting it back answers it.

Time: the real clock, with a socket timer of 0.05 minutes (3 s). The config takes fractional
minutes, so this is the same code path as a 10-minute timer, only shorter; the test waits for the
events themselves, never for a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.bollard import SocketSensors
from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule, serve_tcp
from simulators.listener import listen
from tests_support import MONDAY_ARRIVAL, GatewayProcess, rules_calendar, socket_module

pytestmark = pytest.mark.timeout(90)


async def test_a_socket_left_empty_past_its_timer_reaches_the_bureau_as_an_alarm(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    _, box_port = box
    sensors = SocketSensors(4, sockets=2)
    async with serve_tcp(sensors) as (_, sockets_port):
        extra = (
            socket_module("sockets", sockets_port)
            + f"""
[rules]
calendar_file = "{rules_calendar(tmp_path, MONDAY_ARRIVAL)}"

[[rules.socket_timer]]
device = "lane_sockets"
sockets = {{ "socket-0" = 0.05 }}
"""
        )
        gateway = GatewayProcess(
            tmp_path, police_broker, bureau_broker, modbus_tcp_port=box_port, extra=extra
        )
        async with listen("bureau", bureau_broker.host, bureau_broker.port) as bureau:
            gateway.start()
            try:
                await gateway.wait_ready()
                sensors.pull(0)
                pulled = await bureau.wait_event(lambda e: e["type"] == "bollard.pulled")
                late = await bureau.wait_event(
                    lambda e: e["type"] == "bollard.not_reinserted", timeout_s=20
                )
                sensors.insert(0)
                back = await bureau.wait_event(lambda e: e["type"] == "bollard.reinserted")
            finally:
                assert await gateway.stop() == 0
    assert pulled["data"]["socket"] == "socket-0"
    assert late["severity"] == "critical"
    assert late["device"]["id"] == "lane_sockets"
    assert late["data"]["socket"] == "socket-0"  # the name, as in bollard.pulled
    assert late["data"]["allowed_s"] == 3.0
    assert back["data"]["expired_ms"] > 0
    assert len(bureau.events("bollard.not_reinserted")) == 1
