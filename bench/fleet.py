"""Fleet benchmark (issue 15): N simulated gateways and one `schoolgate console` process on a
3-node RabbitMQ cluster, then, in the same run, the same N gateways and console on one idle
mosquitto. Not a unit test.

    .venv/bin/python bench/fleet.py [--gateways 1000] [--real 3] [--measure-s 60]
                                    [--alarms-per-s 2] [--only cluster|mosquitto] [--json FILE]
                                    [--side-by-side] [--connect-rate 100] [--connect-window 100]
                                    [--connect-timeout-s 30] [--keepalive-s 60]

For each target it measures, and prints as JSON:
- the ramp: every simulated gateway's first connection attempt is paced (`--connect-rate` per
  second, at most `--connect-window` handshakes open; simulators/fleet_pacing.py); "all N up
  after X s (ramp Y s)": X from the fleet's start to the last gateway's first session up, Y to
  the last gateway's first attempt (what the pacing alone takes), and how many attempts failed;
- press-to-console latency p50/p99 of alarms pressed at random gateways during a steady window
  (press in the simulator -> the `alarm.panic` line read from the console's `--json` output),
  with every gateway sending a heartbeat every 30 s and one device event a minute;
- the same for `--real` REAL gateway processes (`schoolgate run`, an alarm box on a simulated
  DI/DO module, the broker's nodes as `nodes`), pressed in turn once a second: press of the
  simulated button -> that school's alarm line at the console; on the cluster also across the
  node kill (a real gateway on the killed node fails over by itself);
- the console process's CPU (percent of one core over the window) and RSS (median, peak);
- on the cluster only: SIGKILL of node `a` (about a third of the gateways are on it; the
  console is on `c`) while alarms go on being pressed, and the time until every gateway is
  connected again (to another node);
- events lost (produced by a gateway, never shown by the console) and duplicated (shown more
  than once) over the whole target, alarms and device events together;
- on the cluster only: each RabbitMQ node's memory, the resident set of its `beam.smp` read from
  /proc every 2 s over the whole target (peak, and the last reading: at the end, or before its
  kill) and `rabbitmqctl status`'s own total after the steady window;
- with `--side-by-side`, on the cluster target: the real gateways also send their alarms to an
  idle single mosquitto with its own console (a second destination, so each press is stored
  once and timed on both paths at the same moment), and the two press-to-console rows are
  printed next to each other.

Owns the run, the console subprocess and the figures; it does not write docs/benchmarks.md
(figures are copied there by hand with the machine noted). The simulated gateways run in this
process, so their latency includes this process's own scheduling under load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from procstat import Usage, in_session, loadavg, machine, measuring, memory_kb  # noqa: E402
from real_gates import RealGate, real_gates  # noqa: E402

from simulators.broker import MosquittoBroker  # noqa: E402
from simulators.fleet import Fleet, FleetOptions  # noqa: E402
from simulators.fleet_cli import add_connect_arguments, connect_options  # noqa: E402
from simulators.rabbitmq import RabbitCluster, RabbitError  # noqa: E402

_SCHOOLGATE = ROOT / ".venv" / "bin" / "schoolgate"


PRESS_TYPES: Final = frozenset({"alarm.panic", "alarm.panic_repeated"})
"""The events a press of a latched or unlatched button makes (`gateway.alarms.latch`)."""


@dataclass
class ConsoleProcess:
    """`schoolgate console --json` as a subprocess; every event line it prints, by id, with the
    monotonic time this process read it."""

    port: int
    keys_dir: Path
    client_id: str = "bench-desk"
    seen: dict[str, list[float]] = field(default_factory=dict)
    alarms_by_school: dict[str, list[float]] = field(default_factory=dict)
    """When each press of a school arrived (`PRESS_TYPES`; the real gateways' presses are matched
    here). Not any `alarm.*`: an unacknowledged alarm's `alarm.escalated`, 30 s after it opened,
    would otherwise pass for a press that never arrived."""
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            now = time.monotonic()
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if record.get("console") == "broker" and record.get("state") == "connected":
                self.connected.set()
            elif "console" not in record and isinstance(record.get("id"), str):
                first = record["id"] not in self.seen
                self.seen.setdefault(record["id"], []).append(now)
                if first and record.get("type") in PRESS_TYPES:
                    school = str(record.get("school"))
                    self.alarms_by_school.setdefault(school, []).append(now)
                self.changed.set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ConsoleProcess]:
        self.proc = await asyncio.create_subprocess_exec(
            str(_SCHOOLGATE),
            "console",
            "--json",
            "--port",
            str(self.port),
            "--client-id",
            self.client_id,
            "--gateway-keys",
            str(self.keys_dir),
            "--silent-after",
            "120",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        reader = asyncio.create_task(self._read(), name="bench:console-reader")
        try:
            yield self
        finally:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            await self.proc.wait()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def wait_seen(self, ids: Sequence[str], timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while any(i not in self.seen for i in ids):
                    self.changed.clear()
                    await self.changed.wait()


@dataclass
class Produced:
    """What the fleet produced during a target: id -> monotonic press time (alarms) and the
    device events' ids."""

    alarms: dict[str, float] = field(default_factory=dict)
    measured: list[str] = field(default_factory=list)
    """Alarms pressed in the steady window (the latency sample)."""
    events: list[str] = field(default_factory=list)


