"""Which stored events open and close a fault-ledger entry (隐患登记造册, 闭环销号), and of which
kind: the one table of faults the gateway can see.

Owns `ledger_action(event)`: the `OpenLedger` or `CloseLedger` an event means, or None. Kinds
(each with its repair deadline in `[rules.ledger] repair_h`, 24 h by default) and their keys,
one open entry per key (`<d>` is the device):

| kind | opened by | closed by (the evidence) | key |
| --- | --- | --- | --- |
| `device_offline` | `device.offline` | `device.online` | `offline:<device>` |
| `bollard_fault` | `bollard.fault` | `bollard.fault_cleared` | `fault:<device>` |
| `bollard_stuck` | `bollard.stuck` | `bollard.raised` or `.lowered` | `stuck:<device>` |
| `tamper` | `access.tamper` (active) | `access.tamper` (not active) | `tamper:<device>` |
| `clock_not_correctable` | `access.clock_not_correctable` | `access.clock_corrected` | `clock:<d>`|
| `broker_path_down` | `gateway.path_down` | `gateway.path_up` | `path:<destination>` |
| `storage_fault` | `gateway.storage_fault` | `gateway.storage_recovered` | `storage` |

`rule_violation` entries are opened and closed by the window rules (gateway.rules.windows).
Pure: no state, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.core.events import Event
from gateway.rules.windows import CloseLedger, OpenLedger

LedgerAction = OpenLedger | CloseLedger


class _Fields(dict[str, object]):
    """An event's fields for the texts below; one it lacks reads as "?" (never a KeyError)."""

    def __missing__(self, key: str) -> object:
        return "?"


def _fields(event: Event) -> _Fields:
    fields = _Fields(event.data)
    fields |= {"device": event.device.id, "kind": event.device.kind, "type": event.type}
    return fields


def _open(kind: str, key: str, what: str) -> Callable[[Event], LedgerAction]:
    def action(event: Event) -> LedgerAction:
        f = _fields(event)
        where = event.device.location or event.device.id
        return OpenLedger(kind, key.format_map(f), what.format_map(f), where, event.occurred_at_ms)

    return action


def _close(key: str, evidence: str) -> Callable[[Event], LedgerAction]:
    def action(event: Event) -> LedgerAction:
        f = _fields(event)
        return CloseLedger(key.format_map(f), evidence.format_map(f), event.occurred_at_ms)

    return action


_TABLE: dict[str, Callable[[Event], LedgerAction]] = {
    "device.offline": _open(
        "device_offline", "offline:{device}", "{device} ({kind}) does not answer: {error}"
    ),
    "device.online": _close("offline:{device}", "{device} answered again"),
    "bollard.fault": _open("bollard_fault", "fault:{device}", "{device} reports fault code {code}"),
    "bollard.fault_cleared": _close("fault:{device}", "{device} cleared its fault code"),
    "bollard.stuck": _open(
        "bollard_stuck", "stuck:{device}", "{device} did not reach {target} (it is {position})"
    ),
    "bollard.raised": _close("stuck:{device}", "{device} moved: {type}"),
    "bollard.lowered": _close("stuck:{device}", "{device} moved: {type}"),
    "access.clock_not_correctable": _open(
        "clock_not_correctable",
        "clock:{device}",
        "{device} refused the clock correction (skew {skew_ms} ms): {error}",
    ),
    "access.clock_corrected": _close("clock:{device}", "{device} clock corrected"),
    "gateway.path_down": _open(
        "broker_path_down", "path:{destination}", "the {destination} broker path is down: {error}"
    ),
    "gateway.path_up": _close("path:{destination}", "the {destination} broker path is up again"),
    "gateway.storage_fault": _open("storage_fault", "storage", "the store failed: {error}"),
    "gateway.storage_recovered": _close("storage", "the store recovered"),
}


_TAMPER_OPENED = _open("tamper", "tamper:{device}", "{device} tamper switch opened")
_TAMPER_CLOSED = _close("tamper:{device}", "{device} tamper switch closed again")


def ledger_action(event: Event) -> LedgerAction | None:
    """The ledger change `event` means, if any."""
    if event.type == "access.tamper":
        active = event.data.get("active") is not False
        return (_TAMPER_OPENED if active else _TAMPER_CLOSED)(event)
    make = _TABLE.get(event.type)
    return None if make is None else make(event)
