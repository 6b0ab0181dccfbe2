"""Many simulated Modbus TCP devices whose registers change fast, in their own process so that
serving them does not steal the benchmark's event loop: the load of the throughput and outage
benchmarks.

Run as a script it serves `--devices` register banks (unit ids 1..N) on one TCP port and, every
`--period-ms`, sets input registers 0..points-1 of every device to the tick number: each tick is
one change per point, and every (device, point, value) is unique, so a receiver can count what
was delivered, lost or duplicated. It prints JSON lines: `{"port": P}` once listening, then
`{"tick": k, "at_ns": t}` after each tick. A line "stop" on stdin stops the changes (it keeps
serving) and prints `{"stopped": k}`; SIGTERM ends it.

`LoadSim` is the benchmark's handle on that process. It does not know about gateways or brokers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

HERE = Path(__file__).resolve().parent


async def serve(devices: int, points: int, period_ms: int) -> None:
    sys.path.insert(0, str(HERE.parent))
    from simulators.registers import RegisterBank, serve_tcp  # noqa: PLC0415 - after sys.path

    banks = {unit: RegisterBank(unit, size=max(16, points)) for unit in range(1, devices + 1)}
    stop = asyncio.Event()
    changing = asyncio.Event()
    changing.set()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)

    def emit(obj: dict[str, object]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def read_commands() -> None:
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            if line.strip() == b"stop":
                changing.clear()
        stop.set()

    async with serve_tcp(banks) as (_, port):  # type: ignore[arg-type]
        emit({"port": port})
        commands = asyncio.create_task(read_commands())
        tick = 0
        next_at = time.monotonic()
        while not stop.is_set():
            next_at += period_ms / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), max(0.0, next_at - time.monotonic()))
            if stop.is_set():
                break
            if not changing.is_set():
                emit({"stopped": tick})
                await stop.wait()
                break
            tick += 1
            value = tick % 65536
            for bank in banks.values():
                bank.inputs[:points] = [value] * points
            emit({"tick": tick, "at_ns": time.time_ns()})
        commands.cancel()


class LoadSim:
    """The load simulator process: its port, the last tick and when it happened."""

    def __init__(self, devices: int, points: int, period_ms: int) -> None:
        self.devices = devices
        self.points = points
        self.period_ms = period_ms
        self.port = 0
        self.tick = 0
        self.tick_ns: dict[int, int] = {}
        self.stopped_at: int | None = None
        self.proc: asyncio.subprocess.Process | None = None
        self._ready = asyncio.Event()
        self._stopped = asyncio.Event()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            obj = json.loads(line)
            if "port" in obj:
                self.port = obj["port"]
                self._ready.set()
            elif "tick" in obj:
                self.tick = obj["tick"]
                self.tick_ns[self.tick] = obj["at_ns"]
            elif "stopped" in obj:
                self.stopped_at = obj["stopped"]
                self._stopped.set()

    async def stop_changes(self) -> int:
        """Stop changing values; returns the number of ticks made."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"stop\n")
        await self.proc.stdin.drain()
        await asyncio.wait_for(self._stopped.wait(), 10)
        assert self.stopped_at is not None
        return self.stopped_at

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoadSim]:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "loadsim.py"),
            "--devices",
            str(self.devices),
            "--points",
            str(self.points),
            "--period-ms",
            str(self.period_ms),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        reader = asyncio.create_task(self._read(), name="loadsim-reader")
        try:
            await asyncio.wait_for(self._ready.wait(), 20)
            yield self
        finally:
            if self.proc.returncode is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(self.proc.wait(), 10)
                except TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20)
    parser.add_argument("--points", type=int, default=10)
    parser.add_argument("--period-ms", type=int, default=100)
    args = parser.parse_args()
    asyncio.run(serve(args.devices, args.points, args.period_ms))
