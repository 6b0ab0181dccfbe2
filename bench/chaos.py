"""Chaos soak (issue 6): the simulated gate under a known stream of events while brokers restart,
the gateway is SIGKILLed, devices go quiet, the RS-485 line gets garbage and CRC errors and the
store's disk fills up; then every event is checked at both brokers.

    bench/chaos --minutes 3 [--seed S] [--write docs/benchmarks.md] [--keep]

Prints the seed (re-run with it to replay the same choices; the timing of a real machine still
varies), the figures, and PASSED or what failed; exits 1 on a failure. With --write, the results
go into docs/benchmarks.md between `<!-- chaos:begin -->` and `<!-- chaos:end -->` (added at the
end when missing; nothing else in the file is touched). The engine is `simulators.chaos`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import platform
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulators.chaos import ChaosSettings, run_chaos
from simulators.chaos_verify import ChaosReport

BEGIN, END = "<!-- chaos:begin -->", "<!-- chaos:end -->"


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def section(runs: list[str]) -> str:
    parts = [
        "## Chaos soak (bench/chaos)",
        "",
        "The whole simulated gate (alarm box on Modbus TCP, two bollards and the socket sensors on"
        " one Modbus RTU line, the access controller on its serial line, both brokers, the real"
        " gateway process with its store on a 32 MiB tmpfs of its own) under a known stream of"
        " events while a seeded fault injector restarts either broker (SIGTERM, so the"
        " listeners' persistent sessions survive), SIGKILLs and restarts the gateway, silences a"
        " device, restarts the alarm box's TCP server, puts garbage and CRC errors on the lines"
        " and fills the store's disk. Then every stored event is looked for at each broker it"
        " is routed to (listeners on persistent QoS 1 sessions), alongside the press counters of"
        " the box and the latch history. Details: docs/chaos.md.",
        "",
        "```",
        ".venv/bin/pytest -q tests/test_chaos.py   # 60 s, seeded, asserts",
        "bench/chaos --minutes 3 [--seed S] [--write docs/benchmarks.md]",
        "```",
    ]
    return "\n".join(parts + [f"\n{run}" for run in runs])


def run_section(title: str, report: ChaosReport) -> str:
    today = datetime.date.today().isoformat()
    head = f"### {title}\n\nMeasured {today} on {machine()}; seed {report.seed}.\n\n"
    return head + report.markdown()


def earlier_runs(doc: Path) -> list[str]:
    """The run sections already in the chaos block, each starting with its `### ` title."""
    text = doc.read_text() if doc.exists() else ""
    if BEGIN not in text or END not in text:
        return []
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    return [f"### {run.strip()}" for run in block.split("\n### ")[1:]]


def write_block(doc: Path, block: str) -> None:
    """Put `block` between the chaos markers of `doc`; nothing outside them changes."""
    text = doc.read_text() if doc.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
    else:
        head, tail = text.rstrip("\n") + "\n\n", "\n"
    doc.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--no-disk-full", action="store_true", help="no unshare/nsenter here")
    parser.add_argument("--write", type=Path, help="markdown file to put the results in")
    parser.add_argument("--quiet", action="store_true", help="do not print each fault")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, config)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(1, 1_000_000)
    print(f"chaos soak: {args.minutes:g} min, seed {seed} (replay: --seed {seed})", flush=True)
    workdir = Path(tempfile.mkdtemp(prefix="schoolgate-chaos-"))
    settings = ChaosSettings(
        seconds=args.minutes * 60,
        seed=seed,
        disk_full=not args.no_disk_full,
        log=(lambda _line: None) if args.quiet else (lambda line: print(line, flush=True)),
    )
    report = asyncio.run(run_chaos(settings, workdir))
    print(report.text())
    if args.write:
        # One section per run length: a new run replaces the one of the same length.
        title = f"{args.minutes:g} minute run (`bench/chaos --minutes {args.minutes:g}`)"
        runs = [r for r in earlier_runs(args.write) if not r.startswith(f"### {title}")]
        write_block(args.write, section([*runs, run_section(title, report)]))
        print(f"written to {args.write}")
    failed = bool(report.failures())
    if args.keep or failed:
        print(f"work folder kept: {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
