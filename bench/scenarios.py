"""The issue-6 benchmark scenarios, each run the same way against any gateway in
`bench/subjects.py` (schoolgate) or `bench/thingsboard/tb.py` (ThingsBoard): alarm latency
(Modbus TCP, and on a shared RTU line), throughput, outage and drain, footprint, short presses.
Every function starts its own brokers and simulators, runs one gateway process, and returns
plain data (lists and numbers) for `bench/run_all.py` to compare and report. Nothing here
writes files outside `workdir`.

Presses are timed from the moment the simulated contact closes (`time.time_ns()` in this
process) to the arrival of the gateway's message at a subscriber on the broker (stamped by the
same clock), so the figure is what a police receiver would see.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from counting import count_window, first_arrivals, per_cpu_second
from loadsim import LoadSim
from procstat import measuring, memory_kb
from subjects import Counter, Layout, RtuLine, Running

from simulators.broker import MosquittoBroker, free_port
from simulators.demo import guard_section
from simulators.dido import DiDoModule, serve_tcp
from simulators.gate import simulated_gate
from simulators.listener import Listener, Received, listen
from simulators.measure import percentile
from simulators.modbus_serve import serve_rtu
from simulators.vserial import VirtualSerialLink

DEBOUNCE_MS = 30
MISS_AFTER_S = 1.5
"""A press held this long without arriving counts as never arrived: over three times the
longest press-to-arrival either gateway has shown on Modbus TCP (ThingsBoard 447.7 ms in the
2026-11-24 suite run, 200 presses per interval; schoolgate 143.2 ms)."""
LATE_WAIT_S = 0.5
"""After a missed press: how long the bench still watches for it (and lets the release be
polled) before the next press."""


def stable_port() -> int:
    """A free port below the ephemeral range: a broker that is stopped and started again must
    get its port back, and on a busy machine an outgoing connection can take an ephemeral one
    in the meantime (it happened: mosquitto could not restart after a 20 s outage)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class Subject(Protocol):
    name: str
    brokers: tuple[str, ...]
    listen_filter: str

    def run(
        self, layout: Layout, workdir: Path
    ) -> contextlib.AbstractAsyncContextManager[Running]: ...


class FirstPollBox(DiDoModule):
    """A DI/DO module that remembers when it was first read: the gateway's first poll."""

    first_read_ns: int | None = None

    async def _on_access(self, *args: Any) -> Any:
        if self.first_read_ns is None:
            self.first_read_ns = time.time_ns()
        return await super()._on_access(*args)


def summary(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "mean": statistics.fmean(values),
    }


async def wait_first_data(running: Running, listener: Listener, timeout_s: float = 60) -> None:
    if running.first_data is not None:
        await listener.wait_for(running.first_data, timeout_s=timeout_s)


async def press_once(
    box: DiDoModule,
    listener: Listener,
    running: Running,
    poll_ms: int,
    timeout_s: float = 10,
    *,
    gap_s: float | None = None,
    late: list[float] | None = None,
) -> float | None:
    """One press held until it arrives; the latency in ms, or None if it never arrived within
    `timeout_s`. The button is then released and the bench waits up to `LATE_WAIT_S` more: a
    message showing the press that comes in that time is still "never arrived" (too late
    for the window) but its latency goes to `late`, so a window that cut a slow delivery short
    would show. The next press follows `gap_s` (default: two polls and the debounce) plus a
    random fraction of a poll."""
    since = len(listener.messages)
    pressed = time.time_ns()
    box.press(0)
    try:
        arrived = await listener.wait_for(running.press_arrived, since=since, timeout_s=timeout_s)
    except TimeoutError:
        box.release(0)
        with contextlib.suppress(TimeoutError):
            slow = await listener.wait_for(
                running.press_arrived, since=since, timeout_s=LATE_WAIT_S
            )
            if late is not None:
                late.append((slow.arrived_ns - pressed) / 1e6)
            await running.after_press(slow, listener)
        await _gap(poll_ms, gap_s)
        return None
    box.release(0)
    await running.after_press(arrived, listener)
    await _gap(poll_ms, gap_s)
    return (arrived.arrived_ns - pressed) / 1e6


