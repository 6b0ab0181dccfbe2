"""Answers that pymodbus's framer would raise on, made harmless before it sees them.

pymodbus 3.x raises ModbusIOException("Unable to decode request") out of the transport's
data_received when a complete, well-framed answer holds a PDU it cannot decode (a byte count
longer than what follows, an unknown function code): asyncio logs "Fatal error:
protocol.data_received() call failed" with a traceback and closes the connection, so one bad
answer from one unit behind a TCP gateway drops the line for every unit on it (found by
tests/test_modbus_answer_fuzz.py). The line's `trace_packet` hook (a public pymodbus hook that may
rewrite what is parsed) passes each receive buffer through here first.

Owns only the check and the defusing, pure functions: a bad MBAP frame gets a non-zero protocol
id (the framer then ignores the buffer until the next request clears it), a bad RTU frame a
broken CRC (the framer discards it as garbage). Lengths never change, since the transport cuts
its own buffer by what the framer consumed. The request then ends as the line's other garbage
does: DeviceProtocolError ("no valid reply"), counted, the line alive. It does not frame,
decode for the caller or retry.
"""

from __future__ import annotations

from pymodbus.pdu import DecodePDU

_DECODER = DecodePDU(is_server=False)
_MBAP = 7  # transaction id, protocol id, length, unit id


def _decodable(pdu: bytes) -> bool:
    try:
        return _DECODER.decode(pdu) is not None
    except Exception:  # whatever pymodbus raises, the frame is not decodable
        return False


def defuse_tcp(data: bytes) -> tuple[bytes, int]:
    """`data` with each complete MBAP frame pymodbus could not decode disabled; and how many."""
    out: bytearray | None = None
    defused, at = 0, 0
    while len(data) - at >= _MBAP + 1:
        if data[at + 2 : at + 4] != b"\x00\x00":
            break  # the framer stops here by itself
        end = at + 6 + int.from_bytes(data[at + 4 : at + 6], "big")
        if end > len(data) or end <= at + _MBAP:
            break  # incomplete (the framer waits) or empty (the framer skips it)
        if not _decodable(data[at + _MBAP : end]):
            out = out if out is not None else bytearray(data)
            out[at + 2 : at + 4] = b"\xff\xff"
            defused += 1
            break  # the framer stops at the disabled frame
        at = end
    return (bytes(out) if out is not None else data), defused


def defuse_rtu(data: bytes) -> tuple[bytes, int]:
    """`data` with its CRC broken when the whole buffer is one CRC-valid frame whose PDU
    pymodbus could not decode; and 1 then, else 0. (An answer starts the buffer: pymodbus
    clears it when it sends the request.)"""
    if len(data) < 4 or _crc16(data[:-2]) != data[-2:] or _decodable(data[1:-2]):
        return data, 0
    return data[:-2] + bytes([data[-2] ^ 0xFF, data[-1]]), 1


def _crc16(frame: bytes) -> bytes:
    crc = 0xFFFF
    for byte in frame:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc.to_bytes(2, "little")
