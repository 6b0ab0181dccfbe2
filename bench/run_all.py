"""The whole benchmark suite of issue 6 in one command: schoolgate and the ThingsBoard IoT Gateway
(its pinned release, in its own venv) side by side in the same run, against the same simulators
and mosquitto brokers, with raw paho-mqtt as the ceiling for forwarding.

    .venv/bin/python bench/run_all.py [--quick] [--presses N] [--skip-thingsboard]

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

import report  # noqa: E402
import scenarios  # noqa: E402
import shared_line  # noqa: E402
from drain import raw_paho_rate, telemetry  # noqa: E402
from procstat import loadavg, machine  # noqa: E402
from subjects import Schoolgate  # noqa: E402
from tb import VERSION as TB_VERSION  # noqa: E402
from tb import ThingsBoard, setup  # noqa: E402

from gateway import contract, logsetup  # noqa: E402
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


async def suite(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    presses = args.presses or (40 if quick else 500)
    tb_presses = args.tb_presses or (20 if quick else 200)
    tb_budget_s = 60.0 if quick else 180.0
    rtu_presses = args.rtu_presses or (30 if quick else 200)
    polls = [20, 50, 100]
    window_s = 5.0 if quick else 10.0
    steps = [20, 40] if quick else [20, 40, 80, 160]
    down_s = 5.0 if quick else 20.0
    idle_s = 10.0 if quick else 30.0
    subjects: list[Any] = [Schoolgate()]
    errors: dict[str, str] = {}
    if not args.skip_thingsboard:
        try:
            log(f"thingsboard-gateway {TB_VERSION}: venv {setup()}")
            subjects.append(ThingsBoard())
        except (subprocess.CalledProcessError, OSError) as exc:
            errors["thingsboard install"] = f"{type(exc).__name__}: {exc}"
    results: dict[str, Any] = {
        "machine": machine(),
        "load_start": loadavg(),
        "quick": quick,
        "thingsboard_version": TB_VERSION,
        "settings": {
            "presses": presses,
            "tb_presses": tb_presses,
            "tb_budget_s": tb_budget_s,
            "rtu_presses": rtu_presses,
            "polls_ms": polls,
            "window_s": window_s,
            "steps": steps,
            "down_s": down_s,
            "idle_s": idle_s,
        },
        "errors": errors,
    }
    work = Path(tempfile.mkdtemp(prefix="schoolgate-suite-"))

    def workdir(name: str) -> Path:
        path = work / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    results["raw_paho"] = await guarded(
        errors, "raw paho", lambda: raw_baseline(5_000 if quick else 30_000)
    )
    for subject in subjects:
        name = subject.name
        n = presses if name == "schoolgate" else tb_presses
        out: dict[str, Any] = {"latency": {}, "throughput": [], "load": {}}
        results[name] = out
        for poll in polls:
            out["latency"][str(poll)] = await guarded(
                errors,
                f"{name} latency poll {poll} ms",
                lambda s=subject, p=poll, n=n: scenarios.latency(
                    s,
                    workdir(f"{s.name}-lat-{p}"),
                    poll_ms=p,
                    presses=n,
                    budget_s=None if s.name == "schoolgate" else tb_budget_s,
                ),
            )
            out["load"][f"latency {poll}"] = loadavg()
        out["short_presses"] = await guarded(
            errors,
            f"{name} short presses",
            lambda s=subject: scenarios.short_presses(
                s, workdir(f"{s.name}-short"), poll_ms=100, hold_ms=20, presses=10 if quick else 40
            ),
        )
        out["throughput"] = await saturate(subject, errors, workdir, steps, window_s)
        out["load"]["throughput"] = loadavg()
        out["outage"] = await guarded(
            errors,
            f"{name} outage",
            lambda s=subject: scenarios.outage(s, workdir(f"{s.name}-outage"), down_s=down_s),
        )
        out["reconnects"] = await guarded(
            errors,
            f"{name} reconnects",
            lambda s=subject: scenarios.reconnects(
                s, workdir(f"{s.name}-reconnect"), cycles=3 if quick else 6, down_s=5.0
            ),
        )
        out["footprint_single"] = await guarded(
            errors,
            f"{name} footprint (one device at 1 s)",
            lambda s=subject: scenarios.footprint_single(s, workdir(f"{s.name}-fp"), idle_s=idle_s),
        )
    results["schoolgate"]["footprint_demo"] = await guarded(
        errors,
        "schoolgate footprint (demo gate)",
        lambda: scenarios.footprint_demo_gate(workdir("demo-gate"), idle_s=idle_s),
    )
    results["schoolgate"]["rtu"] = await guarded(
        errors, "schoolgate RTU shared line", lambda: rtu_latency(rtu_presses, workdir("rtu"))
    )
    if not args.skip_drain:
        rows = 20_000 if quick else args.drain_rows
        results["schoolgate"]["drain_section"] = await guarded(
            errors, "schoolgate drain (bench/drain.py)", lambda: run_drain(rows)
        )
    results["load_end"] = loadavg()
    shutil.rmtree(work, ignore_errors=True)
    return results


async def redo_outage(results: dict[str, Any]) -> None:
    down_s = results["settings"]["down_s"]
    for subject in (Schoolgate(), ThingsBoard()):
        key = f"{subject.name} outage"
        if results.get(subject.name, {}).get("outage") is not None:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            got = await guarded(
                results["errors"],
                key,
                lambda s=subject, d=Path(tmp): scenarios.outage(s, d, down_s=down_s),
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
) -> list[dict[str, Any]]:
    """Throughput steps with more and more devices, until delivery saturates."""
    done: list[dict[str, Any]] = []
    best = 0.0
    for devices in steps:
        step = await guarded(
            errors,
            f"{subject.name} throughput {devices} devices",
            lambda d=devices: scenarios.throughput(
                subject,
                workdir(f"{subject.name}-tp-{d}"),
                devices=d,
                points=10,
                period_ms=100,
                poll_ms=100,
                window_s=window_s,
            ),
        )
        if step is None:
            break
        done.append(step)
        log(
            f"  {devices} devices: {step['delivered_per_s']:.0f} datapoints/s, "
            f"fraction {step['fraction_delivered']:.3f}, cpu {step['cpu_percent']:.0f}%"
        )
        saturated = (
            step["fraction_delivered"] < 0.9
            or step["delivered_per_s"] < best * 1.1
            or step["backlog_after_window_s"] > 5
        )
        best = max(best, step["delivered_per_s"])
        if saturated:
            break
    return done


async def rtu_latency(presses: int, workdir: Path) -> dict[str, Any]:
    """bench/shared_line.py's end-to-end run: 9600-baud RTU, alarm box + four others, one dead."""
    latencies = await shared_line.e2e_latencies(presses, workdir)
    return {"latencies_ms": latencies, **scenarios.summary(latencies)}


async def run_drain(rows: int) -> dict[str, Any]:
    """bench/drain.py as it is, writing its section to a scratch file: the suite splices that
    section into docs/benchmarks.md itself, so the blocks around it stay untouched."""
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp) / "drain.md"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(HERE / "drain.py"),
            "--rows",
            str(rows),
            "--write",
            str(scratch),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"drain.py exited {proc.returncode}: {text[-1500:]}")
        section = scratch.read_text()
    start = text.rfind("{\n")
    figures = json.loads(text[start:]) if start != -1 else {}
    return {"figures": figures, "section": section[section.index(report.DRAIN_HEADING) :]}


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
    parser.add_argument("--rtu-presses", type=int, help="presses on the shared RTU line")
    parser.add_argument("--skip-thingsboard", action="store_true")
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
