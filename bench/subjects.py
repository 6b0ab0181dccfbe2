"""The gateways under test, behind one small interface so every scenario measures them the same
way: schoolgate (the real `gateway run` process, started as bench/drain.py does) here, the
ThingsBoard IoT Gateway in `bench/thingsboard/tb.py`.

Owns `Layout` (which simulated devices a run has and how often they are polled), the paho-based
`Counter` that records every datapoint a broker delivers (in its own thread, so counting
thousands of messages a second does not slow the benchmark's event loop), and `Schoolgate`:
config generation, start, readiness, what counts as a press arriving, and the reset after it.
Scenarios live in `bench/scenarios.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from counting import Datapoint

from gateway.commands import control
from simulators.listener import Listener, Received
from simulators.measure import gateway_command


@dataclass
class RtuLine:
    """One shared Modbus RTU line (bench/shared_line.py's set-up): the alarm box and other DI
    modules (insert-type bollard sockets) on one serial port, the `host_end` of a
    `simulators.vserial.VirtualSerialLink`. The box is polled every `Layout.box_poll_ms`."""

    port: str
    baudrate: int = 9600
    timeout_ms: int = 100
    alarm_unit: int = 1
    other_units: tuple[int, ...] = (2, 3, 4, 5)
    other_poll_ms: int = 200
    dead_unit: int | None = 5
    """A unit that never answers (the simulator's module is silent)."""

    @staticmethod
    def other_name(unit: int) -> str:
        return f"other{unit}"


@dataclass
class Layout:
    """The simulated devices of one run: Modbus TCP on loopback, and with `rtu` the alarm box on
    a shared RTU line instead of TCP."""

    police_port: int
    bureau_port: int | None = None
    box_port: int | None = None
    box_poll_ms: int = 50
    load_port: int | None = None
    load_devices: int = 0
    load_points: int = 0
    load_poll_ms: int = 100
    telemetry_to_police: bool = False
    """Police gets everything (outage runs); otherwise the alarm lane only, bureau the rest."""
    rtu: RtuLine | None = None


class Counter:
    """Every datapoint one broker delivers on `topic_filter`, with its arrival time (ns)."""

    def __init__(
        self,
        name: str,
        port: int,
        topic_filter: str,
        parse: Callable[[str, bytes], list[Datapoint]],
    ) -> None:
        self.name = name
        self.port = port
        self.topic_filter = topic_filter
        self.parse = parse
        self.arrivals: list[tuple[int, Datapoint]] = []
        self.messages = 0
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=f"bench-counter-{name}-{time.monotonic_ns()}",
            clean_session=False,
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, *_args: object) -> None:
        client.subscribe(self.topic_filter, qos=1)
        self._subscribed.set()

    def _on_message(self, _client: object, _userdata: object, message: paho.MQTTMessage) -> None:
        now = time.time_ns()
        try:
            points = self.parse(message.topic, message.payload)
        except (ValueError, TypeError, KeyError, AttributeError):
            points = []
        with self._lock:
            self.messages += 1
            self.arrivals.extend((now, p) for p in points)

    def snapshot(self) -> list[tuple[int, Datapoint]]:
        with self._lock:
            return list(self.arrivals)

    def __enter__(self) -> Counter:
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError(f"counter {self.name} did not subscribe")
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def parse_schoolgate(topic: str, payload: bytes) -> list[Datapoint]:
    if "/events/" not in topic:
        return []
    event = json.loads(payload)
    if event.get("type") != "telemetry.point":
        return []
    return [(event["device"]["id"], event["data"]["name"], event["data"]["value"])]


# -- schoolgate --------------------------------------------------------------------------------

CONFIG_HEAD = """\
[site]
school_id = "bench-school"
gateway_id = "bench-gate"

[store]
path = "{dir}/outbox.db"

[control]
socket_path = "{dir}/control.sock"

[destinations.police]
host = "127.0.0.1"
port = {police}
client_id = "bench-police"
{police_routes}
"""

BUREAU = """
[destinations.bureau]
host = "127.0.0.1"
port = {bureau}
client_id = "bench-bureau"
routes = ["*"]
"""

BOX = """
[lines.box_io]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}

[devices.box]
kind = "alarm_box"
line = "box_io"
unit_id = 1
poll_interval_ms = {poll}
lamp_coil = 0
[[devices.box.buttons]]
input = 0
press_counter_register = 0
"""

RTU_LINE = """
[lines.bus]
type = "modbus_rtu"
port = "{port}"
baudrate = {baudrate}
timeout_ms = {timeout_ms}

[devices.box]
kind = "alarm_box"
line = "bus"
unit_id = {alarm_unit}
poll_interval_ms = {poll}
lamp_coil = 0
[[devices.box.buttons]]
input = 0
"""

RTU_OTHER = """
[devices.{name}]
kind = "bollard_sockets"
line = "bus"
unit_id = {unit}
poll_interval_ms = {poll}
[[devices.{name}.sockets]]
input = 0
name = "socket {unit}"
"""

LOAD_DEVICE = """
[lines.io{unit}]
type = "modbus_tcp"
host = "127.0.0.1"
port = {port}

[devices.d{unit}]
kind = "modbus_points"
line = "io{unit}"
unit_id = {unit}
poll_interval_ms = {poll}
{points}"""

LOAD_POINT = """[[devices.d{unit}.points]]
name = "p{i}"
function = "input_register"
address = {i}
data_type = "uint16"
"""


def schoolgate_config(layout: Layout, workdir: Path) -> str:
    routes = ""
    if layout.telemetry_to_police:
        routes = 'routes = ["*"]'
    elif layout.rtu is not None:
        # bench/shared_line.py's routes: the police see devices go offline (the dead unit).
        routes = 'routes = ["alarm.*", "device.*"]'
    text = CONFIG_HEAD.format(dir=workdir, police=layout.police_port, police_routes=routes)
    if layout.bureau_port is not None:
        text += BUREAU.format(bureau=layout.bureau_port)
    if layout.box_port is not None:
        text += BOX.format(port=layout.box_port, poll=layout.box_poll_ms)
    if layout.rtu is not None:
        rtu = layout.rtu
        text += RTU_LINE.format(
            port=rtu.port,
            baudrate=rtu.baudrate,
            timeout_ms=rtu.timeout_ms,
            alarm_unit=rtu.alarm_unit,
            poll=layout.box_poll_ms,
        )
        for unit in rtu.other_units:
            text += RTU_OTHER.format(name=rtu.other_name(unit), unit=unit, poll=rtu.other_poll_ms)
    for unit in range(1, layout.load_devices + 1):
        points = "".join(LOAD_POINT.format(unit=unit, i=i) for i in range(layout.load_points))
        text += LOAD_DEVICE.format(
            unit=unit, port=layout.load_port, poll=layout.load_poll_ms, points=points
        )
    return text


def is_panic(message: Received) -> bool:
    return "/events/" in message.topic and message.json.get("type") == "alarm.panic"


def is_reset(message: Received) -> bool:
    return "/events/" in message.topic and message.json.get("type") == "alarm.reset"


def is_offline(device: str) -> Callable[[Received], bool]:
    """`device.offline` for `device` (the police get `device.*` on an RTU layout)."""

    def check(message: Received) -> bool:
        if "/events/" not in message.topic:
            return False
        event = message.json
        return bool(
            event.get("type") == "device.offline" and event.get("device", {}).get("id") == device
        )

    return check


@dataclass
class Running:
    """A started gateway as the scenarios see it."""

    name: str
    pid: int
    workdir: Path
    spawned_ns: int
    press_arrived: Callable[[Received], bool]
    after_press: Callable[[Received, Listener], Any]
    """Awaitable factory: what follows an arrived press before the next one (reset, ...)."""
    alarm_filter: str
    telemetry_filter: str
    parse: Callable[[str, bytes], list[Datapoint]]
    release_arrived: Callable[[Received], bool]
    """The message that shows the button back to normal at the broker: schoolgate's
    `alarm.reset` (its alarm latches until reset; a button's release is no message of its
    own), ThingsBoard's `panic` 0."""
    first_data: Callable[[Received], bool] | None = None
    """Readiness seen at the broker (a gateway without a status socket): the first datapoint."""
    device_offline: Callable[[Received], bool] | None = None
    """The message that shows the layout's dead RTU unit taken offline (None: no dead unit)."""
    extra: dict[str, Any] = field(default_factory=dict)


class Schoolgate:
    name = "schoolgate"
    brokers = ("police", "bureau")
    listen_filter = "schoolgate/#"
    storage_risk = (
        "SQLite outbox: an alarm is committed to the file before any broker sees it, other "
        "events within the store's `batch_delay_ms` (`gateway/store/outbox.py`); what is "
        "committed survives a crash"
    )

    @contextlib.asynccontextmanager
    async def run(self, layout: Layout, workdir: Path) -> AsyncIterator[Running]:
        config = workdir / "schoolgate.toml"
        config.write_text(schoolgate_config(layout, workdir))
        socket = workdir / "control.sock"
        log = (workdir / "gateway.log").open("wb")
        spawned_ns = time.time_ns()
        proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            gateway_command(config), stdout=log, stderr=subprocess.STDOUT
        )

        async def reset(arrived: Received, listener: Listener) -> None:
            alarm_id = arrived.json["alarm_id"]
            since = len(listener.messages)
            await control.request(socket, {"op": "reset", "alarm_id": alarm_id, "by": "bench"})
            await listener.wait_for(
                lambda m: is_reset(m) and m.json.get("alarm_id") == alarm_id,
                since=max(0, since - 5),
                timeout_s=10,
            )

        dead = layout.rtu.dead_unit if layout.rtu is not None else None
        try:
            # A dead unit is never ready: then the gateway answering its status is enough, and
            # the scenario waits for the unit's device.offline.
            await self._wait_ready(socket, proc, all_devices=dead is None)
            yield Running(
                name=self.name,
                pid=proc.pid,
                workdir=workdir,
                spawned_ns=spawned_ns,
                press_arrived=is_panic,
                after_press=reset,
                release_arrived=is_reset,
                alarm_filter="schoolgate/v1/+/+/events/alarm",
                telemetry_filter="schoolgate/#",
                parse=parse_schoolgate,
                device_offline=(is_offline(RtuLine.other_name(dead)) if dead is not None else None),
            )
        except BaseException:
            log.flush()
            print(f"schoolgate log ends with:\n{(workdir / 'gateway.log').read_text()[-3000:]}")
            raise
        finally:
            await stop_process(proc)
            log.close()

    async def _wait_ready(
        self, socket: Path, proc: subprocess.Popen[bytes], *, all_devices: bool = True
    ) -> None:
        async with asyncio.timeout(60):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"schoolgate exited with {proc.returncode}")
                with contextlib.suppress(control.ControlError, OSError):
                    status = await control.request(socket, {"op": "status"})
                    if status["devices_ready"] or not all_devices:
                        return
                await asyncio.sleep(0.02)


async def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a gateway under test and wait for it; SIGKILL it after 15 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
