"""Everything the rules remember: the records and the ONE small protocol they are kept through.

Owns `RulesState` (timers, day counters, open violations, ledger entries), the frozen records it
stores, and `InMemoryRulesState` for unit tests. It does not decide anything: the rule modules do,
and write each change here before they report it, so a restart finds what they last said.
The durable implementation is `gateway.rules.sqlite_state.SqliteRulesState` (to be moved into
the store package by the integration; only the protocol below is the seam).

All times are epoch milliseconds (wall clock); a day is the site's local date, "YYYY-MM-DD".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TimerRecord:
    key: str
    device_id: str
    device_kind: str
    device_location: str
    started_ms: int
    duration_ms: int
    deadline_ms: int
    """Wall-clock deadline; rewritten when the wall clock steps (see gateway.rules.timers)."""
    fired_ms: int | None = None
    """When it expired; a fired timer stays (latched) until its cause ends or a person clears it."""


@dataclass(frozen=True, slots=True)
class ViolationRecord:
    rule_id: str
    device_id: str
    opened_ms: int
    event_id: str


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    id: str
    kind: str
    key: str
    """What identifies the fault (e.g. "offline:bollard-1"): one open entry per key."""
    what: str
    where: str
    opened_ms: int
    deadline_ms: int
    closed_ms: int | None = None
    closed_by: str | None = None
    """"auto" when the fault cleared, else the person who closed it."""
    closing_note: str | None = None
    """The evidence (auto) or the person's note."""
    overdue_reported: bool = False

    @property
    def is_open(self) -> bool:
        return self.closed_ms is None


class RulesState(Protocol):
    def put_timer(self, timer: TimerRecord) -> None: ...
    def timer(self, key: str) -> TimerRecord | None: ...
    def timers(self) -> list[TimerRecord]: ...
    def delete_timer(self, key: str) -> None: ...

    def counter(self, name: str, day: str) -> int: ...
    def add_to_counter(self, name: str, day: str, delta: int = 1) -> int:
        """Add and return the new value, in one step."""
        ...

    def put_violation(self, violation: ViolationRecord) -> None: ...
    def violation(self, rule_id: str, device_id: str) -> ViolationRecord | None: ...
    def violations(self) -> list[ViolationRecord]: ...
    def delete_violation(self, rule_id: str, device_id: str) -> None: ...

    def put_ledger_entry(self, entry: LedgerEntry) -> None: ...
    def ledger_entry(self, entry_id: str) -> LedgerEntry | None: ...
    def ledger_entries(self, *, open_only: bool = False) -> list[LedgerEntry]:
        """In the order they were opened."""
        ...


class InMemoryRulesState:
    """`RulesState` in dicts: for unit tests, forgets everything with the process."""

    def __init__(self) -> None:
        self._timers: dict[str, TimerRecord] = {}
        self._counters: dict[tuple[str, str], int] = {}
        self._violations: dict[tuple[str, str], ViolationRecord] = {}
        self._ledger: dict[str, LedgerEntry] = {}

    def put_timer(self, timer: TimerRecord) -> None:
        self._timers[timer.key] = timer

    def timer(self, key: str) -> TimerRecord | None:
        return self._timers.get(key)

    def timers(self) -> list[TimerRecord]:
        return sorted(self._timers.values(), key=lambda t: t.key)

    def delete_timer(self, key: str) -> None:
        self._timers.pop(key, None)

    def counter(self, name: str, day: str) -> int:
        return self._counters.get((name, day), 0)

    def add_to_counter(self, name: str, day: str, delta: int = 1) -> int:
        value = self._counters.get((name, day), 0) + delta
        self._counters[(name, day)] = value
        return value

    def put_violation(self, violation: ViolationRecord) -> None:
        self._violations[(violation.rule_id, violation.device_id)] = violation

    def violation(self, rule_id: str, device_id: str) -> ViolationRecord | None:
        return self._violations.get((rule_id, device_id))

    def violations(self) -> list[ViolationRecord]:
        return sorted(self._violations.values(), key=lambda v: (v.rule_id, v.device_id))

    def delete_violation(self, rule_id: str, device_id: str) -> None:
        self._violations.pop((rule_id, device_id), None)

    def put_ledger_entry(self, entry: LedgerEntry) -> None:
        self._ledger[entry.id] = entry

    def ledger_entry(self, entry_id: str) -> LedgerEntry | None:
        return self._ledger.get(entry_id)

    def ledger_entries(self, *, open_only: bool = False) -> list[LedgerEntry]:
        entries = sorted(self._ledger.values(), key=lambda e: (e.opened_ms, e.id))
        return [e for e in entries if e.is_open] if open_only else entries
