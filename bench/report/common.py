"""What every part of the report shares: the subjects and their labels, the issue's targets,
the markers of the suite's block in docs/benchmarks.md, and the small formatters and the lookup
into the results (`num`, `ratio`, `met`, `get`, `own_share`). It renders no section."""

from __future__ import annotations

from typing import Any

BEGIN, END = "<!-- suite:begin -->", "<!-- suite:end -->"


CHAOS_BEGIN, CHAOS_END = "<!-- chaos:begin -->", "<!-- chaos:end -->"


SUBJECTS = ("schoolgate", "thingsboard", "thingsboard-memory")


LABELS = {
    "schoolgate": "schoolgate",
    "thingsboard": "ThingsBoard",
    "thingsboard-memory": "ThingsBoard, memory storage",
}


DRAIN_HEADING = "## Store-and-forward drain"


PER_CPU_TARGET = 1.5
"""Issue 16, item 1: schoolgate's datapoints per CPU-second, per unique datapoint and one
destination each, at least this many times ThingsBoard's."""


OWN_SHARE_TARGET_MB = 10.0
"""Issue 16, item 3: the gateway's own RSS over the stack's floor, demo gate."""


def num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}"
    return str(value)


def ratio(ours: Any, theirs: Any, digits: int = 2) -> str:
    if not isinstance(ours, int | float) or not isinstance(theirs, int | float) or not ours:
        return "n/a"
    return f"{theirs / ours:.{digits}f}"


def met(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**not met**")


def get(results: dict[str, Any], *path: Any) -> Any:
    node: Any = results
    for key in path:
        if node is None:
            return None
        if isinstance(node, list):
            node = node[key] if -len(node) <= key < len(node) else None
        else:
            node = node.get(key)
    return node


def best_step(steps: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    return max(steps, key=lambda s: s["delivered_per_s"]) if steps else None


def own_share(rss_mb: float | None, floor_mb: float | None) -> float | None:
    """The gateway's own resident memory: its RSS less the stack's floor from the same run."""
    if rss_mb is None or floor_mb is None:
        return None
    return rss_mb - floor_mb
