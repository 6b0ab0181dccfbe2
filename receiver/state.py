"""What the receiving console knows: the alarm board, de-duplication, seq gaps, silent gateways
and the gateways in test mode.

Pure and synchronous: it takes payloads that were already verified (`receiver.console` does the
signature check and the MQTT I/O) and the time as `now_ms`, and answers with `Notice` records
(plain dicts with a `"console"` key) for the caller to print, show or act on. It does not sign
or send commands (it only says which replay to ask for), render anything (`receiver.view`) or
read a clock.

Contract references are to docs/contract.md: an event's `id` de-duplicates it; a heartbeat's
`routed` counts the events in `(from_seq, last_seq]`, so seeing fewer distinct `seq` in that
range means a gap; `alarm.acknowledged` / `alarm.escalated` / `alarm.reset` carry `alarm_id`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, NamedTuple

from gateway.core.events import Lane, lane_of

Notice = dict[str, Any]
"""A console notice: `{"console": <kind>, ...fields}`; events never carry a "console" key."""

MAX_REPLAY_SPAN: Final = 10_000
"""The contract's limit on `to_seq - from_seq` of one replay command."""
_ALARM_RAISING: Final = frozenset({"alarm.escalated"})
"""Types that raise (or re-raise) an alarm besides the alarm lane (`events.lane_of`)."""


class GatewayRef(NamedTuple):
    school: str
    gateway: str

    def __str__(self) -> str:
        return f"{self.school}/{self.gateway}"


def parse_time_ms(text: object) -> int | None:
    """An ISO 8601 time with offset as epoch ms; None when absent or not that."""
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        return None
    return round(when.timestamp() * 1000)


# --- de-duplication ---------------------------------------------------------------------------