async def _gap(poll_ms: int, gap_s: float | None) -> None:
    # The release must be seen by a poll and outlast the debounce before the next press; the
    # random part lands presses at every phase of the poll cycle, as a person's would.
    base_s = gap_s if gap_s is not None else (2 * poll_ms + DEBOUNCE_MS) / 1000
    await asyncio.sleep(base_s + random.uniform(0, poll_ms) / 1000)


@contextlib.asynccontextmanager
async def _box_run(
    subject: Subject, workdir: Path, poll_ms: int, box: DiDoModule
) -> AsyncIterator[tuple[Running, Listener]]:
    async with (
        MosquittoBroker("police") as police,
        serve_tcp(box) as (_, port),
        listen("police", "127.0.0.1", police.port, subject.listen_filter) as listener,
    ):
        layout = Layout(police_port=police.port, box_port=port, box_poll_ms=poll_ms)
        async with subject.run(layout, workdir) as running:
            await wait_first_data(running, listener)
            yield running, listener


async def latency(
    subject: Subject,
    workdir: Path,
    *,
    poll_ms: int,
    presses: int,
    budget_s: float | None = None,
    miss_after_s: float = MISS_AFTER_S,
) -> dict[str, Any]:
    """Press-to-arrival over Modbus TCP at one poll interval, `presses` times or until
    `budget_s` is spent (a safety net: the report says when it cut a run short). A press held
    `miss_after_s` without arriving counts as never arrived."""
    box = DiDoModule(1)
    async with _box_run(subject, workdir, poll_ms, box) as (running, listener):
        await asyncio.sleep(1)
        return await _presses(
            box,
            listener,
            running,
            poll_ms=poll_ms,
            presses=presses,
            budget_s=budget_s,
            miss_after_s=miss_after_s,
        )


async def _presses(
    box: DiDoModule,
    listener: Listener,
    running: Running,
    *,
    poll_ms: int,
    presses: int,
    budget_s: float | None,
    miss_after_s: float,
    gap_s: float | None = None,
) -> dict[str, Any]:
    latencies: list[float] = []
    late: list[float] = []
    missed = 0
    started = time.monotonic()
    stop_at = started + budget_s if budget_s else None
    async with measuring(running.pid) as usage:
        for _ in range(presses):
            if stop_at is not None and time.monotonic() > stop_at:
                break
            got = await press_once(
                box, listener, running, poll_ms, timeout_s=miss_after_s, gap_s=gap_s, late=late
            )
            if got is None:
                missed += 1
            else:
                latencies.append(got)
    return {
        "poll_ms": poll_ms,
        "latencies_ms": latencies,
        "presses": len(latencies) + missed,
        "presses_asked": presses,
        "missed": missed,
        "late_ms": late,
        "miss_after_s": miss_after_s,
        "budget_s": budget_s,
        "wall_s": time.monotonic() - started,
        "cpu_percent": usage.cpu_percent,
        **{k: v for k, v in summary(latencies).items()},
    }


RELEASE_WAIT_S = 5.0
"""Short presses: how long the bench waits for a delivered press's release to reach the broker
(over ten times either gateway's press-to-arrival p99 on Modbus TCP)."""

RTU_GAP_S = 0.5
"""Between presses on the shared line (bench/shared_line.py's pause): a person's presses are
seconds apart, and after a press the latch, the lamp writes and the other units take the line."""


