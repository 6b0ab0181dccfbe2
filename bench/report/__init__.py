"""The markdown report of `bench/run_all.py`: renders the suite's results (the dict written to
bench/results/latest.json) and puts it into docs/benchmarks.md between `<!-- suite:begin -->` and
`<!-- suite:end -->`, keeping every other section, and the chaos block between
`<!-- chaos:begin -->` and `<!-- chaos:end -->`, exactly as they are. Every figure comes from the
results; nothing here is measured or typed in.

The package renders section by section: `targets` (the verdicts), `latency` (section 1),
`throughput` (2, counted by `counts`), `sections` (3 and 4 and the notes), on what `common`
shares; `document` writes the result into the page. `render` puts them in order.
"""

from __future__ import annotations

from typing import Any

from .common import (
    DRAIN_HEADING,
    LABELS,
    OWN_SHARE_TARGET_MB,
    PER_CPU_TARGET,
    SUBJECTS,
    get,
    own_share,
)
from .counts import per_cpu_pairs, throughput_rows
from .document import replace_drain_section, write
from .latency import latency_section
from .sections import (
    footprint_section,
    notes_section,
    outage_section,
    transactions_section,
    wakeups_section,
)
from .targets import target_rows, targets_section
from .throughput import per_cpu_table_rows, throughput_section


def render(results: dict[str, Any], *, plots_error: str | None) -> str:
    m = results["machine"]
    s = results["settings"]
    tbv = results["thingsboard_version"]
    out: list[str] = []
    add = out.append
    add(f"## Side by side with the ThingsBoard IoT Gateway {tbv} (bench/run_all.py)\n")
    add(
        "One command runs every figure below against the same simulators and private mosquitto "
        "brokers on loopback, in one run: schoolgate (`gateway run`, its own process, as "
        "bench/drain.py starts it), the ThingsBoard IoT Gateway "
        f"(`thingsboard-gateway=={tbv}` from PyPI, installed by the script into "
        "`.bench-venvs/tb`, Modbus connector, SQLite storage) and raw paho-mqtt QoS 1.\n"
    )
    add(
        "```\n.venv/bin/python bench/run_all.py            # --quick: a short development run"
        "\n```\n"
    )
    add(
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, {m['os']}, Python "
        f"{m['python']}; a shared machine: load average (1/5/15 min) "
        f"{'/'.join(f'{x:.2f}' for x in results['load_start'])} at the start and "
        f"{'/'.join(f'{x:.2f}' for x in results['load_end'])} at the end; the run took "
        f"{results.get('duration_s', 0) / 60:.0f} min"
        + (
            " (**--quick**: development figures, too few samples to quote)"
            if results["quick"]
            else ""
        )
        + (
            f" (**--only {','.join(results['only'])}**: a partial development run)"
            if results.get("only")
            else ""
        )
        + ".\n"
    )
    loads = [
        f"{name} {phase} {values[0]:.2f}"
        for name in SUBJECTS
        for phase, values in (get(results, name, "load") or {}).items()
    ]
    if loads:
        add("1-minute load average after each phase: " + "; ".join(loads) + ".\n")
    targets_section(results, add)
    latency_section(results, add, s)
    throughput_section(results, add)
    outage_section(results, add)
    footprint_section(results, add)
    wakeups_section(results, add)
    transactions_section(results, add)
    notes_section(results, add)
    errors = dict(results.get("errors") or {})
    if plots_error:
        errors["plots"] = plots_error
    if errors:
        add("### What did not run\n")
        for key, error in errors.items():
            add(f"- {key}: `{error[:400]}`")
        add("")
    return "\n".join(out) + "\n"


__all__ = [
    "DRAIN_HEADING",
    "LABELS",
    "OWN_SHARE_TARGET_MB",
    "PER_CPU_TARGET",
    "own_share",
    "per_cpu_pairs",
    "per_cpu_table_rows",
    "render",
    "replace_drain_section",
    "target_rows",
    "throughput_rows",
    "write",
]
