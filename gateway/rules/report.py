"""The daily inspection report (每日巡查): its span and its contents, built from figures handed in.

Owns what the report says and how each figure is worked out: the span (the 24 hours up to the
configured time of the site's day, so every moment is in exactly one report), each device's
online fraction (its `device.offline` / `device.online` events in the span and its health before
it) and current health, faults opened / closed / open (the ledger), device clock offsets and
their corrections (`access.clock_corrected`), the gateway's own clock synchronisation, each broker
path's up fraction (`gateway.path_up` carries how long it was down; a path down now counts until
the end) and last acknowledgements, the outbox backlog, disk use and integrity, alarms with their
acknowledgement times, drills, patrol rounds, rule violations and the ledger summary.

Pure: no I/O, no clock. gateway.rules.daily_report reads the store, the live parts and the
rules' state and calls `build_report`; gateway.rules.report_html renders it. The payload's shape
is `report.daily` in docs/contract.md and docs/schemas/event.schema.json.

Not counted: time the gateway itself was off (a device's online fraction covers only what the
gateway saw), and clock offsets of devices other than access controllers (no other kind has a
clock).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.core.contract import iso_ms
from gateway.rules.ledger import LedgerSummary
from gateway.rules.state import LedgerEntry, ViolationRecord
from gateway.store.report_reads import StoreFigures

HEALTH_TYPES = ("device.offline", "device.online")
REPORT_TYPES = (
    *HEALTH_TYPES,
    "access.clock_corrected",
    "gateway.path_up",
    "alarm.panic",
    "alarm.acknowledged",
    "alarm.escalated",
    "alarm.reset",
    "gateway.drill_started",
    "gateway.drill_stopped",
    "drill.missing",
    "patrol.missed",
    "rule.violation",
    "rule.restored",
)
"""The event types the report reads from the log for its span."""


@dataclass(frozen=True, slots=True)
class DeviceLive:
    kind: str
    location: str
    health: str
    """"online", "offline" or "unknown" (not polled yet)."""
    clock_offset_ms: int | None = None
    """The device's clock minus the gateway's as last measured (access controllers)."""


@dataclass(frozen=True, slots=True)
class PathLive:
    up: bool
    since_ms: int | None
    last_puback_ms: int | None
    last_ack_ms: int | None


@dataclass(frozen=True, slots=True)
class LiveFigures:
    """What the running parts know now (gateway.report_source reads them)."""

    devices: Mapping[str, DeviceLive]
    paths: Mapping[str, PathLive]
    clock_sync: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class RulesFigures:
    ledger: Sequence[LedgerEntry]
    ledger_summary: LedgerSummary
    open_violations: Sequence[ViolationRecord]
    patrols: Sequence[Mapping[str, Any]] = ()
    drills: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Span:
    day: date
    since_ms: int
    until_ms: int


def report_span(day: date, at: time, tz: ZoneInfo) -> Span:
    """From `at` on the day before to `at` on `day`, site time."""
    until = datetime.combine(day, at, tzinfo=tz)
    since = datetime.combine(day - timedelta(days=1), at, tzinfo=tz)
    return Span(day, int(since.timestamp() * 1000), int(until.timestamp() * 1000))


def build_report(
    span: Span,
    tz: ZoneInfo,
    *,
    events: Sequence[Mapping[str, Any]],
    health_before: Mapping[str, str],
    store: StoreFigures | str,
    live: LiveFigures,
    rules: RulesFigures,
) -> dict[str, Any]:
    """The report as a JSON object. `events`: stored bodies of `REPORT_TYPES` in the span, each
    with `occurred_at_ms`; `health_before`: each device's last health type before the span;
    `store`: the store's figures, or why they could not be read."""
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    for event in events:
        by_type.setdefault(str(event["type"]), []).append(event)

    def at(ms: int | None) -> str | None:
        return None if ms is None else iso_ms(ms, tz)

    length_ms = span.until_ms - span.since_ms
    return {
        "date": span.day.isoformat(),
        "from": at(span.since_ms),
        "to": at(span.until_ms),
        "devices": _devices(span, live, health_before, by_type),
        "clocks": _clocks(live, by_type, at),
        "gateway_clock": dict(live.clock_sync),
        "paths": {
            name: {
                "up": path.up,
                "up_fraction": round(1 - _path_down_ms(name, path, span, by_type) / length_ms, 4),
                "last_puback": at(path.last_puback_ms),
                "last_ack": at(path.last_ack_ms),
            }
            for name, path in sorted(live.paths.items())
        },
        "store": _store(store),
        "alarms": _alarms(by_type, at),
        "faults": _faults(span, rules.ledger, at),
        "ledger": {
            "open": rules.ledger_summary.open,
            "overdue": rules.ledger_summary.overdue,
            "closed": rules.ledger_summary.closed,
            "mean_time_to_repair_s": rules.ledger_summary.mean_time_to_repair_s,
        },
        "violations": {
            "opened": [
                {
                    "rule": str(e["data"].get("rule")),
                    "device": str(e["device"]["id"]),
                    "state": str(e["data"].get("state")),
                    "at": at(int(e["occurred_at_ms"])),
                }
                for e in by_type.get("rule.violation", [])
            ],
            "restored": len(by_type.get("rule.restored", [])),
            "open_now": [
                {"rule": v.rule_id, "device": v.device_id, "since": at(v.opened_ms)}
                for v in rules.open_violations
            ],
        },
        "patrols": [
            dict(p)
            | {
                "missed": any(
                    e["data"].get("plan") == p.get("plan") for e in by_type.get("patrol.missed", [])
                )
            }
            for p in rules.patrols
        ],
        "drills": _drills(by_type, rules.drills, at),
    }


