"""Drain benchmark (issue 3): a backlog of telemetry rows waits in the outbox; the real gateway
process starts with the broker up and drains it, while a panic button is pressed on the
simulated alarm box. Compared with raw paho-mqtt QoS 1 publishing measured in the same run
against the same broker.

    .venv/bin/python bench/drain.py [--rows 1000000] [--presses 100] [--rounds 3]
                                    [--write docs/benchmarks.md]

Raw paho and the drain alternate (raw, drain, raw, drain, ..., raw) so each drain is compared with
the raw runs just before and after it on a machine whose load drifts. Prints the raw paho rates,
the forwarding rates (first to last PUBACK, from the gateway's own delivery records) and their
ratios, and the press-to-arrival latency of
alarms (simulated press -> `alarm.panic` at a subscriber on the broker) during the drain and at
idle afterwards, with the ratio of the p99s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.commands import control
from gateway.core import contract
from gateway.core.events import DeviceRef, Severity, new_event
from gateway.store.routing import Router
from gateway.store.storage import Storage
from simulators.broker import MosquittoBroker
from simulators.dido import DiDoModule, serve_tcp
from simulators.listener import Listener, listen
from simulators.measure import gateway_command, percentile

SITE = contract.Site("bench-school", "bench-gate", ZoneInfo("Asia/Shanghai"))
SENSOR = DeviceRef("sensor", "modbus_points", "bench")
WINDOW = 32
POLL_MS = 50

CONFIG = """
[site]
school_id = "bench-school"
gateway_id = "bench-gate"
[store]
path = "{dir}/outbox.db"
[control]
socket_path = "{dir}/control.sock"
[destinations.police]
host = "127.0.0.1"
port = {port}
client_id = "bench-gate"
max_inflight = {window}
routes = ["*"]
[lines.io]
type = "modbus_tcp"
host = "127.0.0.1"
port = {modbus}
[devices.box]
kind = "alarm_box"
line = "io"
poll_interval_ms = {poll}
lamp_coil = 0
reset_input = 7
[[devices.box.buttons]]
input = 0
"""


def raw_paho_rate(port: int, count: int, payload: bytes) -> float:
    """QoS 1 publishes from one paho client with the same in-flight window, until all acked."""
    done = threading.Event()
    acked = 0

    def on_publish(*_args: object) -> None:
        nonlocal acked
        acked += 1
        if acked == count:
            done.set()

    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-raw")
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    client.on_publish = on_publish
    client.connect("127.0.0.1", port)
    client.loop_start()
    start = time.perf_counter()
    for _ in range(count):
        client.publish("bench/raw", payload, qos=1)
    finished = done.wait(120)
    elapsed = time.perf_counter() - start
    client.loop_stop()
    client.disconnect()
    if not finished:
        raise RuntimeError(f"raw paho baseline: only {acked} of {count} PUBACKs in 120 s")
    return count / elapsed


def telemetry(i: int) -> object:
    return new_event(
        "telemetry.point",
        SENSOR,
        severity=Severity.INFO,
        occurred_at_ms=1_795_000_000_000 + i,
        data={"name": "gate_current", "value": i % 1000 / 10, "unit": "A"},
    )


async def fill_backlog(path: Path, rows: int) -> None:
    async with Storage(path, SITE, Router({"police": ["*"]})) as store:
        for start in range(0, rows, 10_000):
            for i in range(start, min(rows, start + 10_000)):
                store.outbox.submit(telemetry(i))  # type: ignore[arg-type]
            await store.outbox.flush()


def forwarding_rate(db_path: Path) -> float:
    """Backlog rows acknowledged per second from the first recorded PUBACK batch to the last,
    read from the gateway's own delivery records (rows of the first batch not counted): the
    forwarding rate without the process's start-up, which the footprint measures on its own."""
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
        first, last = db.execute(
            "SELECT MIN(sent_at_ms), MAX(sent_at_ms) FROM deliveries WHERE lane = 2"
        ).fetchone()
        (after_first,) = db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE lane = 2 AND sent_at_ms > ?", (first,)
        ).fetchone()
    return float(after_first) / (max(last - first, 1) / 1000)


