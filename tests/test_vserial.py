"""The virtual serial cable: raw bytes both ways, wire time, and its fault hooks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from serial import SerialException
from serial_asyncio_fast import open_serial_connection

from simulators.vserial import VirtualSerialLink

Ends = tuple[asyncio.StreamReader, asyncio.StreamWriter]


@asynccontextmanager
async def opened(link: VirtualSerialLink) -> AsyncIterator[tuple[Ends, Ends]]:
    """Both ends of the cable opened with pyserial: (host, device)."""
    host = await open_serial_connection(url=link.host_end, baudrate=9600)
    device = await open_serial_connection(url=link.device_end, baudrate=9600)
    try:
        yield host, device
    finally:
        for _, writer in (host, device):
            writer.close()
            await writer.wait_closed()


async def read_exactly(reader: asyncio.StreamReader, n: int) -> bytes:
    return await asyncio.wait_for(reader.readexactly(n), timeout=2)


async def nothing_arrives(reader: asyncio.StreamReader) -> bool:
    try:
        await asyncio.wait_for(reader.read(1), timeout=0.1)
    except TimeoutError:
        return True
    return False


async def test_every_byte_value_passes_untouched_both_ways() -> None:
    payload = bytes(range(256))  # includes CR, LF, XON/XOFF, ^C: a cooked tty would eat them
    async with VirtualSerialLink() as link, opened(link) as ((h_in, h_out), (d_in, d_out)):
        assert link.host_end.startswith("/dev/pts/")
        assert link.device_end.startswith("/dev/pts/")
        h_out.write(payload)
        assert await read_exactly(d_in, 256) == payload
        d_out.write(payload[::-1])
        assert await read_exactly(h_in, 256) == payload[::-1]


async def test_baudrate_adds_wire_time() -> None:
    async with VirtualSerialLink(baudrate=9600) as link, opened(link) as ((_, h_out), (d_in, _)):
        started = time.monotonic()
        h_out.write(b"x" * 96)  # 960 bits at 9600 baud: 100 ms on the wire
        assert await read_exactly(d_in, 96) == b"x" * 96
        assert time.monotonic() - started >= 0.099


async def test_drop_loses_one_direction_only() -> None:
    async with VirtualSerialLink() as link, opened(link) as ((h_in, h_out), (d_in, d_out)):
        link.drop("to_device", True)
        h_out.write(b"lost")
        assert await nothing_arrives(d_in)
        d_out.write(b"back")
        assert await read_exactly(h_in, 4) == b"back"
        link.drop("to_device", False)
        h_out.write(b"kept")
        assert await read_exactly(d_in, 4) == b"kept"


async def test_corrupt_next_flips_one_byte_of_one_frame() -> None:
    async with VirtualSerialLink() as link, opened(link) as ((h_in, _), (_, d_out)):
        link.corrupt_next("to_host")
        d_out.write(b"\x01\x02\x03")
        assert await read_exactly(h_in, 3) == b"\x01\x02\xfc"
        d_out.write(b"\x01\x02\x03")
        assert await read_exactly(h_in, 3) == b"\x01\x02\x03"


async def test_inject_garbage() -> None:
    async with (
        VirtualSerialLink(baudrate=9600) as link,
        opened(link) as ((h_in, _), (d_in, _)),
    ):
        link.inject_garbage("to_host", b"\xff\x00noise")
        assert await read_exactly(h_in, 7) == b"\xff\x00noise"
        assert await nothing_arrives(d_in)


async def test_ends_reopen_and_link_closes_cleanly() -> None:
    async with VirtualSerialLink() as link:
        for _ in range(2):  # the gateway closing and reopening its port must not break the link
            async with opened(link) as ((_, h_out), (d_in, _)):
                h_out.write(b"again")
                assert await read_exactly(d_in, 5) == b"again"
    with pytest.raises(SerialException):  # the ptys are gone
        await open_serial_connection(url=link.host_end, baudrate=9600)
