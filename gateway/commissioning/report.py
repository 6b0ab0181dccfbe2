"""The result of a doctor run: an ordered list of steps, each ok / warn / FAIL with the reason and
the fix, rendered as text for an installer or as JSON for a script, and the exit code.

Owns the shape of a report and its rendering. It runs no check (`gateway.commissioning.doctor`
and its step modules do).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field


class Status(enum.IntEnum):
    """Ordered by severity, so the worst step decides the exit code."""

    OK = 0
    WARN = 1
    FAIL = 2

    @property
    def label(self) -> str:
        return {Status.OK: "ok", Status.WARN: "warn", Status.FAIL: "FAIL"}[self]


@dataclass(frozen=True, slots=True)
class Step:
    """One check: `section` groups steps (config, files, serial, broker police, ...)."""

    section: str
    name: str
    status: Status
    reason: str = ""
    fix: str = ""


@dataclass(slots=True)
class Report:
    steps: list[Step] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Said once at the top: who the checks ran as, what could not be checked and why."""

    def add(self, section: str, name: str, status: Status, reason: str = "", fix: str = "") -> Step:
        step = Step(section, name, status, reason, fix)
        self.steps.append(step)
        return step

    def ok(self, section: str, name: str, reason: str = "") -> Step:
        return self.add(section, name, Status.OK, reason)

    def warn(self, section: str, name: str, reason: str, fix: str) -> Step:
        return self.add(section, name, Status.WARN, reason, fix)

    def fail(self, section: str, name: str, reason: str, fix: str) -> Step:
        return self.add(section, name, Status.FAIL, reason, fix)

    @property
    def worst(self) -> Status:
        return max((step.status for step in self.steps), default=Status.OK)

    @property
    def exit_code(self) -> int:
        """0: every step ok; 1: a warning at worst; 2: something failed."""
        return int(self.worst)

    def find(self, section: str, name: str | None = None) -> list[Step]:
        return [s for s in self.steps if s.section == section and name in (None, s.name)]

    def render(self) -> str:
        lines = [f"note: {note}" for note in self.notes]
        section = None
        for step in self.steps:
            if step.section != section:
                section = step.section
                lines.append(f"[{section}]")
            text = f"  {step.status.label:<4} {step.name}"
            if step.reason:
                text += f": {step.reason}"
            lines.append(text)
            if step.fix:
                lines.append(f"       fix: {step.fix}")
        counts = {s: sum(1 for step in self.steps if step.status is s) for s in Status}
        lines.append(
            f"{counts[Status.OK]} ok, {counts[Status.WARN]} warn, {counts[Status.FAIL]} FAIL"
        )
        return "\n".join(lines) + "\n"

    def to_json(self) -> str:
        return json.dumps(
            {
                "exit_code": self.exit_code,
                "notes": self.notes,
                "steps": [
                    {
                        "section": s.section,
                        "name": s.name,
                        "status": s.status.label.lower(),
                        "reason": s.reason,
                        "fix": s.fix,
                    }
                    for s in self.steps
                ],
            },
            ensure_ascii=False,
        )
