"""Table tests of the generic-point decoders in `drivers.codecs` (pure functions, no I/O)."""

from __future__ import annotations

import pytest

from drivers.codecs import decode_words, plan_reads, register_bit, register_count, scale_value
from simulators.registers import encode


@pytest.mark.parametrize(
    ("words", "data_type", "byte_order", "word_order", "expected"),
    [
        ([0x0000], "uint16", "big", "big", 0),
        ([0xFFFF], "uint16", "big", "big", 65535),
        ([0xFFFF], "int16", "big", "big", -1),
        ([0x8000], "int16", "big", "big", -32768),
        ([0x1234], "uint16", "little", "big", 0x3412),
        ([0x0001, 0x0000], "uint32", "big", "big", 65536),
        ([0x0000, 0x0001], "uint32", "big", "little", 65536),
        ([0xFFFF, 0xFFFE], "int32", "big", "big", -2),
        ([0xFEFF, 0xFFFF], "int32", "little", "little", -2),
        ([0x1234, 0x5678], "uint32", "big", "big", 0x12345678),
        ([0x5678, 0x1234], "uint32", "big", "little", 0x12345678),
        ([0x3412, 0x7856], "uint32", "little", "big", 0x12345678),
        ([0x7856, 0x3412], "uint32", "little", "little", 0x12345678),
        ([0x41AC, 0x0000], "float32", "big", "big", 21.5),
        ([0x0000, 0x41AC], "float32", "big", "little", 21.5),
        ([0xAC41, 0x0000], "float32", "little", "big", 21.5),
        ([0x41AD, 0x9999], "float32", "big", "big", 21.7),  # 7 significant digits, no noise
        ([0xC2C8, 0x0000], "float32", "big", "big", -100.0),
    ],
)
def test_decode_words(
    words: list[int], data_type: str, byte_order: str, word_order: str, expected: float
) -> None:
    value = decode_words(words, data_type, byte_order=byte_order, word_order=word_order)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("data_type", ["int16", "uint16", "int32", "uint32", "float32"])
@pytest.mark.parametrize("byte_order", ["big", "little"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_decode_undoes_what_a_device_encodes(
    data_type: str, byte_order: str, word_order: str
) -> None:
    value = {"int16": -1234, "uint16": 54321, "int32": -123456789, "uint32": 4000000000}.get(
        data_type, -0.15625
    )
    words = encode(value, data_type, byte_order=byte_order, word_order=word_order)
    assert decode_words(words, data_type, byte_order=byte_order, word_order=word_order) == value


@pytest.mark.parametrize(
    ("words", "data_type", "message"),
    [
        ([1, 2], "uint16", "uint16 needs 1 registers, got 2"),
        ([1], "float32", "float32 needs 2 registers, got 1"),
        ([70000], "uint16", "must be 0..65535"),
        ([1], "bcd", "unknown register data type"),
    ],
)
def test_decode_refuses_bad_input(words: list[int], data_type: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_words(words, data_type)


@pytest.mark.parametrize(
    ("data_type", "count"),
    [("int16", 1), ("uint16", 1), ("int32", 2), ("uint32", 2), ("float32", 2)],
)
def test_register_count(data_type: str, count: int) -> None:
    assert register_count(data_type) == count


@pytest.mark.parametrize(
    ("word", "bit", "expected"),
    [(0b1, 0, True), (0b1, 1, False), (0x8000, 15, True), (0x7FFF, 15, False), (0b100, 2, True)],
)
def test_register_bit(word: int, bit: int, expected: bool) -> None:
    assert register_bit(word, bit) is expected


@pytest.mark.parametrize(
    ("raw", "scale", "offset", "expected"),
    [
        (235, 1.0, 0.0, 235),
        (235, 0.1, 0.0, 23.5),
        (3, 0.1, 0.0, 0.3),  # not 0.30000000000000004
        (1000, 0.01, -40.0, -30.0),
        (7, 2.0, 1.0, 15),
        (21.5, 1.0, 0.0, 21.5),
        (-5, -1.0, 0.0, 5),
    ],
)
def test_scale_value(raw: float, scale: float, offset: float, expected: float) -> None:
    value = scale_value(raw, scale, offset)
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize(
    ("spans", "max_count", "expected"),
    [
        ([(0, 1)], 125, [(0, 1)]),
        ([(0, 1), (1, 1), (2, 2)], 125, [(0, 4)]),  # touching: one read
        ([(5, 2), (0, 1)], 125, [(0, 1), (5, 2)]),  # gaps are never bridged
        ([(0, 2), (1, 2)], 125, [(0, 3)]),  # overlapping
        ([(0, 1), (0, 1)], 125, [(0, 1)]),  # the same register twice (two bits of it)
        ([(0, 100), (100, 30)], 125, [(0, 100), (100, 30)]),  # would exceed the limit
        ([], 125, []),
    ],
)
def test_plan_reads(
    spans: list[tuple[int, int]], max_count: int, expected: list[tuple[int, int]]
) -> None:
    assert plan_reads(spans, max_count=max_count) == expected


def test_plan_reads_refuses_a_span_longer_than_one_read() -> None:
    with pytest.raises(ValueError, match=r"not 1\.\.125 long"):
        plan_reads([(0, 126)], max_count=125)
