"""Events held in memory while the disk cannot be written (full, read-only, failing).

Owns the in-memory rows and their per-destination delivery state until the store takes them back.
Alarms are never dropped here; lower lanes are bounded, oldest telemetry dropped first, then state,
and every drop is counted. It does not decide when the disk is bad or good again (`outbox` does).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.core.events import Lane


@dataclass(slots=True)
class SpillRow:
    seq: int
    id: str
    type: str
    lane: Lane
    device_id: str
    alarm_id: str | None
    occurred_at_ms: int
    stored_at_ms: int
    body: str
    button: int | None = None
    actor: str | None = None
    attempts: dict[str, int] = field(default_factory=dict)
    """destination -> attempts so far; a destination is removed from `unsent` once acked."""
    unsent: set[str] = field(default_factory=set)
    sent_at_ms: dict[str, int] = field(default_factory=dict)


class Spill:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.rows: dict[int, SpillRow] = {}
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, row: SpillRow) -> None:
        self.rows[row.seq] = row
        self._enforce_limit()

    def pending(self, destination: str, lane: Lane, after_seq: int) -> list[SpillRow]:
        return sorted(
            (
                r
                for r in self.rows.values()
                if r.lane is lane and r.seq > after_seq and destination in r.unsent
            ),
            key=lambda r: r.seq,
        )

    def mark_sent(self, destination: str, seqs: set[int], at_ms: int) -> set[int]:
        """Mark what is held here; returns the seqs that were not held here."""
        rest = set()
        for seq in seqs:
            row = self.rows.get(seq)
            if row is None:
                rest.add(seq)
            else:
                row.unsent.discard(destination)
                row.sent_at_ms[destination] = at_ms
        return rest

    def pending_count(self, destination: str) -> int:
        return sum(1 for r in self.rows.values() if destination in r.unsent)

    def clear(self) -> None:
        self.rows.clear()

    def _enforce_limit(self) -> None:
        lower = [r for r in self.rows.values() if r.lane is not Lane.ALARM]
        excess = len(lower) - self.limit
        if excess <= 0:
            return
        # Oldest telemetry first, then oldest state; alarms are never dropped.
        lower.sort(key=lambda r: (-int(r.lane), r.seq))
        for row in lower[:excess]:
            del self.rows[row.seq]
            self.dropped += 1
