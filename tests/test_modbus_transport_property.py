"""Property tests of the Modbus transport (issue 16): valid answers cut at random places and sent
with random pauses, late answers to earlier requests, other units' frames and random garbage;
every answer reaches the request it answers, or that request ends with a typed error. Never
another request's answer, never an untyped exception, never an error out of the event loop.

Two levels: the framing alone (`drivers.lines.modbus_framing`, pure, many examples), and the
whole line (`drivers.lines.modbus.ModbusLine` on `modbus_transport`) over a real TCP socket and a
real pseudo-terminal, with a far end of ours that scripts what each answer looks like on the
wire."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modbus_far_end import line_to, mbap, over_a_line, rtu
from pymodbus.pdu.register_message import ReadHoldingRegistersRequest

from drivers.base import DriverError
from drivers.lines.modbus_framing import RtuFraming, Skipped, TcpFraming

UNIT = 1
TIMEOUT_MS = 300


def value_at(address: int) -> int:
    """What the far end holds at `address`: each request's answer is recognisably its own."""
    return (address * 7919 + 0x1234) & 0xFFFF


def answer_pdu(address: int) -> bytes:
    return bytes([3, 2]) + struct.pack(">H", value_at(address))


@dataclass(frozen=True)
class Script:
    """How one answer goes on the wire: what comes before it, where it is cut, the pauses."""

    garbage: bytes
    late: bool
    """TCP: an answer to an earlier request first (its transaction id); RTU: another unit's."""
    cuts: tuple[int, ...]
    pauses_ms: tuple[int, ...]


scripts = st.builds(
    Script,
    garbage=st.one_of(st.just(b""), st.binary(min_size=1, max_size=12)),
    late=st.booleans(),
    cuts=st.lists(st.integers(1, 15), max_size=4).map(tuple),
    pauses_ms=st.lists(st.integers(0, 4), max_size=4).map(tuple),
)


def pieces(data: bytes, cuts: tuple[int, ...]) -> list[bytes]:
    at = sorted({c % len(data) for c in cuts} - {0})
    return [data[a:b] for a, b in zip([0, *at], [*at, len(data)], strict=True)]


def wire(kind: str, script: Script, tid: int, address: int, previous: int) -> list[bytes]:
    if kind == "tcp":
        late = mbap((tid - 1) % 65536, UNIT, answer_pdu(previous)) if script.late else b""
        answer = mbap(tid, UNIT, answer_pdu(address))
    else:
        late = rtu(0, UNIT + 1, answer_pdu(previous)) if script.late else b""
        answer = rtu(0, UNIT, answer_pdu(address))
    return pieces(late + script.garbage + answer, script.cuts)


# -- the framing alone ----------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(["tcp", "rtu"]),
    script=scripts,
    address=st.integers(1, 1000),
    tid=st.integers(2, 65535),
)
def test_framing_finds_the_answer_in_any_split(
    kind: str, script: Script, address: int, tid: int
) -> None:
    framing = TcpFraming() if kind == "tcp" else RtuFraming()
    request = ReadHoldingRegistersRequest(address=address, count=1, dev_id=UNIT)
    request.transaction_id = tid
    buffer, skipped = bytearray(), Skipped()
    found: list[Any] = []
    try:
        for piece in wire(kind, script, tid, address, address - 1):
            buffer += piece
            answer = framing.find(buffer, request, skipped)
            if answer is not None:
                found.append(answer)
                break
    except DriverError:
        assert script.garbage  # only garbage can spoil an answer
        return
    if not found:  # garbage that looked like the start of a long frame keeps the hunt waiting
        assert script.garbage
        return
    assert list(found[0].registers) == [value_at(address)]
    if kind == "tcp" and script.late:
        assert skipped.late_answers >= 1  # the earlier request's answer was seen and skipped


# -- the whole line, over a socket and a pseudo-terminal -------------------------------------


class FarEnd:
    """Answers each read of one holding register as its script says."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.scripts: list[Script] = []
        self.previous = 0

    async def __call__(self, request: bytes, write: Callable[[bytes], object]) -> None:
        if self.kind == "tcp":
            tid, _, _, _, _, address = struct.unpack(">HHHBBH", request[:10])
        else:
            tid, address = 0, struct.unpack(">H", request[2:4])[0]
        script = self.scripts.pop(0)
        parts = wire(self.kind, script, tid, address, self.previous)
        self.previous = address
        for i, part in enumerate(parts):
            write(part)
            if i < len(script.pauses_ms) and script.pauses_ms[i]:
                await asyncio.sleep(script.pauses_ms[i] / 1000)


async def exchange_all(kind: str, script: list[Script]) -> None:
    far = FarEnd(kind)
    async with line_to(kind, far, timeout_ms=TIMEOUT_MS) as line:
        for number, each in enumerate(script, start=1):
            far.scripts = [each]
            address = number * 3  # distinct per request: an answer names its request
            try:
                registers = await line.read("holding_register", UNIT, address, 1)
            except DriverError:
                assert each.garbage, "an answer without garbage before it must arrive"
                continue
            assert registers == [value_at(address)], (number, registers)
        assert line.stats.requests == len(script)
        if kind == "tcp" and any(s.late for s in script):
            assert line.stats.late_answers >= 1


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["tcp", "rtu"])
@over_a_line(20)
@given(script=st.lists(scripts, min_size=1, max_size=6))
def test_every_answer_reaches_its_request_or_a_typed_error(kind: str, script: list[Script]) -> None:
    asyncio.run(exchange_all(kind, script))
