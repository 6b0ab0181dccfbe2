"""Pure decoding helpers for register and bit data; table-tested, no I/O."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence


def span(addresses: Iterable[int]) -> tuple[int, int]:
    """The smallest `(start, count)` read that covers every address (one request, not many)."""
    values = list(addresses)
    if not values:
        raise ValueError("span of no addresses")
    start = min(values)
    return start, max(values) - start + 1


def counter_delta(previous: int, current: int, *, bits: int = 16) -> int:
    """How many times a wrapping hardware counter advanced from `previous` to `current`."""
    return (current - previous) % (1 << bits)


def rising_edges(previous: Sequence[bool], current: Sequence[bool]) -> list[int]:
    """Indexes that went from open to closed."""
    return [
        i for i, (was, now) in enumerate(zip(previous, current, strict=True)) if now and not was
    ]


# -- generic points: register words -> values --------------------------------------------------

_FORMATS = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}
REGISTER_LIMIT = 125
"""Most registers one Modbus read may ask for (FC 3/4)."""
BIT_LIMIT = 2000
"""Most bits one Modbus read may ask for (FC 1/2)."""


def register_count(data_type: str) -> int:
    """How many 16-bit registers a value of `data_type` occupies."""
    if data_type not in _FORMATS:
        raise ValueError(f"unknown register data type {data_type!r}")
    return 2 if data_type in ("int32", "uint32", "float32") else 1


def decode_words(
    words: Sequence[int], data_type: str, *, byte_order: str = "big", word_order: str = "big"
) -> int | float:
    """Decode register words. `byte_order`: the bytes inside each register ('big' is the Modbus
    standard); `word_order`: 'big' = the first register holds the most significant word."""
    if len(words) != register_count(data_type):
        raise ValueError(
            f"{data_type} needs {register_count(data_type)} registers, got {len(words)}"
        )
    if any(not 0 <= w <= 0xFFFF for w in words):
        raise ValueError(f"register values must be 0..65535: {list(words)}")
    ordered = list(words) if word_order == "big" else list(reversed(words))
    raw = b"".join(w.to_bytes(2, "big" if byte_order == "big" else "little") for w in ordered)
    (value,) = struct.unpack(">" + _FORMATS[data_type], raw)
    if data_type == "float32":
        # A float32 has about 7 significant digits; more would only show conversion noise.
        return float(f"{value:.7g}")
    return int(value)


def register_bit(word: int, bit: int) -> bool:
    """Bit `bit` (0 = least significant) of a register."""
    return bool(word >> bit & 1)


def scale_value(raw: int | float, scale: float = 1.0, offset: float = 0.0) -> int | float:
    """`raw * scale + offset`; stays an int when all three are whole numbers."""
    value = raw * scale + offset
    if isinstance(raw, int) and float(scale).is_integer() and float(offset).is_integer():
        return int(value)
    # Decimal scales (0.1) leave binary noise (0.30000000000000004); nine places drop it.
    return round(value, 9)


def plan_reads(spans: Iterable[tuple[int, int]], *, max_count: int) -> list[tuple[int, int]]:
    """Merge `(address, count)` spans that overlap or touch into as few `(start, count)` reads
    as possible, none longer than `max_count`. Gaps are never bridged: a device may answer an
    unmapped address with an exception."""
    blocks: list[tuple[int, int]] = []
    for address, count in sorted(set(spans)):
        if count < 1 or count > max_count:
            raise ValueError(f"span ({address}, {count}) is not 1..{max_count} long")
        if blocks:
            start, length = blocks[-1]
            end = max(start + length, address + count)
            if address <= start + length and end - start <= max_count:
                blocks[-1] = (start, end - start)
                continue
        blocks.append((address, count))
    return blocks
