"""A line's request counters and its failures, logged once per change of state.

Owns what the Modbus line and the serial line both keep about their requests: how many were
sent, failed and timed out, and which units (None: the line itself) are failing, so a dead unit
polled every 50 ms logs one warning when it goes quiet and one line when it answers again, not
one a poll. It does not decide anything: the line owners call it from their request paths.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from drivers.base import DeviceTimeout, DriverError, LineError


@dataclass(frozen=True, slots=True)
class RequestCounts:
    """The part of a line owner's `stats` that its `LineHealth` counts."""

    requests: int
    failures: int
    timeouts: int


class LineHealth:
    def __init__(self, log: structlog.typing.FilteringBoundLogger, kind: str) -> None:
        self._log = log
        self._kind = kind
        """The log events' prefix: `modbus` or `serial`."""
        self.requests = 0
        self.failures = 0
        self.timeouts = 0
        self._failing: set[int | None] = set()

    @property
    def counts(self) -> tuple[int, int, int]:
        """`requests, failures, timeouts`, in `RequestCounts`' order."""
        return self.requests, self.failures, self.timeouts

    def failed(self, unit: int | None, exc: DriverError) -> None:
        """A request to `unit` failed: counted, and logged if the unit (or, for a LineError,
        the line) was not failing yet."""
        self.failures += 1
        if isinstance(exc, DeviceTimeout):
            self.timeouts += 1
        self.note_failure(None if isinstance(exc, LineError) else unit, exc)

    def note_failure(self, unit: int | None, exc: DriverError) -> None:
        if unit in self._failing:
            return
        self._failing.add(unit)
        event = f"{self._kind}_line_failing" if unit is None else f"{self._kind}_unit_failing"
        self._log.warning(event, unit=unit, error=str(exc), error_type=type(exc).__name__)

    def answered(self, unit: int | None) -> None:
        """`unit` answered: the line and the unit are well again (logged if they were not)."""
        if not self._failing:  # the usual case, on every request
            return
        if None in self._failing:
            self._failing.discard(None)
            self._log.info(f"{self._kind}_line_recovered")
        if unit is not None and unit in self._failing:
            self._failing.discard(unit)
            self._log.info(f"{self._kind}_unit_recovered", unit=unit)
