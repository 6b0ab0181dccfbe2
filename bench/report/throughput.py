"""Section 2 of the report, throughput: the load steps per subject and the datapoints per
CPU-second table, per unique datapoint with one destination each and schoolgate's two
destinations per delivery, labelled so."""

from __future__ import annotations

from typing import Any

from .common import LABELS, PER_CPU_TARGET, SUBJECTS, num
from .counts import one_destination, throughput_rows


def per_broker(step: dict[str, Any]) -> str:
    return ", ".join(f"{name} {b['datapoints_per_s']:.0f}" for name, b in step["brokers"].items())


def destinations_label(destinations: list[str]) -> str:
    count = {1: "one", 2: "two"}.get(len(destinations), str(len(destinations)))
    return f"{count} ({' and '.join(destinations)})"


def throughput_section(r: dict[str, Any], add: Any) -> None:
    add("### 2. Throughput: many devices changing fast\n")
    if not any(throughput_rows(r, name) for name in SUBJECTS):
        add("Not measured in this run.\n")
        return
    add(
        "N simulated Modbus TCP devices (one connection each, one simulator process) x 10 input "
        "registers, every register changing every 100 ms (each change a unique value), polled "
        "every 100 ms; N doubles from 20 until delivery saturates (under 90% of changes "
        "delivered, no gain in unique datapoints, or a backlog still draining 5 s after the "
        "window). SQLite storage on both sides. Row 1: every gateway sends every datapoint to "
        "one broker (police), as ThingsBoard does. Row 2: schoolgate sends every datapoint to "
        "both brokers (police and bureau), its configuration at a school. CPU and peak RSS are "
        "the gateway process's, from /proc.\n"
    )
    add(
        "Counted two ways, and labelled: **per unique datapoint** (each change once, whichever "
        "broker it reached first, inside the measurement window) and **per delivery** (each "
        "broker's copy counted: with two destinations every datapoint counts twice). A repeat "
        "at the same broker counts in neither.\n"
    )
    _per_cpu_table(r, add)
    add(
        "| gateway | destinations | devices | changes/s | unique datapoints/s | deliveries/s "
        "(per broker) | fraction delivered | gateway CPU (% of a core) | unique datapoints per "
        "CPU-second | deliveries per CPU-second | peak RSS (MB) | simulator CPU (%) |"
    )
    add("| --- " * 12 + "|")
    for name in SUBJECTS:
        for row in throughput_rows(r, name):
            add(
                f"| {LABELS[name]} | {destinations_label(row['destinations'])} | "
                f"{row['devices']} | {row['changes_per_s']:.0f} | "
                f"{num(row['unique_per_s'], 0)} | {num(row['deliveries_per_s'], 0)} "
                f"({per_broker(row)}) | {row['fraction_delivered']:.3f} | "
                f"{row['cpu_percent']:.0f} | {num(row['unique_per_cpu_s'], 0)} | "
                f"{num(row['deliveries_per_cpu_s'], 0)} | {row['peak_rss_mb']:.1f} | "
                f"{row['sim_cpu_percent']:.0f} |"
            )
    if any(row["unique_per_s"] is None for n in SUBJECTS for row in throughput_rows(r, n)):
        add(
            "\n'n/a' per unique datapoint: this run counted per delivery only (before issue "
            "16); schoolgate's figures there are per delivery to two brokers, about twice its "
            "unique ones."
        )
    raw = r.get("raw_paho") or {}
    if raw:
        add(
            f"\nRaw paho-mqtt QoS 1 to a fresh mosquitto in this run (one client, window 32, "
            f"{raw['payload_bytes']} B payloads): {raw['msg_per_s']:,.0f} msg/s."
        )
    add(
        "Polling throughput is bound by the Modbus simulators and the 2 cores they share with "
        "the gateway and brokers; the forwarding ceiling is the outbox drain below and in "
        "bench/drain.py's section.\n"
    )
    add("![throughput](img/throughput.png)\n")


def per_cpu_table_rows(r: dict[str, Any]) -> tuple[list[int], list[tuple[str, str, list[str]]]]:
    """The datapoints-per-CPU-second comparison: device counts, and rows of (configuration,
    how it is counted, one cell per device count). Row 1 is the comparison the target reads;
    row 2, per delivery, is labelled so and never compared with ThingsBoard."""
    ours = one_destination(r, "schoolgate")
    theirs = one_destination(r, "thingsboard")
    both = {
        row["devices"]: row
        for row in throughput_rows(r, "schoolgate")
        if len(row["destinations"]) > 1
    }
    devices = sorted(set(ours) | set(theirs) | set(both))

    def cells(rows: dict[int, dict[str, Any]], key: str) -> list[str]:
        return [num(rows[n].get(key), 0) if n in rows else "n/a" for n in devices]

    ratios = [
        f"{ours[n]['unique_per_cpu_s'] / theirs[n]['unique_per_cpu_s']:.2f}x"
        if n in ours and n in theirs and theirs[n]["unique_per_cpu_s"]
        else "n/a"
        for n in devices
    ]
    rows = [
        (
            "1. schoolgate, one destination (police)",
            "per unique datapoint",
            cells(ours, "unique_per_cpu_s"),
        ),
        (
            "1. ThingsBoard, one destination (police)",
            "per unique datapoint",
            cells(theirs, "unique_per_cpu_s"),
        ),
        (
            "1. schoolgate / ThingsBoard",
            f"per unique datapoint (target ≥ {PER_CPU_TARGET:g}x)",
            ratios,
        ),
        (
            "2. schoolgate, two destinations (police and bureau)",
            "**per delivery** (each datapoint counted once per broker: twice)",
            cells(both, "deliveries_per_cpu_s"),
        ),
        (
            "2. schoolgate, two destinations (police and bureau)",
            "per unique datapoint",
            cells(both, "unique_per_cpu_s"),
        ),
    ]
    return devices, rows


def _per_cpu_table(r: dict[str, Any], add: Any) -> None:
    devices, rows = per_cpu_table_rows(r)
    if not devices:
        return
    add("Datapoints per CPU-second of the gateway, same devices, same poll, same run:\n")
    add("| configuration | counted | " + " | ".join(f"{n} devices" for n in devices) + " |")
    add("| --- " * (2 + len(devices)) + "|")
    for config, counted, cells in rows:
        add(f"| {config} | {counted} | " + " | ".join(cells) + " |")
    add(
        "\nOnly row 1 compares the gateways: row 2 is what a school's configuration costs, and "
        "its per-delivery figure is not comparable with ThingsBoard's one destination.\n"
    )
