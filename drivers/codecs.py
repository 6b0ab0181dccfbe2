"""Pure decoding helpers for register and bit data; table-tested, no I/O."""

from __future__ import annotations

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
