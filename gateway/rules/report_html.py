"""The daily inspection report as one HTML page for the school's records: prints cleanly on A4
(`@page A4`, tables that do not split a row, a signature line), texts from the report's
catalogue in Chinese with English.

Owns the page and its escaping (every value from the report is escaped). It reads only the
report's JSON (gateway.rules.report's shape); no script, no outside resources.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape
from typing import Any

from gateway.rules.report_catalogue import TEXTS, both

CSS = """
@page { size: A4; margin: 15mm 12mm; }
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", sans-serif; font-size: 10pt;
       color: #000; margin: 0; }
h1 { font-size: 15pt; margin: 0 0 4mm; }
h2 { font-size: 11pt; margin: 5mm 0 2mm; border-bottom: 0.3mm solid #000;
     break-after: avoid; page-break-after: avoid; }
table { width: 100%; border-collapse: collapse; margin-bottom: 2mm; }
th, td { border: 0.2mm solid #555; padding: 1mm 1.5mm; text-align: left; vertical-align: top; }
th { background: #eee; }
tr { break-inside: avoid; page-break-inside: avoid; }
.bad { font-weight: bold; }
.sign { margin-top: 12mm; }
@media screen { body { max-width: 190mm; margin: 10mm auto; } }
"""


def _v(value: object) -> str:
    if value is None or value in ("", []):
        return TEXTS["none"][0]
    if isinstance(value, bool):
        return both("yes" if value else "no")
    return escape(str(value))


def _pct(fraction: object) -> str:
    return f"{float(fraction) * 100:.2f} %" if isinstance(fraction, int | float) else _v(fraction)


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    if not body:
        return f"<p>{both('none')}</p>"
    head = "".join(f"<th>{both(h)}</th>" for h in headers)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _in(unit: str) -> Callable[[object], str]:
    """Shows a value with its unit ("12 ms")."""
    return lambda value: f"{_v(value)} {unit}"


def _health(health: object) -> str:
    return both(health) if isinstance(health, str) and health in TEXTS else _v(health)


Cell = str | tuple[str, Callable[[Any], str]]
"""A column: the key whose value is shown as it is, or the key and how to show its value."""


def _show(cell: Cell, value: Callable[[str], object]) -> str:
    key, show = (cell, _v) if isinstance(cell, str) else cell
    return show(value(key))


def _listing(
    headers: Sequence[str], items: Iterable[Mapping[str, Any]], cells: Sequence[Cell] = ()
) -> str:
    """A table with a row per item: a column per cell (by default, the headers' keys)."""
    columns = cells or headers
    return _table(headers, ([_show(c, item.__getitem__) for c in columns] for item in items))


def _summary(headers: Sequence[str], figures: Mapping[str, Any], cells: Sequence[Cell]) -> str:
    """A one-row table of `figures` (a missing one shows as none)."""
    return _table(headers, [[_show(c, figures.get) for c in cells]])


def _section(key: str, content: str) -> str:
    return f"<h2>{both(key)}</h2>{content}"


def render_html(report: Mapping[str, Any], *, school: str, gateway: str, built: str) -> str:
    r = report
    store = r.get("store", {})
    ledger = r.get("ledger", {})
    faults = r.get("faults", {})
    violations = r.get("violations", {})
    drills = r.get("drills", {})
    clock = r.get("gateway_clock", {})
    parts = [
        f"<h1>{both('title')} {_v(r.get('date'))}</h1>",
        _table(
            ["school", "period", "built"],
            [
                [
                    f"{_v(school)} / {_v(gateway)}",
                    f"{_v(r.get('from'))} - {_v(r.get('to'))}",
                    _v(built),
                ]
            ],
        ),
        _section(
            "sec_devices",
            _listing(
                ["device", "kind", "location", "health", "online_fraction"],
                r.get("devices", []),
                ["id", "kind", "location", ("health", _health), ("online_fraction", _pct)],
            ),
        ),
        _section(
            "sec_clocks",
            _listing(
                ["device", "offset", "corrected"],
                r.get("clocks", []),
                ["device", ("offset_ms", _in("ms")), "corrected"],
            ),
        ),
        _section(
            "sec_gateway_clock",
            _summary(
                ["synchronised", "max_error"], clock, ["synchronised", ("max_error_ms", _in("ms"))]
            ),
        ),
        _section(
            "sec_paths",
            _listing(
                ["path", "health", "up_fraction", "last_puback", "last_ack"],
                ({**p, "name": name} for name, p in r.get("paths", {}).items()),
                [
                    "name",
                    ("up", lambda up: both("up" if up else "down")),
                    ("up_fraction", _pct),
                    "last_puback",
                    "last_ack",
                ],
            ),
        ),
        _section("sec_store", _store(store)),
        _section(
            "sec_alarms",
            _listing(
                ["at", "device", "drill", "acked_by", "acked_after", "escalated"],
                r.get("alarms", []),
                [
                    "at",
                    "device",
                    "drill",
                    "acknowledged_by",
                    ("acknowledged_after_s", _in("s")),
                    "escalated",
                ],
            ),
        ),
        _section(
            "sec_faults",
            _summary(
                ["open_now", "overdue", "mttr"],
                ledger,
                ["open", "overdue", ("mean_time_to_repair_s", _in("s"))],
            )
            + _faults("opened_today", faults.get("opened", []))
            + _faults("closed_today", faults.get("closed", []))
            + _faults("open_now", faults.get("open", [])),
        ),
        _section(
            "sec_violations",
            _listing(["rule", "device", "state", "at"], violations.get("opened", []))
            + f"<p>{both('restored')}: {_v(violations.get('restored'))}; "
            f"{both('open_now')}: {len(violations.get('open_now', []))}</p>",
        ),
        _section(
            "sec_patrols",
            _listing(
                ["plan", "rounds", "required", "missed"],
                r.get("patrols", []),
                ["plan", "rounds_done", "rounds_required", "missed"],
            ),
        ),
        _section(
            "sec_drills",
            _summary(
                ["quarter", "this_quarter", "missing"],
                drills,
                ["quarter", "this_quarter", "missing_reported"],
            )
            + _listing(["started", "acked_by"], drills.get("started", []), ["at", "by"]),
        ),
        f'<p class="sign">{both("signature")}: ____________________</p>',
    ]
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>{both('title')} {_v(r.get('date'))}</title><style>{CSS}</style></head>"
        f"<body>{''.join(parts)}</body></html>\n"
    )


def _store(store: Mapping[str, Any]) -> str:
    if not store.get("readable"):
        return f'<p class="bad">{both("not_readable")}: {_v(store.get("error"))}</p>'
    integrity = both("ok") if store.get("integrity_ok") else _v("; ".join(store["integrity"]))
    backlog = ", ".join(
        f"{b['destination']}/{b['lane']}: {b['pending']}" for b in store.get("backlog", [])
    )
    return _table(
        ["integrity", "file_size", "disk_free", "backlog"],
        [
            [
                integrity,
                f"{store['file_bytes'] / 1_048_576:.1f} MB",
                f"{store['disk_free_bytes'] / 1_073_741_824:.1f} GB",
                _v(backlog) if backlog else "0",
            ]
        ],
    )


def _faults(key: str, entries: Sequence[Mapping[str, Any]]) -> str:
    return f"<p>{both(key)}</p>" + _table(
        ["entry", "what", "location", "deadline", "state"],
        (
            [
                _v(e["entry"]),
                _v(e["what"]),
                _v(e["where"]),
                _v(e["deadline"]),
                (both("overdue") + " " if e["overdue"] else "")
                + (_v(e["closed"]) if e["closed"] else both("open_now")),
            ]
            for e in entries
        ),
    )
