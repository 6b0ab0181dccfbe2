"""What `schoolgate status` and `schoolgate alarms` say about the running parts, as plain data.

Owns two read-only views for the control socket: each device's state (online / offline since
when, its last answer and last error, from the driver's `DeviceHealth`), and each open alarm's
delivery (which destinations' brokers have taken its `alarm.panic` or `alarm.escalated`, read
from the store's delivery rows, so it is right after a restart too). It changes nothing and
does not decide readiness (gateway.app does, from these).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from zoneinfo import ZoneInfo

from drivers.polling import DeviceHealth
from edge_config.models import GatewayConfig
from gateway.core import contract
from gateway.store.records import AlarmRecords


def _at(ms: int | None, tz: ZoneInfo) -> str | None:
    return None if ms is None else contract.iso_ms(ms, tz)


def device_states(
    config: GatewayConfig, drivers: Mapping[str, object], tz: ZoneInfo
) -> dict[str, dict[str, Any]]:
    """device id -> kind, location, online (None: not polled yet), since, last answer, error.
    A driver that keeps no health (none today) shows online None."""
    states: dict[str, dict[str, Any]] = {}
    for device_id, device in config.devices.items():
        health = getattr(drivers.get(device_id), "health", None)
        state: dict[str, Any] = {"kind": device.kind, "location": device.location}
        if isinstance(health, DeviceHealth):
            state |= {
                "online": health.online,
                "since": _at(health.since_ms, tz),
                "last_answer": _at(health.last_answer_ms, tz),
                "error": health.last_error,
            }
        else:
            state |= {"online": None, "since": None, "last_answer": None, "error": ""}
        states[device_id] = state
    return states


async def alarm_delivery(
    records: AlarmRecords, destinations: Sequence[str], alarm_ids: Sequence[str]
) -> dict[str, dict[str, bool]]:
    """alarm id -> destination -> whether its broker has the alarm (PUBACK of the alarm's
    `alarm.panic` or `alarm.escalated`)."""
    delivered = {alarm_id: dict.fromkeys(destinations, False) for alarm_id in alarm_ids}
    if not alarm_ids:
        return delivered
    for destination in destinations:
        for step in await records.alarm_progress(destination, alarm_ids):
            carried = step.type in ("alarm.panic", "alarm.escalated")
            if step.sent and carried and step.alarm_id in delivered:
                delivered[step.alarm_id][destination] = True
    return delivered