async def rtu_latency(
    subject: Subject,
    workdir: Path,
    *,
    presses: int,
    budget_s: float | None = None,
    miss_after_s: float = MISS_AFTER_S,
    box_poll_ms: int = 50,
    other_poll_ms: int = 200,
    baudrate: int = 9600,
    timeout_ms: int = 100,
) -> dict[str, Any]:
    """bench/shared_line.py's end-to-end set-up for any subject: the alarm box (unit 1, polled
    every `box_poll_ms`) and four insert-type bollard socket DI modules (units 2-5, every
    `other_poll_ms`, unit 5 dead) on one emulated `baudrate` RTU line
    (`VirtualSerialLink`: every byte takes its wire time), line timeout `timeout_ms`. After
    the dead unit is seen offline (the steady state), presses as in `latency`, `RTU_GAP_S`
    apart; press -> arrival at the police broker."""
    line = RtuLine(port="", baudrate=baudrate, timeout_ms=timeout_ms, other_poll_ms=other_poll_ms)
    box = DiDoModule(line.alarm_unit)
    modules = {unit: DiDoModule(unit) for unit in line.other_units}
    if line.dead_unit is not None:
        modules[line.dead_unit].silent = True
    async with (
        MosquittoBroker("police") as police,
        MosquittoBroker("bureau") as bureau,
        VirtualSerialLink(baudrate=baudrate) as link,
        serve_rtu({line.alarm_unit: box, **modules}, link.device_end, baudrate=baudrate),
        listen("police", "127.0.0.1", police.port, subject.listen_filter) as listener,
    ):
        line.port = link.host_end
        layout = Layout(
            police_port=police.port, bureau_port=bureau.port, box_poll_ms=box_poll_ms, rtu=line
        )
        async with subject.run(layout, workdir) as running:
            await wait_first_data(running, listener)
            offline_after_s: float | None = None
            if running.device_offline is not None:
                found = await listener.wait_for(running.device_offline, timeout_s=30)
                offline_after_s = (found.arrived_ns - running.spawned_ns) / 1e9
            await asyncio.sleep(1)
            first = len(listener.messages)
            result = await _presses(
                box,
                listener,
                running,
                poll_ms=box_poll_ms,
                presses=presses,
                budget_s=budget_s,
                miss_after_s=miss_after_s,
                gap_s=RTU_GAP_S,
            )
            offline = running.device_offline
            during = listener.messages[first:]
            reports = sum(1 for m in during if offline(m)) if offline else None
    return {
        **result,
        "dead_offline_reports": reports,
        "baudrate": baudrate,
        "timeout_ms": timeout_ms,
        "other_poll_ms": other_poll_ms,
        "dead_offline_after_start_s": offline_after_s,
    }


async def short_presses(
    subject: Subject, workdir: Path, *, poll_ms: int, hold_ms: int, presses: int
) -> dict[str, Any]:
    """Presses shorter than the poll interval: how many does a receiver ever get? After each
    delivered press the bench waits (up to `RELEASE_WAIT_S`) for the message that shows the
    button back to normal to reach the broker (`Running.release_arrived`), for both gateways
    alike, so the next press is never merged with an unreported release."""
    box = DiDoModule(1)
    delivered = 0
    releases_missing = 0
    async with _box_run(subject, workdir, poll_ms, box) as (running, listener):
        await asyncio.sleep(1)
        for _ in range(presses):
            since = len(listener.messages)
            await asyncio.sleep(random.uniform(0, poll_ms) / 1000)
            await box.pulse(0, hold_ms)
            try:
                arrived = await listener.wait_for(running.press_arrived, since=since, timeout_s=2)
            except TimeoutError:
                continue
            delivered += 1
            await running.after_press(arrived, listener)
            try:
                await listener.wait_for(
                    running.release_arrived, since=since, timeout_s=RELEASE_WAIT_S
                )
            except TimeoutError:
                releases_missing += 1
            await asyncio.sleep(2 * poll_ms / 1000)
    return {
        "poll_ms": poll_ms,
        "hold_ms": hold_ms,
        "presses": presses,
        "delivered": delivered,
        "waited_for_release": True,
        "releases_missing": releases_missing,
    }