def pending(db_path: Path) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=5) as db:
        (n,) = db.execute(
            "SELECT COUNT(*) FROM deliveries WHERE sent_at_ms IS NULL AND lane = 2"
        ).fetchone()
    db.close()
    return int(n)


async def wait_ready(socket: Path) -> None:
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(control.ControlError):
                if (await control.request(socket, {"op": "status"}))["devices_ready"]:
                    return
            await asyncio.sleep(0.02)


async def press(box: DiDoModule, listener: Listener, gap_s: float) -> float:
    """One press of the simulated button; press-to-arrival in ms. The alarm is reset through
    the box's key switch afterwards so the next press is a new alarm."""
    since = len(listener.messages)
    pressed = time.time_ns()
    await box.pulse(0, 100)
    hit = await listener.wait_for(
        lambda m: m.json.get("type") == "alarm.panic", since=since, timeout_s=60
    )
    await box.pulse(7, 120)  # the reset key
    await listener.wait_for(lambda m: m.json.get("type") == "alarm.reset", since=since)
    await asyncio.sleep(gap_s)
    return (hit.arrived_ns - pressed) / 1e6


@dataclasses.dataclass
class Round:
    forwarding: float
    """Backlog rows per second from the first PUBACK batch to the last (`forwarding_rate`)."""
    end_to_end: float
    """Backlog rows per second from the gateway process's start to an empty backlog."""
    drain_s: float
    during: list[float]
    idle: list[float]


async def drain_once(broker_port: int, workdir: Path, rows: int, idle_presses: int) -> Round:
    """Fill a fresh outbox with `rows` telemetry rows, start the gateway, press the button
    while it drains, then `idle_presses` more once the backlog is gone."""
    t = time.perf_counter()
    await fill_backlog(workdir / "outbox.db", rows)
    print(f"backlog of {rows:,} telemetry rows stored in {time.perf_counter() - t:.1f} s")
    box = DiDoModule(unit_id=1)
    topic = contract.event_topic(SITE, "alarm")
    async with (
        serve_tcp(box) as (_, modbus_port),
        listen("alarms", "127.0.0.1", broker_port, topic) as listener,
    ):
        config = workdir / "schoolgate.toml"
        config.write_text(
            CONFIG.format(
                dir=workdir, port=broker_port, modbus=modbus_port, window=WINDOW, poll=POLL_MS
            )
        )
        log = (workdir / "gateway.log").open("wb")
        gateway = subprocess.Popen(  # noqa: ASYNC220 - returns at once
            gateway_command(config),
            stdout=log,
            stderr=log,
        )
        start = time.perf_counter()
        await wait_ready(workdir / "control.sock")  # a press before the first poll is lost
        during: list[float] = []
        while await asyncio.to_thread(pending, workdir / "outbox.db") > 0:
            during.append(await press(box, listener, 0.1))
        drain_s = time.perf_counter() - start
        forwarding = await asyncio.to_thread(forwarding_rate, workdir / "outbox.db")
        idle = [await press(box, listener, 0.1) for _ in range(idle_presses)]
        gateway.send_signal(signal.SIGTERM)
        await asyncio.to_thread(gateway.wait, 30)
        log.close()
    return Round(forwarding, rows / drain_s, drain_s, during, idle)