class Deduper:
    """Event ids already seen, the oldest forgotten past `capacity` (a repeat comes soon after
    the first delivery, or as a replay the console itself asked for)."""

    def __init__(self, capacity: int = 200_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def first_time(self, event_id: str) -> bool:
        if event_id in self._ids:
            self.duplicates += 1
            return False
        self._ids[event_id] = None
        if len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True


# --- the alarm board --------------------------------------------------------------------------


@dataclass(slots=True)
class Alarm:
    ref: GatewayRef
    alarm_id: str
    device_id: str = ""
    location: str = ""
    type: str = ""
    raised: bool = False
    """An alarm-raising event has been seen (an acknowledgement may arrive before its alarm)."""
    raised_at_ms: int = 0
    drill: bool = False
    test: bool = False
    """Raised while its gateway was in test mode (commissioning, a guard's test press): the
    police record it and do not dispatch, as for a drill."""
    historical: bool = False
    presses: int | None = None
    acknowledged_by: str | None = None
    escalated: bool = False
    reset_by: str | None = None
    last_seq: int = 0

    @property
    def closed(self) -> bool:
        return self.reset_by is not None

    @property
    def acknowledged(self) -> bool:
        return self.acknowledged_by is not None

    def sort_key(self) -> tuple[bool, bool, int, str]:
        """Open before closed, unacknowledged before acknowledged, newest first."""
        return (self.closed, self.acknowledged, -self.raised_at_ms, self.alarm_id)


class AlarmBoard:
    """Alarms by (gateway, alarm_id); closed ones are kept up to `keep_closed`, then forgotten;
    acknowledged but not reset ones up to `keep_acknowledged_per_gateway` per gateway (the
    oldest go first), so a city's board is bounded. Open unacknowledged alarms are never
    forgotten."""

    def __init__(self, keep_closed: int = 50, keep_acknowledged_per_gateway: int = 50) -> None:
        self._alarms: dict[tuple[GatewayRef, str], Alarm] = {}
        self._keep_closed = keep_closed
        self._keep_acknowledged = keep_acknowledged_per_gateway
        self._acknowledged: dict[GatewayRef, OrderedDict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._alarms)

    def ordered(self) -> list[Alarm]:
        return sorted((a for a in self._alarms.values() if a.raised), key=Alarm.sort_key)

    def get(self, ref: GatewayRef, alarm_id: str) -> Alarm | None:
        return self._alarms.get((ref, alarm_id))

    def top_unacknowledged(self) -> Alarm | None:
        return next((a for a in self.ordered() if not a.acknowledged and not a.closed), None)

    def apply(self, ref: GatewayRef, event: dict[str, Any], now_ms: int) -> Alarm | None:
        """Update the board with a verified, first-seen event; the alarm it touched, if any."""
        event_type = str(event["type"])
        raising = lane_of(event_type) is Lane.ALARM or event_type in _ALARM_RAISING
        alarm_id = event.get("alarm_id")
        if not isinstance(alarm_id, str) or not alarm_id:
            if not raising:
                return None
            alarm_id = str(event["id"])  # an alarm-lane event without a latch (a forced door)
        if not raising and event_type not in ("alarm.acknowledged", "alarm.reset"):
            return None
        alarm = self._alarms.setdefault((ref, alarm_id), Alarm(ref, alarm_id))
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        assert isinstance(data, dict)
        if raising:
            self._raise(alarm, event, data, now_ms)
        elif event_type == "alarm.acknowledged":
            alarm.acknowledged_by = str(data.get("by") or data.get("issuer") or "?")
            self._forget_old_acknowledged(ref, alarm_id)
        else:
            alarm.reset_by = str(data.get("reset_by") or "?")
            self._acknowledged.get(ref, OrderedDict()).pop(alarm_id, None)
            self._forget_old_closed()
        return alarm

    def _forget_old_acknowledged(self, ref: GatewayRef, alarm_id: str) -> None:
        acknowledged = self._acknowledged.setdefault(ref, OrderedDict())
        acknowledged[alarm_id] = None
        while len(acknowledged) > self._keep_acknowledged:
            oldest, _ = acknowledged.popitem(last=False)
            alarm = self._alarms.get((ref, oldest))
            if alarm is not None and not alarm.closed:
                del self._alarms[(ref, oldest)]

    def _raise(self, alarm: Alarm, event: dict[str, Any], data: dict[str, Any], now: int) -> None:
        occurred = parse_time_ms(event.get("occurred_at"))
        device = event.get("device") if isinstance(event.get("device"), dict) else {}
        assert isinstance(device, dict)
        if not alarm.raised or event["type"] == "alarm.panic":
            alarm.raised_at_ms = occurred if occurred is not None else now
            alarm.device_id = str(device.get("id", ""))
            alarm.location = str(device.get("location", ""))
            alarm.type = str(event["type"])
            alarm.historical = event.get("historical") is True
        alarm.raised = True
        alarm.drill = alarm.drill or event.get("drill") is True
        alarm.test = alarm.test or event.get("test") is True
        if event["type"] == "alarm.escalated":
            alarm.escalated = True
        presses = data.get("presses")
        if isinstance(presses, int) and not isinstance(presses, bool):
            alarm.presses = max(presses, alarm.presses or 0)

    def _forget_old_closed(self) -> None:
        closed = [a for a in self._alarms.values() if a.closed]
        if len(closed) <= self._keep_closed:
            return
        closed.sort(key=lambda a: a.raised_at_ms)
        for alarm in closed[: len(closed) - self._keep_closed]:
            del self._alarms[(alarm.ref, alarm.alarm_id)]


# --- test mode ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TestModeOn:
    __test__ = False  # not a pytest class, whatever its name

    until: str
    """As the gateway announced it (its site time, ISO 8601)."""
    until_ms: int
    by: str


class TestModes:
    """Gateways in test mode: from their `gateway.test_started` (who, until when) to their
    `gateway.test_stopped`, or to the end they announced (a stop this console missed)."""

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self) -> None:
        self._on: dict[GatewayRef, TestModeOn] = {}

    def apply(self, ref: GatewayRef, event: dict[str, Any]) -> Notice | None:
        """A notice when the event starts or ends test mode at `ref`; None for any other."""
        event_type = event["type"]
        if event_type not in ("gateway.test_started", "gateway.test_stopped"):
            return None
        data = event.get("data") if isinstance(event.get("data"), dict) else {}
        assert isinstance(data, dict)
        by = str(data.get("by") or "?")
        notice: Notice = {"console": event_type.removeprefix("gateway."), "school": ref.school,
                          "gateway": ref.gateway, "by": by}  # fmt: skip
        if event_type == "gateway.test_stopped":
            self._on.pop(ref, None)
            return notice
        until = data.get("until")
        until_ms = parse_time_ms(until)
        if until_ms is None:
            return notice | {"until": "?"}  # a start without a readable end is not kept on
        self._on[ref] = TestModeOn(str(until), until_ms, by)
        return notice | {"until": until}

    def on(self, now_ms: int) -> list[tuple[GatewayRef, TestModeOn]]:
        """The gateways in test mode at `now_ms`, by gateway."""
        return sorted(
            ((ref, on) for ref, on in self._on.items() if on.until_ms > now_ms),
            key=lambda item: item[0],
        )


