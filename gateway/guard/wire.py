"""What the page receives: a `GuardSnapshot` turned into JSON-ready plain data.

Owns the wire shape of the page's state (`snapshot_to_json`): datetimes as ISO 8601 strings,
alarms the newest first, everything else as the dataclass fields. It does not read state
(`gateway.guard.view`) nor send it (`gateway.guard.server`).
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from gateway.guard.view import GuardSnapshot


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return value


def snapshot_to_json(snapshot: GuardSnapshot) -> str:
    newest_first = sorted(snapshot.alarms, key=lambda a: a.raised_at, reverse=True)
    data = _plain(dataclasses.replace(snapshot, alarms=tuple(newest_first)))
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))
