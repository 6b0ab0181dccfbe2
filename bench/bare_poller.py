"""The practical floor under the demo gate's idle CPU (issue 16): the same reads, at the same
intervals, from the same simulated devices, by the smallest asyncio program that can make them.

    .venv/bin/python bench/bare_poller.py [--idle S] [--json]

The devices are the demo gate's (`simulators.gate.gate_devices`, on the same lines and speeds:
the alarm box on Modbus TCP, two bollards and the socket sensors on Modbus RTU at 19200 baud, the
access controller on its serial protocol at 9600 baud). The poller runs in a child process, so
only its own CPU is counted. Every 50 ms it reads the alarm box's 8 inputs and 2 press counters;
every 200 ms each bollard's status registers and emergency input and the sockets' inputs; every
100 ms it polls the access controller. That is what `schoolgate run` reads at the demo's
defaults (the reads are listed in READS and checked against the gateway's own by
tests/test_bare_poller.py).

What it leaves out is everything a gateway must do beyond asking: no decoding or CRC check
(an answer is complete by its length or its end byte, and compared with the last one as bytes),
no arbiter (one lock per serial line), no typed errors, health, events, store or MQTT. Request
frames are built once, with pymodbus's framers and our access-controller codec. Each request has
its deadline timer and each serial line keeps its inter-frame gap, as the gateway's do, because
a real line needs both. So the figure is what asyncio itself costs to make these polls on this
machine: a gateway in Python on asyncio cannot go below it, and the footprint phase reports
schoolgate's idle CPU beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymodbus.framer import FramerRTU, FramerSocket  # noqa: E402
from pymodbus.pdu import DecodePDU, ModbusPDU  # noqa: E402
from pymodbus.pdu.bit_message import ReadDiscreteInputsRequest  # noqa: E402
from pymodbus.pdu.register_message import (  # noqa: E402
    ReadHoldingRegistersRequest,
    ReadInputRegistersRequest,
)

from drivers import access_codec as wire  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from procstat import wakeups  # noqa: E402

TIMEOUT_S = 0.3


@dataclass(frozen=True)
class Read:
    line: str  # "tcp", "rtu" or "door"
    unit: int
    function: int  # 2 discrete inputs, 3 holding, 4 input registers; 0: access POLL
    address: int
    count: int
    every_ms: int


# unit / table / address / count of what the gateway reads at the demo's defaults
READS = (
    Read("tcp", 1, 2, 0, 8, 50),  # alarm box: inputs 0-7 (buttons 0, 1; reset key 7)
    Read("tcp", 1, 4, 0, 2, 50),  # alarm box: press counters of buttons 0 and 1
    Read("rtu", 2, 4, 0, 4, 200),  # bollard 1 (generic): position, fault, cycles (uint32)
    Read("rtu", 2, 2, 0, 1, 200),  # bollard 1: emergency (EFO) input
    Read("rtu", 3, 3, 100, 4, 200),  # bollard 2 (vendor B): the same in holding registers
    Read("rtu", 3, 2, 3, 1, 200),  # bollard 2: EFO input
    Read("rtu", 4, 2, 0, 2, 200),  # lane sockets: inputs 0 and 1
    Read("door", 1, 0, 0, 0, 100),  # access controller: POLL for the next event
)
_REQUESTS = {
    2: ReadDiscreteInputsRequest,
    3: ReadHoldingRegistersRequest,
    4: ReadInputRegistersRequest,
}


def answer_length(read: Read) -> int:
    """Bytes of the RTU answer to `read`: unit, function, byte count, data, CRC."""
    data = (read.count + 7) // 8 if read.function == 2 else 2 * read.count
    return 3 + data + 2


class _Line(asyncio.Protocol):
    """One connection: one request at a time, an answer complete by its length or end byte."""

    def __init__(self, gap_s: float) -> None:
        self.transport: Any = None
        self.lock = asyncio.Lock()
        self.gap_s = gap_s
        self.last_rx = 0.0
        self._buffer = bytearray()
        self._done: asyncio.Future[bytes] | None = None
        self._complete: Any = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.last_rx = time.monotonic()
        self._buffer += data
        if self._done is not None and not self._done.done() and self._complete(self._buffer):
            self._done.set_result(bytes(self._buffer))

    async def ask(self, frame: bytes, complete: Any) -> bytes | None:
        async with self.lock:
            if (wait := self.last_rx + self.gap_s - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            loop = asyncio.get_running_loop()
            self._buffer.clear()
            self._complete = complete
            self._done = done = loop.create_future()
            timer = loop.call_later(TIMEOUT_S, lambda: done.done() or done.set_result(b""))
            self.transport.write(frame)
            try:
                return await done
            finally:
                timer.cancel()
                self.last_rx = time.monotonic()


def _modbus_frame(read: Read, tid: int) -> bytes:
    pdu: ModbusPDU = _REQUESTS[read.function](
        address=read.address, count=read.count, dev_id=read.unit
    )
    pdu.transaction_id = tid
    framer = (FramerSocket if read.line == "tcp" else FramerRTU)(DecodePDU(is_server=False))
    return framer.buildFrame(pdu)


def _sequence_numbers() -> Iterator[int]:
    seq = 0
    while True:
        seq = wire.next_seq(seq)
        yield seq


async def _poll(line: _Line, read: Read, tid: int) -> None:
    """Ask `read` every `every_ms` forever, keeping the cadence; an answer is compared as bytes."""
    if read.function == 0:  # the access controller: a new sequence number each time
        seqs = _sequence_numbers()

        def request() -> bytes:
            body = wire.encode_poll(0)
            return wire.encode_frame(wire.Frame(read.unit, next(seqs), wire.Code.POLL, body))

        def complete(b: bytearray) -> bool:
            return len(b) > 1 and b[-1] == wire.ETX
    else:
        frame = _modbus_frame(read, tid)
        size = answer_length(read)
        if read.line == "tcp":
            size += 6 + 1 - 3  # MBAP + unit instead of the RTU unit and CRC

        def request() -> bytes:
            return frame

        def complete(b: bytearray) -> bool:
            return len(b) >= size

    last = b""
    interval = read.every_ms / 1000
    next_at = time.monotonic()
    while True:
        answer = await line.ask(request(), complete)
        if answer != last:
            last = answer or b""
        next_at = max(next_at + interval, time.monotonic())
        await asyncio.sleep(next_at - time.monotonic())


async def poller(endpoints: dict[str, Any], idle_s: float) -> dict[str, float]:
    """The child: connect to the three lines, poll them, measure its own CPU over `idle_s`."""
    from serial_asyncio_fast import create_serial_connection  # noqa: PLC0415

    loop = asyncio.get_running_loop()
    tcp = _Line(0.0)
    await loop.create_connection(lambda: tcp, "127.0.0.1", endpoints["tcp_port"])
    rtu = _Line(3.5 * 10 / endpoints["rtu_baud"])
    await create_serial_connection(
        loop, lambda: rtu, endpoints["rtu"], baudrate=endpoints["rtu_baud"]
    )
    door = _Line(0.0)
    await create_serial_connection(
        loop, lambda: door, endpoints["door"], baudrate=endpoints["door_baud"]
    )
    lines = {"tcp": tcp, "rtu": rtu, "door": door}
    async with asyncio.TaskGroup() as tg:
        tasks = [
            tg.create_task(_poll(lines[read.line], read, tid))
            for tid, read in enumerate(READS, start=1)
        ]
        await asyncio.sleep(2)
        me = os.getpid()
        cpu0, wall0, woken0 = time.process_time(), time.monotonic(), wakeups(me)
        await asyncio.sleep(idle_s)
        cpu_s, wall_s = time.process_time() - cpu0, time.monotonic() - wall0
        woken = wakeups(me) - woken0
        for task in tasks:
            task.cancel()
    return {
        "idle_cpu_percent": 100 * cpu_s / wall_s,
        "idle_wakeups_per_s": woken / wall_s,
        "idle_cpu_us_per_wakeup": 1e6 * cpu_s / woken if woken else None,
        "idle_s": wall_s,
    }


@contextlib.asynccontextmanager
async def demo_devices() -> AsyncIterator[dict[str, Any]]:
    """The demo gate's simulated devices on their lines, without brokers or a gateway."""
    from simulators.access_controller import serve_serial  # noqa: PLC0415
    from simulators.gate import DOOR_BUS_BAUD, GATE_BUS_BAUD, gate_devices  # noqa: PLC0415
    from simulators.modbus_serve import SimUnit, serve_rtu, serve_tcp  # noqa: PLC0415
    from simulators.vserial import VirtualSerialLink  # noqa: PLC0415

    panic_box, bollards, sockets, doors = gate_devices()
    on_bus: dict[int, SimUnit] = {b.unit_id: b for b in bollards.values()}
    on_bus[sockets.unit_id] = sockets
    async with (
        serve_tcp(panic_box) as (_, tcp_port),
        VirtualSerialLink(baudrate=GATE_BUS_BAUD) as gate_bus,
        serve_rtu(on_bus, gate_bus.device_end, baudrate=GATE_BUS_BAUD),
        VirtualSerialLink(baudrate=DOOR_BUS_BAUD) as door_link,
        serve_serial(doors, door_link.device_end, baudrate=DOOR_BUS_BAUD),
    ):
        yield {
            "tcp_port": tcp_port,
            "rtu": gate_bus.host_end,
            "rtu_baud": GATE_BUS_BAUD,
            "door": door_link.host_end,
            "door_baud": DOOR_BUS_BAUD,
        }


async def measure(idle_s: float) -> dict[str, float]:
    """Start the devices, run the poller in its own process for `idle_s`, return its figures."""
    async with demo_devices() as endpoints:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--child",
            json.dumps(endpoints),
            "--idle",
            str(idle_s),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"bare poller exited with {proc.returncode}")
    result: dict[str, float] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle", type=float, default=30.0, help="seconds measured (default 30)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(poller(json.loads(args.child), args.idle))), flush=True)
        return
    result = asyncio.run(measure(args.idle))
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"bare asyncio poller, the demo gate's reads: {result['idle_cpu_percent']:.2f}% of a "
            f"core over {result['idle_s']:.0f} s (load {os.getloadavg()[0]:.2f})"
        )


if __name__ == "__main__":
    main()