# --- seq gaps ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Gap:
    ref: GatewayRef
    from_seq: int
    """Exclusive, as in the heartbeat: the gap is in `(from_seq, last_seq]`."""
    last_seq: int
    routed: int | None
    """None: the heartbeats that covered the range were missed, so how many events were routed
    there is not known until the replay's result lists them (`GapTracker.replied`)."""
    seen: int
    replay_ids: list[str] = field(default_factory=list)
    replied_seqs: dict[str, list[int]] = field(default_factory=dict)
    """The `seqs` of each answered replay command of this gap, by command id."""

    def replay_ranges(self) -> list[tuple[int, int]]:
        """Inclusive `(from_seq, to_seq)` ranges for replay commands, each within the limit."""
        ranges = []
        start = self.from_seq + 1
        while start <= self.last_seq:
            end = min(self.last_seq, start + MAX_REPLAY_SPAN)
            ranges.append((start, end))
            start = end + 1
        return ranges

    def notice(self, kind: str) -> Notice:
        return {
            "console": kind,
            "school": self.ref.school,
            "gateway": self.ref.gateway,
            "from_seq": self.from_seq,
            "last_seq": self.last_seq,
            "routed": self.routed,
            "seen": self.seen,
        }


class GapTracker:
    """Distinct `seq` seen per gateway, checked against each heartbeat's `routed`.

    A heartbeat with `from_seq == 0` is the first of a gateway's connection and covers all its
    history, which a console started later never saw: it is not checked (docs/console.md).
    A range between two heartbeats heard (`missed`: the console was away while the heartbeats
    covering it went out, or the gateway reconnected) has no `routed`: it is a gap of unknown
    size, asked for in full and settled by the replay's answer (`replied`)."""

    def __init__(
        self, prune_above: int = 1_000, max_seqs: int = 20_000, max_open_gaps: int = 16
    ) -> None:
        self._seen: dict[GatewayRef, set[int]] = {}
        self._open: dict[GatewayRef, list[Gap]] = {}
        self._floor: dict[GatewayRef, int] = {}
        self._heard_upto: dict[GatewayRef, int] = {}
        self._prune_above = prune_above
        self._max_seqs = max_seqs
        """Per gateway: the seqs remembered above the last heartbeat's floor; the lowest go."""
        self._max_open_gaps = max_open_gaps
        """Per gateway: open gaps kept; the oldest is given up (`abandoned`) past this."""
        self.found = 0
        self.filled = 0
        self.abandoned = 0

    def seqs_held(self, ref: GatewayRef) -> int:
        return len(self._seen.get(ref, ()))

    def _open_gap(self, ref: GatewayRef, gap: Gap) -> None:
        gaps = self._open.setdefault(ref, [])
        gaps.append(gap)
        self.found += 1
        while len(gaps) > self._max_open_gaps:
            gaps.pop(0)
            self.abandoned += 1

    def open_gaps(self) -> list[Gap]:
        return [gap for gaps in self._open.values() for gap in gaps]

    def _count(self, ref: GatewayRef, low: int, high: int) -> int:
        seen = self._seen.get(ref, set())
        if high - low < len(seen):
            return sum(1 for seq in range(low + 1, high + 1) if seq in seen)
        return sum(1 for seq in seen if low < seq <= high)

    def saw(self, ref: GatewayRef, seq: int) -> list[Gap]:
        """Record an event's seq; the gaps it closes."""
        seen = self._seen.setdefault(ref, set())
        seen.add(seq)
        if len(seen) > self._max_seqs:  # no heartbeat came to prune it: keep the newest
            self._seen[ref] = set(sorted(seen)[-(self._max_seqs // 2) :])
        closed: list[Gap] = []
        for gap in self._open.get(ref, []):
            if gap.from_seq < seq <= gap.last_seq:
                gap.seen = self._count(ref, gap.from_seq, gap.last_seq)
                if gap.routed is not None and gap.seen >= gap.routed:
                    closed.append(gap)
        if closed:
            self._open[ref] = [g for g in self._open[ref] if g not in closed]
            self.filled += len(closed)
        return closed

    def heartbeat(self, ref: GatewayRef, from_seq: int, last_seq: int, routed: int) -> Gap | None:
        """A new gap this heartbeat reveals, or None."""
        floor = self._floor.get(ref, 0)
        if from_seq == 0 or routed == 0 or from_seq < floor:
            # A baseline, nothing routed, or an older heartbeat delivered late (its seqs may
            # have been pruned already; the newer one was checked).
            return None
        self._floor[ref] = from_seq
        self._prune(ref)
        seen = self._count(ref, from_seq, last_seq)
        if seen >= routed:
            return None
        if any(g.from_seq == from_seq and g.last_seq == last_seq for g in self._open.get(ref, [])):
            return None  # the same heartbeat again (a repeated delivery)
        gap = Gap(ref, from_seq, last_seq, routed, seen)
        self._open_gap(ref, gap)
        return gap

    def missed(self, ref: GatewayRef, from_seq: int, last_seq: int) -> Gap | None:
        """Call with every heartbeat before `heartbeat`: a range `(last heard last_seq,
        from_seq]` that no heartbeat this console received has covered, or None. Nothing is
        known before the first heartbeat heard from a gateway (a console started later)."""
        upto = self._heard_upto.get(ref)
        self._heard_upto[ref] = max(last_seq, upto or 0)
        if upto is None or from_seq <= upto:
            return None
        gap = Gap(ref, upto, from_seq, None, self._count(ref, upto, from_seq))
        self._open_gap(ref, gap)
        return gap

    def replied(self, command_id: str, seqs: Iterable[int]) -> list[Gap]:
        """A replay command of a gap answered `done` with these `seqs` (the replayed events,
        published before the answer); the gaps this fills. A gap of unknown size learns its
        `routed` once every replay command asked for it has been answered."""
        closed: list[Gap] = []
        for ref, gaps in self._open.items():
            for gap in gaps:
                if command_id not in gap.replay_ids:
                    continue
                gap.replied_seqs[command_id] = list(seqs)
                if gap.routed is None and len(gap.replied_seqs) == len(gap.replay_ids):
                    replied = {s for done in gap.replied_seqs.values() for s in done}
                    gap.routed = sum(1 for s in replied if gap.from_seq < s <= gap.last_seq)
                gap.seen = self._count(ref, gap.from_seq, gap.last_seq)
                if gap.routed is not None and gap.seen >= gap.routed:
                    closed.append(gap)
        for gap in closed:
            self._open[gap.ref].remove(gap)
        self.filled += len(closed)
        return closed

    def _prune(self, ref: GatewayRef) -> None:
        seen = self._seen.get(ref)
        if seen is None or len(seen) <= self._prune_above:
            return
        keep_from = min([self._floor[ref], *(g.from_seq for g in self._open.get(ref, []))])
        self._seen[ref] = {seq for seq in seen if seq > keep_from}


# --- silent gateways --------------------------------------------------------------------------


@dataclass(slots=True)
class GatewayHealth:
    last_heard_ms: int
    online: bool | None = None
    silent: str | None = None
    """None, "quiet" (nothing heard for the silence time) or "offline" (status online=false)."""


class SilenceTracker:
    """When each gateway was last heard from; `check` flags the quiet ones. Gateways named on
    the command line are expected from the start; others are known once heard."""

    def __init__(self, silent_after_ms: int, expected: Iterable[GatewayRef], now_ms: int) -> None:
        if silent_after_ms <= 0:
            raise ValueError("silent_after_ms must be positive")
        self._silent_after_ms = silent_after_ms
        self.gateways: dict[GatewayRef, GatewayHealth] = {
            ref: GatewayHealth(now_ms) for ref in expected
        }

    def _health(self, ref: GatewayRef, now_ms: int) -> GatewayHealth:
        return self.gateways.setdefault(ref, GatewayHealth(now_ms))

    def heard(self, ref: GatewayRef, now_ms: int, *, online: bool | None = None) -> list[Notice]:
        """Anything from `ref`; `online` is given for a status or a heartbeat (True)."""
        health = self._health(ref, now_ms)
        health.last_heard_ms = now_ms
        if online is not None:
            health.online = online
        was = health.silent
        if online is False:
            health.silent = "offline"
        elif health.silent == "quiet" or (health.silent == "offline" and online):
            health.silent = None
        if health.silent == was:
            return []
        if health.silent is None:
            return [{"console": "back", "school": ref.school, "gateway": ref.gateway}]
        return [self._silent_notice(ref, health, now_ms)]

    def check(self, now_ms: int) -> list[Notice]:
        notices = []
        for ref, health in self.gateways.items():
            if health.silent is None and now_ms - health.last_heard_ms >= self._silent_after_ms:
                health.silent = "quiet"
                notices.append(self._silent_notice(ref, health, now_ms))
        return notices

    def silent(self) -> list[tuple[GatewayRef, GatewayHealth]]:
        return [(ref, h) for ref, h in sorted(self.gateways.items()) if h.silent is not None]

    @staticmethod
    def _silent_notice(ref: GatewayRef, health: GatewayHealth, now_ms: int) -> Notice:
        return {
            "console": "silent",
            "school": ref.school,
            "gateway": ref.gateway,
            "reason": health.silent,
            "quiet_s": round((now_ms - health.last_heard_ms) / 1000, 1),
        }
