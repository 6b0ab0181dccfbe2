"""`schoolgate store stats`, `schoolgate events` and `schoolgate store export` on a real store,
run as the installer would run them (a separate process beside the store)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from gateway.core import contract
from gateway.core.events import DeviceRef, Severity, new_event
from gateway.store.routing import Router
from gateway.store.storage import Storage

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))
T0 = 1_795_000_000_000  # events an hour apart
HOUR = 3_600_000

CONFIG = """
[site]
school_id = "school-1"
gateway_id = "gate-1"
timezone = "Asia/Shanghai"
[store]
path = "{store}"
[destinations.police]
host = "127.0.0.1"
client_id = "p"
[destinations.bureau]
host = "127.0.0.1"
client_id = "b"
"""


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "gateway", *args, "-c", str(config)]
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    async def fill() -> None:
        routes = Router({"police": ["lane:alarm", "alarm.*"], "bureau": ["*"]})
        box, bollard = DeviceRef("box", "alarm_box", "booth"), DeviceRef("b1", "bollard", "lane")
        async with Storage(tmp_path / "outbox.db", SITE, routes) as store:
            alarm = await store.outbox.append(
                new_event(
                    "alarm.panic",
                    box,
                    severity=Severity.CRITICAL,
                    occurred_at_ms=T0,
                    alarm_id="a1",
                    data={"button": 0},
                )
            )
            await store.outbox.append(
                new_event(
                    "alarm.reset",
                    box,
                    severity=Severity.INFO,
                    occurred_at_ms=T0 + HOUR,
                    alarm_id="a1",
                    data={"button": 0},
                )
            )
            await store.outbox.append(
                new_event(
                    "bollard.lowered", bollard, severity=Severity.INFO, occurred_at_ms=T0 + 2 * HOUR
                )
            )
            await store.queue.mark_sent("police", [alarm.seq or 0])

    asyncio.run(fill())
    config = tmp_path / "schoolgate.toml"
    config.write_text(CONFIG.format(store=tmp_path / "outbox.db"))
    return config


def test_stats_lists_each_destination_and_lane(store: Path) -> None:
    result = cli(store, "outbox", "stats")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "events stored: 3" in lines[0]
    police_alarm = next(line for line in lines if line.startswith("police") and " alarm " in line)
    assert police_alarm.split()[2] == "0" and "+08:00" in police_alarm  # sent, with a time
    bureau_state = next(line for line in lines if line.startswith("bureau") and " state " in line)
    assert bureau_state.split()[2] == "2"
    data = json.loads(cli(store, "outbox", "stats", "--json").stdout)
    pending = {(lane["destination"], lane["lane"]): lane["pending"] for lane in data["lanes"]}
    assert pending == {
        ("police", "alarm"): 0,
        ("police", "state"): 1,
        ("bureau", "alarm"): 1,
        ("bureau", "state"): 2,
    }


def test_events_filters_by_type_device_and_time(store: Path) -> None:
    everything = cli(store, "events", "--json")
    assert [json.loads(line)["type"] for line in everything.stdout.splitlines()] == [
        "alarm.panic",
        "alarm.reset",
        "bollard.lowered",
    ]
    alarms = cli(store, "events", "--type", "alarm.*").stdout.splitlines()
    assert len(alarms) == 2 and "police:sent" in alarms[0] and "bureau:pending" in alarms[0]
    assert len(cli(store, "events", "--device", "b1").stdout.splitlines()) == 1
    site_time = contract.iso_ms(T0 + HOUR, SITE.tz)[:19]  # no offset: read as site time
    later = cli(store, "events", "--since", site_time, "--json").stdout.splitlines()
    assert [json.loads(line)["type"] for line in later] == ["alarm.reset", "bollard.lowered"]


def test_export_writes_json_lines_with_delivery_state(store: Path, tmp_path: Path) -> None:
    out = tmp_path / "audit.jsonl"
    result = cli(store, "outbox", "export", "-o", str(out))
    assert result.returncode == 0 and "exported 3 events" in result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["deliveries"]["police"]["sent_at_ms"] is not None
    assert rows[0]["deliveries"]["bureau"]["sent_at_ms"] is None


def test_bad_time_and_missing_store_are_clear_errors(store: Path, tmp_path: Path) -> None:
    bad = cli(store, "events", "--since", "yesterday")
    assert bad.returncode == 2 and "not an ISO 8601 date" in bad.stderr
    config = tmp_path / "other.toml"
    config.write_text(CONFIG.format(store=tmp_path / "nothing-here.db"))
    missing = cli(config, "outbox", "stats")
    assert missing.returncode == 1 and "no store at" in missing.stderr
    assert not (tmp_path / "nothing-here.db").exists()  # looking never creates one


@pytest.mark.parametrize("argv", [["events"], ["outbox", "export"], ["outbox", "stats"]])
def test_output_into_a_closed_pipe_ends_without_a_traceback(store: Path, argv: list[str]) -> None:
    """`schoolgate events | head -1` once head has gone: exit 1, nothing on standard error."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody reads: every write fails with EPIPE
    try:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", *argv, "-c", str(store)],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (1, "")
