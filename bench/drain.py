"""Drain benchmark (issue 3): a backlog of telemetry rows drains to a real mosquitto broker once
it is back, while alarms are pressed; compared with raw paho-mqtt QoS 1 publishing measured in
the same run against the same broker.

    .venv/bin/python bench/drain.py [--rows 1000000] [--alarms 200] [--write docs/benchmarks.md]

Prints: the raw paho rate, the drain rate and their ratio; alarm store-to-arrival latency at
idle and during the drain (p50/p99), and the ratio of the p99s.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway import contract, mqtt
from gateway.events import DeviceRef, Severity, new_event
from gateway.outbox import Outbox
from gateway.routing import Router
from gateway.uplink import Uplink
from simulators.broker import MosquittoBroker
from simulators.listener import Listener, Received, listen

SITE = contract.Site("bench-school", "bench-gate", ZoneInfo("Asia/Shanghai"))
SENSOR = DeviceRef("sensor", "modbus_points", "bench")
BOX = DeviceRef("box", "alarm_box", "bench")
WINDOW = 32


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


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
    done.wait(600)
    elapsed = time.perf_counter() - start
    client.loop_stop()
    client.disconnect()
    return count / elapsed


async def fill_backlog(outbox: Outbox, rows: int) -> None:
    for start in range(0, rows, 10_000):
        for i in range(start, min(rows, start + 10_000)):
            outbox.submit(
                new_event(
                    "telemetry.point",
                    SENSOR,
                    severity=Severity.INFO,
                    occurred_at_ms=1_795_000_000_000 + i,
                    data={"name": "gate_current", "value": i % 1000 / 10, "unit": "A"},
                )
            )
        await outbox.flush()


def _carries(event_id: str, message: Received) -> bool:
    return event_id.encode() in message.payload


async def press(outbox: Outbox, listener: Listener, n: int, gap_s: float) -> list[float]:
    """Store `n` alarms one after another; store-to-arrival latency of each, in ms."""
    latencies = []
    for _ in range(n):
        since = len(listener.messages)
        event = new_event(
            "alarm.panic",
            BOX,
            severity=Severity.CRITICAL,
            occurred_at_ms=time.time_ns() // 1_000_000,
            alarm_id="bench",
        )
        t0 = time.time_ns()
        stored = await outbox.append(event)
        hit = await listener.wait_for(partial(_carries, stored.id), since=since, timeout_s=30)
        latencies.append((hit.arrived_ns - t0) / 1e6)
        await asyncio.sleep(gap_s)
    return latencies


async def main(rows: int, alarms: int, write: Path | None) -> None:
    like = new_event(
        "telemetry.point",
        SENSOR,
        severity=Severity.INFO,
        occurred_at_ms=1,
        data={"name": "gate_current", "value": 1.0, "unit": "A"},
    )
    body = contract.encode_event_body(SITE, dataclasses.replace(like, seq=rows))
    sample = contract.finish_event_payload(body, historical=True, attempt=1)
    with tempfile.TemporaryDirectory() as tmp:
        async with MosquittoBroker("bench") as broker:
            raw = await asyncio.to_thread(raw_paho_rate, broker.port, min(rows, 200_000), sample)
            print(
                f"raw paho QoS 1 rate: {raw:,.0f} msg/s (payload {len(sample)} B, window {WINDOW})"
            )
            router = Router({"police": ["*"]})
            async with Outbox(Path(tmp) / "o.db", SITE, router) as outbox:
                t = time.perf_counter()
                await fill_backlog(outbox, rows)
                print(f"backlog of {rows:,} rows stored in {time.perf_counter() - t:.1f} s")
                params = mqtt.BrokerParams(
                    "127.0.0.1", broker.port, "bench-gw", max_inflight=WINDOW
                )
                uplink = Uplink("police", params, outbox, SITE)
                topic = contract.event_topic(SITE, "alarm")
                async with listen("alarms", "127.0.0.1", broker.port, topic) as listener:
                    task = asyncio.create_task(uplink.run())
                    start = time.perf_counter()
                    during = await press(outbox, listener, alarms, 0.05)
                    # A bounded look every 50 ms: the bench measures, it has nothing to await.
                    while (await outbox.pending_count("police")) > 0:  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
                    drain_s = time.perf_counter() - start
                    idle = await press(outbox, listener, alarms, 0.02)
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
    drain_rate = rows / drain_s
    p50_idle, p99_idle = statistics.median(idle), percentile(idle, 0.99)
    p50_d, p99_d = statistics.median(during), percentile(during, 0.99)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    report = {
        "machine": machine,
        "rows": rows,
        "raw_paho_msgs_per_s": round(raw),
        "drain_msgs_per_s": round(drain_rate),
        "drain_to_raw_ratio": round(drain_rate / raw, 2),
        "alarm_ms_idle_p50": round(p50_idle, 1),
        "alarm_ms_idle_p99": round(p99_idle, 1),
        "alarm_ms_drain_p50": round(p50_d, 1),
        "alarm_ms_drain_p99": round(p99_d, 1),
        "alarm_p99_drain_to_idle_ratio": round(p99_d / p99_idle, 2),
        "alarms_pressed_during_drain": len(during),
    }
    print(json.dumps(report, indent=2))
    if write is not None:
        section = (
            "## Store-and-forward drain (bench/drain.py)\n\n"
            f"Measured {time.strftime('%Y-%m-%d')} on {machine}, mosquitto on loopback, "
            f"in-flight window {WINDOW}, command "
            f"`.venv/bin/python bench/drain.py --rows {rows}`.\n\n"
            "| figure | value |\n| --- | --- |\n"
            + "".join(f"| {k} | {v} |\n" for k, v in report.items())
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
    parser.add_argument("--alarms", type=int, default=200)
    parser.add_argument("--write", type=Path, help="record the results in this markdown file")
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.alarms, args.write))
