"""A whole simulated school gate on one machine: every device kind, both brokers and the real
gateway process, as one async context manager for the demo, the scenario runner and tests.

Owns the gate's layout (which simulated device sits on which line at which unit id or address),
the gateway config generated for it, starting and stopping the pieces in order, and readiness:
the block starts only once the gateway reports every device polled (its `devices_ready` log
event, read from its stdout as it is written) and both brokers have its `online` status.

    alarm box `panic_box`      DI/DO module, Modbus TCP, unit 1 (buttons on inputs 0 and 1,
                               reset key on input 7, lamp coil 0, siren coil 1)
    RS-485 line `gate_bus`     Modbus RTU at 19200 baud on a virtual serial link:
        `bollard_1`            rising bollard, unit 2, generic layout
        `bollard_2`            rising bollard, unit 3, vendor B layout
        `lane_sockets`         insert-type bollard sockets, unit 4 ("socket 1" on input 0, ...)
    serial line `door_bus`     access controller `gate_doors`, address 1, at 9600 baud
    brokers                    private mosquitto `police` (default routes) and `bureau` (all)

It does not script anything (`simulators.scenario` and `simulators.demo` do) and asserts nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from simulators.access_controller import SimBus, SimController, serve_serial
from simulators.bollard import GENERIC, VENDOR_B, BollardController, SocketSensors
from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule
from simulators.listener import Listener, Received, listen
from simulators.measure import gateway_command
from simulators.modbus_serve import SimUnit, serve_rtu, serve_tcp
from simulators.vserial import VirtualSerialLink

DeviceId = Literal["panic_box", "bollard_1", "bollard_2", "lane_sockets", "gate_doors"]
BrokerName = Literal["police", "bureau"]
LineName = Literal["gate_bus", "door_bus"]
DEVICE_IDS: tuple[DeviceId, ...] = get_args(DeviceId)
BROKERS: tuple[BrokerName, ...] = get_args(BrokerName)

RESET_INPUT = 7
BOLLARD_UNITS = {1: 2, 2: 3}
"""Bollard number (as a person at the gate counts them) -> Modbus unit id on `gate_bus`."""
SOCKETS_UNIT = 4
DOORS = (1, 2)
GATE_BUS_BAUD = 19200
DOOR_BUS_BAUD = 9600
BOLLARD_TRAVEL_MS = 600
"""Short on purpose (a real hydraulic bollard takes seconds): scenarios stay a few seconds."""
TRAVEL_TIMEOUT_MS = 2000
OFFLINE_AFTER_MS = 2000
SITE_TZ = "Asia/Shanghai"

CONFIG = """\
[site]
school_id = "sim-school"
gateway_id = "north-gate"
timezone = "{site_tz}"
name = "schoolgate simulated gate"

[store]
path = "{workdir}/outbox.db"

[control]
socket_path = "{workdir}/control.sock"

# routes left unset: police gets the alarm lane and alarm.* resets, bureau everything.
[destinations.police]
host = "127.0.0.1"
port = {police_port}
client_id = "sim-north-gate-police"

[destinations.bureau]
host = "127.0.0.1"
port = {bureau_port}
client_id = "sim-north-gate-bureau"

# Poll intervals are left at their defaults (alarm box 50 ms, bollards and sockets 200 ms, access
# controller 100 ms): the demo shows what an installer gets, and the footprint bench measures it.

[lines.booth_io]
type = "modbus_tcp"
host = "127.0.0.1"
port = {modbus_port}
timeout_ms = 300

[lines.gate_bus]
type = "modbus_rtu"
port = "{gate_bus}"
baudrate = {gate_baud}
timeout_ms = 200

[lines.door_bus]
type = "serial"
port = "{door_bus}"
baudrate = {door_baud}
timeout_ms = 300

