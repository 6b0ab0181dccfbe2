"""The throughput rows as the report and the plots count them: each step's datapoints per
CPU-second per unique datapoint, and the one-destination rows the per-CPU target compares."""

from __future__ import annotations

from typing import Any

from .common import get


def throughput_rows(r: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """Every throughput step of `name`, row 1 (one destination) and row 2 (all of its
    destinations), in one shape: results from before issue 16 counted per delivery only, so
    their unique figures are None (never the per-delivery ones under another name)."""
    rows = []
    for key in ("throughput", "throughput_all_destinations"):
        for step in get(r, name, key) or []:
            rows.append(
                {
                    **step,
                    "destinations": step.get("destinations") or list(step.get("brokers") or {}),
                    "unique_per_s": step.get("unique_per_s"),
                    "unique_per_cpu_s": step.get("unique_per_cpu_s"),
                    "deliveries_per_s": step.get("deliveries_per_s", step.get("delivered_per_s")),
                    "deliveries_per_cpu_s": step.get(
                        "deliveries_per_cpu_s", step.get("datapoints_per_cpu_s")
                    ),
                }
            )
    return rows


def one_destination(r: dict[str, Any], name: str) -> dict[int, dict[str, Any]]:
    """Row 1 of `name` by device count: one destination, counted per unique datapoint."""
    return {
        row["devices"]: row
        for row in throughput_rows(r, name)
        if len(row["destinations"]) == 1 and row["unique_per_cpu_s"] is not None
    }


def per_cpu_pairs(r: dict[str, Any]) -> list[tuple[int, float, float]]:
    """(devices, schoolgate, ThingsBoard) unique datapoints per CPU-second, one destination
    each, at every device count both measured in this run."""
    ours, theirs = one_destination(r, "schoolgate"), one_destination(r, "thingsboard")
    return [
        (n, ours[n]["unique_per_cpu_s"], theirs[n]["unique_per_cpu_s"])
        for n in sorted(set(ours) & set(theirs))
    ]
