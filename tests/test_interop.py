"""Our DI/DO simulator read and written by an independent Modbus master, Debian's `mbpoll`
(libmodbus), over Modbus TCP and over RTU on a virtual serial cable: the simulators must speak
Modbus, not merely whatever our own drivers expect.

mbpoll runs as a subprocess through asyncio, so the simulator keeps serving on this event loop.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass

import pytest

from simulators.dido import DiDoModule, serve_rtu, serve_tcp
from simulators.vserial import VirtualSerialLink

pytestmark = pytest.mark.timeout(60)

MBPOLL = shutil.which("mbpoll") or "/usr/bin/mbpoll"
_VALUE = re.compile(r"^\[(\d+)\]:\s+(-?\d+)\s*$", re.MULTILINE)


@dataclass
class Target:
    """How mbpoll reaches the simulated bus: connection arguments and the device or host."""

    args: list[str]
    where: str
    modules: dict[int, DiDoModule]

    async def mbpoll(self, unit: int, *args: str) -> tuple[int, str]:
        # -0: addresses as in the PDU (0-based, like our register map); -1: poll once.
        proc = await asyncio.create_subprocess_exec(
            MBPOLL,
            *self.args,
            "-a",
            str(unit),
            "-0",
            "-1",
            "-o",
            "0.5",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(errors="replace")

    async def read(self, unit: int, table: str, start: int, count: int) -> list[int]:
        """table: mbpoll's -t (0 coils, 1 discrete inputs, 3 input registers, 4 holding)."""
        code, out = await self.mbpoll(
            unit, "-t", table, "-r", str(start), "-c", str(count), self.where
        )
        assert code == 0, out
        values = {int(ref): int(value) for ref, value in _VALUE.findall(out)}
        assert sorted(values) == list(range(start, start + count)), out
        return [values[ref] for ref in range(start, start + count)]


@pytest.fixture(params=["tcp", "rtu"])
async def target(request: pytest.FixtureRequest) -> AsyncIterator[Target]:
    if not shutil.which(MBPOLL):
        pytest.fail("mbpoll is not installed (./run setup installs it with apt)")
    modules = {2: DiDoModule(2), 3: DiDoModule(3)}
    async with AsyncExitStack() as stack:
        if request.param == "tcp":
            host, port = await stack.enter_async_context(serve_tcp(modules))
            yield Target(["-m", "tcp", "-p", str(port)], host, modules)
        else:
            link = await stack.enter_async_context(VirtualSerialLink(baudrate=9600))
            await stack.enter_async_context(serve_rtu(modules, link.device_end, baudrate=9600))
            rtu = ["-m", "rtu", "-b", "9600", "-d", "8", "-s", "1", "-P", "none"]
            yield Target(rtu, link.host_end, modules)


async def test_reads_inputs_counters_coils_and_address(target: Target) -> None:
    box = target.modules[3]
    box.press(1)
    box.release(1)
    box.press(1)
    box.press(6)
    assert await target.read(3, "1", 0, 8) == [0, 1, 0, 0, 0, 0, 1, 0]
    assert await target.read(3, "3", 0, 8) == [0, 2, 0, 0, 0, 0, 1, 0]  # press counters
    assert await target.read(3, "0", 0, 8) == [0] * 8
    assert await target.read(3, "4", 0, 1) == [3]  # the module's address register
    assert await target.read(2, "1", 0, 8) == [0] * 8  # the other unit on the same bus


async def test_writes_coils_one_and_several(target: Target) -> None:
    code, out = await target.mbpoll(3, "-t", "0", "-r", "1", target.where, "1")  # FC 5
    assert code == 0, out
    assert target.modules[3].coils() == [False, True] + [False] * 6
    code, out = await target.mbpoll(3, "-t", "0", "-r", "4", target.where, "1", "0", "1")  # FC 15
    assert code == 0, out
    assert target.modules[3].coils() == [False, True, False, False, True, False, True, False]
    assert target.modules[2].coils() == [False] * 8
    assert await target.read(3, "0", 0, 8) == [0, 1, 0, 0, 1, 0, 1, 0]


async def test_exceptions_and_silence_reach_the_master(target: Target) -> None:
    code, out = await target.mbpoll(3, "-t", "3", "-r", "8", "-c", "1", target.where)
    assert code != 0 and "Illegal data address" in out, out
    code, out = await target.mbpoll(3, "-t", "4", "-r", "0", target.where, "7")  # read-only
    assert code != 0 and "Illegal data address" in out, out
    target.modules[2].silent = True
    code, out = await target.mbpoll(2, "-t", "1", "-c", "1", target.where)
    assert code != 0 and "timed out" in out.lower(), out
    assert await target.read(3, "4", 0, 1) == [3]  # the bus still answers for the others
