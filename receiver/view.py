"""The console's terminal view, drawn with `rich`: one screen, sized to the terminal.

Owns what the operator sees and in which order when the screen is too small for all of it:
the header (broker, connection, counts) and the key help are always there; then the alarm table
with the open (unacknowledged) alarms first, which are never pushed off by anything else; then
the gateways in test mode, the silent gateways, open seq gaps and refusals; then the acknowledged
and reset alarms as far as they fit; then the recent notices, newest kept, in what height is
left. The size comes from rich (`ConsoleOptions`), never from the view; rich measures wide
(Chinese) characters. Test alarms (`test: true`) are marked TEST and, like drills, not drawn as
alarms to act on.

It does not read keys, write to the terminal or decide anything: `receiver.cli` puts a `Screen`
in a `rich.live.Live` and refreshes it on every tick. The numbers it shows are the ones
`Console.press` acknowledges, because both come from `AlarmBoard.ordered()`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from receiver.state import Alarm

if TYPE_CHECKING:
    from rich.console import Console as Terminal
    from rich.console import ConsoleOptions, RenderableType, RenderResult

    from receiver.console import Console

_SELECTABLE: Final = 9
_OPEN_STYLE: Final = "bold red"
_CLOSED_STYLE: Final = "dim"
_COLUMNS: Final = ("#", "age", "gateway", "where", "what", "state")

Lines = list[list[Segment]]


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


class AlarmRow(NamedTuple):
    """One alarm as the table shows it: the cells in `_COLUMNS` order and the row's style."""

    cells: tuple[str, str, str, str, str, str]
    style: str


def is_open(alarm: Alarm) -> bool:
    """Neither acknowledged nor reset: what the operator must see first."""
    return not alarm.acknowledged and not alarm.closed


def alarm_row(number: int, alarm: Alarm, now_ms: int) -> AlarmRow:
    marks = []
    if alarm.drill:
        marks.append("DRILL")
    if alarm.test:
        marks.append("TEST")
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
    label = f"[{number}]" if number <= _SELECTABLE and not alarm.closed else ""
    where = f"{alarm.device_id} ({alarm.location})" if alarm.location else alarm.device_id
    presses = f" x{alarm.presses}" if alarm.presses and alarm.presses > 1 else ""
    style = ""
    if alarm.closed:
        style = _CLOSED_STYLE
    elif is_open(alarm) and not alarm.drill and not alarm.test:
        style = _OPEN_STYLE
    cells = (
        label,
        age_text(now_ms - alarm.raised_at_ms),
        str(alarm.ref),
        where,
        f"{alarm.type}{presses}",
        " ".join(marks),
    )
    return AlarmRow(cells, style)


def notice_line(notice: dict[str, Any]) -> str:
    kind = notice.get("console")
    fields = " ".join(f"{k}={v}" for k, v in notice.items() if k != "console" and v not in ("",))
    return f"{kind}: {fields}"


def _or_unknown(count: int | None) -> str:
    return "?" if count is None else str(count)


def _alarm_table(alarms: list[Alarm], shown: int, now_ms: int) -> Table:
    """The first `shown` alarms of the board; a caption counts the rest. Open alarms wrap
    (nothing of them is hidden); the others keep to one line each."""
    hidden = len(alarms) - shown
    table = Table(
        *_COLUMNS,
        box=None,
        pad_edge=False,
        header_style="bold",
        caption=f"... and {hidden} more" if hidden else None,
        caption_justify="left",
    )
    table.columns[1].justify = "right"
    for number, alarm in enumerate(alarms[:shown], start=1):
        row = alarm_row(number, alarm, now_ms)
        wrap = is_open(alarm)
        table.add_row(
            *(
                Text(cell, no_wrap=not wrap, overflow="fold" if wrap else "ellipsis")
                for cell in row.cells
            ),
            style=row.style,
        )
    return table