def _devices(
    span: Span,
    live: LiveFigures,
    health_before: Mapping[str, str],
    by_type: Mapping[str, list[Mapping[str, Any]]],
) -> list[dict[str, Any]]:
    changes = sorted(
        (int(e["occurred_at_ms"]), str(e["device"]["id"]), e["type"] == "device.offline")
        for kind in HEALTH_TYPES
        for e in by_type.get(kind, [])
    )
    rows = []
    for device_id, device in sorted(live.devices.items()):
        offline_since = span.since_ms if health_before.get(device_id) == "device.offline" else None
        offline_ms = 0
        for at_ms, who, offline in changes:
            if who != device_id:
                continue
            if offline and offline_since is None:
                offline_since = at_ms
            elif not offline and offline_since is not None:
                offline_ms += at_ms - offline_since
                offline_since = None
        if offline_since is not None:
            offline_ms += span.until_ms - offline_since
        rows.append(
            {
                "id": device_id,
                "kind": device.kind,
                "location": device.location,
                "health": device.health,
                "online_fraction": round(1 - offline_ms / (span.until_ms - span.since_ms), 4),
                "offline_s": offline_ms / 1000,
            }
        )
    return rows


def _clocks(
    live: LiveFigures, by_type: Mapping[str, list[Mapping[str, Any]]], at: Any
) -> list[dict[str, Any]]:
    corrections: dict[str, list[dict[str, Any]]] = {}
    for e in by_type.get("access.clock_corrected", []):
        corrections.setdefault(str(e["device"]["id"]), []).append(
            {"at": at(int(e["occurred_at_ms"])), "skew_ms": int(e["data"]["skew_ms"])}
        )
    return [
        {
            "device": device_id,
            "offset_ms": device.clock_offset_ms,
            "corrected": bool(corrections.get(device_id)),
            "corrections": corrections.get(device_id, []),
        }
        for device_id, device in sorted(live.devices.items())
        if device.kind == "access_controller"
    ]