async def _traffic(fleet: Fleet, produced: Produced, alarms_per_s: float, measure: bool) -> None:
    """Alarms at `alarms_per_s` and one device event per gateway a minute, fleet-wide."""
    events_per_s = len(fleet.gateways) / 60.0
    next_alarm = next_event = time.monotonic()
    while True:
        now = time.monotonic()
        if now >= next_alarm:
            event = random.choice(fleet.gateways).press()
            produced.alarms[event.id] = time.monotonic()
            if measure:
                produced.measured.append(event.id)
            next_alarm = now + random.expovariate(alarms_per_s)
        if now >= next_event:
            produced.events.append(random.choice(fleet.gateways).device_event().id)
            next_event = now + random.expovariate(events_per_s)
        await asyncio.sleep(max(0.0, min(next_alarm, next_event) - time.monotonic()))


@dataclass
class RealPresses:
    """The real gateways' presses: how many, and press-to-console latencies of those shown."""

    pressed: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    missing: int = 0


Watched = Sequence[tuple[ConsoleProcess, RealPresses]]
"""The consoles a real press is timed at, each with its own figures (one, or two side by side)."""


async def _press_real(gates: Sequence[RealGate], watched: Watched, every_s: float) -> None:
    """Press the real gateways in turn, each press awaited at every console (bounded)."""
    while True:
        for gate in gates:
            await _press_once(gate, watched)
            await asyncio.sleep(every_s)


async def _press_once(gate: RealGate, watched: Watched) -> None:
    shown = [len(console.alarms_by_school.get(gate.school, ())) for console, _ in watched]
    pressed_at = await gate.press()
    for (console, out), before in zip(watched, shown, strict=True):
        out.pressed += 1
        try:
            async with asyncio.timeout(60):
                while len(console.alarms_by_school.get(gate.school, ())) <= before:
                    console.changed.clear()
                    await console.changed.wait()
            # The reader stamped its arrival: waiting for one console does not delay another's.
            arrived = console.alarms_by_school[gate.school][before]
            out.latencies_ms.append((arrived - pressed_at) * 1000)
        except TimeoutError:
            out.missing += 1


def _pressing_real(
    gates: Sequence[RealGate], watched: Watched
) -> contextlib.AbstractAsyncContextManager[None]:
    return _in_background(_press_real(gates, watched, 1.0), "bench:real")


def _real_figures(out: RealPresses) -> dict[str, Any]:
    values = out.latencies_ms
    return {
        "presses": out.pressed,
        "shown": len(values),
        "not_shown_within_60_s": out.missing,
        "p50": round(statistics.median(values), 1) if values else None,
        "p99": round(_percentile(values, 0.99) or 0.0, 1) if values else None,
        "max": round(max(values), 1) if values else None,
    }


async def _progress(name: str, fleet: Fleet) -> None:
    began = time.monotonic()
    while True:
        await asyncio.sleep(10.0)
        print(
            json.dumps(
                {
                    "target": name,
                    "after_s": round(time.monotonic() - began),
                    "connected": fleet.connected(),
                    "load": loadavg(),
                }
            ),
            file=sys.stderr,
            flush=True,
        )


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _usage(usage: Usage) -> dict[str, float]:
    return {
        "cpu_percent_of_one_core": round(usage.cpu_percent, 1),
        "rss_mb_median": round(usage.rss_mb, 1),
        "rss_mb_peak": round(usage.peak_mb, 1),
    }


