"""Fuzzing the answers a Modbus line gets (hypothesis), over a real TCP socket and a real
pseudo-terminal (simulators.vserial): wrong lengths, wrong function codes, exception codes,
wrong unit ids, wrong transaction ids, a wrong MBAP header, random garbage, truncated and mutated
frames. Each bad answer ends its request with a typed, counted error (drivers.base.DriverError)
or is skipped by the framer until the request times out; nothing else escapes, the event loop
sees no exception from the line's protocol, and a good request after the barrage gets its answer.

The far end is ours: it reads each request off the wire and answers with crafted bytes."""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st
from modbus_far_end import line_to, mbap, over_a_line, rtu

from drivers.base import DeviceProtocolError, DeviceTimeout, DriverError

UNIT, ADDRESS, COUNT = 1, 0, 2
GOOD_REGISTERS = [0x1234, 0xABCD]
TIMEOUT_MS = 150


def good_pdu() -> bytes:
    return bytes([3, 2 * COUNT]) + struct.pack(">2H", *GOOD_REGISTERS)


# An answer is a function of the request: (transaction id, unit) -> bytes on the wire, built by
# `frame` (MBAP or RTU) from a PDU, or raw.
Framer = Callable[[int, int, bytes], bytes]


KINDS = [
    "wrong_length",
    "wrong_function",
    "exception",
    "wrong_unit",
    "wrong_tid",
    "garbage",
    "truncated",
    "mutated",
    "mbap_protocol",
    "mbap_length",
]


@dataclasses.dataclass(frozen=True)
class BadAnswer:
    """One bad answer, built from the framer and the request's transaction id."""

    kind: str
    payload: bytes = b""
    number: int = 0
    cut: int = 0
    flips: tuple[tuple[int, int], ...] = ((0, 1),)

    def __call__(self, framer: Framer, tid: int) -> bytes:
        payload, number = self.payload, self.number
        if self.kind == "wrong_length":  # a byte count that does not match what follows
            return framer(tid, UNIT, bytes([3, number]) + payload)
        if self.kind == "wrong_function":
            function = number % 127 + 1
            return framer(tid, UNIT, bytes([3 if function == 3 else function]) + payload)
        if self.kind == "exception":
            return framer(tid, UNIT, bytes([0x83, number]))
        if self.kind == "wrong_unit":
            return framer(tid, (UNIT + 1 + number % 246) % 248, good_pdu())
        if self.kind == "wrong_tid":
            return framer((tid + 1 + number) % 65536, UNIT, good_pdu())
        if self.kind == "garbage":
            return payload or b"\x00"
        good = framer(tid, UNIT, good_pdu())
        if self.kind == "truncated":
            return good[: self.cut % len(good)]
        if self.kind == "mutated":
            data = bytearray(good)
            for where, bits in self.flips:
                data[where % len(data)] ^= bits
            return bytes(data)
        if framer is rtu:  # the MBAP header cases are TCP only: garbage on RTU
            return payload + good
        header = bytearray(good)
        if self.kind == "mbap_protocol":
            header[2:4] = struct.pack(">H", 1 + number)
        else:
            header[4:6] = struct.pack(">H", number)
        return bytes(header)


bad_answers = st.builds(
    BadAnswer,
    kind=st.sampled_from(KINDS),
    payload=st.binary(max_size=20),
    number=st.integers(0, 255),
    cut=st.integers(0, 20),
    flips=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 255)), min_size=1).map(tuple),
)


class FarEnd:
    """Our side of the wire: takes each request, hands out the next scripted answer."""

    def __init__(self, framer: Framer) -> None:
        self.framer = framer
        self.script: list[BadAnswer | None] = []  # None: the good answer
        self.answered = 0

    def answer(self, request: bytes) -> bytes:
        tid = struct.unpack(">H", request[:2])[0] if self.framer is mbap else 0
        build = self.script.pop(0) if self.script else None
        self.answered += 1
        return self.framer(tid, UNIT, good_pdu()) if build is None else build(self.framer, tid)

    async def __call__(self, request: bytes, write: Callable[[bytes], object]) -> None:
        write(self.answer(request))


async def barrage(kind: str, script: list[BadAnswer]) -> None:
    far = FarEnd(mbap if kind == "tcp" else rtu)
    async with line_to(kind, far, timeout_ms=TIMEOUT_MS) as line:
        errors = 0
        for build in script:
            far.script = [build]
            try:
                registers = await line.read("holding_register", UNIT, ADDRESS, COUNT)
            except DriverError:
                errors += 1
            else:  # a mutation can leave a well-formed answer (TCP has no CRC)
                assert len(registers) == COUNT and all(0 <= r <= 0xFFFF for r in registers)
        assert line.stats.failures == errors  # every refusal counted
        # A good request after the barrage gets its answer. A timeout on a loaded machine is
        # not the line dying: a few tries, each a fresh good answer.
        for _ in range(3):
            far.script = []
            try:
                assert await line.read("holding_register", UNIT, ADDRESS, COUNT) == GOOD_REGISTERS
                break
            except DeviceTimeout:
                continue
        else:
            pytest.fail("no good answer after the barrage")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("kind", ["tcp", "rtu"])
@over_a_line(25)
@given(script=st.lists(bad_answers, min_size=1, max_size=4))
def test_no_answer_kills_the_line(kind: str, script: list[BadAnswer]) -> None:
    asyncio.run(barrage(kind, script))


@pytest.mark.parametrize(
    "answer",
    [
        BadAnswer("wrong_length", number=1),  # byte count 1, no byte follows
        BadAnswer("wrong_function", number=0x40),  # function 65: unknown to pymodbus
    ],
    ids=["byte_count", "function_code"],
)
def test_an_undecodable_tcp_answer_is_a_protocol_error_not_a_lost_connection(
    answer: BadAnswer,
) -> None:
    """Found by the fuzz: pymodbus raised out of data_received on a well-framed answer it could
    not decode; asyncio logged a traceback and closed the connection, for every unit behind it.
    Now the framing (drivers.lines.modbus_framing) ends that request at once with a counted
    DeviceProtocolError, and the same connection serves the next one. (On RTU the frame size
    follows the byte count and other function codes are skipped as garbage, so such an answer
    times out; the fuzz covers RTU too.)"""

    async def check() -> None:
        far = FarEnd(mbap)
        async with line_to("tcp", far, timeout_ms=TIMEOUT_MS) as line:
            far.script = [answer]
            with pytest.raises(DeviceProtocolError, match="no valid reply"):
                await line.read("holding_register", UNIT, ADDRESS, COUNT)
            assert line.connected and line.stats.malformed == 1
            assert await line.read("holding_register", UNIT, ADDRESS, COUNT) == GOOD_REGISTERS

    asyncio.run(check())