def _path_down_ms(
    name: str, path: PathLive, span: Span, by_type: Mapping[str, list[Mapping[str, Any]]]
) -> int:
    intervals = [
        (
            int(e["occurred_at_ms"]) - round(float(e["data"]["down_s"]) * 1000),
            int(e["occurred_at_ms"]),
        )
        for e in by_type.get("gateway.path_up", [])
        if e["data"].get("destination") == name
    ]
    if not path.up and path.since_ms is not None:
        intervals.append((path.since_ms, span.until_ms))
    return sum(
        max(0, min(end, span.until_ms) - max(start, span.since_ms)) for start, end in intervals
    )


def _store(store: StoreFigures | str) -> dict[str, Any]:
    if isinstance(store, str):
        return {"readable": False, "error": store}
    return {
        "readable": True,
        "integrity": store.integrity,
        "integrity_ok": store.integrity == ["ok"],
        "file_bytes": store.file_bytes,
        "disk_free_bytes": store.disk_free_bytes,
        "disk_total_bytes": store.disk_total_bytes,
        "backlog": [
            {
                "destination": b.destination,
                "lane": b.lane,
                "pending": b.pending,
                "oldest_pending_ms": b.oldest_pending_ms,
            }
            for b in store.backlog
            if b.pending
        ],
    }


def _alarms(by_type: Mapping[str, list[Mapping[str, Any]]], at: Any) -> list[dict[str, Any]]:
    def of(kind: str) -> dict[str, Mapping[str, Any]]:
        return {str(e.get("alarm_id")): e for e in by_type.get(kind, [])}

    acks, resets, escalated = of("alarm.acknowledged"), of("alarm.reset"), of("alarm.escalated")
    rows = []
    for e in by_type.get("alarm.panic", []):
        alarm_id = str(e.get("alarm_id"))
        ack = acks.get(alarm_id)
        reset = resets.get(alarm_id)
        rows.append(
            {
                "alarm_id": alarm_id,
                "device": str(e["device"]["id"]),
                "button": e["data"].get("button_name") or str(e["data"].get("button")),
                "at": at(int(e["occurred_at_ms"])),
                "drill": bool(e.get("drill")),
                "acknowledged_by": None if ack is None else ack["data"].get("by"),
                "acknowledged_after_s": None if ack is None else ack["data"]["after_ms"] / 1000,
                "escalated": alarm_id in escalated,
                "reset_at": None if reset is None else at(int(reset["occurred_at_ms"])),
            }
        )
    return rows


def _faults(span: Span, ledger: Sequence[LedgerEntry], at: Any) -> dict[str, Any]:
    def row(e: LedgerEntry) -> dict[str, Any]:
        return {
            "entry": e.id,
            "kind": e.kind,
            "what": e.what,
            "where": e.where,
            "opened": at(e.opened_ms),
            "deadline": at(e.deadline_ms),
            "closed": at(e.closed_ms),
            "closed_by": e.closed_by,
            "overdue": (e.closed_ms or span.until_ms) > e.deadline_ms,
        }

    def within(ms: int | None) -> bool:
        return ms is not None and span.since_ms <= ms < span.until_ms

    return {
        "opened": [row(e) for e in ledger if within(e.opened_ms)],
        "closed": [row(e) for e in ledger if within(e.closed_ms)],
        "open": [row(e) for e in ledger if e.is_open],
    }


def _drills(
    by_type: Mapping[str, list[Mapping[str, Any]]], quarter: Mapping[str, Any], at: Any
) -> dict[str, Any]:
    return dict(quarter) | {
        "started": [
            {
                "at": at(int(e["occurred_at_ms"])),
                "by": e["data"].get("by"),
                "minutes": e["data"].get("minutes"),
            }
            for e in by_type.get("gateway.drill_started", [])
        ],
        "stopped": len(by_type.get("gateway.drill_stopped", [])),
        "missing_reported": bool(by_type.get("drill.missing")),
    }
