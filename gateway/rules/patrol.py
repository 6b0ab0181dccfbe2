"""Patrol plans (GA/T 644 style): an ordered list of checkpoints (card readers), rounds required
per local day (default 5, GB/T 29315), the latest time of day by which they must be done, and
the tolerance between consecutive points.

Owns following the rounds: each guard card at a checkpoint is a `patrol.checkpoint`; a round is
complete when every point was read in order with no gap longer than the tolerance
(`patrol.round_completed`); if at the latest time fewer rounds are done, one `patrol.missed`
names the rounds and points missing. Pure: fed card reads and the wall time, returns events;
complete rounds and "missed already reported" are day counters in `RulesState` (they survive a
restart); a round in progress is kept in memory only (a restart mid-round starts it again:
at worst one round is walked twice, never counted twice).

Rules of a round: the first point starts a round (even in the middle of one: a guard starting
over); the next expected point advances it; a gap over the tolerance ends the round in progress;
any other point is recorded as a checkpoint but does not move the round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from gateway.core.events import DeviceRef, Event, Severity, new_event
from gateway.rules.counters import DayCounters, local_day
from gateway.rules.state import RulesState


@dataclass(frozen=True, slots=True)
class PatrolPlan:
    id: str
    checkpoints: tuple[DeviceRef, ...]
    rounds_required: int = 5
    latest: time = time(23, 0)
    tolerance_s: float = 900.0

    def __post_init__(self) -> None:
        ids = [c.id for c in self.checkpoints]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"patrol plan {self.id!r}: checkpoints must be distinct, at least one")
        if self.rounds_required < 1 or self.tolerance_s <= 0:
            raise ValueError(f"patrol plan {self.id!r}: rounds and tolerance must be positive")


@dataclass(slots=True)
class _Progress:
    next_index: int
    last_ms: int


class PatrolTracker:
    def __init__(self, plan: PatrolPlan, state: RulesState, tz: ZoneInfo) -> None:
        self.plan = plan
        self._counters = DayCounters(state, tz)
        self._tz = tz
        self._progress: _Progress | None = None
        self._index = {c.id: n for n, c in enumerate(plan.checkpoints)}
        self._device = DeviceRef(plan.id, "patrol_plan")

    @property
    def _rounds_name(self) -> str:
        return f"patrol:{self.plan.id}:rounds"

    def rounds_done(self, now_ms: int) -> int:
        return self._counters.today(self._rounds_name, now_ms)

    def on_card(self, reader_id: str, card: str, at_ms: int) -> list[Event]:
        """A card was read at `reader_id`; readers not in the plan are ignored."""
        index = self._index.get(reader_id)
        if index is None:
            return []
        progress = self._progress
        if progress is not None and (
            at_ms - progress.last_ms > self.plan.tolerance_s * 1000
            or local_day(at_ms, self._tz) != local_day(progress.last_ms, self._tz)
        ):
            progress = None  # too late for the round in progress (or a new day)
        in_round = True
        if index == 0:
            progress = _Progress(1, at_ms)
        elif progress is not None and index == progress.next_index:
            progress = _Progress(index + 1, at_ms)
        else:
            in_round = False
        events = [
            self._event(
                "patrol.checkpoint",
                self.plan.checkpoints[index],
                at_ms,
                {"plan": self.plan.id, "card": card, "point": index + 1, "in_round": in_round},
            )
        ]
        if progress is not None and progress.next_index == len(self.plan.checkpoints):
            done = self._counters.add(self._rounds_name, at_ms)
            events.append(
                self._event(
                    "patrol.round_completed",
                    self._device,
                    at_ms,
                    {
                        "plan": self.plan.id,
                        "card": card,
                        "round": done,
                        "required": self.plan.rounds_required,
                    },
                )
            )
            progress = None
        self._progress = progress
        return events

    def next_check_ms(self, now_ms: int) -> int:
        """The wall time of today's deadline (or tomorrow's, once today's has passed)."""
        day = local_day(now_ms, self._tz)
        deadline = datetime.combine(day, self.plan.latest, tzinfo=self._tz)
        deadline_ms = int(deadline.timestamp() * 1000)
        if deadline_ms > now_ms:
            return deadline_ms
        tomorrow = day + timedelta(days=1)
        return int(datetime.combine(tomorrow, self.plan.latest, tzinfo=self._tz).timestamp() * 1000)

    def check(self, now_ms: int) -> list[Event]:
        """At or past today's latest time: one `patrol.missed` if rounds are missing."""
        local = datetime.fromtimestamp(now_ms / 1000, self._tz)
        if local.time() < self.plan.latest:
            return []
        done = self.rounds_done(now_ms)
        reported = f"patrol:{self.plan.id}:missed_reported"
        if done >= self.plan.rounds_required or self._counters.today(reported, now_ms):
            return []
        self._counters.add(reported, now_ms)
        visited = self._progress.next_index if self._progress is not None else 0
        if (
            self._progress is not None
            and local_day(self._progress.last_ms, self._tz) != local.date()
        ):
            visited = 0
        data = {
            "plan": self.plan.id,
            "date": local.date().isoformat(),
            "rounds_done": done,
            "rounds_required": self.plan.rounds_required,
            "rounds_missing": self.plan.rounds_required - done,
            "missing_points": [c.id for c in self.plan.checkpoints[visited:]],
        }
        return [self._event("patrol.missed", self._device, now_ms, data, Severity.MAJOR)]

    def _event(
        self,
        type: str,
        device: DeviceRef,
        at_ms: int,
        data: dict[str, object],
        severity: Severity = Severity.INFO,
    ) -> Event:
        return new_event(type, device, severity=severity, occurred_at_ms=at_ms, data=data)
