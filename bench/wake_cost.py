"""What one wake-up costs on this machine (issue 16): the CPU a process spends each time it sleeps
and is woken, without Python's event loop (a bare `epoll.poll` with a timeout) and with it (an
asyncio task's `await asyncio.sleep`), measured in a child process over `--count` wake-ups.

    .venv/bin/python bench/wake_cost.py [--count N] [--interval-ms MS] [--json]

An idle poller's CPU is, to a first approximation, its wake-ups a second times this cost, so it
tells how far down any design can take the idle figure at a given number of answers a second:
the footprint phase prints it beside the gateway's and the bare poller's wake-ups a second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import select
import subprocess
import sys
import time


def _epoll_us(count: int, interval_s: float) -> float:
    poller = select.epoll()
    cpu0 = time.process_time()
    for _ in range(count):
        poller.poll(interval_s)
    return 1e6 * (time.process_time() - cpu0) / count


def _asyncio_us(count: int, interval_s: float) -> float:
    async def sleeper() -> float:
        cpu0 = time.process_time()
        for _ in range(count):
            await asyncio.sleep(interval_s)
        return 1e6 * (time.process_time() - cpu0) / count

    return asyncio.run(sleeper())


def child(count: int, interval_s: float) -> dict[str, float]:
    return {
        "epoll_us_per_wakeup": _epoll_us(count, interval_s),
        "asyncio_us_per_wakeup": _asyncio_us(count, interval_s),
        "count": count,
        "interval_ms": 1e3 * interval_s,
    }


def measure(count: int = 500, interval_ms: float = 10.0) -> dict[str, float]:
    """Run the probe in a fresh interpreter (nothing else on its loop) and return its figures."""
    done = subprocess.run(
        [
            sys.executable,
            __file__,
            "--child",
            "--count",
            str(count),
            "--interval-ms",
            str(interval_ms),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60 + 3 * count * interval_ms / 1e3,
    )
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="wake-ups per probe (default 500)")
    parser.add_argument("--interval-ms", type=float, default=10.0, help="sleep per wake-up")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count < 1 or args.interval_ms <= 0:
        parser.error("--count must be at least 1 and --interval-ms above 0")
    if args.child:
        print(json.dumps(child(args.count, args.interval_ms / 1e3)), flush=True)
        return
    result = measure(args.count, args.interval_ms)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"one wake-up: {result['epoll_us_per_wakeup']:.0f} us of CPU by a bare epoll, "
            f"{result['asyncio_us_per_wakeup']:.0f} us by an asyncio task's sleep"
        )


if __name__ == "__main__":
    main()
