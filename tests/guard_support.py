"""What the guard page's tests share: a gate in a `MemorySource`, a config with a known PIN, a
fake monotonic clock for the PIN lockout, and a headless Debian chromium driven by selenium."""

from __future__ import annotations

import base64
import contextlib
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

from edge_config.guard import GuardConfig
from gateway.guard.memory_source import MemorySource
from gateway.guard.pin import hash_pin
from gateway.guard.view import (
    AlarmView,
    BollardView,
    ClockView,
    DeviceView,
    DoorView,
    PathView,
    RulesView,
)

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


def gate_source(*, rules: bool = True) -> MemorySource:
    """A gate with something in every section (what the screenshots show)."""
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
    if rules:
        source.set_rules(RulesView(patrols_done=3, patrols_target=5))
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
