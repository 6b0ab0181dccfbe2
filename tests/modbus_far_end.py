"""The far end of a Modbus line for tests that script the answers byte by byte: over a real TCP
socket on loopback, or a real pseudo-terminal pair (simulators.vserial). Each request read off
the wire is handed to an `Answer`, which writes whatever bytes the test wants, when it wants."""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from hypothesis import HealthCheck, settings

from drivers.lines.modbus import ModbusLine
from edge_config.models import ModbusRtuLine, ModbusTcpLine
from simulators.vserial import VirtualSerialLink

Answer = Callable[[bytes, Callable[[bytes], object]], Coroutine[Any, Any, None]]
"""(request, write) -> None: answers one request by calling `write` as often as it likes."""


def crc16(data: bytes) -> bytes:
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return struct.pack("<H", crc)


def mbap(tid: int, unit: int, pdu: bytes) -> bytes:
    """An MBAP (TCP) frame around `pdu`."""
    return struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu


def rtu(_tid: int, unit: int, pdu: bytes) -> bytes:
    """An RTU frame around `pdu` (no transaction id on RTU: the argument is for a like shape)."""
    frame = bytes([unit]) + pdu
    return frame + crc16(frame)


RTU_REQUEST_BYTES = 8
"""A read or single write request on RTU: unit, function, address, count or value, CRC."""


@contextlib.asynccontextmanager
async def tcp_far_end(answer: Answer, *, timeout_ms: int) -> AsyncIterator[ModbusTcpLine]:
    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                header = await reader.readexactly(7)
                body = await reader.readexactly(struct.unpack(">H", header[4:6])[0] - 1)
                await answer(header + body, writer.write)
                await writer.drain()
        writer.close()

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield ModbusTcpLine(type="modbus_tcp", host="127.0.0.1", port=port, timeout_ms=timeout_ms)
    finally:
        server.close()
        await server.wait_closed()


@contextlib.asynccontextmanager
async def rtu_far_end(answer: Answer, *, timeout_ms: int) -> AsyncIterator[ModbusRtuLine]:
    loop = asyncio.get_running_loop()
    async with VirtualSerialLink() as link:
        fd = os.open(link.device_end, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        received = bytearray()
        answering: set[asyncio.Task[None]] = set()

        def on_readable() -> None:
            with contextlib.suppress(BlockingIOError):
                received.extend(os.read(fd, 256))
            while len(received) >= RTU_REQUEST_BYTES:
                request = bytes(received[:RTU_REQUEST_BYTES])
                del received[:RTU_REQUEST_BYTES]
                task = loop.create_task(answer(request, lambda data: os.write(fd, data)))
                answering.add(task)
                task.add_done_callback(answering.discard)

        loop.add_reader(fd, on_readable)
        try:
            yield ModbusRtuLine(type="modbus_rtu", port=link.host_end, timeout_ms=timeout_ms)
        finally:
            loop.remove_reader(fd)
            for task in answering:
                task.cancel()
            await asyncio.gather(*answering, return_exceptions=True)
            os.close(fd)


@contextlib.asynccontextmanager
async def line_to(kind: str, answer: Answer, *, timeout_ms: int) -> AsyncIterator[ModbusLine]:
    """A ModbusLine ("tcp" or "rtu") to a far end that answers with `answer`; on leaving, fails
    if anything reached the event loop's exception handler (a protocol callback that raised)."""
    far_end = tcp_far_end if kind == "tcp" else rtu_far_end
    escaped: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: escaped.append(context))
    async with far_end(answer, timeout_ms=timeout_ms) as config, ModbusLine(kind, config) as line:
        yield line
    assert escaped == [], escaped


def over_a_line(max_examples: int) -> settings:
    """Hypothesis settings for examples that each open a line: slow, so no deadline."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
