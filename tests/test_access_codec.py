"""The access-controller protocol codec: CRC, stuffing, the worked example of the protocol doc,
every payload layout, and the frame parser's handling of bad input (tables of cases)."""

from __future__ import annotations

import pytest

from drivers import access_codec as wire
from drivers.access_codec import (
    Code,
    ControllerEvent,
    DenyReason,
    EventCode,
    Frame,
    FrameError,
    FrameParser,
)

POLL_EXAMPLE = Frame(1, 0x10, Code.POLL, wire.encode_poll(2))
POLL_EXAMPLE_HEX = "02 01 10 30 01 10 22 00 10 22 77 7c 03"
"""The worked example of docs/protocols/access_controller.md."""
GOOD = wire.encode_frame(Frame(5, 9, Code.NO_EVENT))


def crc16_bitwise(data: bytes) -> int:
    """CRC-16/CCITT-FALSE the slow way, independent of binascii."""
    crc = 0xFFFF
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


@pytest.mark.parametrize(
    ("data", "crc"),
    [(b"123456789", 0x29B1), (b"", 0xFFFF), (bytes.fromhex("01 10 01 02 00 02"), 0x777C)],
)
def test_crc16_ccitt_false_vectors(data: bytes, crc: int) -> None:
    assert wire.crc16(data) == crc == crc16_bitwise(data)


def test_worked_example_of_the_protocol_doc() -> None:
    assert wire.frame_body(POLL_EXAMPLE).hex(" ") == "01 10 01 02 00 02 77 7c"
    assert wire.encode_frame(POLL_EXAMPLE).hex(" ") == POLL_EXAMPLE_HEX
    assert FrameParser().feed(bytes.fromhex(POLL_EXAMPLE_HEX)) == [POLL_EXAMPLE]


@pytest.mark.parametrize(
    ("body", "stuffed"),
    [
        ("02", "10 22"),
        ("03", "10 23"),
        ("10", "10 30"),
        ("22 23 30 20", "22 23 30 20"),
        ("00 02 10 ff", "00 10 22 10 30 ff"),
    ],
)
def test_stuffing(body: str, stuffed: str) -> None:
    assert wire.stuff(bytes.fromhex(body)).hex(" ") == stuffed


@pytest.mark.parametrize(
    "event",
    [
        ControllerEvent(
            1,
            EventCode.CARD,
            1_700_000_000_000,
            reader=2,
            card=12345678,
            granted=True,
            reason=DenyReason.NONE,
        ),
        ControllerEvent(
            2,
            EventCode.CARD,
            1,
            reader=1,
            card=0xFFFFFFFF,
            granted=False,
            reason=DenyReason.LOCKDOWN,
        ),
        ControllerEvent(3, EventCode.DOOR_OPENED, 5, door=1),
        ControllerEvent(4, EventCode.DOOR_CLOSED, 5, door=255),
        ControllerEvent(0x0203, EventCode.DOOR_FORCED, 0x0203, door=2),
        ControllerEvent(6, EventCode.DOOR_HELD, 5, door=1, held_s=65535),
        ControllerEvent(7, EventCode.EXIT_BUTTON, 5, door=1),
        ControllerEvent(65535, EventCode.TAMPER, 5, active=True),
        ControllerEvent(9, EventCode.TAMPER, 5, active=False),
    ],
)
def test_event_payloads_round_trip_through_a_frame(event: ControllerEvent) -> None:
    frame = Frame(7, 0x03, Code.EVENT, wire.encode_event(event))
    (parsed,) = FrameParser().feed(wire.encode_frame(frame))
    assert parsed == frame
    assert wire.decode_event(parsed.payload) == event


@pytest.mark.parametrize(
    ("encode", "decode", "value"),
    [
        (wire.encode_poll, wire.decode_poll, 0),
        (wire.encode_poll, wire.decode_poll, 65535),
        (wire.encode_time, wire.decode_time, 1_700_000_000_123),
        (wire.encode_configure, wire.decode_configure, 30),
    ],
)
def test_request_payloads_round_trip(encode: object, decode: object, value: int) -> None:
    assert callable(encode) and callable(decode)
    assert decode(encode(value)) == value


