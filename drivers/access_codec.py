"""The access-controller serial protocol: frames, byte stuffing, CRC, and the payload of every code
(docs/protocols/access_controller.md is the specification).

Owns pure encoding and decoding, both directions (the driver and the simulator share it), and the
incremental `FrameParser` that finds frames in a byte stream, resynchronises after garbage or a
truncated frame, never raises on bad input (it counts instead) and holds at most one frame's bytes.
It does no I/O, keeps no time and knows nothing of doors or events beyond their wire layout.

    on the wire:  STX | stuff(ADDR SEQ CODE LEN PAYLOAD[LEN] CRC_HI CRC_LO) | ETX

CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, xorout 0; check "123456789" =
0x29B1) over ADDR..PAYLOAD, sent high byte first. Stuffing: STX, ETX and DLE inside the frame are
sent as DLE followed by the byte XOR 0x20, so STX always starts a frame and ETX always ends one.
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass

STX = 0x02
ETX = 0x03
DLE = 0x10
_ESCAPE_XOR = 0x20
_SPECIAL = frozenset({STX, ETX, DLE})
_HEADER = struct.Struct(">BBBB")  # address, seq, code, payload length
MAX_PAYLOAD = 64
MAX_BODY = _HEADER.size + MAX_PAYLOAD + 2
"""Unstuffed bytes between STX and ETX at most: the parser never buffers more than this."""
BROADCAST = 0  # reserved: never answered, never used by the gateway today
MIN_ADDRESS, MAX_ADDRESS = 1, 254


class Code(enum.IntEnum):
    """The frame's CODE byte. Requests (master to controller) are below 0x80, answers above."""

    POLL = 0x01
    UNLOCK = 0x10
    LOCKDOWN = 0x11
    RELEASE_LOCKDOWN = 0x12
    READ_CLOCK = 0x20
    SET_CLOCK = 0x21
    CONFIGURE = 0x30
    NO_EVENT = 0x81
    EVENT = 0x82
    OK = 0x90
    CLOCK = 0x91
    ERROR = 0xEE


class EventCode(enum.IntEnum):
    CARD = 0x01
    DOOR_OPENED = 0x02
    DOOR_CLOSED = 0x03
    DOOR_FORCED = 0x04
    DOOR_HELD = 0x05
    EXIT_BUTTON = 0x06
    TAMPER = 0x07


class ErrorCode(enum.IntEnum):
    UNKNOWN_COMMAND = 0x01
    BAD_PAYLOAD = 0x02
    NO_SUCH_DOOR = 0x03
    LOCKED_DOWN = 0x04
    BAD_CLOCK = 0x05


class DenyReason(enum.IntEnum):
    NONE = 0x00
    UNKNOWN_CARD = 0x01
    LOCKDOWN = 0x02
    OUT_OF_SCHEDULE = 0x03
    OTHER = 0xFF


class FrameError(ValueError):
    """A frame or payload that does not follow the protocol (encoding bad values, or decoding)."""


@dataclass(frozen=True, slots=True)
class Frame:
    address: int
    seq: int
    code: int
    payload: bytes = b""

    @property
    def is_answer(self) -> bool:
        return self.code >= 0x80


