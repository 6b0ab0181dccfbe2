"""The console's terminal view: one screenful of text from the console's state. Pure: it reads
the state and returns a string; `console_cli` writes it (after an ANSI clear) on every tick.

It does not read keys or decide anything; the numbers it shows are the ones `Console.press`
acknowledges, because both come from `AlarmBoard.ordered()`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from gateway.console_state import Alarm

if TYPE_CHECKING:
    from gateway.console import Console

CLEAR: Final = "\x1b[H\x1b[2J"
_BOLD: Final = "\x1b[1m"
_RED: Final = "\x1b[31m"
_DIM: Final = "\x1b[2m"
_RESET: Final = "\x1b[0m"
_MAX_ALARMS: Final = 15
_SELECTABLE: Final = 9


def age_text(age_ms: int) -> str:
    """`42s`, `3m05s`, `2h10m`, `3d04h`; a time in the future (a gateway clock ahead) is 0s."""
    seconds = max(0, age_ms) // 1000
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def alarm_line(number: int, alarm: Alarm, now_ms: int, *, color: bool = True) -> str:
    marks = []
    if alarm.drill:
        marks.append("DRILL")
    if alarm.escalated:
        marks.append("ESCALATED")
    if alarm.historical:
        marks.append("replayed")
    if alarm.closed:
        marks.append(f"reset by {alarm.reset_by}")
    elif alarm.acknowledged:
        marks.append(f"ack by {alarm.acknowledged_by}")
    else:
        marks.append("UNACKNOWLEDGED")
    label = f"[{number}]" if number <= _SELECTABLE and not alarm.closed else "   "
    where = f" ({alarm.location})" if alarm.location else ""
    presses = f" x{alarm.presses}" if alarm.presses and alarm.presses > 1 else ""
    text = (
        f"{label} {age_text(now_ms - alarm.raised_at_ms):>6}  {alarm.ref}  "
        f"{alarm.device_id}{where}  {alarm.type}{presses}  {' '.join(marks)}"
    )
    if not color:
        return text
    if alarm.closed:
        return f"{_DIM}{text}{_RESET}"
    if not alarm.acknowledged and not alarm.drill:
        return f"{_BOLD}{_RED}{text}{_RESET}"
    return text


def _or_unknown(count: int | None) -> str:
    return "?" if count is None else str(count)


def notice_line(notice: dict[str, Any]) -> str:
    kind = notice.get("console")
    fields = " ".join(f"{k}={v}" for k, v in notice.items() if k != "console" and v not in ("",))
    return f"{kind}: {fields}"


def render(console: Console, now_ms: int, *, color: bool = True) -> str:
    options = console.options
    broker = options.broker
    state = "connected" if console.connected else "DISCONNECTED"
    refused = sum(console.refused.values())
    lines = [
        f"schoolgate console  {broker.host}:{broker.port} {state}  "
        f"events {console.events_seen}  duplicates {console.deduper.duplicates}  "
        f"refused {refused}  gaps found {console.gaps.found} filled {console.gaps.filled}",
        "",
    ]
    alarms = console.board.ordered()
    if not alarms:
        lines.append("no alarms")
    for number, alarm in enumerate(alarms[:_MAX_ALARMS], start=1):
        lines.append(alarm_line(number, alarm, now_ms, color=color))
    if len(alarms) > _MAX_ALARMS:
        lines.append(f"... and {len(alarms) - _MAX_ALARMS} more")
    silent = console.silence.silent()
    if silent:
        lines += ["", "silent gateways:"]
        lines += [
            f"  {ref}  {health.silent}, last heard {age_text(now_ms - health.last_heard_ms)} ago"
            for ref, health in silent
        ]
    open_gaps = console.gaps.open_gaps()
    if open_gaps:
        lines += ["", "open seq gaps:"]
        lines += [
            f"  {gap.ref}  ({gap.from_seq}, {gap.last_seq}]  "
            f"seen {gap.seen} of {_or_unknown(gap.routed)}"
            for gap in open_gaps
        ]
    if console.refused:
        by_reason = ", ".join(f"{r} {n}" for r, n in sorted(console.refused.items()))
        lines += ["", f"refused payloads: {by_reason}"]
    if console.recent:
        lines += ["", "recent:"] + [f"  {notice_line(n)}" for n in console.recent]
    keys = "1-9 acknowledge that alarm, a the top unacknowledged, q quit"
    if options.signer is None:
        keys = "q quit (no --key: cannot acknowledge)"
    lines += ["", f"keys: {keys}"]
    return "\n".join(lines) + "\n"
