"""Topic names and payload encoding of the MQTT contract, version 1. The only place that knows
what goes on the wire; receivers' schemas are written against this module.

Topics (under a configurable root, default `schoolgate/v1`):
  <root>/<school>/<gateway>/events/<category>   one event, JSON, QoS 1
  <root>/<school>/<gateway>/status              retained online/offline (the offline one is
                                                also the MQTT will)

An event is encoded once, when it is stored (`encode_event_body`); the per-delivery fields
(`historical`, `attempt`) are appended when it is sent (`finish_event_payload`) so that a backlog
drains without re-encoding every row.

Encoding never fails, whatever the input (issue 10): the payloads echo text a sender chose (a
refused command's id, a detail naming its school), so a value JSON or UTF-8 cannot carry is
replaced (a lone surrogate by U+FFFD, NaN and infinities by null, anything else by its `str`),
nesting is cut at `MAX_DEPTH` and a result's detail at `MAX_DETAIL_CHARS`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from gateway import __version__
from gateway.core.events import Event

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


def heartbeat_topic(site: Site) -> str:
    return f"{site.base_topic}/heartbeat"


def commands_topic(site: Site) -> str:
    return f"{site.base_topic}/commands"


def results_topic(site: Site) -> str:
    return f"{site.base_topic}/results"


def is_results_topic(site: Site, topic: str) -> bool:
    """`topic` is the results topic or one under it, with no wildcard: the only topics a command
    (MQTT 5 response topic) may have its answer published on."""
    base = results_topic(site)
    return (topic == base or topic.startswith(base + "/")) and not any(c in topic for c in "+#\0")


def iso_ms(epoch_ms: int, tz: ZoneInfo) -> str:
    """ISO 8601 with milliseconds and the site's UTC offset, e.g. 2026-11-24T08:00:00.123+08:00."""
    return datetime.fromtimestamp(epoch_ms / 1000, tz).isoformat(timespec="milliseconds")


MAX_DEPTH = 32
"""Nesting kept when a payload has to be cleaned; deeper values become a marker string."""
MAX_DETAIL_CHARS = 1024
"""A command result's `detail` is cut to this: it may echo what a sender chose."""
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def clean_text(text: str, limit: int | None = None) -> str:
    """`text` as valid Unicode (each lone surrogate replaced by U+FFFD), cut to `limit`."""
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return _SURROGATE.sub("\ufffd", text)


def _clean(value: object, depth: int = 0) -> object:
    """A copy of `value` that `json.dumps(..., allow_nan=False)` and UTF-8 accept."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        return "\u2026"
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v, depth + 1) for v in value]
    return clean_text(str(value))


def _dumps(obj: dict[str, Any]) -> bytes:
    try:
        text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return text.encode()
    except (ValueError, TypeError, RecursionError):  # UnicodeEncodeError is a ValueError
        # Rare (the hot path, an event body, is plain): clean the whole object and go again.
        cleaned = _clean(obj)
        return json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode()


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
        "test": event.test,
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


@dataclass(frozen=True, slots=True)
class Heartbeat:
    destination: str
    boot: int
    from_seq: int
    last_seq: int
    routed: int
    pending: int
    paths: dict[str, str]
    node: str | None = None
    """The broker node this heartbeat went through ('host:port'), where the gateway knows it."""


def _gateway_message(site: Site, message_type: str, fields: dict[str, Any], at_ms: int) -> bytes:
    """A payload of the gateway that is not an event: its head, `fields`, then `at`."""
    head = {
        "schema": SCHEMA_VERSION,
        "type": message_type,
        "school": site.school_id,
        "gateway": site.gateway_id,
    }
    return _dumps({**head, **fields, "at": iso_ms(at_ms, site.tz)})


def heartbeat_payload(site: Site, beat: Heartbeat, *, at_ms: int) -> bytes:
    fields = {
        "destination": beat.destination,
        "boot": beat.boot,
        "from_seq": beat.from_seq,
        "last_seq": beat.last_seq,
        "routed": beat.routed,
        "pending": beat.pending,
        "paths": beat.paths,
    }
    if beat.node is not None:
        fields["node"] = beat.node
    return _gateway_message(site, "heartbeat", fields, at_ms)


@dataclass(frozen=True, slots=True)
class CommandResult:
    command_id: str | None
    command: str | None
    status: str
    """done, rejected or failed"""
    reason: str | None = None
    detail: str = ""
    result: dict[str, Any] | None = None


def result_payload(site: Site, outcome: CommandResult, *, at_ms: int) -> bytes:
    return _gateway_message(
        site,
        "command.result",
        {
            # Echoed from what a sender chose: already cut (64 characters) by the handler.
            "command_id": outcome.command_id,
            "command": outcome.command,
            "status": outcome.status,
            "reason": outcome.reason,
            "detail": clean_text(outcome.detail, MAX_DETAIL_CHARS),
            "result": outcome.result or {},
        },
        at_ms,
    )