@dataclass(frozen=True, slots=True)
class ControllerEvent:
    """One record of a controller's event buffer. Fields not used by `code` are None."""

    seq: int
    """Event number, 1..65535 then 1 again (0 is never used); unique in the buffer."""
    code: EventCode
    time_ms: int
    """The controller's clock when it happened: Unix milliseconds, UTC."""
    door: int | None = None
    reader: int | None = None
    card: int | None = None
    granted: bool | None = None
    reason: DenyReason | None = None
    held_s: int | None = None
    active: bool | None = None


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE. `binascii.crc_hqx` is exactly this polynomial, unreflected."""
    return binascii.crc_hqx(data, 0xFFFF)


# -- frames ------------------------------------------------------------------------------------


def encode_frame(frame: Frame) -> bytes:
    """The bytes to write for `frame`, with STX, stuffing, CRC and ETX."""
    return bytes([STX]) + stuff(frame_body(frame)) + bytes([ETX])


def frame_body(frame: Frame) -> bytes:
    """ADDR SEQ CODE LEN PAYLOAD CRC: the frame before stuffing."""
    for name, value in (("address", frame.address), ("seq", frame.seq), ("code", frame.code)):
        if not 0 <= value <= 0xFF:
            raise FrameError(f"{name} {value} does not fit a byte")
    if len(frame.payload) > MAX_PAYLOAD:
        raise FrameError(f"payload of {len(frame.payload)} bytes exceeds {MAX_PAYLOAD}")
    body = _HEADER.pack(frame.address, frame.seq, frame.code, len(frame.payload)) + frame.payload
    return body + crc16(body).to_bytes(2, "big")


def stuff(body: bytes) -> bytes:
    """Escape STX, ETX and DLE as DLE, byte XOR 0x20."""
    out = bytearray()
    for byte in body:
        if byte in _SPECIAL:
            out += bytes((DLE, byte ^ _ESCAPE_XOR))
        else:
            out.append(byte)
    return bytes(out)


@dataclass(slots=True)
class ParserStats:
    frames: int = 0
    crc_errors: int = 0
    length_errors: int = 0
    """Shorter than a header and CRC, or LEN disagreeing with the bytes received."""
    bad_escapes: int = 0
    oversize: int = 0
    truncated: int = 0
    """A frame cut short by the next STX: its bytes were lost on the wire."""
    garbage_bytes: int = 0
    """Bytes outside any frame (line noise, or the rest of a frame dropped as bad)."""

    @property
    def errors(self) -> int:
        return (
            self.crc_errors + self.length_errors + self.bad_escapes + self.oversize + self.truncated
        )


class FrameParser:
    """Feed it bytes as they arrive; it returns the complete valid frames found so far.

    A bad frame is counted and dropped; everything up to the next STX is then skipped. Because
    STX never occurs inside a stuffed frame, the next good frame is always found, even right after
    a truncated one. Memory is bounded by MAX_BODY whatever is fed.
    """

    def __init__(self) -> None:
        self.stats = ParserStats()
        self._body = bytearray()
        self._in_frame = False
        self._escaped = False

    @property
    def buffered(self) -> int:
        """Bytes held for the frame in progress (never more than MAX_BODY)."""
        return len(self._body)

    def reset(self) -> None:
        """Forget a partial frame (the port was reopened: its first bytes are gone)."""
        self._body.clear()
        self._in_frame = False
        self._escaped = False

    def feed(self, data: bytes) -> list[Frame]:
        frames: list[Frame] = []
        for byte in data:
            if byte == STX:
                if self._in_frame:
                    self.stats.truncated += 1
                self._start()
            elif not self._in_frame:
                self.stats.garbage_bytes += 1
            elif byte == ETX:
                frame = self._finish()
                if frame is not None:
                    frames.append(frame)
            elif self._escaped:
                self._escaped = False
                unescaped = byte ^ _ESCAPE_XOR
                if unescaped not in _SPECIAL:
                    self._drop("bad_escapes")
                else:
                    self._append(unescaped)
            elif byte == DLE:
                self._escaped = True
            else:
                self._append(byte)
        return frames

    def _start(self) -> None:
        self._body.clear()
        self._in_frame = True
        self._escaped = False

    def _append(self, byte: int) -> None:
        if len(self._body) >= MAX_BODY:
            self._drop("oversize")
        else:
            self._body.append(byte)

    def _drop(self, counter: str) -> None:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        self._body.clear()
        self._in_frame = False
        self._escaped = False

    def _finish(self) -> Frame | None:
        body = bytes(self._body)
        escaped = self._escaped
        self._body.clear()
        self._in_frame = False
        self._escaped = False
        if escaped:  # DLE right before ETX: the escaped byte is missing
            self.stats.bad_escapes += 1
            return None
        if len(body) < _HEADER.size + 2 or body[3] != len(body) - _HEADER.size - 2:
            self.stats.length_errors += 1
            return None
        if crc16(body[:-2]) != int.from_bytes(body[-2:], "big"):
            self.stats.crc_errors += 1
            return None
        self.stats.frames += 1
        address, seq, code, _ = _HEADER.unpack_from(body)
        return Frame(address, seq, code, body[_HEADER.size : -2])


class AnswerTo:
    """The answer reader of one request (`drivers.lines.serial.AnswerReader`): parses what
    arrives and is complete at the answer from `address` with `seq`. Other valid frames (a late
    answer to an earlier request, an echo of our own request) are counted and skipped."""

    def __init__(self, address: int, seq: int) -> None:
        self.parser = FrameParser()
        self.stray_frames = 0
        self._address = address
        self._seq = seq

    def feed(self, data: bytes) -> Frame | None:
        for frame in self.parser.feed(data):
            if frame.is_answer and frame.address == self._address and frame.seq == self._seq:
                return frame
            self.stray_frames += 1
        return None


# -- payloads ----------------------------------------------------------------------------------

_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_UNLOCK = struct.Struct(">BB")  # door, open time in seconds (0: the controller's default)
_EVENT_HEAD = struct.Struct(">HBQ")  # event seq, event code, time ms
_CARD = struct.Struct(">BBBI")  # reader, granted, deny reason, card number
_DOOR = struct.Struct(">B")
_HELD = struct.Struct(">BH")  # door, seconds open
_TAMPER = struct.Struct(">B")  # 1: tamper switch opened, 0: restored
_DOOR_EVENTS = frozenset(
    {EventCode.DOOR_OPENED, EventCode.DOOR_CLOSED, EventCode.DOOR_FORCED, EventCode.EXIT_BUTTON}
)


def _unpack(layout: struct.Struct, payload: bytes, what: str) -> tuple[int, ...]:
    if len(payload) != layout.size:
        raise FrameError(f"{what} payload is {len(payload)} bytes, expected {layout.size}")
    return layout.unpack(payload)


def _pack(layout: struct.Struct, *values: int) -> bytes:
    try:
        return layout.pack(*values)
    except struct.error as exc:
        raise FrameError(f"value out of range: {exc}") from None


def encode_poll(ack_seq: int) -> bytes:
    """POLL payload: the event seq being acknowledged (0: nothing to acknowledge)."""
    return _pack(_U16, ack_seq)


def decode_poll(payload: bytes) -> int:
    return _unpack(_U16, payload, "POLL")[0]


def encode_unlock(door: int, open_s: int = 0) -> bytes:
    return _pack(_UNLOCK, door, open_s)


def decode_unlock(payload: bytes) -> tuple[int, int]:
    door, open_s = _unpack(_UNLOCK, payload, "UNLOCK")
    return door, open_s


def encode_time(time_ms: int) -> bytes:
    """SET_CLOCK and CLOCK payload: Unix milliseconds, UTC."""
    return _pack(_U64, time_ms)


def decode_time(payload: bytes) -> int:
    return _unpack(_U64, payload, "clock")[0]


def encode_configure(held_open_s: int) -> bytes:
    return _pack(_U16, held_open_s)


def decode_configure(payload: bytes) -> int:
    return _unpack(_U16, payload, "CONFIGURE")[0]


def encode_error(code: ErrorCode) -> bytes:
    return bytes([code])


def decode_error(payload: bytes) -> int:
    """The error code of an ERROR answer (may be one this codec does not name)."""
    if len(payload) != 1:
        raise FrameError(f"ERROR payload is {len(payload)} bytes, expected 1")
    return payload[0]


def encode_event(event: ControllerEvent) -> bytes:
    head = _pack(_EVENT_HEAD, event.seq, event.code, event.time_ms)
    if event.code is EventCode.CARD:
        reason = event.reason if event.reason is not None else DenyReason.NONE
        return head + _pack(
            _CARD, _need(event.reader), int(bool(event.granted)), reason, _need(event.card)
        )
    if event.code in _DOOR_EVENTS:
        return head + _pack(_DOOR, _need(event.door))
    if event.code is EventCode.DOOR_HELD:
        return head + _pack(_HELD, _need(event.door), _need(event.held_s))
    return head + _pack(_TAMPER, int(bool(event.active)))


def decode_event(payload: bytes) -> ControllerEvent:
    if len(payload) < _EVENT_HEAD.size:
        raise FrameError(f"EVENT payload is {len(payload)} bytes, shorter than its header")
    seq, raw_code, time_ms = _EVENT_HEAD.unpack_from(payload)
    if seq == 0:
        raise FrameError("event seq 0 is reserved")
    try:
        code = EventCode(raw_code)
    except ValueError:
        raise FrameError(f"unknown event code 0x{raw_code:02x}") from None
    rest = payload[_EVENT_HEAD.size :]
    name = code.name
    if code is EventCode.CARD:
        reader, granted, reason, card = _unpack(_CARD, rest, name)
        if granted > 1:
            raise FrameError(f"granted flag {granted} is not 0 or 1")
        try:
            deny = DenyReason(reason)
        except ValueError:
            deny = DenyReason.OTHER  # a newer controller's reason: still a denial, not garbage
        return ControllerEvent(
            seq, code, time_ms, reader=reader, card=card, granted=bool(granted), reason=deny
        )
    if code in _DOOR_EVENTS:
        (door,) = _unpack(_DOOR, rest, name)
        return ControllerEvent(seq, code, time_ms, door=door)
    if code is EventCode.DOOR_HELD:
        door, held_s = _unpack(_HELD, rest, name)
        return ControllerEvent(seq, code, time_ms, door=door, held_s=held_s)
    (active,) = _unpack(_TAMPER, rest, name)
    return ControllerEvent(seq, code, time_ms, active=bool(active))


def _need(value: int | None) -> int:
    if value is None:
        raise FrameError("a field this event code needs is missing")
    return value


def next_seq(seq: int, *, top: int = 0xFF) -> int:
    """The sequence number after `seq`: 1..top then 1 again (0 is never used)."""
    return seq % top + 1
