"""Topic names and payload encoding of the MQTT contract, version 1. The only place that knows
what goes on the wire; receivers' schemas are written against this module.

Topics (under a configurable root, default `schoolgate/v1`):
  <root>/<school>/<gateway>/events/<category>   one event, JSON, QoS 1
  <root>/<school>/<gateway>/status              retained online/offline (the offline one is
                                                also the MQTT will)

An event is encoded once, when it is stored (`encode_event_body`); the per-delivery fields
(`historical`, `attempt`) are appended when it is sent (`finish_event_payload`) so that a backlog
drains without re-encoding every row.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway import __version__
from gateway.events import Event

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Site:
    school_id: str
    gateway_id: str
    tz: ZoneInfo
    topic_root: str = "schoolgate/v1"

    @property
    def base_topic(self) -> str:
        return f"{self.topic_root}/{self.school_id}/{self.gateway_id}"


def event_topic(site: Site, category: str) -> str:
    return f"{site.base_topic}/events/{category}"


def status_topic(site: Site) -> str:
    return f"{site.base_topic}/status"


def iso_ms(epoch_ms: int, tz: ZoneInfo) -> str:
    """ISO 8601 with milliseconds and the site's UTC offset, e.g. 2026-11-24T08:00:00.123+08:00."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz).isoformat(timespec="milliseconds")


def _dumps(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def encode_event_body(site: Site, event: Event) -> bytes:
    """The stored form of an event: the wire payload without the delivery fields."""
    if event.seq is None:
        raise ValueError("an event gets its seq from the outbox before it is encoded")
    body: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "id": event.id,
        "seq": event.seq,
        "school": site.school_id,
        "gateway": site.gateway_id,
        "device": {
            "id": event.device.id,
            "kind": event.device.kind,
            "location": event.device.location,
        },
        "type": event.type,
        "severity": str(event.severity),
        "occurred_at": iso_ms(event.occurred_at_ms, site.tz),
        "drill": event.drill,
        "data": event.data,
    }
    if event.alarm_id is not None:
        body["alarm_id"] = event.alarm_id
    return _dumps(body)


def finish_event_payload(body: bytes, *, historical: bool, attempt: int) -> bytes:
    """Append the per-delivery fields; `body` is a JSON object from `encode_event_body`."""
    tail = b',"historical":%s,"attempt":%d}' % (b"true" if historical else b"false", attempt)
    return body[:-1] + tail


def decode_event(payload: bytes) -> dict[str, Any]:
    """Parse a received event payload (for receivers, the demo and tests)."""
    obj = json.loads(payload)
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA_VERSION:
        raise ValueError("not a schoolgate v1 event")
    return obj


def status_payload(site: Site, *, online: bool, at_ms: int | None = None) -> bytes:
    body: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "school": site.school_id,
        "gateway": site.gateway_id,
        "online": online,
        "version": __version__,
    }
    if at_ms is not None:
        body["at"] = iso_ms(at_ms, site.tz)
    return _dumps(body)
