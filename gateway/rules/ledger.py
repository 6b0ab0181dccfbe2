"""The fault ledger (隐患登记造册, 闭环销号): every fault gets an entry with an id, what, where,
when and a repair deadline (24 h by default, per kind); it closes by itself when the fault
clears (with the evidence) or by a person (with a note); an overdue entry is reported once.

Owns the entries' life cycle, their ids ("YYYYMMDD-NNN", local day and a day counter) and the
summary (open, overdue, mean time to repair). Pure: fed the wall time, returns events
(`ledger.opened`, `ledger.closed`, `ledger.overdue`); entries live in `RulesState`. Deadlines are
wall time: they are hours or days long and shown to people, so a clock correction moves them
with the clock (a few seconds in practice). One open entry per fault `key`: opening it again
returns the entry already open.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

from gateway.core.events import DeviceRef, Event, Severity, new_event
from gateway.rules.counters import DayCounters, local_day
from gateway.rules.state import LedgerEntry, RulesState

DEFAULT_REPAIR_H = 24.0
_LEDGER_DEVICE = DeviceRef("ledger", "fault_ledger")


class LedgerError(Exception):
    """A person's ledger request that cannot be done (the message says why)."""


class EntryNotFound(LedgerError):
    pass


class EntryAlreadyClosed(LedgerError):
    pass


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    open: int
    overdue: int
    closed: int
    mean_time_to_repair_s: float | None
    """Over closed entries; None when none is closed."""


class Ledger:
    def __init__(
        self,
        state: RulesState,
        tz: ZoneInfo,
        repair_hours: Mapping[str, float] | None = None,
        default_repair_h: float = DEFAULT_REPAIR_H,
    ) -> None:
        self._state = state
        self._counters = DayCounters(state, tz)
        self._tz = tz
        self._repair_hours = dict(repair_hours or {})
        self._default_repair_h = default_repair_h

    def open(
        self, kind: str, key: str, *, what: str, where: str, at_ms: int
    ) -> tuple[LedgerEntry, list[Event]]:
        for entry in self._state.ledger_entries(open_only=True):
            if entry.key == key:
                return entry, []
        number = self._counters.add("ledger:ids", at_ms)
        day = local_day(at_ms, self._tz)
        hours = self._repair_hours.get(kind, self._default_repair_h)
        entry = LedgerEntry(
            id=f"{day:%Y%m%d}-{number:03d}",
            kind=kind,
            key=key,
            what=what,
            where=where,
            opened_ms=at_ms,
            deadline_ms=at_ms + round(hours * 3_600_000),
        )
        self._state.put_ledger_entry(entry)
        return entry, [self._event("ledger.opened", entry, at_ms, Severity.MINOR)]

    def close_cleared(self, key: str, *, evidence: str, at_ms: int) -> list[Event]:
        """The fault cleared by itself: close its open entry (if any) with the evidence."""
        for entry in self._state.ledger_entries(open_only=True):
            if entry.key == key:
                return self._close(entry, "auto", evidence, at_ms)
        return []

    def close_by_person(self, entry_id: str, *, by: str, note: str, at_ms: int) -> list[Event]:
        if not note.strip():
            raise LedgerError("closing an entry by hand needs a note saying what was done")
        if not by.strip() or by == "auto":
            raise LedgerError("closing an entry by hand needs the person's name")
        entry = self._state.ledger_entry(entry_id)
        if entry is None:
            raise EntryNotFound(f"no ledger entry {entry_id!r}")
        if not entry.is_open:
            raise EntryAlreadyClosed(f"ledger entry {entry_id!r} was closed by {entry.closed_by}")
        return self._close(entry, by, note, at_ms)

    def check_overdue(self, now_ms: int) -> list[Event]:
        """One `ledger.overdue` per open entry past its deadline (stored, so once ever)."""
        events = []
        for entry in self._state.ledger_entries(open_only=True):
            if now_ms >= entry.deadline_ms and not entry.overdue_reported:
                reported = replace(entry, overdue_reported=True)
                self._state.put_ledger_entry(reported)
                events.append(self._event("ledger.overdue", reported, now_ms, Severity.MAJOR))
        return events

    def next_deadline_ms(self) -> int | None:
        pending = [
            e.deadline_ms
            for e in self._state.ledger_entries(open_only=True)
            if not e.overdue_reported
        ]
        return min(pending, default=None)

    def entries(self, *, open_only: bool = False) -> list[LedgerEntry]:
        return self._state.ledger_entries(open_only=open_only)

    def summary(self, now_ms: int) -> LedgerSummary:
        entries = self._state.ledger_entries()
        still_open = [e for e in entries if e.is_open]
        repair_s = [(e.closed_ms - e.opened_ms) / 1000 for e in entries if e.closed_ms is not None]
        return LedgerSummary(
            open=len(still_open),
            overdue=sum(1 for e in still_open if now_ms >= e.deadline_ms),
            closed=len(repair_s),
            mean_time_to_repair_s=sum(repair_s) / len(repair_s) if repair_s else None,
        )

    def _close(self, entry: LedgerEntry, by: str, note: str, at_ms: int) -> list[Event]:
        closed = replace(entry, closed_ms=at_ms, closed_by=by, closing_note=note)
        self._state.put_ledger_entry(closed)
        return [self._event("ledger.closed", closed, at_ms, Severity.INFO)]

    def _event(self, type: str, entry: LedgerEntry, at_ms: int, severity: Severity) -> Event:
        data: dict[str, object] = {
            "entry": entry.id,
            "kind": entry.kind,
            "what": entry.what,
            "where": entry.where,
            "opened_ms": entry.opened_ms,
            "deadline_ms": entry.deadline_ms,
        }
        if entry.closed_ms is not None:
            data |= {
                "closed_by": entry.closed_by,
                "note": entry.closing_note,
                "repair_s": (entry.closed_ms - entry.opened_ms) / 1000,
            }
        return new_event(type, _LEDGER_DEVICE, severity=severity, occurred_at_ms=at_ms, data=data)
