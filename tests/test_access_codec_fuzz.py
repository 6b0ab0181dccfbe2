"""Fuzzing the access-controller frame parser (hypothesis): random bytes and mutated frames never
make it raise, hang or grow, and the next valid frame after any garbage is recovered."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers import access_codec as wire
from drivers.access_codec import MAX_BODY, Frame, FrameParser

frames = st.builds(
    Frame,
    address=st.integers(0, 255),
    seq=st.integers(0, 255),
    code=st.integers(0, 255),
    payload=st.binary(max_size=wire.MAX_PAYLOAD),
)
# STX, ETX and DLE often, so the fuzzing reaches the framing paths, not only garbage.
wire_bytes = st.binary(max_size=400) | st.lists(
    st.sampled_from([wire.STX, wire.ETX, wire.DLE, 0x22, 0x23, 0x30, 0x00, 0xFF]), max_size=200
).map(bytes)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid frame with bytes flipped, dropped, inserted or cut off."""
    data = bytearray(wire.encode_frame(draw(frames)))
    for _ in range(draw(st.integers(1, 4))):
        where = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "drop", "insert", "cut"]))
        if action == "flip":
            data[where] ^= draw(st.integers(1, 255))
        elif action == "drop" and len(data) > 1:
            del data[where]
        elif action == "insert":
            data.insert(where, draw(st.integers(0, 255)))
        elif action == "cut":
            del data[where:]
        if not data:
            break
    return bytes(data)


def feed_in_chunks(parser: FrameParser, data: bytes, cuts: list[int]) -> list[Frame]:
    out: list[Frame] = []
    start = 0
    for cut in sorted(c % (len(data) + 1) for c in cuts):
        out += parser.feed(data[start:cut])
        start = max(start, cut)
    out += parser.feed(data[start:])
    assert parser.buffered <= MAX_BODY
    return out


# No per-example deadline: a busy machine must not turn slowness into a failure; a real hang is
# still caught by the test timeout.
@settings(max_examples=300, deadline=None)
@given(noise=wire_bytes, cuts=st.lists(st.integers(0, 1000), max_size=5))
def test_random_bytes_never_raise_and_memory_stays_bounded(noise: bytes, cuts: list[int]) -> None:
    parser = FrameParser()
    for frame in feed_in_chunks(parser, noise, cuts):
        assert wire.encode_frame(frame)  # anything it accepts is a well-formed frame
    assert parser.buffered <= MAX_BODY


@settings(max_examples=300, deadline=None)
@given(noise=wire_bytes | mutated(), good=frames, cuts=st.lists(st.integers(0, 1000), max_size=5))
def test_the_next_valid_frame_after_garbage_is_recovered(
    noise: bytes, good: Frame, cuts: list[int]
) -> None:
    parser = FrameParser()
    got = feed_in_chunks(parser, noise + wire.encode_frame(good), cuts)
    assert got and got[-1] == good


@settings(max_examples=200, deadline=None)
@given(sent=st.lists(frames, min_size=1, max_size=8), cuts=st.lists(st.integers(0, 1000)))
def test_valid_streams_decode_exactly(sent: list[Frame], cuts: list[int]) -> None:
    parser = FrameParser()
    stream = b"".join(wire.encode_frame(f) for f in sent)
    assert feed_in_chunks(parser, stream, cuts) == sent
    assert parser.stats.errors == 0 and parser.stats.garbage_bytes == 0


@settings(max_examples=300, deadline=None)
@given(payload=st.binary(max_size=wire.MAX_PAYLOAD))
def test_event_decoder_raises_only_frame_error(payload: bytes) -> None:
    try:
        event = wire.decode_event(payload)
    except wire.FrameError:
        return
    assert wire.decode_event(wire.encode_event(event)) == event
