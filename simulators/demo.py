"""`schoolgate demo`: a whole simulated gate on one machine, no hardware.

Starts two private mosquitto brokers (police, bureau), two simulated alarm boxes (one over Modbus
TCP, one over Modbus RTU on a virtual serial line), and the real gateway as its own process with a
generated config. Presses a panic button on a timer, shows what both brokers receive, resets each
alarm the way a guard would, and reports press-to-arrival latency. Exit 0 when every press
reached the police and every alarm was reset; 1 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from gateway import control
from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule, serve_rtu, serve_tcp
from simulators.listener import Listener, Received, listen
from simulators.vserial import VirtualSerialLink

CONFIG = """\
[site]
school_id = "demo-school"
gateway_id = "north-gate"
timezone = "Asia/Shanghai"
name = "schoolgate demo"

[store]
path = "{store}"

[control]
socket_path = "{socket}"

[destinations.police]
host = "127.0.0.1"
port = {police_port}
client_id = "demo-north-gate-police"
routes = ["alarm.*", "device.*"]

[destinations.bureau]
host = "127.0.0.1"
port = {bureau_port}
client_id = "demo-north-gate-bureau"
routes = ["*"]

[lines.booth_io]
type = "modbus_tcp"
host = "127.0.0.1"
port = {modbus_port}
timeout_ms = 300

[lines.gate_bus]
type = "modbus_rtu"
port = "{serial_port}"
baudrate = 19200
timeout_ms = 300

[devices.booth_box]
kind = "alarm_box"
line = "booth_io"
unit_id = 1
location = "North gate, guard booth"
reset_input = 7
lamp_coil = 0
[[devices.booth_box.buttons]]
input = 0
name = "booth desk button"
press_counter_register = 0

[devices.gate_box]
kind = "alarm_box"
line = "gate_bus"
unit_id = 2
location = "North gate, pedestrian gate"
lamp_coil = 0
siren_coil = 1
[[devices.gate_box.buttons]]
input = 0
name = "gate pillar button"
"""


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _show(side: str, received: Received, t0: float) -> None:
    try:
        body = received.json
    except ValueError:
        body = {}
    kind = body.get("type") or ("status online" if body.get("online") else "status offline")
    device = body.get("device", {}).get("id", "")
    seq = body.get("seq", "")
    print(
        f"  {time.monotonic() - t0:7.2f}s  {side:<7} {kind:<22} {device:<10} seq={seq}", flush=True
    )


@contextlib.asynccontextmanager
async def _gateway_process(
    config_path: Path, log_path: Path
) -> AsyncIterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            [
                sys.executable,
                "-m",
                "gateway",
                "run",
                "-c",
                str(config_path),
                "--log-format",
                "json",
            ],
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.get_running_loop().run_in_executor(None, proc.wait, 10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def _press_and_reset(
    box: DiDoModule, device_id: str, police: Listener, bureau: Listener, socket: Path
) -> float:
    """One guard's press: returns press-to-police latency in ms."""
    since = len(police.messages)
    pressed_ns = time.time_ns()
    pulse = asyncio.create_task(box.pulse(0, 150))
    arrived = await police.wait_for(
        lambda m: (
            "/events/alarm" in m.topic
            and m.json["type"] == "alarm.panic"
            and m.json["device"]["id"] == device_id
        ),
        since=since,
        timeout_s=10,
    )
    alarm = arrived.json
    await pulse
    await box.wait_coil(0, True, timeout_s=5)  # the guard's lamp shows the alarm is latched
    await bureau.wait_event(lambda e: e.get("alarm_id") == alarm["alarm_id"], timeout_s=10)
    await control.request(
        socket, {"op": "reset", "alarm_id": alarm["alarm_id"], "by": "demo guard"}
    )
    await police.wait_event(
        lambda e: e["type"] == "alarm.reset" and e["alarm_id"] == alarm["alarm_id"], timeout_s=10
    )
    await box.wait_coil(0, False, timeout_s=5)
    return (arrived.arrived_ns - pressed_ns) / 1e6


