"""Plots of a suite run (bench/results/latest.json) as PNGs: latency distributions per poll
interval, the drain after a broker outage, throughput against devices. Run by bench/run_all.py
with the python of a bench-only venv that has matplotlib (never a dependency of the gateway):

    .bench-venvs/plot/bin/python bench/plots.py bench/results/latest.json docs/img
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import report  # bench/report/: the throughput rows counted as the report counts them

COLOURS = {"schoolgate": "tab:blue", "thingsboard": "tab:orange", "thingsboard-memory": "tab:red"}


def cdf(ax: Any, values: list[float], label: str, colour: str, style: str = "-") -> None:
    ordered = sorted(values)
    n = len(ordered)
    marker = "o" if n < 10 else None
    ax.plot(
        ordered, [(i + 1) / n for i in range(n)], style, color=colour, label=label, marker=marker
    )


def latency(results: dict[str, Any], out: Path) -> None:
    polls = results["settings"]["polls_ms"]
    rtu = {
        name: run
        for name in COLOURS
        if (run := (results.get(name) or {}).get("rtu")) and run.get("latencies_ms")
    }
    panels = len(polls) + (1 if rtu else 0)
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4), sharey=True, squeeze=False)
    row = list(axes[0])
    for ax, poll in zip(row, polls, strict=False):
        for name, colour in COLOURS.items():
            run = ((results.get(name) or {}).get("latency") or {}).get(str(poll))
            if run and run["latencies_ms"]:
                cdf(ax, run["latencies_ms"], label(name, run), colour)
        ax.axvline(poll + 30, color="grey", linestyle=":", label=f"target p99 ({poll + 30} ms)")
        ax.set_title(f"Modbus TCP, poll {poll} ms")
    if rtu:
        ax = row[-1]
        for name, run in rtu.items():
            cdf(ax, run["latencies_ms"], label(name, run), COLOURS[name])
        ax.axvline(300, color="grey", linestyle=":", label="target p99 (300 ms)")
        ax.set_title("shared 9600-baud RTU line, box poll 50 ms")
    for ax in row:
        ax.axhline(0.99, color="lightgrey", linewidth=0.8)
        ax.set_xlabel("press -> arrival at the broker's subscriber (ms)")
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    row[0].set_ylabel("fraction of presses")
    fig.suptitle("Alarm latency (cumulative distribution of the presses that arrived)")
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)


def label(name: str, run: dict[str, Any]) -> str:
    missed = run.get("missed") or 0
    return f"{name} (n={len(run['latencies_ms'])}" + (f", {missed} never" if missed else "") + ")"


def drain(results: dict[str, Any], out: Path) -> None:
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    for name, colour in COLOURS.items():
        run = (results.get(name) or {}).get("outage")
        if not run or not run["drain_curve_ms"]:
            continue
        seconds = [t / 1000 for t in run["drain_curve_ms"]]
        ax.plot(seconds, range(1, len(seconds) + 1), color=colour, label=name)
        if run.get("drain_s") is not None:
            ax.axvline(run["drain_s"], color=colour, linestyle=":", linewidth=1)
        lat = run.get("latency_during_drain_ms") or []
        if lat:
            cdf(bx, lat, f"{name}, during the drain (n={len(lat)})", colour)
        before = run.get("latency_before_ms") or []
        if before:
            cdf(bx, before, f"{name}, before the outage", colour, "--")
    ax.set_xlabel("seconds since the broker came back")
    ax.set_ylabel("datapoints delivered (cumulative)")
    ax.set_title(f"Drain after a {results['settings']['down_s']:.0f} s broker outage")
    ax.grid(True, alpha=0.3)
    ax.legend()
    bx.set_xscale("log")
    bx.set_xlabel("press -> arrival (ms)")
    bx.set_ylabel("fraction of presses")
    bx.set_title("Alarm latency during the drain")
    bx.grid(True, which="both", alpha=0.3)
    bx.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "drain.png", dpi=110)
    plt.close(fig)


def throughput(results: dict[str, Any], out: Path) -> None:
    """Row 1 (one destination, per unique datapoint) solid; schoolgate's row 2 (two
    destinations) dashed, per delivery and so labelled, as in the report."""
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
    offered: set[int] = set()
    for name, colour in COLOURS.items():
        rows = report.throughput_rows(results, name)
        offered.update(row["devices"] for row in rows)
        for two, style in ((False, "o-"), (True, "s--")):
            steps = [row for row in rows if (len(row["destinations"]) > 1) == two]
            if not steps:
                continue
            devices = [row["devices"] for row in steps]
            police = [row["brokers"]["police"]["datapoints_per_s"] for row in steps]
            to = "two destinations" if two else "one destination"
            ax.plot(devices, police, style, color=colour, label=f"{name}, {to}, at police")
            unique = [row["unique_per_cpu_s"] for row in steps]
            if all(u is not None for u in unique):
                bx.plot(devices, unique, style, color=colour, label=f"{name}, {to}, unique")
            if two:
                per_delivery = [row["deliveries_per_cpu_s"] for row in steps]
                bx.plot(
                    devices, per_delivery, ":", color=colour, label=f"{name}, {to}, per delivery"
                )
    if offered:
        ordered = sorted(offered)
        ax.plot(ordered, [d * 100 for d in ordered], ":", color="grey", label="changes/s offered")
    ax.set_xlabel("devices (10 registers each, changing every 100 ms)")
    ax.set_ylabel("datapoints delivered per second")
    ax.set_title("Throughput")
    bx.set_xlabel("devices")
    bx.set_ylabel("datapoints per CPU-second of the gateway")
    bx.set_title("Efficiency")
    for axis in (ax, bx):
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)


def main() -> None:
    results = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    latency(results, out)
    drain(results, out)
    throughput(results, out)


if __name__ == "__main__":
    main()
