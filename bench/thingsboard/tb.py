"""The ThingsBoard IoT Gateway as a benchmark subject: its own virtual environment, its config
for a run's `Layout`, the process, and what counts as a press arriving.

    .venv/bin/python bench/thingsboard/tb.py --setup     # create the venv (idempotent)

Owns the pinned install (`thingsboard-gateway==3.8.5` into `.bench-venvs/tb`, git-ignored; the
Modbus connector's own pins, pymodbus 3.9.2 and pyserial-asyncio, are installed up front because
the connector would otherwise pip-install them when it is imported) and the translation of a
`Layout` into `tb_gateway.json` + `modbus.json`: MQTT to our mosquitto on the test port (any
access token: mosquitto accepts anonymous clients), the Modbus connector polling the same
simulators, SQLite storage (or, as a second subject, its shipped memory storage; `STORAGE_RISKS`
says what each risks). Reporting is ON_CHANGE per device, the same rule as ours (the shipped
default is ON_RECEIVED, a message on every poll). On a `Layout` with an RTU line the
connector runs in serial RTU mode on the line's pseudo-terminal (the fields of the shipped
`config/modbus_serial.json`: type "serial", method "rtu", port, baudrate, bytesize, parity,
stopbits, timeout in seconds) with every slave on that port, which the connector then shares
behind one lock, as one RS-485 master must.

It does not measure anything; `bench/scenarios.py` does, the same way for both gateways.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

from subjects import Datapoint, Layout, RtuLine, Running, stop_process  # noqa: E402

from simulators.listener import Listener, Received  # noqa: E402

VERSION = "3.8.5"
PINS = [
    f"thingsboard-gateway=={VERSION}",
    "pymodbus==3.9.2",
    "pyserial==3.5",
    "pyserial-asyncio==0.6",
]
VENV = BENCH.parent / ".bench-venvs" / "tb"
PYTHON = VENV / "bin" / "python"
TELEMETRY_TOPIC = "v1/gateway/telemetry"


def setup(*, quiet: bool = True) -> Path:
    """Create the venv and install the pinned gateway once; returns its python."""
    marker = VENV / f".installed-{VERSION}"
    if marker.exists():
        return PYTHON
    if not PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run(
        [str(PYTHON), "-m", "pip", "install", *(["-q"] if quiet else []), *PINS],
        check=True,
    )
    marker.write_text(" ".join(PINS) + "\n")
    return PYTHON


def _package_dir() -> Path:
    found = list((VENV / "lib").glob("python*/site-packages/thingsboard_gateway"))
    if not found:
        raise RuntimeError(f"thingsboard_gateway is not installed in {VENV}")
    return found[0]


def _tcp(port: int) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "type": "tcp",
        "method": "socket",
        "timeout": 35,
        "retries": 3,
    }


def _serial(line: RtuLine) -> dict[str, Any]:
    """The connector's serial RTU fields (its `modbus_serial.json` example, connector
    `Slave.__init__` and `Master.configure_master`): pymodbus' `AsyncModbusSerialClient` on
    `port`, `timeout` in seconds per request. `retries` 0, as schoolgate's line: one
    unanswered request holds the line for the timeout once (3, the connector's default, would
    hold it four times as long on every poll of the dead unit)."""
    return {
        "type": "serial",
        "method": "rtu",
        "port": line.port,
        "baudrate": line.baudrate,
        "bytesize": 8,
        "parity": "N",
        "stopbits": 1,
        "timeout": line.timeout_ms / 1000,
        "retries": 0,
    }


def _slave(
    name: str, connection: dict[str, Any], unit: int, poll_ms: int, series: list[dict[str, Any]]
) -> dict[str, Any]:
    return {
        **connection,
        "unitId": unit,
        "deviceName": name,
        "deviceType": "default",
        "byteOrder": "BIG",
        "wordOrder": "BIG",
        "retryOnEmpty": True,
        "retryOnInvalid": True,
        "pollPeriod": poll_ms,
        "connectAttemptTimeMs": 500,
        "connectAttemptCount": 5,
        "waitAfterFailedAttemptsMs": 1000,
        "reportStrategy": {"type": "ON_CHANGE"},
        "attributes": [],
        "timeseries": series,
        "attributeUpdates": [],
        "rpc": [],
    }


def _input0(tag: str) -> dict[str, Any]:
    """Discrete input 0 as an int (0/1)."""
    return {
        "tag": tag,
        "type": "bits",
        "functionCode": 2,
        "objectsCount": 1,
        "address": 0,
        "bitTargetType": "int",
    }


def _sqlite(workdir: Path) -> dict[str, Any]:
    return {
        "type": "sqlite",
        "data_file_path": f"{workdir}/data/",
        "messages_ttl_check_in_hours": 1,
        "messages_ttl_in_days": 7,
        "max_read_records_count": 1000,
    }


def _memory(_workdir: Path) -> dict[str, Any]:
    """The shipped default's storage (`config/tb_gateway.json` of 3.8.5): a queue in the
    process, 100,000 records at most, read 100 at a time."""
    return {"type": "memory", "read_records_count": 100, "max_records_count": 100_000}


STORAGES: dict[str, Callable[[Path], dict[str, Any]]] = {"sqlite": _sqlite, "memory": _memory}
STORAGE_RISKS = {
    "sqlite": "SQLite storage: a write thread commits what the connectors hand it in batches on "
    "a 200 ms cycle (its `storage/sqlite/database.py`); what is in the file survives a crash, "
    "what still waits in the queue for the next cycle does not",
    "memory": "memory storage (its shipped default): every message waits in a queue inside the "
    "process (`storage/memory/memory_event_storage.py`), so a crash, a restart or a power cut "
    "loses all it holds (during a broker outage, the whole backlog); when 100,000 records are "
    "queued, new data is refused",
}
"""What each storage risks, as the report labels the figures measured with it."""


def configs(layout: Layout, workdir: Path, storage: str = "sqlite") -> dict[str, Any]:
    slaves = []
    if layout.box_port is not None:
        slaves.append(
            _slave("box", _tcp(layout.box_port), 1, layout.box_poll_ms, [_input0("panic")])
        )
    if layout.rtu is not None:
        line = _serial(layout.rtu)
        unit = layout.rtu.alarm_unit
        slaves.append(_slave("box", line, unit, layout.box_poll_ms, [_input0("panic")]))
        for unit in layout.rtu.other_units:
            name = layout.rtu.other_name(unit)
            slaves.append(_slave(name, line, unit, layout.rtu.other_poll_ms, [_input0("socket")]))
    for unit in range(1, layout.load_devices + 1):
        series = [
            {"tag": f"p{i}", "type": "16uint", "functionCode": 4, "objectsCount": 1, "address": i}
            for i in range(layout.load_points)
        ]
        assert layout.load_port is not None
        slaves.append(_slave(f"d{unit}", _tcp(layout.load_port), unit, layout.load_poll_ms, series))
    shipped = json.loads((_package_dir() / "config" / "tb_gateway.json").read_text())
    main = shipped
    main["thingsboard"].update(
        {
            "host": "127.0.0.1",
            "port": layout.police_port,
            "remoteConfiguration": False,
            "security": {"type": "accessToken", "accessToken": "bench-gate"},
        }
    )
    main["storage"] = STORAGES[storage](workdir)
    main["connectors"] = [{"type": "modbus", "name": "modbus", "configuration": "modbus.json"}]
    logs = (_package_dir() / "config" / "logs.json").read_text()
    logs = logs.replace("./logs/", f"{workdir}/logs/")
    return {
        "tb_gateway.json": main,
        "modbus.json": {"master": {"slaves": slaves}},
        "logs.json": json.loads(logs),
    }


SESSION_LIMITS = {
    "rateLimits": {"messages": "0:0,", "telemetryMessages": "0:0,", "telemetryDataPoints": "0:0,"},
    "gatewayRateLimits": {
        "messages": "0:0,",
        "telemetryMessages": "0:0,",
        "telemetryDataPoints": "0:0,",
    },
    "maxInflightMessages": 100,
    "maxPayloadSize": 65536,
}
"""What a ThingsBoard server answers to the gateway's `getSessionLimits` RPC, with no rate limits.
The gateway sends no telemetry until it has an answer, and mosquitto is not ThingsBoard."""


class ServerStandIn:
    """Answers the gateway's RPC requests to the server on the broker, as ThingsBoard would."""

    def __init__(self, port: int) -> None:
        self.client = paho.Client(
            paho.CallbackAPIVersion.VERSION2, client_id=f"bench-tb-server-{time.monotonic_ns()}"
        )
        self.client.on_connect = lambda c, *_: c.subscribe("v1/devices/me/rpc/request/+", qos=1)
        self.client.on_message = self._on_message
        self.port = port
        self.answered = 0

    def _on_message(self, client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        request = json.loads(msg.payload)
        request_id = msg.topic.rsplit("/", 1)[1]
        answer: dict[str, Any] = (
            SESSION_LIMITS if request.get("method") == "getSessionLimits" else {}
        )
        client.publish(f"v1/devices/me/rpc/response/{request_id}", json.dumps(answer), qos=1)
        self.answered += 1

    def __enter__(self) -> ServerStandIn:
        self.client.reconnect_delay_set(0.05, 0.2)
        self.client.connect("127.0.0.1", self.port)
        self.client.loop_start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def parse_tb(topic: str, payload: bytes) -> list[Datapoint]:
    """Datapoints of a `v1/gateway/telemetry` message: {device: [{ts, values}] | {values}}."""
    if topic != TELEMETRY_TOPIC:
        return []
    found: list[Datapoint] = []
    for device, entries in json.loads(payload).items():
        for entry in entries if isinstance(entries, list) else [entries]:
            values = entry.get("values", entry) if isinstance(entry, dict) else {}
            found.extend((device, key, value) for key, value in values.items() if key != "ts")
    return found


def is_press(message: Received) -> bool:
    return any(
        device == "box" and key == "panic" and value in (1, True)
        for device, key, value in parse_tb(message.topic, message.payload)
    )


def has_data(message: Received) -> bool:
    return bool(parse_tb(message.topic, message.payload))


def is_disconnect(device: str) -> Callable[[Received], bool]:
    """The gateway's `v1/gateway/disconnect` for `device`: what its Modbus connector sends
    when a poll of the device fails (it connects the device again at the next poll)."""

    def check(message: Received) -> bool:
        if message.topic != "v1/gateway/disconnect":
            return False
        return bool(json.loads(message.payload).get("device") == device)

    return check


def is_release(message: Received) -> bool:
    """`panic` 0 for the alarm box: the release reported."""
    return any(
        device == "box" and key == "panic" and value in (0, False)
        for device, key, value in parse_tb(message.topic, message.payload)
    )


class ThingsBoard:
    """The gateway as a subject, with SQLite storage (`thingsboard`, what every phase uses) or
    its shipped memory storage (`thingsboard-memory`)."""

    brokers = ("police",)
    listen_filter = "v1/gateway/#"

    def __init__(self, storage: str = "sqlite") -> None:
        if storage not in STORAGES:
            raise ValueError(f"storage must be one of {sorted(STORAGES)}, not {storage!r}")
        self.storage = storage
        self.storage_risk = STORAGE_RISKS[storage]
        self.name = "thingsboard" if storage == "sqlite" else f"thingsboard-{storage}"

    @contextlib.asynccontextmanager
    async def run(self, layout: Layout, workdir: Path) -> AsyncIterator[Running]:
        python = setup()
        config_dir = workdir / "config"
        config_dir.mkdir(parents=True, exist_ok=True)
        (workdir / "logs").mkdir(exist_ok=True)
        (workdir / "data").mkdir(exist_ok=True)
        for name, content in configs(layout, workdir, self.storage).items():
            (config_dir / name).write_text(json.dumps(content, indent=2))
        log = (workdir / "tb.log").open("wb")
        env = dict(os.environ, TB_GW_CONFIG_DIR=str(config_dir))
        spawned_ns = time.time_ns()
        proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [str(python), "-m", "thingsboard_gateway.tb_gateway"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

        dead = layout.rtu.dead_unit if layout.rtu is not None else None

        async def settle(_arrived: Received, _listener: Listener) -> None:
            return None  # nothing latches: the release is reported as a change by itself

        try:
            with ServerStandIn(layout.police_port):
                yield Running(
                    name=self.name,
                    pid=proc.pid,
                    workdir=workdir,
                    spawned_ns=spawned_ns,
                    press_arrived=is_press,
                    after_press=settle,
                    release_arrived=is_release,
                    alarm_filter=TELEMETRY_TOPIC,
                    telemetry_filter=TELEMETRY_TOPIC,
                    parse=parse_tb,
                    first_data=has_data,
                    device_offline=(
                        is_disconnect(RtuLine.other_name(dead)) if dead is not None else None
                    ),
                    extra={"proc": proc},
                )
        except BaseException:
            log.flush()
            print(f"thingsboard log ends with:\n{(workdir / 'tb.log').read_text()[-3000:]}")
            raise
        finally:
            await stop_process(proc)
            log.close()


if __name__ == "__main__":
    if "--setup" in sys.argv:
        print(setup(quiet=False))
