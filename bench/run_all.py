"""The whole benchmark suite of issue 6 in one command: schoolgate and the ThingsBoard IoT Gateway
(its pinned release, in its own venv) side by side in the same run, against the same simulators
and mosquitto brokers, with raw paho-mqtt as the ceiling for forwarding.

    .venv/bin/python bench/run_all.py [--quick] [--presses N] [--skip-thingsboard]
    .venv/bin/python bench/run_all.py --no-write --only rtu --subjects thingsboard --rtu-presses 5
    .venv/bin/python bench/run_all.py --no-write --only latency --subjects thingsboard-memory

Writes the raw results to bench/results/latest.json, the report section of docs/benchmarks.md
(between `<!-- suite:begin -->` and `<!-- suite:end -->`; the other sections, the chaos block
among them, are kept as they are) and PNG plots to docs/img/ (matplotlib runs from a bench-only
venv, `.bench-venvs/plot`, created on first use). `--quick` is for development: few presses,
short windows; its figures are not the ones to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import time
import zoneinfo
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "thingsboard"))
sys.path.insert(0, str(ROOT))

import bare_poller  # noqa: E402
import report  # noqa: E402
import scenarios  # noqa: E402
import wake_cost  # noqa: E402
from drain import raw_paho_rate, telemetry  # noqa: E402
from procstat import loadavg, machine  # noqa: E402
from subjects import Schoolgate  # noqa: E402
from tb import VERSION as TB_VERSION  # noqa: E402
from tb import ThingsBoard, setup  # noqa: E402

from gateway import logsetup  # noqa: E402
from gateway.core import contract  # noqa: E402
from simulators.broker import MosquittoBroker  # noqa: E402

RESULTS = HERE / "results" / "latest.json"
DOC = ROOT / "docs" / "benchmarks.md"
IMG = ROOT / "docs" / "img"
PLOT_VENV = ROOT / ".bench-venvs" / "plot"
MATPLOTLIB = "matplotlib>=3.8,<4"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


async def guarded(
    errors: dict[str, str], key: str, run: Callable[[], Awaitable[Any]]
) -> Any | None:
    """Run one measurement; a failure is recorded (and reported) instead of ending the suite."""
    log(f"{key} ...")
    start = time.monotonic()
    try:
        result = await run()
    except Exception as exc:  # the report says what failed, with the error
        errors[key] = f"{type(exc).__name__}: {exc}"
        log(f"{key} FAILED: {errors[key]}")
        return None
    log(f"{key} done in {time.monotonic() - start:.0f} s")
    return result


async def raw_baseline(count: int) -> dict[str, float]:
    """Raw paho QoS 1, window 32, to a fresh mosquitto: the ceiling for forwarding."""
    sample = contract.finish_event_payload(
        contract.encode_event_body(
            contract.Site("bench-school", "bench-gate", zoneinfo.ZoneInfo("UTC")),
            dataclasses.replace(telemetry(1), seq=1),  # type: ignore[type-var]
        ),
        historical=True,
        attempt=1,
    )
    async with MosquittoBroker("raw") as broker:
        rate = await asyncio.to_thread(raw_paho_rate, broker.port, count, sample)
    return {"msg_per_s": rate, "payload_bytes": len(sample), "count": count}


PHASES = (
    "raw",
    "latency",
    "rtu",
    "short",
    "throughput",
    "outage",
    "reconnects",
    "footprint",
    "transactions",
    "drain",
)
"""What `--only` can pick (development: one piece at a time; the report says what ran)."""

SUBJECTS = ("schoolgate", "thingsboard", "thingsboard-memory")
"""What `--subjects` can pick: ThingsBoard with SQLite storage runs every phase; with its
memory storage (the shipped default) only the alarm latency, which is what the storage
changes (issue 16, item 5)."""
TB_STORAGE = {"thingsboard": "sqlite", "thingsboard-memory": "memory"}
SUBJECT_PHASES = {"thingsboard-memory": frozenset({"latency"})}
ONE_DESTINATION = ("police",)
"""Throughput row 1: every gateway sends to one broker, as ThingsBoard does."""


def settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {
        "presses": args.presses or (40 if quick else 500),
        "tb_presses": args.tb_presses or (20 if quick else 500),
        # A safety net, not the plan: 500 ThingsBoard presses take 4-5 min per interval.
        "tb_budget_s": 60.0 if quick else 600.0,
        "miss_after_s": scenarios.MISS_AFTER_S,
        "late_wait_s": scenarios.LATE_WAIT_S,
        "rtu_presses": args.rtu_presses or (15 if quick else 300),
        "rtu_budget_s": 60.0 if quick else 420.0,
        "rtu_gap_s": scenarios.RTU_GAP_S,
        "polls_ms": [int(p) for p in args.polls.split(",")] if args.polls else [20, 50, 100],
        "window_s": 5.0 if quick else 10.0,
        "steps": [20, 40] if quick else [20, 40, 80, 160],
        "down_s": 5.0 if quick else 20.0,
        "idle_s": 10.0 if quick else 30.0,
        "short_presses": 10 if quick else 40,
        "reconnect_cycles": 3 if quick else 6,
    }


async def suite(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    only = set(args.only.split(",")) if args.only else set(PHASES)
    unknown = only - set(PHASES)
    if unknown:
        raise SystemExit(f"--only: unknown phase(s) {sorted(unknown)}; pick from {PHASES}")
    s = settings(args)
    names = args.subjects.split(",") if args.subjects else list(SUBJECTS)
    unknown = set(names) - set(SUBJECTS)
    if unknown:
        raise SystemExit(f"--subjects: unknown {sorted(unknown)}; pick from {SUBJECTS}")
    subjects: list[Any] = [Schoolgate()] if "schoolgate" in names else []
    errors: dict[str, str] = {}
    wanted_tb = [n for n in SUBJECTS if n.startswith("thingsboard") and n in names]
    if wanted_tb and not args.skip_thingsboard:
        try:
            log(f"thingsboard-gateway {TB_VERSION}: venv {setup()}")
            subjects += [ThingsBoard(TB_STORAGE[n]) for n in wanted_tb]
        except (subprocess.CalledProcessError, OSError) as exc:
            errors["thingsboard install"] = f"{type(exc).__name__}: {exc}"
    results: dict[str, Any] = {
        "machine": machine(),
        "load_start": loadavg(),
        "quick": quick,
        "only": sorted(only) if args.only else None,
        "thingsboard_version": TB_VERSION,
        "settings": s,
        "errors": errors,
        "storage_risks": {subject.name: subject.storage_risk for subject in subjects},
    }
    work = Path(tempfile.mkdtemp(prefix="schoolgate-suite-"))

    def workdir(name: str) -> Path:
        path = work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    if "raw" in only:
        results["raw_paho"] = await guarded(
            errors, "raw paho", lambda: raw_baseline(5_000 if quick else 30_000)
        )
    for subject in subjects:
        results[subject.name] = await subject_phases(subject, s, only, errors, workdir)
    schoolgate = results.get("schoolgate")
    if schoolgate is not None and "footprint" in only:
        schoolgate["footprint_demo"] = await guarded(
            errors,
            "schoolgate footprint (demo gate)",
            lambda: scenarios.footprint_demo_gate(workdir("demo-gate"), idle_s=s["idle_s"]),
        )
        schoolgate["footprint_demo_guard"] = await guarded(
            errors,
            "schoolgate footprint (demo gate, guard page on)",
            lambda: scenarios.footprint_demo_gate(
                workdir("demo-gate-guard"), idle_s=s["idle_s"], guard_page=True
            ),
        )
        schoolgate["footprint_demo_signed"] = await guarded(
            errors,
            "schoolgate footprint (demo gate, signed)",
            lambda: scenarios.footprint_demo_gate(
                workdir("demo-gate-signed"), idle_s=s["idle_s"], signed=True
            ),
        )
        schoolgate["footprint_floor"] = await guarded(
            errors,
            "footprint of the stack alone",
            lambda: scenarios.footprint_floor(idle_s=s["idle_s"]),
        )
        schoolgate["footprint_floor_page"] = await guarded(
            errors,
            "footprint of the stack with aiohttp.web",
            lambda: scenarios.footprint_floor(idle_s=s["idle_s"], page=True),
        )
        schoolgate["footprint_wake_cost"] = await guarded(
            errors,
            "CPU per wake-up (bench/wake_cost.py)",
            lambda: asyncio.to_thread(wake_cost.measure),
        )
        schoolgate["footprint_bare_poller"] = await guarded(
            errors,
            "the demo gate's reads by a bare asyncio poller (bench/bare_poller.py)",
            lambda: bare_poller.measure(s["idle_s"]),
        )
    if schoolgate is not None and "transactions" in only:
        schoolgate["transaction_cost"] = await guarded(
            errors,
            "CPU per Modbus transaction (bench/transaction_cost.py)",
            lambda: run_transaction_cost(quick),
        )
    if schoolgate is not None and "drain" in only and not args.skip_drain:
        rows = 20_000 if quick else args.drain_rows
        schoolgate["drain_section"] = await guarded(
            errors, "schoolgate drain (bench/drain.py)", lambda: run_drain(rows)
        )
    results["load_end"] = loadavg()
    shutil.rmtree(work, ignore_errors=True)
    return results


async def subject_phases(
    subject: Any,
    s: dict[str, Any],
    only: set[str],
    errors: dict[str, str],
    workdir: Callable[[str], Path],
) -> dict[str, Any]:
    """Every phase in `only` for one gateway, in the suite's order."""
    name = subject.name
    tb = name != "schoolgate"
    only = only & SUBJECT_PHASES.get(name, only)
    out: dict[str, Any] = {"latency": {}, "throughput": [], "load": {}}
    if "latency" in only:
        for poll in s["polls_ms"]:
            out["latency"][str(poll)] = await guarded(
                errors,
                f"{name} latency poll {poll} ms",
                functools.partial(
                    scenarios.latency,
                    subject,
                    workdir(f"{name}-lat-{poll}"),
                    poll_ms=poll,
                    presses=s["tb_presses"] if tb else s["presses"],
                    budget_s=s["tb_budget_s"] if tb else None,
                ),
            )
            out["load"][f"latency {poll}"] = loadavg()
    if "rtu" in only:
        out["rtu"] = await guarded(
            errors,
            f"{name} RTU shared line",
            lambda: scenarios.rtu_latency(
                subject,
                workdir(f"{name}-rtu"),
                presses=s["rtu_presses"],
                budget_s=s["rtu_budget_s"],
            ),
        )
        out["load"]["rtu"] = loadavg()
    if "short" in only:
        out["short_presses"] = await guarded(
            errors,
            f"{name} short presses",
            lambda: scenarios.short_presses(
                subject,
                workdir(f"{name}-short"),
                poll_ms=100,
                hold_ms=20,
                presses=s["short_presses"],
            ),
        )
    if "throughput" in only:
        # Row 1: one destination each; row 2 (a gateway with more brokers): all of them.
        out["throughput"] = await saturate(
            subject, errors, workdir, s["steps"], s["window_s"], destinations=ONE_DESTINATION
        )
        out["load"]["throughput"] = loadavg()
        if tuple(subject.brokers) != ONE_DESTINATION:
            out["throughput_all_destinations"] = await saturate(
                subject,
                errors,
                workdir,
                s["steps"],
                s["window_s"],
                destinations=tuple(subject.brokers),
            )
            out["load"]["throughput, all destinations"] = loadavg()
    if "outage" in only:
        out["outage"] = await guarded(
            errors,
            f"{name} outage",
            lambda: scenarios.outage(subject, workdir(f"{name}-outage"), down_s=s["down_s"]),
        )
    if "reconnects" in only:
        out["reconnects"] = await guarded(
            errors,
            f"{name} reconnects",
            lambda: scenarios.reconnects(
                subject, workdir(f"{name}-reconnect"), cycles=s["reconnect_cycles"], down_s=5.0
            ),
        )
    if "footprint" in only:
        out["footprint_single"] = await guarded(
            errors,
            f"{name} footprint (one device at 1 s)",
            lambda: scenarios.footprint_single(subject, workdir(f"{name}-fp"), idle_s=s["idle_s"]),
        )
    return out


