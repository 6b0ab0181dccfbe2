"""What the benchmark suite reads about processes and the machine, straight from /proc (psutil is
not a dependency): CPU seconds, resident memory and its peak for one pid, the machine's CPU model,
core count and load. It starts nothing and measures nothing by itself; `bench/run_all.py` and the
scenario modules call it around their runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (its threads included), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def wakeups(pid: int) -> int:
    """Voluntary context switches of `pid` over all its threads: each is the process going to
    sleep (epoll_wait, a lock) and later being woken, the unit an idle poller's CPU goes in."""
    total = 0
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        with contextlib.suppress(OSError, ValueError):
            for row in status.read_text().splitlines():
                if row.startswith("voluntary_ctxt_switches:"):
                    total += int(row.split()[1])
    return total


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak since start) of `pid`, in kB."""
    found: dict[str, int] = {}
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = row.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            found[key] = int(value.split()[0])
    return found


def in_session(sid: int, comm: str) -> int | None:
    """The pid of a process called `comm` in session `sid` (e.g. a RabbitMQ node's beam.smp,
    started by `rabbitmq-server` as the leader of a session of its own), if there is one."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = stat_file.read_text()
            name = stat[stat.index("(") + 1 : stat.rindex(")")]
            fields = stat[stat.rindex(")") + 2 :].split()
            if name == comm and int(fields[3]) == sid:
                return int(stat_file.parent.name)
    return None


def machine() -> dict[str, object]:
    model = platform.machine()
    with contextlib.suppress(OSError):
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                model = row.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def loadavg() -> tuple[float, float, float]:
    return os.getloadavg()


@dataclass
class Usage:
    """CPU and memory of one process over a window, sampled every `period_s`."""

    pid: int
    period_s: float = 0.25
    cpu_start: float = 0.0
    cpu_end: float = 0.0
    wall_start: float = 0.0
    wall_end: float = 0.0
    rss_kb: list[int] = field(default_factory=list)
    peak_kb: int = 0
    wakeups_start: int = 0
    wakeups_end: int = 0

    @property
    def cpu_s(self) -> float:
        return self.cpu_end - self.cpu_start

    @property
    def wall_s(self) -> float:
        return self.wall_end - self.wall_start

    @property
    def cpu_percent(self) -> float:
        """Percent of one core over the window."""
        return 100 * self.cpu_s / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def wakeups_per_s(self) -> float:
        """Times a second the process slept and was woken (`wakeups`)."""
        return (self.wakeups_end - self.wakeups_start) / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def cpu_us_per_wakeup(self) -> float | None:
        """CPU over the window divided by the wake-ups in it."""
        woken = self.wakeups_end - self.wakeups_start
        return 1e6 * self.cpu_s / woken if woken > 0 else None

    @property
    def rss_mb(self) -> float:
        """Median resident set over the window."""
        ordered = sorted(self.rss_kb)
        return ordered[len(ordered) // 2] / 1024 if ordered else 0.0

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024

    def sample(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            mem = memory_kb(self.pid)
            self.rss_kb.append(mem.get("VmRSS", 0))
            self.peak_kb = max(self.peak_kb, mem.get("VmHWM", 0))


@contextlib.asynccontextmanager
async def measuring(pid: int, period_s: float = 0.25):  # type: ignore[no-untyped-def]
    """`async with measuring(pid) as usage:` CPU seconds and RSS of `pid` over the block."""
    usage = Usage(pid, period_s)
    usage.cpu_start = cpu_seconds(pid)
    usage.wakeups_start = wakeups(pid)
    usage.wall_start = time.monotonic()

    async def sampler() -> None:
        while True:
            usage.sample()
            await asyncio.sleep(period_s)

    task = asyncio.create_task(sampler(), name=f"usage:{pid}")
    try:
        yield usage
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        usage.sample()
        with contextlib.suppress(OSError):
            usage.cpu_end = cpu_seconds(pid)
            usage.wakeups_end = wakeups(pid)
        usage.wall_end = time.monotonic()