[devices.panic_box]
kind = "alarm_box"
line = "booth_io"
unit_id = 1
location = "North gate, guard booth"
offline_after_ms = {offline_ms}
reset_input = {reset_input}
lamp_coil = 0
siren_coil = 1
[[devices.panic_box.buttons]]
input = 0
name = "booth desk button"
press_counter_register = 0
[[devices.panic_box.buttons]]
input = 1
name = "guard remote"
press_counter_register = 1

[devices.bollard_1]
kind = "bollard"
line = "gate_bus"
unit_id = {bollard_1_unit}
location = "North gate, vehicle lane, bollard 1"
profile = "generic_bollard"
travel_timeout_ms = {travel_timeout_ms}
offline_after_ms = {offline_ms}

[devices.bollard_2]
kind = "bollard"
line = "gate_bus"
unit_id = {bollard_2_unit}
location = "North gate, vehicle lane, bollard 2"
profile = "vendor_b"
travel_timeout_ms = {travel_timeout_ms}
offline_after_ms = {offline_ms}

[devices.lane_sockets]
kind = "bollard_sockets"
line = "gate_bus"
unit_id = {sockets_unit}
location = "North gate, pedestrian lane"
offline_after_ms = {offline_ms}
sockets = [{{ input = 0, name = "socket 1" }}, {{ input = 1, name = "socket 2" }}]

