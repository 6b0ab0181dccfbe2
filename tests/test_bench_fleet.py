"""bench/fleet.py's console reader and bench/real_gates.py's config: a real gateway's press is
matched to the console line its press made (`alarm.panic` or `alarm.panic_repeated`), never to
another `alarm.*` such as the escalation an unacknowledged alarm gets 30 s after it opened (which
was counted as a press that took about 25 s), and the real gates' config is one the gateway
accepts, with the box's press counter so a press survives a late poll."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

from edge_config.loader import load
from edge_config.models import AlarmBoxDevice
from tests_support import load_bench


def _line(event_type: str, event_id: str, school: str = "real-1") -> bytes:
    return json.dumps({"id": event_id, "type": event_type, "school": school}).encode() + b"\n"


async def test_only_the_events_a_press_makes_count_as_its_arrival(tmp_path: Path) -> None:
    fleet = load_bench("fleet")
    console = fleet.ConsoleProcess(port=1, keys_dir=tmp_path)
    out = asyncio.StreamReader()
    for line in (
        b'{"console": "broker", "state": "connected"}\n',
        _line("alarm.panic", "a1"),
        _line("alarm.escalated", "e1"),  # 30 s after a1, nobody acknowledged
        _line("alarm.acknowledged", "k1"),
        _line("alarm.panic_repeated", "r1"),
        _line("alarm.panic_repeated", "r1"),  # a duplicate by id: one arrival
        _line("alarm.panic", "b1", school="real-2"),
        b"not json\n",
    ):
        out.feed_data(line)
    out.feed_eof()
    console.proc = SimpleNamespace(stdout=out)
    await console._read()
    assert console.connected.is_set()
    assert len(console.alarms_by_school["real-1"]) == 2
    assert len(console.alarms_by_school["real-2"]) == 1
    assert console.seen["r1"] and len(console.seen["r1"]) == 2


def test_the_real_gates_config_is_accepted_and_counts_presses(tmp_path: Path) -> None:
    real_gates = load_bench("real_gates")
    text = real_gates.CONFIG.format(
        n=1, dir=tmp_path, nodes='"127.0.0.1:1883", "127.0.0.1:1884"', keys=tmp_path, box_port=1502
    )
    text += real_gates.IDLE_DESTINATION.format(host="127.0.0.1", port=1885, n=1)
    (tmp_path / "real-1-gate-1.key").write_text("")  # only its path is checked here
    path = tmp_path / "schoolgate.toml"
    path.write_text(text)
    config = load(path).config
    box = config.devices["box"]
    assert isinstance(box, AlarmBoxDevice)
    (button,) = box.buttons
    assert button.press_counter_register == 0
    assert set(config.destinations) == {"police", "idle"}