def test_unlock_payload() -> None:
    assert wire.encode_unlock(2, 5) == b"\x02\x05"
    assert wire.decode_unlock(b"\x02\x05") == (2, 5)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("00 01 01", "shorter than its header"),
        ("00 00 02 00 00 00 00 00 00 00 01 01", "seq 0 is reserved"),
        ("00 01 99 00 00 00 00 00 00 00 01 01", "unknown event code 0x99"),
        ("00 01 02 00 00 00 00 00 00 00 01", "DOOR_OPENED payload is 0 bytes"),
        ("00 01 02 00 00 00 00 00 00 00 01 01 01", "DOOR_OPENED payload is 2 bytes"),
        ("00 01 01 00 00 00 00 00 00 00 01 01 02 00 00 00 00 01", "granted flag 2"),
    ],
)
def test_bad_event_payloads_raise_frame_error(payload: str, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        wire.decode_event(bytes.fromhex(payload))


def test_unknown_deny_reason_is_still_a_denial() -> None:
    payload = bytes.fromhex("00 01 01 00 00 00 00 00 00 00 01 01 00 42 00 00 00 07")
    event = wire.decode_event(payload)
    assert event.granted is False and event.reason is DenyReason.OTHER


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (Frame(256, 1, 1), "address 256"),
        (Frame(1, -1, 1), "seq -1"),
        (Frame(1, 1, 1, bytes(wire.MAX_PAYLOAD + 1)), "exceeds"),
    ],
)
def test_unencodable_frames_are_refused(frame: Frame, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        wire.encode_frame(frame)


def test_out_of_range_values_are_refused() -> None:
    with pytest.raises(FrameError):
        wire.encode_poll(65536)
    with pytest.raises(FrameError):
        wire.encode_unlock(256)


def hx(text: str) -> bytes:
    return bytes.fromhex(text)


BAD_CRC = GOOD[:-2] + bytes([GOOD[-2] ^ 0x01]) + GOOD[-1:]


@pytest.mark.parametrize(
    ("stream", "counter", "count"),
    [
        (b"\x00\xff\x55" + GOOD, "garbage_bytes", 3),
        (GOOD[:5] + GOOD, "truncated", 1),
        (BAD_CRC + GOOD, "crc_errors", 1),
        (hx("02 05 09 81 01 ff 03") + GOOD, "length_errors", 1),  # LEN 1, no payload byte
        (hx("02 05 03") + GOOD, "length_errors", 1),
        (hx("02 05 10 41 03") + GOOD, "bad_escapes", 1),  # 0x41 ^ 0x20 is not special
        (hx("02 05 10 03") + GOOD, "bad_escapes", 1),  # DLE right before ETX
        (hx("02 05 10 10 03") + GOOD, "bad_escapes", 1),
        (b"\x02" + bytes(wire.MAX_BODY + 5) + b"\x03" + GOOD, "oversize", 1),
        (b"\x03\x03" + GOOD, "garbage_bytes", 2),
    ],
)
def test_parser_counts_a_bad_frame_and_recovers_the_next(
    stream: bytes, counter: str, count: int
) -> None:
    parser = FrameParser()
    assert parser.feed(stream) == [Frame(5, 9, Code.NO_EVENT)]
    assert getattr(parser.stats, counter) == count
    assert parser.stats.frames == 1


def test_parser_takes_frames_split_anywhere_and_several_per_chunk() -> None:
    frames = [POLL_EXAMPLE, Frame(5, 9, Code.NO_EVENT), Frame(254, 255, Code.ERROR, b"\x01")]
    stream = b"".join(wire.encode_frame(f) for f in frames)
    parser = FrameParser()
    got = [frame for byte in stream for frame in parser.feed(bytes([byte]))]
    assert got == frames
    assert FrameParser().feed(stream) == frames


def test_parser_reset_forgets_a_partial_frame() -> None:
    parser = FrameParser()
    assert parser.feed(GOOD[:4]) == []
    assert parser.buffered > 0
    parser.reset()
    assert parser.feed(GOOD[4:]) == []  # the rest of a frame without its start: not a frame
    assert parser.feed(GOOD) == [Frame(5, 9, Code.NO_EVENT)]


def test_answer_reader_skips_stale_answers_and_requests() -> None:
    reader = wire.AnswerTo(5, 9)
    stale = wire.encode_frame(Frame(5, 8, Code.NO_EVENT))
    echo = wire.encode_frame(Frame(5, 9, Code.POLL, wire.encode_poll(0)))
    other = wire.encode_frame(Frame(6, 9, Code.NO_EVENT))
    assert reader.feed(stale + echo + other) is None
    assert reader.feed(GOOD) == Frame(5, 9, Code.NO_EVENT)
    assert reader.stray_frames == 3


@pytest.mark.parametrize(("seq", "top", "after"), [(0, 255, 1), (1, 255, 2), (255, 255, 1)])
def test_next_seq_skips_zero(seq: int, top: int, after: int) -> None:
    assert wire.next_seq(seq, top=top) == after
