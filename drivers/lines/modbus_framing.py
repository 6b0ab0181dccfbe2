"""Finding the answer to one Modbus request in the bytes a line received: MBAP (TCP) and RTU.

Owns, for each framing, building the request's bytes and picking the awaited answer out of a
receive buffer: on TCP by the MBAP header (the request's transaction id and unit), on RTU by
hunting for a CRC-valid frame from the unit asked with the function asked (or its exception).
Frames that are not the answer (late answers to earlier requests, other units' frames, garbage,
a broken CRC) are dropped from the buffer and counted. Encoding, decoding and the CRC are
pymodbus's (`pymodbus.framer`, `pymodbus.pdu`): only the search and the skipping are ours.

A frame that is the answer by its header but whose PDU pymodbus cannot decode (a byte count
longer than what follows, an unknown function code) raises `MalformedAnswer`, a
DeviceProtocolError. Pure: no I/O, no clock; `drivers.lines.modbus_transport` feeds it.
"""

from __future__ import annotations

from dataclasses import dataclass

from pymodbus.framer import FramerRTU, FramerSocket
from pymodbus.pdu import DecodePDU, ExceptionResponse, ModbusPDU

from drivers.base import DeviceProtocolError

_CLIENT_DECODER = DecodePDU(is_server=False)
_MBAP = 7  # transaction id, protocol id, length, unit id
_RTU_KEEP = 512
"""Bytes kept while no answer is found on RTU: more than two of the longest frames (256)."""


class MalformedAnswer(DeviceProtocolError):
    """The frame answers the request by its header, but its PDU cannot be decoded."""


@dataclass(slots=True)
class Skipped:
    """What a line received that was not an answer, by kind (the line's counters)."""

    stray_bytes: int = 0
    """Garbage, broken frames, bytes left from an earlier request, other units' frames on RTU."""
    late_answers: int = 0
    """Whole MBAP frames with another transaction id or unit (an answer after its timeout)."""
    malformed: int = 0
    """Answers by their header that could not be decoded (`MalformedAnswer`)."""


def decode_answer(request: ModbusPDU, pdu: bytes) -> ModbusPDU:
    """The response PDU (function code first) to `request`, decoded by pymodbus's classes."""
    function_code = pdu[0]
    try:
        answer: ModbusPDU
        if function_code == request.function_code | 0x80:
            answer = ExceptionResponse(request.function_code)
        elif function_code == request.function_code:
            answer = _CLIENT_DECODER.pdu_table[function_code][1]()
        else:
            raise ValueError(f"function code {function_code}, asked {request.function_code}")
        answer.decode(pdu[1:])
    except Exception as exc:  # whatever pymodbus raises on these bytes, the answer is bad
        raise MalformedAnswer(f"no valid reply: {type(exc).__name__}: {exc}") from None
    answer.dev_id = request.dev_id
    answer.transaction_id = request.transaction_id
    return answer


class TcpFraming:
    """MBAP: each answer names its request by transaction id, so a late one is recognised."""

    def __init__(self) -> None:
        self._framer = FramerSocket(_CLIENT_DECODER)

    def frame(self, request: ModbusPDU) -> bytes:
        return self._framer.buildFrame(request)

    def find(self, buffer: bytearray, request: ModbusPDU, skipped: Skipped) -> ModbusPDU | None:
        """The answer to `request` once it is whole in `buffer` (consumed), else None."""
        while len(buffer) > _MBAP:
            length = (buffer[4] << 8) | buffer[5]
            if buffer[2] or buffer[3] or not 2 <= length <= 254:
                # Not an MBAP header: the stream is out of step. Resume at the awaited answer's
                # header if it is in the buffer; else keep only what may be its start.
                header = request.transaction_id.to_bytes(2, "big") + b"\x00\x00"
                at = buffer.find(header, 1)
                drop = at if at > 0 else len(buffer) - len(header) + 1
                skipped.stray_bytes += drop
                del buffer[:drop]
                continue
            end = 6 + length
            if len(buffer) < end:
                return None
            tid, unit = (buffer[0] << 8) | buffer[1], buffer[6]
            pdu = bytes(buffer[_MBAP:end])
            del buffer[:end]
            if tid != request.transaction_id or (request.dev_id and unit != request.dev_id):
                skipped.late_answers += 1
                continue
            try:
                return decode_answer(request, pdu)
            except MalformedAnswer:
                skipped.malformed += 1
                raise
        return None


class RtuFraming:
    """RTU: no transaction id; the answer is the first CRC-valid frame from the unit asked with
    the function asked. Bytes before it (noise, a late answer's tail) are skipped."""

    def __init__(self) -> None:
        self._framer = FramerRTU(_CLIENT_DECODER)

    def frame(self, request: ModbusPDU) -> bytes:
        return self._framer.buildFrame(request)

    def find(self, buffer: bytearray, request: ModbusPDU, skipped: Skipped) -> ModbusPDU | None:
        """The answer to `request` once it is whole in `buffer` (which is then emptied)."""
        unit, function_code = request.dev_id, request.function_code
        response = _CLIENT_DECODER.pdu_table[function_code][1]
        size_of = response.calculateRtuFrameSize
        end = len(buffer)
        start = buffer.find(unit)
        while 0 <= start <= end - FramerRTU.MIN_SIZE:
            code = buffer[start + 1]
            if code == function_code:
                size = size_of(bytes(buffer[start : start + 3]))  # 0 until its byte count is in
            elif code == function_code | 0x80:
                size = 5  # unit, code, exception code, CRC
            else:
                size = 0
            if size and start + size <= end:
                crc = (buffer[start + size - 2] << 8) | buffer[start + size - 1]
                if FramerRTU.check_CRC(bytes(buffer[start : start + size - 2]), crc):
                    pdu = bytes(buffer[start + 1 : start + size - 2])
                    skipped.stray_bytes += end - size
                    buffer.clear()
                    try:
                        return decode_answer(request, pdu)
                    except MalformedAnswer:
                        skipped.malformed += 1
                        raise
            start = buffer.find(unit, start + 1)
        if end > _RTU_KEEP:
            skipped.stray_bytes += end - _RTU_KEEP
            del buffer[: end - _RTU_KEEP]
        return None
