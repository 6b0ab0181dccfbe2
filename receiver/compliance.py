"""The school rules as a bureau receiver sees them: open rule violations, overdue fault-ledger
entries, missed patrols and quarters without a drill, per gateway, from the events
(docs/contract.md, "School rules events").

Owns this small board: `rule.violation` opens a row and `rule.restored` (its `violation_id`)
closes it; `ledger.overdue` opens one and `ledger.closed` (the same `entry`) closes it;
`patrol.missed` and `drill.missing` stay (they report a day or a quarter that is over). It reads
only payloads already checked by the console, and never raises on a field it does not expect
(a row with "?" rather than a dead console). It does not draw (receiver.view does).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

MAX_ROWS = 50
"""Rows kept per kind: the oldest go first (a console is a view, the log is the record)."""


def _text(value: object) -> str:
    return str(value) if value is not None else "?"


class ComplianceBoard:
    def __init__(self) -> None:
        self.violations: dict[str, str] = {}
        """violation event id -> its line."""
        self.overdue: dict[str, str] = {}
        """gateway/entry -> its line."""
        self.missed: list[str] = []

    def apply(self, who: str, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        data = event.get("data")
        data = data if isinstance(data, Mapping) else {}
        device = event.get("device")
        device_id = _text(device.get("id")) if isinstance(device, Mapping) else "?"
        if kind == "rule.violation":
            self._keep(
                self.violations,
                _text(event.get("id")),
                f"{who} {device_id}: {_text(data.get('state'))}, must be"
                f" {_text(data.get('required_state'))} ({_text(data.get('rule'))})"
                f" since {_text(event.get('occurred_at'))[11:16]}",
            )
        elif kind == "rule.restored":
            self.violations.pop(_text(data.get("violation_id")), None)
        elif kind == "ledger.overdue":
            self._keep(
                self.overdue,
                f"{who}/{_text(data.get('entry'))}",
                f"{who} {_text(data.get('entry'))}: {_text(data.get('what'))}"
                f" ({_text(data.get('where'))})",
            )
        elif kind == "ledger.closed":
            self.overdue.pop(f"{who}/{_text(data.get('entry'))}", None)
        elif kind == "patrol.missed":
            self._add(
                f"{who} patrol {_text(data.get('plan'))} {_text(data.get('date'))}:"
                f" {_text(data.get('rounds_done'))} of {_text(data.get('rounds_required'))} rounds"
            )
        elif kind == "drill.missing":
            self._add(
                f"{who} no drill in {_text(data.get('quarter'))},"
                f" {_text(data.get('days_left'))} days left"
            )

    def lines(self) -> list[tuple[str, list[str]]]:
        """(title, rows) of each kind that has rows, in the order shown."""
        sections = [
            ("rule violations open:", list(self.violations.values())),
            ("ledger entries overdue:", list(self.overdue.values())),
            ("patrols and drills missed:", self.missed),
        ]
        return [(title, rows) for title, rows in sections if rows]

    def _keep(self, rows: dict[str, str], key: str, line: str) -> None:
        rows[key] = line
        while len(rows) > MAX_ROWS:
            del rows[next(iter(rows))]

    def _add(self, line: str) -> None:
        self.missed.append(line)
        del self.missed[:-MAX_ROWS]
