"""What the guard page's tests share: a gate in a `MemorySource`, a config with a known PIN, a
fake monotonic clock for the PIN lockout, a headless Debian chromium driven by selenium, the
page's event stream read as text, and the police desk's signed `acknowledge` for the tests that
run the real daemon."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from edge_config.guard import GuardConfig
from gateway.core import auth
from gateway.guard.memory_source import MemorySource
from gateway.guard.pin import hash_pin
from gateway.guard.view import (
    AlarmView,
    BollardView,
    ClockView,
    DeviceView,
    DoorView,
    GateWindowView,
    OverdueView,
    PathView,
    RulesView,
    ViolationView,
)
from gateway.uplink import mqtt
from simulators.broker import MosquittoBroker
from simulators.listener import Listener, Received

PIN = "2468"
GUARD = "王师傅"
_PIN_HASH = hash_pin(PIN, salt=base64.b64decode("c2Nob29sZ2F0ZS10ZXN0"))
NOW = datetime(2025, 3, 14, 7, 42, 5, tzinfo=UTC)


def guard_config(**changes: object) -> GuardConfig:
    data: dict[str, object] = {
        "host": "127.0.0.1",
        "port": 0,
        "guards": [
            {"name": GUARD, "pin_hash": _PIN_HASH},
            {"name": "李师傅", "pin_hash": _PIN_HASH},
        ],
    }
    data.update(changes)
    return GuardConfig.model_validate(data)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def gate_source(*, rules: bool = True, test_mode: bool = True) -> MemorySource:
    """A gate with something in every section (what the screenshots show), in test mode (its
    banner on) unless `test_mode=False`."""
    source = MemorySource(gate_name="实验小学 东门", now=lambda: NOW)
    police = "110 指挥中心 张警官"
    acked = AlarmView("a-1", "box-east", "东门岗亭", ago(95), "acknowledged")
    source.put_alarm(replace(acked, acknowledged_by=police, acknowledged_at=ago(80)))
    source.put_alarm(AlarmView("a-2", "box-west", "西门岗亭", ago(20), "at_police"))
    source.put_alarm(AlarmView("a-3", "box-east", "东门岗亭", ago(4), "stored", test=True))
    source.put_bollard(BollardView("bollard-1", "东门 1 号柱", "up", ago(3600)))
    source.put_bollard(BollardView("bollard-2", "东门 2 号柱", "pulled", ago(700)))
    source.put_bollard(BollardView("bollard-3", "西门 1 号柱", "moving", ago(2)))
    source.put_door(DoorView("door-1", "东门闸机", "closed", ago(300)))
    source.put_door(DoorView("door-2", "西门侧门", "held_open", ago(240)))
    source.put_device(DeviceView("box-east", "alarm_box", "东门岗亭", "online", ago(86_400)))
    source.put_device(DeviceView("box-west", "alarm_box", "西门岗亭", "online", ago(7200)))
    source.put_device(DeviceView("access-1", "access", "东门闸机", "offline", ago(125)))
    source.put_path(PathView("police", "up", ago(5000)))
    source.put_path(PathView("bureau", "down", ago(61)))
    source.set_clock(ClockView(gate_offset_s=0.3, box_synchronised=True))
    if test_mode:
        source.set_test_mode(NOW + timedelta(minutes=4))
    if rules:
        at = NOW.replace(second=0)
        windows = (
            GateWindowView("早到校", at.replace(hour=7, minute=0), at.replace(hour=8, minute=10)),
            GateWindowView("放学", at.replace(hour=16, minute=30), at.replace(hour=17, minute=30)),
        )
        source.set_rules(
            RulesView(
                gate_windows=windows,
                patrols_done=3,
                patrols_target=5,
                open_violations=(ViolationView("bollards_up_at_arrival", "东门 2 号柱", ago(400)),),
                overdue_ledger=(OverdueView("device_offline", "东门闸机", ago(3600)),),
            )
        )
    return source


@contextlib.contextmanager
def headless_chromium() -> Iterator[WebDriver]:
    """Debian's chromium, headless, through its chromedriver; quit when the block ends."""
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()


async def next_event(lines: aiohttp.StreamReader) -> tuple[str, str]:
    """The next server-sent event on the page's stream: (event, data)."""
    event = data = ""
    while True:
        line = (await lines.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
        elif line == "" and event:
            return event, data


async def page_state(base: str) -> dict[str, Any]:
    """The first `state` the page's stream sends (what a page that opens now draws)."""
    async with aiohttp.ClientSession() as session, session.get(f"{base}/events") as stream:
        while True:
            event, data = await next_event(stream.content)
            if event == "state":
                return dict(json.loads(data))


async def police_acknowledge(
    broker: MosquittoBroker,
    police: Listener,
    key: Ed25519PrivateKey,
    alarm_id: str,
    *,
    by: str,
    base: str = "schoolgate/v1/school-7/gate-east",
) -> Received:
    """The police desk (key id `police-console`) acknowledges on the gateway's command topic;
    returns the command's result as the police broker got it."""
    command = auth.sign_command(
        auth.build_command(
            gateway=base.rsplit("/", 1)[1],
            school=base.split("/")[2],
            command="acknowledge",
            args={"alarm_id": alarm_id, "by": by},
            issued_at=datetime.now(UTC),
        ),
        key,
        "police-console",
    )
    params = mqtt.BrokerParams(host=broker.host, port=broker.port, client_id="police-desk")
    async with mqtt.connect(params) as conn:
        await conn.publish(f"{base}/commands", json.dumps(command).encode())
    result = await police.wait_for(
        lambda m: m.topic == f"{base}/results" and m.json["command_id"] == command["id"]
    )
    assert result.json["status"] == "done", result.json
    return result


def daemon_guard_config(tmp_path: Path, page_port: int, receiver_pub: str, extra: str = "") -> str:
    """The sections a `tests_support.GatewayProcess` adds for the page: `[guard]` (王师傅, PIN
    2468) and `[security]` (the gateway's key in `tmp_path`, the police desk trusted for
    `acknowledge`), then `extra`."""
    return f"""
[guard]
host = "127.0.0.1"
port = {page_port}
heartbeat_s = 0.5

[[guard.guards]]
name = "{GUARD}"
pin_hash = "{_PIN_HASH}"

[security]
gateway_key_file = "{tmp_path}/gate-east.key"
gateway_key_id = "gate-east"

[[security.trusted_keys]]
id = "police-console"
public_key = "{receiver_pub}"
commands = ["acknowledge"]
{extra}
"""
