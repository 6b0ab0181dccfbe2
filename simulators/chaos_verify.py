"""The chaos soak's verifier and report: what the harness caused (`Ledger`), what the gateway
stored (its outbox, read-only after the run) and what each broker delivered (the listeners, on
persistent QoS 1 sessions) are set side by side.

Owns the checks and the figures. Hard checks (`ChaosReport.failures`): every stored event routed
to a destination arrived at that broker (0 lost, nothing left pending), a repeated delivery is
always the same event (same `id`, same `seq` and content) and no two ids share a `seq`, every
panic press the box counted is in the stored alarms, alarms latch (no second `alarm.panic` for a
button while one is open; a reset only when the soak's guard asked for that alarm or pressed the
reset key; the latches open at the end are the gateway's and the lamp shows them), and per lane the
first deliveries at each broker come in `seq` order. Reported, not asserted: duplicates, card
swipes the controller sent but the store lacks, press-to-police latency (worst, p50, p99, and the
worst with no fault in the way).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter, defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from simulators.gate import BrokerName
from simulators.listener import Listener
from simulators.measure import percentile

LANE_NAMES = {0: "alarm", 1: "state", 2: "telemetry"}
ALARM_TYPES = ("alarm.panic", "alarm.panic_repeated", "alarm.reset")
RESET_KEY = "reset input"


@dataclass
class Ledger:
    """Everything the harness did to the gate, with wall-clock times (`time.time_ns()`)."""

    seed: int
    presses: list[tuple[int, int]] = field(default_factory=list)
    """(time, button) of each panic press."""
    reset_key_pulses: list[int] = field(default_factory=list)
    resets_asked: set[str] = field(default_factory=set)
    """Alarm ids the guard asked the gateway to reset."""
    bollard_moves: int = 0
    socket_changes: int = 0
    cards: list[int] = field(default_factory=list)
    door_events: int = 0
    forced_doors: int = 0
    faults: list[tuple[str, int, int, str]] = field(default_factory=list)
    """(kind, start, end, detail)."""

    @property
    def caused(self) -> int:
        return (
            len(self.presses)
            + len(self.reset_key_pulses)
            + len(self.resets_asked)
            + self.bollard_moves
            + self.socket_changes
            + len(self.cards)
            + self.door_events
        )


@dataclass
class ChaosReport:
    seed: int
    caused: dict[str, int]
    faults: dict[str, int]
    stored: int
    stored_by_lane: dict[str, int]
    routed: dict[str, int]
    delivered: dict[str, int]
    lost: dict[str, list[int]]
    pending_at_end: dict[str, int]
    duplicates: dict[str, int]
    duplicate_mismatches: list[str]
    unknown_at_broker: dict[str, int]
    order_violations: list[str]
    latch_violations: list[str]
    presses_made: list[int]
    presses_stored: list[int]
    alarms_raised: int
    alarms_reset: int
    cards_missing: list[int]
    evicted_undelivered: int
    latencies_ms: list[float]
    quiet_latencies_ms: list[float]
    seconds: float = 0.0
    wall_s: float = 0.0
    drain_s: float = 0.0
    gateway_starts: int = 0

    @property
    def lost_total(self) -> int:
        return sum(len(v) for v in self.lost.values())

    @property
    def presses_missing(self) -> int:
        return sum(
            max(0, m - s) for m, s in zip(self.presses_made, self.presses_stored, strict=True)
        )

    @property
    def presses_overcounted(self) -> int:
        return sum(
            max(0, s - m) for m, s in zip(self.presses_made, self.presses_stored, strict=True)
        )

    def failures(self) -> list[str]:
        """The hard checks that failed (empty: the soak passed)."""
        found = []
        for dest, seqs in self.lost.items():
            if seqs:
                found.append(f"{len(seqs)} events routed to {dest} never arrived: seq {seqs[:20]}")
        for dest, pending in self.pending_at_end.items():
            if pending:
                found.append(f"{pending} events still pending for {dest} at the end")
        found += [f"duplicate mismatch: {m}" for m in self.duplicate_mismatches]
        for dest, unknown in self.unknown_at_broker.items():
            if unknown:
                found.append(f"{unknown} events at {dest} that the store does not hold")
        found += [f"order: {v}" for v in self.order_violations]
        found += [f"latch: {v}" for v in self.latch_violations]
        if self.presses_missing:
            found.append(
                f"panic presses missing from the store: made {self.presses_made}, "
                f"stored {self.presses_stored}"
            )
        return found

    def latency_line(self) -> str:
        if not self.latencies_ms:
            return "no alarm latencies"
        worst_quiet = max(self.quiet_latencies_ms) if self.quiet_latencies_ms else float("nan")
        return (
            f"worst {max(self.latencies_ms):.0f} ms, p50 {percentile(self.latencies_ms, 0.5):.0f}"
            f" ms, p99 {percentile(self.latencies_ms, 0.99):.0f} ms; worst with no fault on the"
            f" alarm path {worst_quiet:.0f} ms ({len(self.quiet_latencies_ms)} of"
            f" {len(self.latencies_ms)} presses)"
        )

    def rows(self) -> list[tuple[str, str]]:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items()))
        caused = ", ".join(f"{k} {v}" for k, v in self.caused.items())
        lanes = ", ".join(f"{k} {v}" for k, v in self.stored_by_lane.items())
        return [
            ("seed", str(self.seed)),
            ("chaos time / wall time", f"{self.seconds:.0f} s / {self.wall_s:.0f} s"),
            ("events caused", f"{sum(self.caused.values())} ({caused})"),
            ("events stored", f"{self.stored} ({lanes})"),
            ("alarms raised / reset", f"{self.alarms_raised} / {self.alarms_reset}"),
            (
                "panic presses made / stored",
                f"{sum(self.presses_made)} / {sum(self.presses_stored)}"
                + (
                    f" ({self.presses_overcounted} counted twice)"
                    if self.presses_overcounted
                    else ""
                ),
            ),
            (
                "routed / delivered, police",
                f"{self.routed['police']} / {self.delivered['police']}",
            ),
            (
                "routed / delivered, bureau",
                f"{self.routed['bureau']} / {self.delivered['bureau']}",
            ),
            ("faults injected", f"{sum(self.faults.values())} ({faults})"),
            ("gateway starts", str(self.gateway_starts)),
            ("lost", str(self.lost_total)),
            ("pending at the end", str(sum(self.pending_at_end.values()))),
            (
                "duplicates (all same id, same content)",
                ", ".join(f"{k} {v}" for k, v in self.duplicates.items())
                + (" - MISMATCHES" if self.duplicate_mismatches else ""),
            ),
            ("per-lane seq order violations", str(len(self.order_violations))),
            ("latch violations", str(len(self.latch_violations))),
            ("card swipes sent by the controller, not stored", str(len(self.cards_missing))),
            ("undelivered events evicted", str(self.evicted_undelivered)),
            ("press -> police latency", self.latency_line()),
            ("drain after the chaos", f"{self.drain_s:.1f} s"),
        ]

    def text(self) -> str:
        width = max(len(k) for k, _ in self.rows())
        lines = [f"  {k:<{width}}  {v}" for k, v in self.rows()]
        failures = self.failures()
        lines.append("  PASSED" if not failures else "  FAILED:")
        lines += [f"    {f}" for f in failures]
        return "\n".join(lines)

    def markdown(self) -> str:
        lines = ["| figure | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in self.rows()]
        failures = self.failures()
        lines.append(f"| verdict | {'passed' if not failures else 'FAILED'} |")
        lines += [f"| failure | {f} |" for f in failures]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class _Stored:
    seq: int
    id: str
    type: str
    lane: int
    alarm_id: str | None
    occurred_at_ms: int
    data: dict[str, Any]


def _load_store(
    db: sqlite3.Connection,
) -> tuple[list[_Stored], dict[str, dict[int, int | None]], int]:
    events = [
        _Stored(seq, id_, type_, lane, alarm_id, occurred, json.loads(body).get("data", {}))
        for seq, id_, type_, lane, alarm_id, occurred, body in db.execute(
            "SELECT seq, id, type, lane, alarm_id, occurred_at_ms, body FROM events ORDER BY seq"
        )
    ]
    deliveries: dict[str, dict[int, int | None]] = defaultdict(dict)
    for dest, seq, sent in db.execute("SELECT destination, seq, sent_at_ms FROM deliveries"):
        deliveries[dest][seq] = sent
    row = db.execute("SELECT value FROM meta WHERE key = 'evicted_undelivered'").fetchone()
    return events, deliveries, int(row[0]) if row else 0


def verify(
    ledger: Ledger,
    db: sqlite3.Connection,
    listeners: Mapping[BrokerName, Listener],
    *,
    final_counters: list[int],
    lamp_on: bool,
    open_alarm_ids: set[str],
    guard: str,
) -> ChaosReport:
    events, deliveries, evicted = _load_store(db)
    by_id = {e.id: e for e in events}
    by_seq = {e.seq: e for e in events}
    received: dict[str, list[tuple[int, dict[str, Any]]]] = {
        name: [(m.arrived_ns, m.json) for m in listener.messages if "/events/" in m.topic]
        for name, listener in listeners.items()
    }
    report = ChaosReport(
        seed=ledger.seed,
        caused={
            "panic presses": len(ledger.presses),
            "resets asked": len(ledger.resets_asked),
            "reset key presses": len(ledger.reset_key_pulses),
            "bollard moves": ledger.bollard_moves,
            "socket changes": ledger.socket_changes,
            "card swipes": len(ledger.cards),
            "door events": ledger.door_events,
        },
        faults=dict(Counter(kind for kind, *_ in ledger.faults)),
        stored=len(events),
        stored_by_lane=dict(Counter(LANE_NAMES.get(e.lane, str(e.lane)) for e in events)),
        routed={d: len(deliveries.get(d, {})) for d in listeners},
        delivered={},
        lost={},
        pending_at_end={},
        duplicates={},
        duplicate_mismatches=[],
        unknown_at_broker={},
        order_violations=[],
        latch_violations=[],
        presses_made=list(final_counters),
        presses_stored=[0] * len(final_counters),
        alarms_raised=sum(e.type == "alarm.panic" for e in events),
        alarms_reset=sum(e.type == "alarm.reset" for e in events),
        cards_missing=[],
        evicted_undelivered=evicted,
        latencies_ms=[],
        quiet_latencies_ms=[],
    )
    first_arrival: dict[str, dict[str, int]] = {}
    for dest, messages in received.items():
        _check_broker(
            report,
            dest=dest,
            messages=messages,
            routed=deliveries.get(dest, {}),
            by_id=by_id,
            by_seq=by_seq,
        )
        first_arrival[dest] = {}
        for arrived, body in messages:
            first_arrival[dest].setdefault(body["id"], arrived)
    _check_latches(
        report,
        events=events,
        ledger=ledger,
        lamp_on=lamp_on,
        open_alarm_ids=open_alarm_ids,
        guard=guard,
    )
    _press_latencies(report, events, ledger, first_arrival.get("police", {}))
    stored_cards = {e.data.get("card") for e in events if e.type == "access.card"}
    report.cards_missing = [c for c in ledger.cards if c not in stored_cards]
    return report


def _check_broker(
    report: ChaosReport,
    *,
    dest: str,
    messages: list[tuple[int, dict[str, Any]]],
    routed: dict[int, int | None],
    by_id: dict[str, _Stored],
    by_seq: dict[int, _Stored],
) -> None:
    seen: dict[str, dict[str, Any]] = {}
    copies: Counter[str] = Counter()
    last_seq_in_lane: dict[int, int] = {}
    for _arrived, body in messages:
        event_id = body["id"]
        copies[event_id] += 1
        if event_id in seen:
            first = seen[event_id]
            same = all(first.get(k) == body.get(k) for k in ("seq", "type", "data", "alarm_id"))
            if not same:
                report.duplicate_mismatches.append(f"{dest}: id {event_id} came back different")
            continue
        seen[event_id] = body
        stored = by_id.get(event_id)
        if stored is None:
            continue  # counted below as unknown
        if by_seq.get(body["seq"]) is not stored:
            report.duplicate_mismatches.append(
                f"{dest}: id {event_id} arrived with seq {body['seq']}, stored as {stored.seq}"
            )
        previous = last_seq_in_lane.get(stored.lane, 0)
        if stored.seq <= previous:
            report.order_violations.append(
                f"{dest}, {LANE_NAMES.get(stored.lane)} lane: seq {stored.seq} first arrived"
                f" after seq {previous}"
            )
        last_seq_in_lane[stored.lane] = max(previous, stored.seq)
    seqs_seen: defaultdict[int, set[str]] = defaultdict(set)
    for body in seen.values():
        seqs_seen[body["seq"]].add(body["id"])
    for seq, ids in seqs_seen.items():
        if len(ids) > 1:
            report.duplicate_mismatches.append(f"{dest}: seq {seq} arrived under ids {sorted(ids)}")
    report.unknown_at_broker[dest] = sum(1 for i in seen if i not in by_id)
    report.duplicates[dest] = sum(n - 1 for n in copies.values())
    report.delivered[dest] = sum(1 for i in seen if i in by_id)
    report.lost[dest] = sorted(
        seq for seq in routed if seq in by_seq and by_seq[seq].id not in seen
    )
    report.pending_at_end[dest] = sum(1 for sent in routed.values() if sent is None)


def _check_latches(
    report: ChaosReport,
    *,
    events: list[_Stored],
    ledger: Ledger,
    lamp_on: bool,
    open_alarm_ids: set[str],
    guard: str,
) -> None:
    open_by_button: dict[int, str] = {}
    button_of: dict[str, int] = {}
    final_presses: dict[str, int] = {}
    key_resets: set[int] = set()
    bad = report.latch_violations
    for e in events:
        if e.type not in ALARM_TYPES or e.alarm_id is None:
            continue
        button = int(e.data.get("button", -1))
        if e.type == "alarm.panic":
            if button in open_by_button:
                bad.append(f"seq {e.seq}: a second alarm.panic on button {button} while latched")
            open_by_button[button] = e.alarm_id
            button_of[e.alarm_id] = button
        elif e.type == "alarm.panic_repeated":
            if open_by_button.get(button) != e.alarm_id:
                bad.append(f"seq {e.seq}: panic_repeated for alarm {e.alarm_id}, not latched")
        else:
            if open_by_button.get(button) != e.alarm_id:
                bad.append(f"seq {e.seq}: reset of alarm {e.alarm_id}, which was not latched")
            bad += _reset_asked_for(e, ledger, guard, key_resets)
            open_by_button.pop(button, None)
        final_presses[e.alarm_id] = max(
            final_presses.get(e.alarm_id, 0), int(e.data.get("presses", 0))
        )
    if len(key_resets) > len(ledger.reset_key_pulses):
        bad.append(f"{len(key_resets)} key resets, {len(ledger.reset_key_pulses)} key presses")
    bad += _check_open_at_end(set(open_by_button.values()), open_alarm_ids, lamp_on)
    for alarm_id, presses in final_presses.items():
        button = button_of.get(alarm_id, -1)
        if 0 <= button < len(report.presses_stored):
            report.presses_stored[button] += presses


def _check_open_at_end(still_open: set[str], open_alarm_ids: set[str], lamp_on: bool) -> list[str]:
    found = []
    if still_open != open_alarm_ids:
        found.append(f"open alarms: store says {still_open}, the gateway says {open_alarm_ids}")
    if lamp_on != bool(still_open):
        found.append(f"the lamp is {'on' if lamp_on else 'off'} with {len(still_open)} open alarms")
    return found


def _reset_asked_for(e: _Stored, ledger: Ledger, guard: str, key_resets: set[int]) -> list[str]:
    """Why this reset was not one the soak made (empty: it was)."""
    by = e.data.get("reset_by")
    if by == guard:
        if e.alarm_id not in ledger.resets_asked:
            return [f"seq {e.seq}: alarm {e.alarm_id} reset though nobody asked"]
        return []
    if by == RESET_KEY:
        key_resets.add(e.occurred_at_ms)
        if not any(t // 1_000_000 <= e.occurred_at_ms + 50 for t in ledger.reset_key_pulses):
            return [f"seq {e.seq}: reset by the key before anyone pressed it"]
        return []
    return [f"seq {e.seq}: alarm {e.alarm_id} reset by {by!r}: an auto-reset"]


def _press_latencies(
    report: ChaosReport, events: list[_Stored], ledger: Ledger, police: dict[str, int]
) -> None:
    """Press k of a button is in the first stored alarm event whose running press total (over
    the button's alarms, in seq order) reaches k; its latency runs to that event's first arrival
    at the police broker."""
    totals: dict[int, list[tuple[int, str]]] = defaultdict(list)
    done_before: dict[int, int] = defaultdict(int)
    last_presses: dict[int, int] = {}
    for e in events:
        if e.type not in ALARM_TYPES[:2]:
            continue
        button = int(e.data.get("button", -1))
        presses = int(e.data.get("presses", 0))
        if e.type == "alarm.panic":
            done_before[button] += last_presses.get(button, 0)
        last_presses[button] = presses
        totals[button].append((done_before[button] + presses, e.id))
    pressed: defaultdict[int, int] = defaultdict(int)
    for t_ns, button in ledger.presses:
        pressed[button] += 1
        event_id = next((i for total, i in totals[button] if total >= pressed[button]), None)
        arrived = police.get(event_id or "")
        if arrived is None:
            continue
        latency = (arrived - t_ns) / 1e6
        report.latencies_ms.append(latency)
        if not any(
            start <= arrived and end >= t_ns - 2e9 and _on_alarm_path(kind, detail)
            for kind, start, end, detail in ledger.faults
        ):
            report.quiet_latencies_ms.append(latency)


def _on_alarm_path(kind: str, detail: str) -> bool:
    """Whether a fault can delay a press on its way to the police broker."""
    if kind == "device_silent":
        return detail.startswith("panic_box")
    return kind in {
        "broker_restart:police",
        "gateway_sigkill",
        "alarm_box_tcp_restart",
        "disk_full",
    }
