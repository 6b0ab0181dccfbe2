"""Real gateway processes beside the simulated fleet (issue 15's bench): each one a `schoolgate
run` with its own signed identity, an alarm box on a simulated DI/DO module (Modbus TCP in this
process) and the broker's nodes as its police destination's `nodes`.

Owns their configs, processes and modules, and pressing their buttons; it does not read the
console (bench/fleet.py does) and is not a unit test.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gateway.commands import control
from gateway.core import keys
from simulators.dido import DiDoModule, serve_tcp
from simulators.measure import gateway_command

CONFIG = """\
[site]
school_id = "real-{n}"
gateway_id = "gate-1"
timezone = "Asia/Shanghai"

[store]
path = "{dir}/outbox.db"

[control]
socket_path = "{dir}/control.sock"

[destinations.police]
nodes = [{nodes}]
client_id = "real-{n}-gate-1-police"
routes = ["alarm.*"]

[security]
gateway_key_file = "{keys}/real-{n}-gate-1.key"
gateway_key_id = "real-{n}-gate-1"

[lines.io]
type = "modbus_tcp"
host = "127.0.0.1"
port = {box_port}

[devices.box]
kind = "alarm_box"
line = "io"
unit_id = 1
poll_interval_ms = 50
reset_input = 7
lamp_coil = 0

[[devices.box.buttons]]
input = 0
name = "desk"
press_counter_register = 0
"""

IDLE_DESTINATION = """
[destinations.idle]
host = "{host}"
port = {port}
client_id = "real-{n}-gate-1-idle"
routes = ["alarm.*"]
"""
"""`--side-by-side`: the same alarms also to an idle single mosquitto, stored once, so each press
is timed on both paths."""


@dataclass
class RealGate:
    n: int
    folder: Path
    module: DiDoModule = field(default_factory=lambda: DiDoModule(unit_id=1))
    proc: asyncio.subprocess.Process | None = None

    @property
    def school(self) -> str:
        return f"real-{self.n}"

    async def wait_ready(self, timeout_s: float) -> None:
        """Until its devices answered and every uplink is connected (its `status`)."""
        async with asyncio.timeout(timeout_s):
            while True:
                with contextlib.suppress(control.ControlError):
                    status = await control.request(self.folder / "control.sock", {"op": "status"})
                    uplinks = status["uplinks"].values()
                    if status["devices_ready"] and all(u["connected"] for u in uplinks):
                        return
                await asyncio.sleep(0.1)  # another process's state: asked, bounded

    async def press(self) -> float:
        """Press the desk button; returns the monotonic time of the press. The module counts it
        (`press_counter_register`), so a press is not lost when a poll comes late: the module
        is served from the bench's own busy process."""
        pressed = time.monotonic()
        await self.module.pulse(0, 150)
        return pressed


@contextlib.asynccontextmanager
async def real_gates(
    count: int,
    nodes: Sequence[tuple[str, int]],
    keys_dir: Path,
    workdir: Path,
    idle: tuple[str, int] | None = None,
) -> AsyncIterator[list[RealGate]]:
    """`count` real gateway processes, started; ended (SIGTERM) when the block ends. With
    `idle`, each also sends its alarms to that broker (`IDLE_DESTINATION`)."""
    gates = [RealGate(n, workdir / f"real-{n}") for n in range(count)]
    node_list = ", ".join(f'"{host}:{port}"' for host, port in nodes)
    async with contextlib.AsyncExitStack() as stack:
        for gate in gates:
            _, port = await stack.enter_async_context(serve_tcp(gate.module))
            folder = gate.folder
            folder.mkdir(parents=True)
            keys.write_key_pair(keys_dir, f"real-{gate.n}-gate-1")
            config = folder / "schoolgate.toml"
            text = CONFIG.format(
                n=gate.n, dir=folder, nodes=node_list, keys=keys_dir, box_port=port
            )
            if idle is not None:
                text += IDLE_DESTINATION.format(host=idle[0], port=idle[1], n=gate.n)
            config.write_text(text)
            log = (folder / "gateway.log").open("ab")
            stack.callback(log.close)
            gate.proc = await asyncio.create_subprocess_exec(
                *gateway_command(config), stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
            stack.push_async_callback(_stop, gate)
        yield gates


async def _stop(gate: RealGate) -> None:
    proc, gate.proc = gate.proc, None
    if proc is None or proc.returncode is not None:
        return
    proc.terminate()
    try:
        async with asyncio.timeout(15):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