async def _first_arrival(counter: Counter, timeout_s: float = 60) -> None:
    """The counter's thread records arrivals; this samples it (there is no event to await)."""
    async with asyncio.timeout(timeout_s):
        while not counter.arrivals:  # noqa: ASYNC110 - filled by paho's thread
            await asyncio.sleep(0.05)


async def _settle(counters: list[Counter], quiet_s: float, limit_s: float) -> float:
    """Wait until no datapoint arrives for `quiet_s`; returns how long that took."""
    start = time.monotonic()
    last = -1
    quiet_since = time.monotonic()
    while time.monotonic() - start < limit_s:
        now = sum(len(c.arrivals) for c in counters)
        if now != last:
            last, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            break
        await asyncio.sleep(0.1)
    return time.monotonic() - start - quiet_s


async def throughput(
    subject: Subject,
    workdir: Path,
    *,
    devices: int,
    points: int,
    period_ms: int,
    poll_ms: int,
    window_s: float,
    destinations: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """`devices` x `points` registers changing every `period_ms`, polled every `poll_ms`;
    what reaches each broker during `window_s`, and the gateway's CPU and peak RSS.

    `destinations`: the brokers the gateway is configured to send every datapoint to, of
    `subject.brokers` (default: all of them); a broker left out is not configured at all.
    Counted per unique datapoint and per delivery (`counting.count_window`)."""
    chosen = destinations or subject.brokers
    unknown = set(chosen) - set(subject.brokers)
    if unknown:
        raise ValueError(f"{subject.name} cannot send to {sorted(unknown)}")
    sim = LoadSim(devices, points, period_ms)
    async with (
        MosquittoBroker("police") as police,
        MosquittoBroker("bureau") as bureau,
        sim.running(),
    ):
        ports = {"police": police.port, "bureau": bureau.port}
        layout = Layout(
            police_port=police.port,
            bureau_port=bureau.port if "bureau" in chosen else None,
            load_port=sim.port,
            load_devices=devices,
            load_points=points,
            load_poll_ms=poll_ms,
            telemetry_to_police=True,
        )
        async with subject.run(layout, workdir) as running:
            with contextlib.ExitStack() as stack:
                counters = [
                    stack.enter_context(
                        Counter(name, ports[name], running.telemetry_filter, running.parse)
                    )
                    for name in chosen
                ]
                await _first_arrival(counters[0])
                await asyncio.sleep(2)  # past the start-up burst
                first_tick = sim.tick + 1
                async with measuring(running.pid) as usage, measuring(sim.pid) as sim_usage:
                    start_ns = time.time_ns()
                    await asyncio.sleep(window_s)
                    end_ns = time.time_ns()
                last_tick = sim.tick
                await sim.stop_changes()
                backlog_s = await _settle(counters, 2.0, 60.0)
                peak_mb = memory_kb(running.pid).get("VmHWM", 0) / 1024
    changes = (last_tick - first_tick + 1) * devices * points
    arrivals = {counter.name: counter.snapshot() for counter in counters}
    window = count_window(arrivals, start_ns, end_ns)
    per_broker = {}
    for counter in counters:
        unique = first_arrivals(arrivals[counter.name], first_tick, last_tick)
        per_broker[counter.name] = {
            "datapoints_per_s": window.deliveries[counter.name] / usage.wall_s,
            "messages": counter.messages,
            "fraction_delivered": len(unique) / changes if changes else 0.0,
            "duplicates": sum(1 for _, p in arrivals[counter.name] if p in unique) - len(unique),
        }
    return {
        "devices": devices,
        "points": points,
        "changes_per_s": devices * points * 1000 / period_ms,
        "window_s": usage.wall_s,
        "destinations": list(chosen),
        "brokers": per_broker,
        "unique": window.unique,
        "deliveries": window.total_deliveries,
        "unique_per_s": window.unique / usage.wall_s,
        "deliveries_per_s": window.total_deliveries / usage.wall_s,
        "fraction_delivered": min(b["fraction_delivered"] for b in per_broker.values()),
        "cpu_percent": usage.cpu_percent,
        "cpu_s": usage.cpu_s,
        "unique_per_cpu_s": per_cpu_second(window.unique, usage.cpu_s),
        "deliveries_per_cpu_s": per_cpu_second(window.total_deliveries, usage.cpu_s),
        "peak_rss_mb": peak_mb,
        "sim_cpu_percent": sim_usage.cpu_percent,
        "backlog_after_window_s": backlog_s,
    }


async def outage(
    subject: Subject,
    workdir: Path,
    *,
    down_s: float,
    devices: int = 20,
    points: int = 5,
    period_ms: int = 200,
    poll_ms: int = 100,
    box_poll_ms: int = 50,
) -> dict[str, Any]:
    """The police broker stops for `down_s` while registers keep changing and a button is
    pressed; then it comes back. Lost, duplicated, first delivery after the return, drain
    time, and alarm latency while the backlog drains."""
    sim = LoadSim(devices, points, period_ms)
    box = DiDoModule(1)
    async with (
        MosquittoBroker("police", stable_port()) as police,
        MosquittoBroker("bureau") as bureau,
        sim.running(),
        serve_tcp(box) as (_, box_port),
        listen("police", "127.0.0.1", police.port, subject.listen_filter) as listener,
    ):
        layout = Layout(
            police_port=police.port,
            bureau_port=bureau.port,
            box_port=box_port,
            box_poll_ms=box_poll_ms,
            load_port=sim.port,
            load_devices=devices,
            load_points=points,
            load_poll_ms=poll_ms,
            telemetry_to_police=True,
        )
        async with subject.run(layout, workdir) as running:
            with Counter("police", police.port, running.telemetry_filter, running.parse) as counter:
                await wait_first_data(running, listener)
                await _first_arrival(counter)
                await asyncio.sleep(2)
                first_tick = sim.tick + 1
                before = [await press_once(box, listener, running, box_poll_ms) for _ in range(5)]
                # graceful: mosquitto keeps the subscriber's session, so what the broker had
                # accepted before it went down is not counted against the gateway.
                tick_at_down = sim.tick
                await police.stop(graceful=True)
                down_at = time.time_ns()
                await asyncio.sleep(down_s / 2)
                since = len(listener.messages)
                pressed_down = time.time_ns()
                await box.pulse(0, 3 * box_poll_ms)
                await asyncio.sleep(down_s / 2)
                tick_at_up = sim.tick
                await police.start()
                up_at = time.time_ns()
                held: Received | None = None
                with contextlib.suppress(TimeoutError):
                    held = await listener.wait_for(running.press_arrived, since=since, timeout_s=90)
                if held is not None:
                    await running.after_press(held, listener)
                # Presses while the backlog drains, until every change made before the return
                # has arrived (or 90 s).
                during: list[float] = []
                drained_at: int | None = None
                deadline = time.monotonic() + 90
                while time.monotonic() < deadline:
                    got = await press_once(box, listener, running, box_poll_ms, timeout_s=60)
                    if got is not None:
                        during.append(got)
                    backlog = first_arrivals(counter.snapshot(), first_tick, tick_at_up)
                    if len(backlog) >= (tick_at_up - first_tick + 1) * devices * points:
                        drained_at = max(backlog.values())
                        break
                await asyncio.sleep(2)
                last_tick = await sim.stop_changes()
                await _settle([counter], 3.0, 60.0)
                arrivals = counter.snapshot()
    expected = (last_tick - first_tick + 1) * devices * points
    unique = first_arrivals(arrivals, first_tick, last_tick)
    after_up = sorted(at for at, _ in arrivals if at >= up_at)
    curve_ms = [(at - up_at) / 1e6 for at in after_up]
    # The broker hands the subscriber what it had queued before it stopped as soon as the
    # subscriber is back: the gateway's first delivery is the first change made while it was down.
    fresh = [
        at
        for at, point in arrivals
        if at >= up_at and isinstance(point[2], int | float) and point[2] > tick_at_down
    ]
    backlog_points = (tick_at_up - first_tick + 1) * devices * points
    drain_s = (drained_at - up_at) / 1e9 if drained_at is not None else None
    return {
        "down_s": down_s,
        "devices": devices,
        "points": points,
        "period_ms": period_ms,
        "poll_ms": poll_ms,
        "changes": expected,
        "delivered_unique": len(unique),
        "lost": expected - len(unique),
        "duplicates": sum(1 for _, p in arrivals if p in unique) - len(unique),
        "first_delivery_after_up_s": (min(fresh) - up_at) / 1e9 if fresh else None,
        "drain_s": drain_s,
        "backlog_datapoints": backlog_points,
        "press_during_outage_delivered_after_up_s": (
            (held.arrived_ns - up_at) / 1e9 if held is not None else None
        ),
        "press_during_outage_total_s": (
            (held.arrived_ns - pressed_down) / 1e9 if held is not None else None
        ),
        "latency_before_ms": [x for x in before if x is not None],
        "latency_during_drain_ms": during,
        "drain_curve_ms": curve_ms,
        "down_at_ns": down_at,
    }


async def footprint_single(subject: Subject, workdir: Path, *, idle_s: float) -> dict[str, Any]:
    """One alarm box polled each second (the orientation figure's set-up): start-up to the
    first poll, then CPU and RSS at idle."""
    box = FirstPollBox(1)
    async with _box_run(subject, workdir, 1000, box) as (running, _listener):
        startup_s = ((box.first_read_ns or 0) - running.spawned_ns) / 1e9
        await asyncio.sleep(2)
        async with measuring(running.pid) as usage:
            await asyncio.sleep(idle_s)
    return {
        "startup_to_first_poll_s": startup_s,
        "idle_cpu_percent": usage.cpu_percent,
        "idle_wakeups_per_s": usage.wakeups_per_s,
        "idle_cpu_us_per_wakeup": usage.cpu_us_per_wakeup,
        "idle_rss_mb": usage.rss_mb,
        "peak_rss_mb": usage.peak_mb,
    }


SIGNED = """
[security]
gateway_key_file = "{key}"
gateway_key_id = "bench-gate"
[[security.trusted_keys]]
id = "bench-console"
public_key = "{console_pub}"
commands = ["*"]
"""


async def footprint_demo_gate(
    workdir: Path, *, idle_s: float, signed: bool = False, guard_page: bool = False
) -> dict[str, Any]:
    """schoolgate with the demo gate's devices (simulators.gate) at their default intervals;
    `signed`: with a [security] section (events signed, commands verified), which loads
    `cryptography`; `guard_page`: with the demo's `[guard]` section (the guard page served on
    loopback, no browser connected), which loads aiohttp and the page."""
    extra = guard_section(free_port()) if guard_page else ""
    if signed:
        from gateway.core import keys  # noqa: PLC0415 - cryptography only for this variant

        gateway_key = keys.write_key_pair(workdir / "keys", "bench-gate")
        console_key = keys.write_key_pair(workdir / "keys", "bench-console")
        extra += SIGNED.format(key=gateway_key.private_key, console_pub=console_key.public_b64)
    async with simulated_gate(workdir, extra_config=extra) as gate:
        pid = gate.gateway.pid
        stat = Path(f"/proc/{pid}/stat").read_text()  # noqa: ASYNC240 - tiny /proc reads
        start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])  # noqa: ASYNC240
        started_wall = time.time() - (uptime_s - start_ticks / os.sysconf("SC_CLK_TCK"))
        ready_wall = None
        for line in gate.log_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if entry.get("event") == "devices_ready":
                    ready_wall = datetime.fromisoformat(entry["timestamp"]).timestamp()
                    break
        await asyncio.sleep(2)
        async with measuring(pid) as usage:
            await asyncio.sleep(idle_s)
    return {
        "startup_to_all_devices_polled_s": (
            ready_wall - started_wall if ready_wall is not None else None
        ),
        "idle_cpu_percent": usage.cpu_percent,
        "idle_wakeups_per_s": usage.wakeups_per_s,
        "idle_cpu_us_per_wakeup": usage.cpu_us_per_wakeup,
        "idle_rss_mb": usage.rss_mb,
        "peak_rss_mb": usage.peak_mb,
    }


