"""End to end: simulated alarm box -> the real gateway process -> real mosquitto brokers.

Covers the walking skeleton's acceptance: a press reaches police and bureau once with the right
fields; an alarm pressed during a police outage arrives when the broker returns; a gateway killed
right after the outbox write still delivers after restart; the latch, the lamp, the reset input
and `schoolgate reset`; the will; Modbus RTU on a serial line; a press shorter than the poll.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule, serve_rtu, serve_tcp
from simulators.listener import Listener, listen
from simulators.vserial import VirtualSerialLink
from tests_support import GatewayProcess

pytestmark = pytest.mark.timeout(90)


def is_panic(event: dict[str, object]) -> bool:
    return event["type"] == "alarm.panic"


async def online(listener: Listener) -> None:
    await listener.wait_for(
        lambda m: m.topic.endswith("/status") and m.json["online"] is True, timeout_s=15
    )


async def test_press_reaches_police_and_bureau_once_with_the_right_fields(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
    ):
        gateway.start()
        try:
            await online(police)
            await module.pulse(0, 150)
            alarm = await police.wait_event(is_panic)
            same = await bureau.wait_event(is_panic)
            await module.wait_coil(0, True, timeout_s=5)  # the guard's lamp (blinking)
            # A silent alarm: the siren sounds only if nobody acknowledges (escalation).
            assert module.coil(1) is False
        finally:
            assert await gateway.stop() == 0
    assert alarm["school"] == "school-7" and alarm["gateway"] == "gate-east"
    assert alarm["device"] == {"id": "box", "kind": "alarm_box", "location": "East gate booth"}
    assert alarm["seq"] == 1 and alarm["alarm_id"] == alarm["id"]
    assert alarm["severity"] == "critical" and alarm["drill"] is False
    assert alarm["historical"] is False and alarm["data"]["button_name"] == "desk"
    assert alarm["occurred_at"].endswith("+08:00") and "." in alarm["occurred_at"]
    assert same == alarm
    assert len(police.events("alarm.panic")) == 1
    assert len(bureau.events("alarm.panic")) == 1


async def test_latched_until_reset_repeat_recorded_then_reset_by_cli(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police),
    ):
        await module.pulse(0, 100)
        alarm = await police.wait_event(is_panic)
        # A person cannot press twice with no gap: let a poll see the release first (two reads
        # from now: the one under way may have started before the release).
        await module.wait_input_reads(module.input_reads + 2)
        await module.pulse(0, 100)  # pressed again while latched: recorded, not a new alarm
        again = await police.wait_event(lambda e: e["type"] == "alarm.panic_repeated")
        assert again["alarm_id"] == alarm["id"] and again["data"]["presses"] == 2

        listed = await gateway.cli("alarms")
        assert listed.returncode == 0 and alarm["id"] in listed.stdout

        refused = await gateway.cli("reset", "no-such-alarm")
        assert refused.returncode == 1 and "no latched alarm" in refused.stderr

        refused = await gateway.cli("command", "box", "lamp", "on=maybe")
        assert refused.returncode == 1 and "needs a boolean 'on'" in refused.stderr
        refused = await gateway.cli("command", "nobox", "lamp", "on=true")
        assert refused.returncode == 1 and "no device 'nobox'" in refused.stderr

        done = await gateway.cli("reset", alarm["id"], "--by", "guard li")
        assert done.returncode == 0, done.stderr
        reset = await police.wait_event(lambda e: e["type"] == "alarm.reset")
        assert reset["alarm_id"] == alarm["id"] and reset["data"]["reset_by"] == "guard li"
        await module.wait_coil(0, False, timeout_s=5)
        assert "no latched alarms" in (await gateway.cli("alarms")).stdout
        # An installer tests the lamp wiring by hand.
        lamp = await gateway.cli("command", "box", "lamp", "on=true")
        assert lamp.returncode == 0 and '"lamp": true' in lamp.stdout, lamp.stderr
        await module.wait_coil(0, True, timeout_s=5)
    assert len(police.events("alarm.panic")) == 1


async def test_reset_input_on_the_box_resets_its_alarms(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police),
    ):
        await module.pulse(0, 100)
        alarm = await police.wait_event(is_panic)
        await module.wait_coil(0, True, timeout_s=5)
        await module.pulse(7, 200)  # the key switch
        reset = await police.wait_event(lambda e: e["type"] == "alarm.reset")
        await module.wait_coil(0, False, timeout_s=5)
    assert reset["alarm_id"] == alarm["id"] and reset["data"]["reset_by"] == "reset input"


async def test_alarm_pressed_during_police_outage_arrives_when_broker_returns(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police),
    ):
        await police_broker.stop(graceful=True)
        await module.pulse(0, 100)
        await gateway.wait_stored("alarm.panic")
        await police_broker.start()
        alarm = await police.wait_event(is_panic, timeout_s=20)
    assert alarm["historical"] is True
    assert [e["id"] for e in police.events("alarm.panic")] == [alarm["id"]]


def repeated_press(presses: int) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "alarm.panic_repeated" and e["data"]["presses"] == presses


async def test_brokers_killed_under_load_leave_only_structured_lines_in_the_log(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    """Issue 10: after a broker kill, paho's and aiomqtt's own warnings and callback tracebacks
    came out as raw text in the JSON log. This kills both brokers with presses in flight and
    checks the whole log is JSON lines. It is a guard, not the reproduction: the old code passes
    it too at this load; tests/test_logsetup.py feeds the libraries' real log records through
    the set-up and fails on the old code."""
    module, port = box
    gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police, clean_exit=True),
    ):
        await module.pulse(0, 100)
        await police.wait_event(is_panic)
        for presses, broker in enumerate((police_broker, bureau_broker), start=2):
            await module.wait_input_reads(module.input_reads + 2)  # the release was seen
            await module.pulse(0, 100)
            await broker.stop()  # SIGKILL: publishes in flight are cut off
            await broker.start()
            await police.wait_event(repeated_press(presses), timeout_s=20)
    lines = gateway.log_text().splitlines()
    assert lines
    for line in lines:
        assert isinstance(json.loads(line), dict), line  # one event per line, nothing raw
    assert "pending publish calls" not in gateway.log_text()


async def test_gateway_killed_after_the_outbox_write_delivers_after_restart(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
    ):
        gateway.start()
        await online(police)
        await police_broker.stop(graceful=True)  # so the alarm can only be in the outbox
        await module.pulse(0, 100)
        stored_id = await gateway.wait_stored("alarm.panic")
        await gateway.kill()
        # The will tells the bureau the gateway is gone.
        await bureau.wait_for(lambda m: m.topic.endswith("/status") and m.json["online"] is False)
        await police_broker.start()
        gateway.start()
        try:
            alarm = await police.wait_event(is_panic, timeout_s=20)
            await module.wait_coil(0, True, timeout_s=5)  # the latch came back with the restart
            listed = await gateway.cli("alarms")
        finally:
            await gateway.stop()
    assert alarm["id"] == stored_id
    assert stored_id in listed.stdout
    ids = [e["id"] for e in police.events("alarm.panic")]
    assert set(ids) == {stored_id}


async def test_alarm_box_over_modbus_rtu_on_a_serial_line(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    module = DiDoModule(unit_id=3)
    async with (
        VirtualSerialLink(baudrate=19200) as link,
        serve_rtu({3: module}, link.device_end, baudrate=19200),
        listen("police", police_broker.host, police_broker.port) as police,
    ):
        gateway = GatewayProcess(
            tmp_path, police_broker, bureau_broker, serial_port=link.host_end, unit=3
        )
        async with gateway.running(police):
            await module.pulse(0, 150)
            alarm = await police.wait_event(is_panic)
            await module.wait_coil(0, True, timeout_s=5)
    assert alarm["device"]["id"] == "box"


async def test_press_shorter_than_the_poll_interval_is_caught_by_the_counter(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway = GatewayProcess(
        tmp_path,
        police_broker,
        bureau_broker,
        modbus_tcp_port=port,
        poll_ms=1000,
        press_counter=True,
    )
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police),
    ):
        await gateway.wait_ready()  # the counter's first value is the baseline
        await module.pulse(0, 5)  # 5 ms: between two polls 1 s apart
        alarm = await police.wait_event(is_panic, timeout_s=10)
    assert alarm["data"]["presses"] == 1


async def test_box_that_stops_answering_goes_offline_and_back_online(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
    async with (
        listen("police", police_broker.host, police_broker.port) as police,
        gateway.running(police),
    ):
        module.silent = True
        offline = await police.wait_event(lambda e: e["type"] == "device.offline")
        module.silent = False
        await police.wait_event(lambda e: e["type"] == "device.online")
    assert offline["device"]["id"] == "box" and offline["severity"] == "major"


async def test_box_whose_tcp_server_restarts_is_reached_again(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    module = DiDoModule(unit_id=1)
    async with listen("police", police_broker.host, police_broker.port) as police:
        async with serve_tcp(module) as (_, port):
            gateway = GatewayProcess(tmp_path, police_broker, bureau_broker, modbus_tcp_port=port)
            gateway.start()
            await online(police)
        try:
            await police.wait_event(lambda e: e["type"] == "device.offline")
            async with serve_tcp(module, port=port):  # the module is back (rebooted)
                await police.wait_event(lambda e: e["type"] == "device.online")
                await module.pulse(0, 150)
                alarm = await police.wait_event(is_panic)
        finally:
            await gateway.stop()
    assert alarm["device"]["id"] == "box"


async def test_press_while_the_gateway_is_down_is_counted_when_it_comes_back(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    module, port = box
    gateway = GatewayProcess(
        tmp_path, police_broker, bureau_broker, modbus_tcp_port=port, press_counter=True
    )
    async with listen("police", police_broker.host, police_broker.port) as police:
        gateway.start()
        await online(police)
        await gateway.wait_ready()  # it has seen the counter once: that value is remembered
        await gateway.stop()
        await module.pulse(0, 5)  # pressed, and released, while no gateway is running
        gateway.start()
        try:
            alarm = await police.wait_event(is_panic, timeout_s=15)
        finally:
            await gateway.stop()
    assert alarm["data"]["presses"] == 1