async def redo_outage(results: dict[str, Any]) -> None:
    down_s = results["settings"]["down_s"]
    subjects: tuple[Any, ...] = (Schoolgate(), ThingsBoard("sqlite"))
    for subject in subjects:
        key = f"{subject.name} outage"
        if results.get(subject.name, {}).get("outage") is not None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            got = await guarded(
                results["errors"],
                key,
                functools.partial(scenarios.outage, subject, Path(tmp), down_s=down_s),
            )
        if got is not None:
            first_error = results["errors"].pop(key, "")
            got["rerun"] = {
                "at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "load": loadavg(),
                "first_attempt_error": first_error[:300],
            }
            results[subject.name]["outage"] = got


async def saturate(
    subject: Any,
    errors: dict[str, str],
    workdir: Callable[[str], Path],
    steps: list[int],
    window_s: float,
    *,
    destinations: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Throughput steps with more and more devices, until delivery saturates (judged per unique
    datapoint, so a second destination cannot make a step look like a gain)."""
    done: list[dict[str, Any]] = []
    best = 0.0
    to = "+".join(destinations)
    for devices in steps:
        step = await guarded(
            errors,
            f"{subject.name} throughput {devices} devices to {to}",
            functools.partial(
                scenarios.throughput,
                subject,
                workdir(f"{subject.name}-tp-{to}-{devices}"),
                devices=devices,
                points=10,
                period_ms=100,
                poll_ms=100,
                window_s=window_s,
                destinations=destinations,
            ),
        )
        if step is None:
            break
        done.append(step)
        log(
            f"  {devices} devices to {to}: {step['unique_per_s']:.0f} unique datapoints/s "
            f"({step['deliveries_per_s']:.0f} deliveries/s), fraction "
            f"{step['fraction_delivered']:.3f}, cpu {step['cpu_percent']:.0f}%"
        )
        saturated = (
            step["fraction_delivered"] < 0.9
            or step["unique_per_s"] < best * 1.1
            or step["backlog_after_window_s"] > 5
        )
        best = max(best, step["unique_per_s"])
        if saturated:
            break
    return done


async def run_drain(rows: int) -> dict[str, Any]:
    """bench/drain.py as it is, writing its section to a scratch file: the suite splices that
    section into docs/benchmarks.md itself, so the blocks around it stay untouched."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "drain.md"
        text = await run_sibling("drain.py", "--rows", str(rows), "--write", str(scratch))
        section = scratch.read_text()
    start = text.rfind("{\n")
    figures = json.loads(text[start:]) if start != -1 else {}
    return {"figures": figures, "section": section[section.index(report.DRAIN_HEADING) :]}


async def run_transaction_cost(quick: bool) -> dict[str, Any]:
    """bench/transaction_cost.py in its own process: only its client loops' CPU is counted."""
    sizes = ["--tcp", "500", "--rtu", "60", "--rounds", "1"] if quick else []
    text = await run_sibling("transaction_cost.py", "--json", *sizes)
    result: dict[str, Any] = json.loads(text[text.index("{") :])
    return result


async def run_sibling(script: str, *args: str) -> str:
    """bench/`script` in its own process: its output; RuntimeError with its tail if it fails."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(HERE / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{script} exited {proc.returncode}: {text[-1500:]}")
    return text


def plot(results_path: Path) -> str | None:
    """Draw the PNGs from a bench-only venv with matplotlib; None, or why it could not."""
    python = PLOT_VENV / "bin" / "python"
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(PLOT_VENV)], check=True)
        check = subprocess.run(
            [str(python), "-c", "import matplotlib"], capture_output=True, check=False
        )
        if check.returncode != 0:
            subprocess.run([str(python), "-m", "pip", "install", "-q", MATPLOTLIB], check=True)
        subprocess.run(
            [str(python), str(HERE / "plots.py"), str(results_path), str(IMG)], check=True
        )
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short development run")
    parser.add_argument("--presses", type=int, help="schoolgate presses per poll interval")
    parser.add_argument("--tb-presses", type=int, help="ThingsBoard presses per poll interval")
    parser.add_argument("--rtu-presses", type=int, help="presses on the shared RTU line, each")
    parser.add_argument("--skip-thingsboard", action="store_true")
    parser.add_argument(
        "--only",
        help=f"comma-separated phases to run, of {','.join(PHASES)} (development; with "
        "--no-write, so a partial run never replaces the report)",
    )
    parser.add_argument(
        "--subjects", help=f"comma-separated, of {','.join(SUBJECTS)} (default all)"
    )
    parser.add_argument("--polls", help="comma-separated poll intervals in ms (default 20,50,100)")
    parser.add_argument("--skip-drain", action="store_true", help="do not re-run bench/drain.py")
    parser.add_argument("--drain-rows", type=int, default=100_000)
    parser.add_argument(
        "--no-write",
        action="store_true",
        help="leave docs/ and bench/results/latest.json as they are (raw results: no-write.json)",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: redraw the plots and the report from bench/results/latest.json",
    )
    parser.add_argument(
        "--redo-outage",
        action="store_true",
        help="re-run only the outage scenarios that failed in bench/results/latest.json, then "
        "report (the re-run's time and load are recorded beside it)",
    )
    args = parser.parse_args()
    if (args.only or args.subjects or args.polls) and not args.no_write:
        parser.error("--only, --subjects and --polls are for development: add --no-write")
    logsetup.configure(level="error")
    if args.redo_outage:
        results = json.loads(RESULTS.read_text())
        asyncio.run(redo_outage(results))
        RESULTS.write_text(json.dumps(results, indent=1))
    elif args.render_only:
        results = json.loads(RESULTS.read_text())
    else:
        started = time.monotonic()
        results = asyncio.run(suite(args))
        results["duration_s"] = time.monotonic() - started
        # --no-write keeps the results docs/ were rendered from (--render-only redraws them).
        target = RESULTS.with_name("no-write.json") if args.no_write else RESULTS
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(results, indent=1))
        log(f"raw results: {target}")
    if args.no_write:
        print(report.render(results, plots_error=None))
        return 0
    IMG.mkdir(parents=True, exist_ok=True)
    plots_error = plot(RESULTS)
    if plots_error:
        results["errors"]["plots"] = plots_error
    report.write(DOC, report.render(results, plots_error=plots_error))
    drain = results["schoolgate"].get("drain_section")
    if drain:
        report.replace_drain_section(DOC, drain["section"])
    log(f"report: {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