async def reconnects(
    subject: Subject, workdir: Path, *, cycles: int, down_s: float
) -> dict[str, Any]:
    """The police broker stops for `down_s` and comes back, `cycles` times, while 5 devices
    change a register every 200 ms: the time from each return to the first change made while
    it was down arriving (the reconnect delay is random in a jittered backoff, so one outage
    says little)."""
    sim = LoadSim(5, 1, 200)
    async with MosquittoBroker("police", stable_port()) as police, sim.running():
        layout = Layout(
            police_port=police.port,
            load_port=sim.port,
            load_devices=5,
            load_points=1,
            load_poll_ms=100,
            telemetry_to_police=True,
        )
        async with subject.run(layout, workdir) as running:
            with Counter("police", police.port, running.telemetry_filter, running.parse) as counter:
                await _first_arrival(counter)
                delays: list[float | None] = []
                for _ in range(cycles):
                    await asyncio.sleep(2)
                    tick_at_down = sim.tick
                    await police.stop(graceful=True)
                    await asyncio.sleep(down_s)
                    await police.start()
                    up_at = time.time_ns()
                    found = None
                    deadline = time.monotonic() + 60
                    while found is None and time.monotonic() < deadline:
                        await asyncio.sleep(0.02)
                        fresh = [
                            at
                            for at, point in counter.snapshot()
                            if at >= up_at and isinstance(point[2], int) and point[2] > tick_at_down
                        ]
                        found = (min(fresh) - up_at) / 1e9 if fresh else None
                    delays.append(found)
    got = [d for d in delays if d is not None]
    return {
        "cycles": cycles,
        "down_s": down_s,
        "first_delivery_s": delays,
        "never": len(delays) - len(got),
        **({"p50": statistics.median(got), "max": max(got)} if got else {}),
    }


