"""CPU per Modbus transaction (issue 16, item 4): schoolgate's line against a bare pymodbus client
loop doing the same reads, in the same run, over Modbus TCP and over RTU at 9600 baud.

    .venv/bin/python bench/transaction_cost.py [--tcp N] [--rtu N] [--rounds R] [--json]

The reads are the alarm box's poll: its 8 discrete inputs and one press-counter register, in
turn, from a DI/DO module (simulators.dido). The module, and for RTU the emulated 9600-baud cable
(simulators.vserial: every byte takes its wire time), run in a child process, so only the
client's CPU is measured: this process's user + system time (time.process_time) over each loop.
The floor is pymodbus's own AsyncModbusTcpClient / AsyncModbusSerialClient (retries 0, the same
timeout), one request at a time, as a bare loop with nothing around it: no arbiter, no typed
errors, no counters. Subjects take turns, `--rounds` times, so drift in the machine's load hits
each alike; the figure is the median round. Logging is at "error" for both, as in the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient  # noqa: E402
from pymodbus.framer import FramerType  # noqa: E402

from drivers.lines.modbus import ModbusLine  # noqa: E402
from edge_config.models import ModbusRtuLine, ModbusTcpLine  # noqa: E402
from gateway import logsetup  # noqa: E402

BAUDRATE = 9600
TIMEOUT_MS = 500
UNIT = 1

Read = Callable[[int], Awaitable[None]]


async def serve() -> None:
    """The far end (child process): the module on TCP and on an emulated 9600-baud cable."""
    from simulators.dido import DiDoModule, serve_rtu, serve_tcp  # noqa: PLC0415
    from simulators.vserial import VirtualSerialLink  # noqa: PLC0415

    box = DiDoModule(UNIT)
    async with (
        serve_tcp(box) as (host, port),
        VirtualSerialLink(baudrate=BAUDRATE) as link,
        serve_rtu(box, link.device_end, baudrate=BAUDRATE),
    ):
        print(json.dumps({"host": host, "port": port, "serial": link.host_end}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until closed


@contextlib.contextmanager
def far_end() -> Any:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        yield json.loads(proc.stdout.readline())
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def ours(config: ModbusTcpLine | ModbusRtuLine) -> AsyncIterator[Read]:
    async with ModbusLine("bench", config) as line:

        async def read(i: int) -> None:
            if i % 2:
                await line.read("input_register", UNIT, 0, 1)
            else:
                await line.read("discrete_input", UNIT, 0, 8)

        yield read


@contextlib.asynccontextmanager
async def bare(config: ModbusTcpLine | ModbusRtuLine) -> AsyncIterator[Read]:
    client: AsyncModbusTcpClient | AsyncModbusSerialClient
    if isinstance(config, ModbusRtuLine):
        client = AsyncModbusSerialClient(
            config.port,
            framer=FramerType.RTU,
            baudrate=BAUDRATE,
            timeout=TIMEOUT_MS / 1000,
            retries=0,
            reconnect_delay=0,
        )
    else:
        client = AsyncModbusTcpClient(
            config.host, port=config.port, timeout=TIMEOUT_MS / 1000, retries=0, reconnect_delay=0
        )
    if not await client.connect():
        raise RuntimeError(f"bare pymodbus client cannot connect to {config}")

    async def read(i: int) -> None:
        if i % 2:
            answer = await client.read_input_registers(0, count=1, device_id=UNIT)
        else:
            answer = await client.read_discrete_inputs(0, count=8, device_id=UNIT)
        if answer.isError():
            raise RuntimeError(f"exception answer {answer}")

    try:
        yield read
    finally:
        client.close()


async def cpu_per_transaction_us(
    subject: Callable[[Any], contextlib.AbstractAsyncContextManager[Read]],
    config: ModbusTcpLine | ModbusRtuLine,
    transactions: int,
) -> float:
    async with subject(config) as read:
        for i in range(10):  # warm up: connection, first-use imports and caches
            await read(i)
        cpu_start = time.process_time()
        for i in range(transactions):
            await read(i)
        cpu_s = time.process_time() - cpu_start
    return 1e6 * cpu_s / transactions


async def measure(tcp_n: int, rtu_n: int, rounds: int) -> dict[str, Any]:
    with far_end() as where:
        tcp = ModbusTcpLine(
            type="modbus_tcp", host=where["host"], port=where["port"], timeout_ms=TIMEOUT_MS
        )
        rtu = ModbusRtuLine(
            type="modbus_rtu", port=where["serial"], baudrate=BAUDRATE, timeout_ms=TIMEOUT_MS
        )
        runs: dict[str, list[float]] = {}
        for _ in range(rounds):
            for name, subject, config, n in (
                ("tcp_schoolgate", ours, tcp, tcp_n),
                ("tcp_pymodbus", bare, tcp, tcp_n),
                ("rtu_schoolgate", ours, rtu, rtu_n),
                ("rtu_pymodbus", bare, rtu, rtu_n),
            ):
                runs.setdefault(name, []).append(
                    await cpu_per_transaction_us(subject, config, n)  # type: ignore[arg-type]
                )
    us = {name: statistics.median(values) for name, values in runs.items()}
    return {
        "cpu_us_per_transaction": us,
        "rounds_us": runs,
        "ratio_tcp": us["tcp_schoolgate"] / us["tcp_pymodbus"],
        "ratio_rtu": us["rtu_schoolgate"] / us["rtu_pymodbus"],
        "transactions": {"tcp": tcp_n, "rtu": rtu_n},
        "rounds": rounds,
        "baudrate": BAUDRATE,
        "load": os.getloadavg(),
    }


def render(result: dict[str, Any]) -> str:
    us = result["cpu_us_per_transaction"]
    rows = [
        "| line | schoolgate (µs CPU / transaction) | bare pymodbus loop | schoolgate / pymodbus |",
        "| --- | --- | --- | --- |",
        f"| Modbus TCP | {us['tcp_schoolgate']:.0f} | {us['tcp_pymodbus']:.0f} | "
        f"{result['ratio_tcp']:.2f} |",
        f"| RTU, {result['baudrate']} baud | {us['rtu_schoolgate']:.0f} | "
        f"{us['rtu_pymodbus']:.0f} | {result['ratio_rtu']:.2f} |",
    ]
    n = result["transactions"]
    load = "/".join(f"{x:.2f}" for x in result["load"])
    return "\n".join(rows) + (
        f"\n\n{n['tcp']} TCP and {n['rtu']} RTU transactions per subject and round, median of "
        f"{result['rounds']} rounds; load average at the end {load}."
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tcp", type=int, default=2000, help="TCP transactions per round")
    parser.add_argument("--rtu", type=int, default=200, help="RTU transactions per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logsetup.configure(level="error")
    if args.serve:
        asyncio.run(serve())
        return 0
    result = asyncio.run(measure(args.tcp, args.rtu, args.rounds))
    print(json.dumps(result, indent=1) if args.json else render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