def _pressing(
    fleet: Fleet, produced: Produced, alarms_per_s: float, *, measure: bool
) -> contextlib.AbstractAsyncContextManager[None]:
    return _in_background(_traffic(fleet, produced, alarms_per_s, measure), "bench:traffic")


@contextlib.asynccontextmanager
async def _in_background(work: Coroutine[Any, Any, None], name: str) -> AsyncIterator[None]:
    """`work` runs while the block runs, and is cancelled when it ends."""
    task = asyncio.create_task(work, name=name)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _ramp(fleet: Fleet, began: float) -> dict[str, Any]:
    """When the gateways were first up, from the fleet's start (the pacing's figures)."""
    ups = sorted(g.first_up_at - began for g in fleet.gateways if g.first_up_at is not None)
    tries = [g.first_attempt_at - began for g in fleet.gateways if g.first_attempt_at is not None]
    figures: dict[str, Any] = {
        "connect_rate_per_s": fleet.pacer.rate_per_s,
        "connect_window": fleet.pacer.window,
        "up": f"{len(ups)} of {len(fleet.gateways)}",
        "ramp_s": round(max(tries), 1) if tries else None,
        "failed_attempts": sum(g.attempts for g in fleet.gateways) - len(ups),
    }
    if ups:
        figures |= {"first_up_p50_s": round(ups[len(ups) // 2], 1), "all_up_s": round(ups[-1], 1)}
    if len(ups) == len(fleet.gateways):
        figures["summary"] = f"all {len(ups)} up after {ups[-1]:.1f} s (ramp {figures['ramp_s']} s)"
    return figures


@dataclass
class NodeMemory:
    """One RabbitMQ node's beam.smp resident set over a target, in kB."""

    peak_kb: int = 0
    last_kb: int = 0
    samples: int = 0


async def _sample_rabbit_memory(
    cluster: RabbitCluster, found: dict[str, NodeMemory], every_s: float = 2.0
) -> None:
    """RSS of each running node's beam.smp (its session's; /proc) every `every_s`."""
    while True:
        for node in cluster.nodes:
            proc = node.proc
            beam = None if proc is None else in_session(proc.pid, "beam.smp")
            if beam is None:
                continue  # killed, or not booted yet: the last reading stays
            with contextlib.suppress(OSError):
                rss = memory_kb(beam).get("VmRSS", 0)
                memory = found.setdefault(node.name, NodeMemory())
                memory.peak_kb = max(memory.peak_kb, rss)
                memory.last_kb = rss
                memory.samples += 1
        await asyncio.sleep(every_s)


async def _rabbitmqctl_totals(cluster: RabbitCluster) -> dict[str, Any]:
    """Each running node's own memory total (`rabbitmqctl status`), in MB."""
    totals: dict[str, Any] = {}
    for node in cluster.nodes:
        if not node.running:
            continue
        try:
            total = (await cluster.memory(node.name)).get("total")
        except RabbitError as exc:
            totals[node.name] = f"not read: {exc}"
            continue
        if isinstance(total, dict):  # by how it is counted (erlang, rss, allocated)
            totals[node.name] = {k: round(v / 2**20, 1) for k, v in total.items()}
        elif isinstance(total, int | float):
            totals[node.name] = round(total / 2**20, 1)
        else:
            totals[node.name] = total
    return totals


def _memory_figures(found: dict[str, NodeMemory], totals: dict[str, Any]) -> dict[str, Any]:
    return {
        name: {
            "beam_rss_mb_peak": round(memory.peak_kb / 1024, 1),
            "beam_rss_mb_last": round(memory.last_kb / 1024, 1),
            "samples": memory.samples,
            "rabbitmqctl_total_mb_after_steady_window": totals.get(name),
        }
        for name, memory in sorted(found.items())
    }


def _latency_rows(rows: dict[str, dict[str, Any]]) -> str:
    """The side-by-side table: one row per path, p50/p99 next to each other."""
    lines = [f"{'real gateways, press to console':34} {'p50 ms':>9} {'p99 ms':>9} {'shown':>9}"]
    for name, figures in rows.items():
        shown = f"{figures['shown']}/{figures['presses']}"
        lines.append(f"{name:34} {figures['p50']!s:>9} {figures['p99']!s:>9} {shown:>9}")
    return "\n".join(lines)


async def run_target(  # noqa: PLR0915 - one target's steps, in order
    name: str,
    nodes: Sequence[tuple[str, int]],
    console_port: int,
    args: argparse.Namespace,
    cluster: RabbitCluster | None = None,
) -> dict[str, Any]:
    keys_dir = Path(tempfile.mkdtemp(prefix=f"schoolgate-bench-fleet-{name}-"))
    result: dict[str, Any] = {"target": name, "gateways": args.gateways}
    options = FleetOptions(
        nodes=nodes,
        gateways=args.gateways,
        keys_dir=keys_dir,
        **connect_options(args),
    )
    produced = Produced()
    rabbit_memory: dict[str, NodeMemory] = {}
    totals: dict[str, Any] = {}
    side_by_side = args.side_by_side and cluster is not None
    async with contextlib.AsyncExitStack() as stack:
        if cluster is not None:
            sampler = _sample_rabbit_memory(cluster, rabbit_memory)
            await stack.enter_async_context(_in_background(sampler, "bench:rabbit-memory"))
        idle = (
            await stack.enter_async_context(MosquittoBroker("bench-idle")) if side_by_side else None
        )
        began = time.monotonic()
        fleet = await stack.enter_async_context(Fleet(options))
        progress = asyncio.create_task(_progress(name, fleet), name="bench:progress")
        try:
            await fleet.wait_connected(timeout_s=args.connect_budget_s)
        except TimeoutError:
            result["connected_within_budget"] = f"{fleet.connected()} of {args.gateways}"
            result["budget_s"] = args.connect_budget_s
            result["last_errors"] = sorted({g.last_error for g in fleet.gateways})[:5]
            result["ramp"] = _ramp(fleet, began)
            if cluster is not None:
                result["rabbitmq_memory"] = _memory_figures(rabbit_memory, {})
            return result
        finally:
            progress.cancel()
        result["ramp"] = _ramp(fleet, began)
        result["all_connected_s"] = round(time.monotonic() - began, 1)
        print(f"{name}: {result['ramp'].get('summary')}", file=sys.stderr, flush=True)
        console = ConsoleProcess(console_port, keys_dir)
        await stack.enter_async_context(console.running())
        watched = [(console, RealPresses())]
        if idle is not None:
            idle_console = ConsoleProcess(idle.port, keys_dir, client_id="bench-desk-idle")
            await stack.enter_async_context(idle_console.running())
            watched.append((idle_console, RealPresses()))
        workdir = keys_dir / "real"
        idle_node = None if idle is None else (idle.host, idle.port)
        gates = await stack.enter_async_context(
            real_gates(args.real, nodes, keys_dir, workdir, idle=idle_node)
        )
        for watching, _ in watched:
            await asyncio.wait_for(watching.connected.wait(), 60)
        warm_up = [(watching, RealPresses()) for watching, _ in watched]
        for gate in gates:  # each real gateway shown once before the window
            with contextlib.suppress(TimeoutError):  # reported as not shown
                await gate.wait_ready(120)
            await _press_once(gate, warm_up)
        result["real_gateways_shown_at_start"] = (
            f"{len(warm_up[0][1].latencies_ms)} of {len(gates)}"
        )
        async with (
            measuring(console.pid) as usage,
            _pressing(fleet, produced, args.alarms_per_s, measure=True),
            _pressing_real(gates, watched),
        ):
            await asyncio.sleep(args.measure_s)
        result["real_press_to_console_ms"] = _real_figures(watched[0][1])
        if idle is not None:
            rows = {
                f"{name} under fleet load": result["real_press_to_console_ms"],
                "idle single mosquitto": _real_figures(watched[1][1]),
            }
            result["side_by_side"] = rows
            print(_latency_rows(rows), file=sys.stderr, flush=True)
        result["console_steady"] = _usage(usage)
        if cluster is not None:
            totals = await _rabbitmqctl_totals(cluster)
        await fleet.wait_sent(120)
        await console.wait_seen(produced.measured, 60)
        latencies = [
            (console.seen[i][0] - produced.alarms[i]) * 1000
            for i in produced.measured
            if i in console.seen
        ]
        result["press_to_console_ms"] = {
            "alarms": len(latencies),
            "p50": round(statistics.median(latencies), 1) if latencies else None,
            "p99": round(_percentile(latencies, 0.99) or 0.0, 1) if latencies else None,
            "max": round(max(latencies), 1) if latencies else None,
        }
        if cluster is not None:
            result["node_kill"] = await _node_kill(cluster, fleet, gates, console, produced, args)
        await fleet.wait_sent(300)
        wanted = [*produced.alarms, *produced.events]
        await console.wait_seen(wanted, 120)
        result["events_produced"] = len(wanted)
        result["events_lost"] = sum(1 for i in wanted if i not in console.seen)
        result["events_duplicated"] = sum(len(console.seen.get(i, ())) > 1 for i in wanted)
        result["console_rss_mb_peak_whole_run"] = round(
            max(usage.peak_kb, _peak_kb(console.pid)) / 1024, 1
        )
        if cluster is not None:
            result["rabbitmq_memory"] = _memory_figures(rabbit_memory, totals)
    return result


async def _node_kill(  # noqa: PLR0917 - one target's parts
    cluster: RabbitCluster,
    fleet: Fleet,
    gates: Sequence[RealGate],
    console: ConsoleProcess,
    produced: Produced,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """SIGKILL node `a` while alarms go on; until every simulated gateway is back."""
    killed = cluster.node("a")
    on_killed = ("127.0.0.1", killed.mqtt_port)
    moved = sum(1 for g in fleet.gateways if g.node_in_use == on_killed)
    real_kill = RealPresses()
    async with (
        _pressing(fleet, produced, args.alarms_per_s, measure=False),
        _pressing_real(gates, [(console, real_kill)]),
    ):
        kill_at = time.monotonic()
        await cluster.kill("a")
        await fleet.wait_until(
            lambda: all(g.node_in_use not in (None, on_killed) for g in fleet.gateways),
            timeout_s=900,
        )
        back_s = time.monotonic() - kill_at
        await asyncio.sleep(5.0)  # a few more presses on the survivors
    return {
        "gateways_on_killed_node": moved,
        "all_back_s": round(back_s, 2),
        "real_press_to_console_ms_across_the_kill": _real_figures(real_kill),
    }


def _peak_kb(pid: int) -> int:
    from procstat import memory_kb  # noqa: PLC0415 - a sibling module, on sys.path above

    try:
        return memory_kb(pid).get("VmHWM", 0)
    except OSError:
        return 0


async def main(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {
        "machine": machine(),
        "load_before": loadavg(),
        "gateways": args.gateways,
        "alarms_per_s": args.alarms_per_s,
        "measure_s": args.measure_s,
        "targets": [],
    }
    if args.only in (None, "cluster"):
        async with RabbitCluster() as cluster:
            nodes = cluster.mqtt_endpoints()
            report["targets"].append(
                await run_target(
                    "rabbitmq-3-nodes", nodes, cluster.node("c").mqtt_port, args, cluster
                )
            )
    if args.only in (None, "mosquitto"):
        async with MosquittoBroker("bench-fleet") as broker:
            report["targets"].append(
                await run_target("mosquitto-1", [(broker.host, broker.port)], broker.port, args)
            )
    report["load_after"] = loadavg()
    return report


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--gateways", type=int, default=1000)
    p.add_argument("--measure-s", type=float, default=60.0, help="steady window per target")
    p.add_argument("--alarms-per-s", type=float, default=2.0, help="fleet-wide")
    p.add_argument("--only", choices=("cluster", "mosquitto"))
    p.add_argument("--real", type=int, default=3, help="real gateway processes beside the fleet")
    p.add_argument(
        "--side-by-side",
        action="store_true",
        help="on the cluster target, the real gateways' alarms also to an idle single mosquitto",
    )
    add_connect_arguments(p)
    p.add_argument(
        "--connect-budget-s",
        type=float,
        default=300.0,
        help="give a target up when the fleet is not all connected by then (reported)",
    )
    p.add_argument("--json", type=Path, help="also write the report here")
    return p.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args()
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    found = asyncio.run(main(arguments))
    text = json.dumps(found, indent=2)
    print(text)
    if arguments.json is not None:
        arguments.json.write_text(text + "\n")
