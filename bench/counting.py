"""How the throughput and outage benches count what the brokers delivered, in one place, so a
figure can only be read the way it was counted (issue 16): per unique datapoint (each change
once, however many brokers it reached) or per delivery (each broker's copy counted, so a gateway
that sends every datapoint to two brokers counts it twice).

Pure: lists of arrivals in, numbers out. `bench/scenarios.py` collects the arrivals (with
`subjects.Counter`); `bench/report/` renders what is returned here. It measures nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Datapoint = tuple[str, str, object]
"""(device, point name, value) as delivered."""
Arrival = tuple[int, Datapoint]
"""(time.time_ns() at arrival, datapoint)."""


def first_arrivals(arrivals: Sequence[Arrival], first: int, last: int) -> dict[Datapoint, int]:
    """First arrival (ns) of each distinct datapoint whose value is a tick in [first, last]."""
    seen: dict[Datapoint, int] = {}
    for at, point in arrivals:
        value = point[2]
        if isinstance(value, int | float) and first <= value <= last and point not in seen:
            seen[point] = at
    return seen


@dataclass(frozen=True)
class WindowCount:
    """What arrived inside one measurement window."""

    unique: int
    """Distinct datapoints whose first arrival at any broker fell inside the window."""
    deliveries: dict[str, int]
    """Per broker: distinct datapoints whose first arrival at that broker fell inside the window
    (a repeat at the same broker is no new delivery)."""

    @property
    def total_deliveries(self) -> int:
        return sum(self.deliveries.values())


def count_window(
    arrivals_by_broker: Mapping[str, Sequence[Arrival]], start_ns: int, end_ns: int
) -> WindowCount:
    """Count the window [start_ns, end_ns) per unique datapoint and per delivery."""
    first_anywhere: dict[Datapoint, int] = {}
    deliveries: dict[str, int] = {}
    for broker, arrivals in arrivals_by_broker.items():
        first_here: dict[Datapoint, int] = {}
        for at, point in arrivals:
            if point not in first_here:
                first_here[point] = at
        deliveries[broker] = sum(1 for at in first_here.values() if start_ns <= at < end_ns)
        for point, at in first_here.items():
            if at < first_anywhere.get(point, at + 1):
                first_anywhere[point] = at
    unique = sum(1 for at in first_anywhere.values() if start_ns <= at < end_ns)
    return WindowCount(unique=unique, deliveries=deliveries)


def per_cpu_second(count: int, cpu_s: float) -> float | None:
    """Datapoints per CPU-second of the gateway process; None when it used no measurable CPU
    (a rate over zero is no figure)."""
    return count / cpu_s if cpu_s > 0 else None


__all__ = [
    "Arrival",
    "Datapoint",
    "WindowCount",
    "count_window",
    "first_arrivals",
    "per_cpu_second",
]