FLOOR = """
import asyncio, sqlite3, sys
import aiomqtt, pydantic, pymodbus.client, serial_asyncio_fast, structlog
if sys.argv[2] == "page":
    import aiohttp.web


class Config(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)
    name: str = "floor"


Config()
print("ready", flush=True)
asyncio.run(asyncio.sleep(float(sys.argv[1])))
"""


async def footprint_floor(*, idle_s: float, page: bool = False) -> dict[str, Any]:
    """What the stack alone costs: one interpreter that imports the libraries the gateway is
    built on (asyncio, aiomqtt with paho and ssl, pydantic with one model built, pymodbus's
    clients, pyserial-asyncio-fast, structlog, sqlite3) and sleeps. No gateway code, no device,
    no connection: the floor under any gateway on this stack. With `page`, aiohttp.web too (the
    server the brief prescribes for the guard page): the floor under the page-on row."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FLOOR,
        str(idle_s + 5),
        "page" if page else "no-page",
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        await proc.stdout.readline()
        await asyncio.sleep(1)
        async with measuring(proc.pid) as usage:
            await asyncio.sleep(idle_s)
    finally:
        proc.kill()
        await proc.wait()
    return {"idle_cpu_percent": usage.cpu_percent, "idle_rss_mb": usage.rss_mb}