class Screen:
    """The whole view of one `Console`, rendered at the size rich gives it. `now_ms` is read
    from the console at each render unless given (tests)."""

    def __init__(self, console: Console, now_ms: int | None = None) -> None:
        self._console = console
        self._now_ms = now_ms

    def __rich_console__(self, terminal: Terminal, options: ConsoleOptions) -> RenderResult:
        now_ms = self._console.now_ms() if self._now_ms is None else self._now_ms
        height = options.height or options.max_height
        unbounded = options.update(height=None)

        def lines(renderable: RenderableType) -> Lines:
            return terminal.render_lines(renderable, unbounded, pad=False)

        header, keys = lines(self._header()), lines(self._keys())
        budget = max(0, height - len(header) - len(keys))
        alarms = self._console.board.ordered()
        opened = sum(1 for alarm in alarms if is_open(alarm))

        def table(shown: int) -> Lines:
            if not alarms:
                return lines(Text("no alarms"))
            return lines(_alarm_table(alarms, shown, now_ms))

        # First the open alarms, then the gateway and gap status, then the other alarms, each
        # in what height the ones before it left.
        board = _fit(table, opened, budget)
        status = [line for text in self._status(now_ms) for line in lines(text)]
        status = status[: max(0, budget - len(board))]
        if len(alarms) > opened:
            board = _fit(table, len(alarms), budget - len(status), least=opened)
        recent = self._recent(lines, budget - len(board) - len(status))
        for line in [*header, *board, *status, *recent, *keys][:height]:
            yield from line
            yield Segment.line()

    def _header(self) -> Text:
        console = self._console
        broker = console.options.broker
        alarms = console.board.ordered()
        opened = sum(1 for alarm in alarms if is_open(alarm))
        acknowledged = sum(1 for alarm in alarms if alarm.acknowledged and not alarm.closed)
        header = Text(f"schoolgate console  {broker.host}:{broker.port} ", style="bold")
        if console.connected:
            header.append("connected", style="green")
        else:
            header.append("DISCONNECTED", style="bold red")
        header.append(
            f"  open {opened}  acknowledged {acknowledged}  events {console.events_seen}"
            f"  duplicates {console.deduper.duplicates}  refused {sum(console.refused.values())}"
            f"  gaps found {console.gaps.found} filled {console.gaps.filled}",
            style="not bold",
        )
        return header

    def _keys(self) -> Text:
        keys = "1-9 acknowledge that alarm, a the top unacknowledged, q quit"
        if self._console.options.signer is None:
            keys = "q quit (no --key: cannot acknowledge)"
        return Text(f"keys: {keys}", style="dim")

    def _status(self, now_ms: int) -> list[Text]:
        """Gateways in test mode, silent gateways, open seq gaps, the school rules' open items
        (violations, overdue ledger entries, missed patrols and drills) and refusals: before
        acknowledged alarms."""
        console = self._console
        found: list[Text] = []
        testing = console.test_modes.on(now_ms)
        if testing:
            found.append(Text("test mode (alarms are TEST, do not dispatch):", style="bold yellow"))
            found += [
                Text(f"  {ref}  until {on.until[11:19]}, started by {on.by}") for ref, on in testing
            ]
        silent = console.silence.silent()
        if silent:
            found.append(Text("silent gateways:", style="bold yellow"))
            found += [
                Text(f"  {ref}  {h.silent}, last heard {age_text(now_ms - h.last_heard_ms)} ago")
                for ref, h in silent
            ]
        open_gaps = console.gaps.open_gaps()
        if open_gaps:
            found.append(Text("open seq gaps:", style="bold yellow"))
            found += [
                Text(
                    f"  {gap.ref}  ({gap.from_seq}, {gap.last_seq}]  "
                    f"seen {gap.seen} of {_or_unknown(gap.routed)}"
                )
                for gap in open_gaps
            ]
        for title, rows in console.compliance.lines():
            found.append(Text(title, style="bold yellow"))
            found += [Text(f"  {row}") for row in rows]
        if console.refused:
            by_reason = ", ".join(f"{r} {n}" for r, n in sorted(console.refused.items()))
            found.append(Text(f"refused payloads: {by_reason}"))
        return found

    def _recent(self, lines: Callable[[RenderableType], Lines], budget: int) -> Lines:
        """The newest notices that fit in `budget` lines, under a title, oldest first."""
        if budget < 2 or not self._console.recent:
            return []
        kept: list[Lines] = []
        left = budget - 1
        for notice in reversed(self._console.recent):
            notice_lines = lines(Text(f"  {notice_line(notice)}"))
            if len(notice_lines) > left:
                break
            kept.append(notice_lines)
            left -= len(notice_lines)
        if not kept:
            return []
        title = lines(Text("recent:", style="bold"))
        return [*title, *(line for block in reversed(kept) for line in block)]


def _fit(render: Callable[[int], Lines], rows: int, budget: int, *, least: int = 1) -> Lines:
    """The table with as many of its first `rows` rows as fit in `budget` lines, never fewer
    than `least` (by default the top alarm stays even when nothing else fits)."""
    shown = rows
    drawn = render(shown)
    while len(drawn) > budget and shown > least:
        shown = max(least, shown - max(1, len(drawn) - budget))
        drawn = render(shown)
    return drawn