async def main(rows: int, presses: int, rounds: int, write: Path | None) -> None:
    like = telemetry(rows)
    body = contract.encode_event_body(SITE, dataclasses.replace(like, seq=rows))  # type: ignore[type-var]
    sample = contract.finish_event_payload(body, historical=True, attempt=1)
    raws: list[float] = []
    done: list[Round] = []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        async with MosquittoBroker("bench") as broker:

            async def raw_once() -> None:
                raw = await asyncio.to_thread(raw_paho_rate, broker.port, min(rows, 50_000), sample)
                raws.append(raw)
                print(
                    f"raw paho QoS 1: {raw:,.0f} msg/s ({len(sample)} B payload, window {WINDOW})"
                )

            # Raw and drain alternate, and each drain is compared with the raw runs either side
            # of it: a shared machine's load drifts within minutes.
            await raw_once()
            for i in range(rounds):
                last = i == rounds - 1
                scratch = Path(tempfile.mkdtemp(dir=workdir))
                got = await drain_once(broker.port, scratch, rows, presses if last else 0)
                await asyncio.to_thread(shutil.rmtree, scratch)
                done.append(got)
                await raw_once()
                ratio = got.forwarding / ((raws[-2] + raws[-1]) / 2)
                print(f"round {i + 1}: forwarding {got.forwarding:,.0f} msg/s, {ratio:.2f} of raw")
    report(rows=rows, raws=raws, rounds=done, write=write)


def report(*, rows: int, raws: list[float], rounds: list[Round], write: Path | None) -> None:
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    ratios = [r.forwarding / ((raws[i] + raws[i + 1]) / 2) for i, r in enumerate(rounds)]
    during = [ms for r in rounds for ms in r.during]
    idle = rounds[-1].idle
    middle = sorted(range(len(rounds)), key=lambda i: ratios[i])[len(rounds) // 2]
    figures: dict[str, object] = {
        "machine": machine,
        "backlog rows": rows,
        "rounds (raw, drain, raw, ...)": len(rounds),
        "raw paho QoS 1 (msg/s)": " / ".join(f"{r:.0f}" for r in raws),
        "gateway forwarding, first to last PUBACK (msg/s)": " / ".join(
            f"{r.forwarding:.0f}" for r in rounds
        ),
        "forwarding / raw (each round, against the raw runs either side)": " / ".join(
            f"{x:.2f}" for x in ratios
        ),
        "forwarding / raw": round(ratios[middle], 2),
        "backlog / time from process start to drained (msg/s)": round(rounds[middle].end_to_end),
        "drain time from process start (s)": round(rounds[middle].drain_s, 1),
    }
    if idle:
        figures[f"press-to-arrival idle p50 / p99 (ms, poll {POLL_MS} ms)"] = (
            f"{statistics.median(idle):.1f} / {percentile(idle, 0.99):.1f}"
        )
    figures["press-to-arrival during drain p50 / p99 (ms)"] = (
        f"{statistics.median(during):.1f} / {percentile(during, 0.99):.1f}"
        if during
        else "no press completed during the drain"
    )
    figures["presses during drain / idle"] = f"{len(during)} / {len(idle)}"
    if during and idle:
        figures["p99 during drain / idle p99"] = round(
            percentile(during, 0.99) / percentile(idle, 0.99), 2
        )
    print(json.dumps(figures, indent=2))
    if write is not None:
        section = (
            "## Store-and-forward drain (bench/drain.py)\n\n"
            f"Measured {time.strftime('%Y-%m-%d')} on {machine}; mosquitto on loopback; the real "
            f"gateway process; in-flight window {WINDOW}; raw paho and the gateway's drain "
            f"alternate, {len(rounds)} drains, the median round's ratio reported. Command: "
            f"`.venv/bin/python bench/drain.py --rows {rows} --rounds {len(rounds)}`.\n\n"
            "| figure | value |\n| --- | --- |\n"
            + "".join(f"| {k} | {v} |\n" for k, v in figures.items())
            + "\n"
        )
        replace_section(write, "## Store-and-forward drain", section)


def replace_section(path: Path, heading: str, section: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n\n"
    if heading in text:
        start = text.index(heading)
        end = text.find("\n## ", start + len(heading))
        text = text[:start] + section + (text[end + 1 :] if end != -1 else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--presses", type=int, default=100, help="idle presses (at least)")
    parser.add_argument("--rounds", type=int, default=3, help="drains, each between raw runs")
    parser.add_argument("--write", type=Path, help="record the results in this markdown file")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.presses, max(1, args.rounds), args.write))