@contextlib.asynccontextmanager
async def _simulated_gate(workdir: Path) -> AsyncIterator[_Gate]:
    """Brokers, two alarm boxes and the gateway process, all torn down on exit."""
    async with (
        MosquittoBroker("police") as police_broker,
        MosquittoBroker("bureau") as bureau_broker,
    ):
        booth = DiDoModule(unit_id=1)
        gate = DiDoModule(unit_id=2)
        async with (
            serve_tcp(booth) as (_, modbus_port),
            VirtualSerialLink(baudrate=19200) as link,
            serve_rtu({2: gate}, link.device_end, baudrate=19200),
        ):
            config_path = workdir / "schoolgate.toml"
            config_path.write_text(
                CONFIG.format(
                    store=workdir / "outbox.db",
                    socket=workdir / "control.sock",
                    police_port=police_broker.port,
                    bureau_port=bureau_broker.port,
                    modbus_port=modbus_port,
                    serial_port=link.host_end,
                )
            )
            print(f"  police broker 127.0.0.1:{police_broker.port}")
            print(f"  bureau broker 127.0.0.1:{bureau_broker.port}")
            print(f"  booth_box on Modbus TCP 127.0.0.1:{modbus_port}")
            print(f"  gate_box on Modbus RTU {link.host_end} (19200 baud)")
            print(f"  gateway config {config_path}")
            print(f"  gateway log {workdir / 'gateway.log'}")
            async with (
                listen("police", "127.0.0.1", police_broker.port) as police,
                listen("bureau", "127.0.0.1", bureau_broker.port) as bureau,
                _gateway_process(config_path, workdir / "gateway.log") as proc,
            ):
                yield _Gate(
                    police, bureau, proc, [("booth_box", booth), ("gate_box", gate)], workdir
                )


@dataclass
class _Gate:
    police: Listener
    bureau: Listener
    proc: subprocess.Popen[bytes]
    boxes: list[tuple[str, DiDoModule]]
    workdir: Path


async def run_demo(*, duration_s: float | None, press_every_s: float = 2.0) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="schoolgate-demo-"))
    latencies: list[float] = []
    t0 = time.monotonic()
    print("schoolgate demo: a simulated school gate (Ctrl-C to stop)")
    async with _simulated_gate(workdir) as gate:
        gate.police.on_message = lambda m: _show("police", m, t0)
        gate.bureau.on_message = lambda m: _show("bureau", m, t0)
        await gate.police.wait_for(lambda m: m.topic.endswith("/status"), timeout_s=15)
        stop_at = None if duration_s is None else time.monotonic() + duration_s
        try:
            while stop_at is None or time.monotonic() < stop_at:
                if gate.proc.poll() is not None:
                    print(f"FAILED: the gateway exited ({gate.proc.returncode}); see its log")
                    return 1
                device_id, box = gate.boxes[len(latencies) % len(gate.boxes)]
                latency = await _press_and_reset(
                    box, device_id, gate.police, gate.bureau, workdir / "control.sock"
                )
                latencies.append(latency)
                print(
                    f"  press {len(latencies)} on {device_id}: police had it in {latency:.1f} ms;"
                )
                print("  lamp lit, alarm reset by the guard, lamp off")
                await asyncio.sleep(press_every_s)
        except (TimeoutError, control.ControlError) as exc:
            print(f"FAILED: a press was not delivered and reset in time ({exc!r})")
            return 1
    if latencies:
        print(
            f"{len(latencies)} presses, every one delivered to police and bureau and reset. "
            f"Press-to-police latency: p50 {statistics.median(latencies):.1f} ms, "
            f"p99 {_percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms"
        )
    shutil.rmtree(workdir, ignore_errors=True)  # kept only when something failed
    return 0
