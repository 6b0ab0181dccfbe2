"""Small pieces the demo, the scenario runner, the tests and the benchmarks share when they run
the real gateway and measure it: the daemon's command line and a nearest-rank percentile."""

from __future__ import annotations

import sys
from pathlib import Path


def gateway_command(config: Path) -> list[str]:
    """`schoolgate run` as its own process, with JSON logs (for log files and log readers)."""
    return [sys.executable, "-m", "gateway", "run", "-c", str(config), "--log-format", "json"]


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (`q` in 0..1) of a non-empty sample."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