[devices.gate_doors]
kind = "access_controller"
line = "door_bus"
address = 1
location = "North gate, pedestrian gate"
offline_after_ms = {offline_ms}
doors = {{ 1 = "pedestrian gate", 2 = "staff door" }}
readers = {{ 1 = "gate outside", 2 = "gate inside" }}
"""


class GateError(Exception):
    """The simulated gate could not start (no mosquitto, the gateway exited or never got ready)."""


@dataclass
class SimulatedGate:
    """The running gate; drive the simulators by name, watch the brokers through `listeners`."""

    workdir: Path
    config_path: Path
    log_path: Path
    panic_box: DiDoModule
    bollards: dict[int, BollardController]
    sockets: SocketSensors
    doors: SimController
    door_bus: SimBus
    lines: dict[LineName, VirtualSerialLink]
    brokers: dict[BrokerName, MosquittoBroker]
    listeners: dict[BrokerName, Listener]
    gateway: asyncio.subprocess.Process
    devices: dict[DeviceId, DiDoModule | BollardController | SimController] = field(init=False)
    ready_at: float = 0.0
    """time.monotonic() when the gate became ready."""

    def __post_init__(self) -> None:
        self.devices = {
            "panic_box": self.panic_box,
            "bollard_1": self.bollards[1],
            "bollard_2": self.bollards[2],
            "lane_sockets": self.sockets,
            "gate_doors": self.doors,
        }

    @property
    def police(self) -> Listener:
        return self.listeners["police"]

    @property
    def bureau(self) -> Listener:
        return self.listeners["bureau"]

    @property
    def control_socket(self) -> Path:
        return self.workdir / "control.sock"

    def gateway_exited(self) -> int | None:
        return self.gateway.returncode

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def show_live(self, t0: float | None = None) -> None:
        """Print every message both brokers deliver, one line each, as it arrives."""
        start = self.ready_at if t0 is None else t0
        for name, listener in self.listeners.items():
            listener.on_message = lambda m, side=name: print(describe(side, m, start), flush=True)

    def summary(self) -> str:
        gate_bus, door_bus = self.lines["gate_bus"], self.lines["door_bus"]
        return "\n".join(
            [
                f"  police broker 127.0.0.1:{self.brokers['police'].port} (alarm lane and resets)",
                f"  bureau broker 127.0.0.1:{self.brokers['bureau'].port} (everything)",
                "  panic_box: alarm box on Modbus TCP (buttons 0, 1; reset key; lamp)",
                f"  bollard_1, bollard_2, lane_sockets: Modbus RTU on {gate_bus.host_end} "
                f"({GATE_BUS_BAUD} baud)",
                f"  gate_doors: access controller on {door_bus.host_end} ({DOOR_BUS_BAUD} baud)",
                f"  gateway config {self.config_path}",
                f"  gateway log {self.log_path}",
            ]
        )


def describe(side: str, received: Received, t0: float) -> str:
    """One readable line for a delivered message, with its time since `t0` (monotonic)."""
    try:
        body = received.json
    except (ValueError, TypeError):
        body = {}
    kind = body.get("type") or _untyped_kind(received.topic, body)
    device = body.get("device", {}).get("id", "")
    detail = " historical" if body.get("historical") else ""
    at = arrival_s(received, t0)
    return f"  {at:7.2f}s  {side:<7} {kind:<22} {device:<12} seq={body.get('seq', '')}{detail}"


def _untyped_kind(topic: str, body: dict[str, Any]) -> str:
    """A message without `type`: a receiver's command or the gateway's retained status."""
    if topic.endswith("/commands"):
        return f"command {body.get('command', '?')}"
    if "online" in body:
        return "status online" if body["online"] else "status offline"
    return topic.rsplit("/", 1)[-1]


def arrival_s(received: Received, t0: float) -> float:
    """Arrival as seconds since the monotonic instant `t0` (arrivals are stamped in wall time)."""
    return (received.arrived_ns - time.time_ns()) / 1e9 + time.monotonic() - t0


def gateway_config(
    workdir: Path,
    *,
    police_port: int,
    bureau_port: int,
    modbus_port: int,
    gate_bus: str,
    door_bus: str,
) -> str:
    return CONFIG.format(
        workdir=workdir,
        police_port=police_port,
        bureau_port=bureau_port,
        modbus_port=modbus_port,
        gate_bus=gate_bus,
        door_bus=door_bus,
        gate_baud=GATE_BUS_BAUD,
        door_baud=DOOR_BUS_BAUD,
        offline_ms=OFFLINE_AFTER_MS,
        reset_input=RESET_INPUT,
        bollard_1_unit=BOLLARD_UNITS[1],
        bollard_2_unit=BOLLARD_UNITS[2],
        travel_timeout_ms=TRAVEL_TIMEOUT_MS,
        sockets_unit=SOCKETS_UNIT,
        site_tz=SITE_TZ,
    )


@contextlib.asynccontextmanager
async def _gateway_process(
    config_path: Path, log_path: Path, env: Mapping[str, str]
) -> AsyncIterator[tuple[asyncio.subprocess.Process, asyncio.Event]]:
    """`python -m gateway run`, its JSON log copied to `log_path`; the event is set when it logs
    `devices_ready` (every driver has polled its device once)."""
    ready = asyncio.Event()
    proc = await asyncio.create_subprocess_exec(
        *gateway_command(config_path),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, **env},
    )

    async def copy_log() -> None:
        assert proc.stdout is not None
        with log_path.open("wb") as log:
            while line := await proc.stdout.readline():
                log.write(line)
                log.flush()  # a tester tails it while the gate runs
                if not ready.is_set() and b"devices_ready" in line:
                    with contextlib.suppress(ValueError):
                        if json.loads(line).get("event") == "devices_ready":
                            ready.set()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(copy_log(), name="gateway-log")
        try:
            yield proc, ready
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    # copy_log ends at EOF, which comes when the process has exited.


def gate_devices() -> tuple[DiDoModule, dict[int, BollardController], SocketSensors, SimController]:
    """The simulated devices of the gate (the demo's and the chaos soak's): the alarm box, the
    two bollards, the socket sensors and the access controller."""
    bollards = {
        1: BollardController(BOLLARD_UNITS[1], layout=GENERIC, travel_ms=BOLLARD_TRAVEL_MS),
        2: BollardController(BOLLARD_UNITS[2], layout=VENDOR_B, travel_ms=BOLLARD_TRAVEL_MS),
    }
    return (
        DiDoModule(unit_id=1),
        bollards,
        SocketSensors(SOCKETS_UNIT, sockets=2),
        SimController(1, doors=DOORS),
    )


@contextlib.asynccontextmanager
async def simulated_gate(
    workdir: Path | None = None,
    *,
    ready_timeout_s: float = 20.0,
    extra_config: str = "",
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[SimulatedGate]:
    """Start everything, wait until the gateway has polled every device and both brokers have
    it online, yield the gate; tear it all down on exit. Raises `GateError` when it cannot start.
    The config, outbox and log go to `workdir` (a new temporary folder when None); the caller
    removes it, so a failed run can keep it for a look. `env` is added to the gateway's
    environment (the scenario runner's clock seam)."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="schoolgate-gate-"))
    panic_box, bollards, sockets, doors = gate_devices()
    on_gate_bus: dict[int, SimUnit] = {b.unit_id: b for b in bollards.values()}
    on_gate_bus[sockets.unit_id] = sockets
    async with (
        MosquittoBroker("police") as police_broker,
        MosquittoBroker("bureau") as bureau_broker,
        serve_tcp(panic_box) as (_, modbus_port),
        VirtualSerialLink(baudrate=GATE_BUS_BAUD) as gate_bus,
        serve_rtu(on_gate_bus, gate_bus.device_end, baudrate=GATE_BUS_BAUD),
        VirtualSerialLink(baudrate=DOOR_BUS_BAUD) as door_link,
        serve_serial(doors, door_link.device_end, baudrate=DOOR_BUS_BAUD) as door_bus,
        listen("police", police_broker.host, police_broker.port) as police,
        listen("bureau", bureau_broker.host, bureau_broker.port) as bureau,
    ):
        config_path = workdir / "schoolgate.toml"
        config_path.write_text(
            gateway_config(
                workdir,
                police_port=police_broker.port,
                bureau_port=bureau_broker.port,
                modbus_port=modbus_port,
                gate_bus=gate_bus.host_end,
                door_bus=door_link.host_end,
            )
            + extra_config  # whole sections, e.g. [security] for tests of signed commands
        )
        log_path = workdir / "gateway.log"
        async with _gateway_process(config_path, log_path, env or {}) as (proc, devices_ready):
            gate = SimulatedGate(
                workdir=workdir,
                config_path=config_path,
                log_path=log_path,
                panic_box=panic_box,
                bollards=bollards,
                sockets=sockets,
                doors=doors,
                door_bus=door_bus,
                lines={"gate_bus": gate_bus, "door_bus": door_link},
                brokers={"police": police_broker, "bureau": bureau_broker},
                listeners={"police": police, "bureau": bureau},
                gateway=proc,
            )
            await _until_ready(gate, devices_ready, ready_timeout_s)
            gate.ready_at = time.monotonic()
            yield gate


async def _until_ready(gate: SimulatedGate, devices_ready: asyncio.Event, timeout_s: float) -> None:
    def online(m: Received) -> bool:
        return m.topic.endswith("/status") and m.json.get("online") is True

    async def ready() -> None:
        await devices_ready.wait()
        for listener in gate.listeners.values():
            await listener.wait_for(online, timeout_s=timeout_s)

    # Whichever comes first: ready, the gateway exiting (a bad config, a port it cannot open),
    # or the timeout.
    waiting = asyncio.ensure_future(ready())
    exited = asyncio.ensure_future(gate.gateway.wait())
    done, pending = await asyncio.wait(
        {waiting, exited}, timeout=timeout_s, return_when="FIRST_COMPLETED"
    )
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    if waiting in done and waiting.exception() is None:
        return
    why = "exited" if exited in done else f"was not ready within {timeout_s:.0f} s"
    raise GateError(f"the gateway {why}; its log ({gate.log_path}) ends:\n{gate.log_tail()}")


__all__ = ["BROKERS", "DEVICE_IDS", "GateError", "SimulatedGate", "describe", "simulated_gate"]
