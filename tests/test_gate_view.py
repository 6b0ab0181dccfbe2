"""The demo's live lines (simulators/gate.py `describe`): a receiver's command on the commands
topic is shown as that command, not as the gateway going offline (seen in `./run demo`: each
police acknowledgement printed "police status offline")."""

from __future__ import annotations

import json
import time

from simulators.gate import describe
from simulators.listener import Received

BASE = "schoolgate/v1/school-1/gate-1"


def line(topic: str, body: dict[str, object]) -> str:
    now = time.time_ns()
    return describe("police", Received(topic, json.dumps(body).encode(), now), time.monotonic())


def test_a_command_is_shown_as_the_command() -> None:
    shown = line(f"{BASE}/commands", {"command": "acknowledge", "id": "x"})
    assert "command acknowledge" in shown and "status" not in shown


def test_status_is_shown_online_or_offline() -> None:
    assert "status online" in line(f"{BASE}/status", {"online": True})
    assert "status offline" in line(f"{BASE}/status", {"online": False})


def test_an_event_keeps_its_type() -> None:
    assert "alarm.panic" in line(f"{BASE}/events/alarm", {"type": "alarm.panic", "seq": 3})
