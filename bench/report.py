"""The markdown report of `bench/run_all.py`: renders the suite's results (the dict written to
bench/results/latest.json) and puts it into docs/benchmarks.md between `<!-- suite:begin -->` and
`<!-- suite:end -->`, keeping every other section, and the chaos block between
`<!-- chaos:begin -->` and `<!-- chaos:end -->`, exactly as they are. Every figure comes from the
results; nothing here is measured or typed in.
"""

from __future__ import annotations

from pathlib import Path
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


def replace_drain_section(doc: Path, section: str) -> None:
    """Put bench/drain.py's fresh section in place of the old one, which ends at the next
    heading or marker, whichever comes first."""
    text = doc.read_text()
    section = section.rstrip("\n") + "\n\n"
    if DRAIN_HEADING not in text:
        at = text.index(BEGIN) if BEGIN in text else len(text)
        doc.write_text(text[:at] + section + text[at:])
        return
    start = text.index(DRAIN_HEADING)
    ends = [i for i in (text.find("\n## ", start + 1), text.find("\n<!--", start)) if i != -1]
    end = min(ends) + 1 if ends else len(text)
    doc.write_text(text[:start] + section + text[end:])


def write(doc: Path, section: str) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    block = f"{BEGIN}\n{section.rstrip()}\n{END}"
    if BEGIN in text and END in text:
        start, end = text.index(BEGIN), text.index(END) + len(END)
        text = text[:start] + block + text[end:]
    elif CHAOS_BEGIN in text:
        start = text.index(CHAOS_BEGIN)
        text = text[:start] + block + "\n\n" + text[start:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    if CHAOS_BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n{CHAOS_BEGIN}\n{CHAOS_END}\n"
    doc.write_text(text)


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
    _targets(results, add)
    _latency(results, add, s)
    _throughput(results, add)
    _outage(results, add)
    _footprint(results, add)
    _transactions(results, add)
    _notes(results, add)
    errors = dict(results.get("errors") or {})
    if plots_error:
        errors["plots"] = plots_error
    if errors:
        add("### What did not run\n")
        for key, error in errors.items():
            add(f"- {key}: `{error[:400]}`")
        add("")
    return "\n".join(out) + "\n"


Target = tuple[str, str | None, bool | None]
"""(target, what was measured or None when it was not, verdict or None when there is none)."""


def _targets(r: dict[str, Any], add: Any) -> None:
    add("### Targets\n")
    add("| target | measured | |")
    add("| --- | --- | --- |")
    for target, measured, ok in target_rows(r):
        if measured is None:
            add(f"| {target} | not measured in this run | n/a |")
        else:
            add(f"| {target} | {measured} | {met(ok)} |")
    add("")


def target_rows(r: dict[str, Any]) -> list[Target]:
    """Every target with what this run measured of it; a figure the run did not measure gets
    no verdict (a partial `--only` run, or a phase that failed)."""
    return [
        *_latency_targets(r),
        _rtu_target(r),
        _per_cpu_target(r),
        _drain_target(r),
        *_outage_targets(r),
        *_footprint_targets(r),
        _better_row(r),
    ]


def _latency_targets(r: dict[str, Any]) -> list[Target]:
    rows: list[Target] = []
    for poll in (str(p) for p in get(r, "settings", "polls_ms") or ()):
        lat = get(r, "schoolgate", "latency", poll) or {}
        limit = int(poll) + 30
        target = f"alarm p99 ≤ poll + 30 ms, Modbus TCP, poll {poll} ms"
        if "p99" in lat:
            measured = f"p99 {lat['p99']:.1f} ms over {lat['n']} presses (limit {limit} ms)"
            rows.append((target, measured, lat["p99"] <= limit))
        else:
            rows.append((target, None, None))
    return rows


def _rtu_target(r: dict[str, Any]) -> Target:
    rtu = get(r, "schoolgate", "rtu") or {}
    target = "alarm p99 < 300 ms, shared 9600-baud RTU line with a dead unit (issue 4)"
    if "p99" not in rtu:
        return (target, None, None)
    measured = f"p99 {rtu['p99']:.1f} ms over {rtu['n']} presses" + (
        f", {rtu['missed']} never arrived" if rtu.get("missed") else ""
    )
    return (target, measured, rtu["p99"] < 300 and not rtu.get("missed"))


def _drain_target(r: dict[str, Any]) -> Target:
    drain = get(r, "schoolgate", "drain_section", "figures") or {}
    target = "forwarding ≥ 50% of raw paho QoS 1"
    if "forwarding / raw" not in drain:
        return (target, None, None)
    rounds = "forwarding / raw (each round, against the raw runs either side)"
    measured = (
        "outbox drain, first to last PUBACK, "
        f"{drain.get('gateway forwarding, first to last PUBACK (msg/s)')} msg/s against raw "
        f"{drain.get('raw paho QoS 1 (msg/s)')} msg/s, alternating in the same run: "
        f"{drain.get(rounds)}, median {drain['forwarding / raw']:.2f} (bench/drain.py, "
        f"{drain.get('backlog rows')} rows per round)"
    )
    return (target, measured, drain["forwarding / raw"] >= 0.5)


def _outage_targets(r: dict[str, Any]) -> list[Target]:
    rows: list[Target] = []
    first = get(r, "schoolgate", "outage", "first_delivery_after_up_s")
    target = "first delivery ≤ 2 s after the broker returns"
    if first is not None:
        down = num(get(r, "schoolgate", "outage", "down_s"), 0)
        rows.append((target, f"{first:.2f} s after the {down} s outage", first <= 2))
    else:
        rows.append((target, None, None))
    rc = get(r, "schoolgate", "reconnects") or {}
    if "max" in rc:
        target = f"the same, over {rc['cycles']} outages of {rc['down_s']:.0f} s"
        measured = f"p50 {rc['p50']:.2f} s, max {rc['max']:.2f} s"
        rows.append((target, measured, rc["max"] <= 2 and not rc["never"]))
    else:
        rows.append(("the same, over repeated outages", None, None))
    return rows


def _footprint_targets(r: dict[str, Any]) -> list[Target]:
    rows: list[Target] = []
    floor = get(r, "schoolgate", "footprint_floor", "idle_rss_mb")
    for key, what in (("footprint_demo", "page off"), ("footprint_demo_guard", "page on")):
        target = (
            f"gateway's own RSS ≤ {OWN_SHARE_TARGET_MB:g} MB over the stack's floor, demo gate, "
            f"guard {what}"
        )
        rss = get(r, "schoolgate", key, "idle_rss_mb")
        share = own_share(rss, floor)
        if share is None:
            rows.append((target, None, None))
        else:
            measured = f"{share:.1f} MB ({rss:.1f} MB RSS, floor {floor:.1f} MB, same run)"
            rows.append((target, measured, share <= OWN_SHARE_TARGET_MB))
    cpu = get(r, "schoolgate", "footprint_demo", "idle_cpu_percent")
    target = "idle CPU ≤ 1% of a core, demo gate"
    rows.append((target, None, None) if cpu is None else (target, f"{cpu:.2f}%", cpu <= 1))
    return rows


def own_share(rss_mb: float | None, floor_mb: float | None) -> float | None:
    """The gateway's own resident memory: its RSS less the stack's floor from the same run."""
    if rss_mb is None or floor_mb is None:
        return None
    return rss_mb - floor_mb


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


def _per_cpu_target(r: dict[str, Any]) -> Target:
    target = (
        f"datapoints per CPU-second ≥ {PER_CPU_TARGET:g}x ThingsBoard's, per unique datapoint, "
        "one destination each, SQLite storage, same devices and poll (issue 16)"
    )
    pairs = per_cpu_pairs(r)
    if not pairs:
        return (target, None, None)
    measured = "; ".join(
        f"{n} devices: {o:.0f} vs {t:.0f} ({o / t:.2f}x)" if t else f"{n} devices: {o:.0f} vs 0"
        for n, o, t in pairs
    )
    return (target, measured, all(t and o / t >= PER_CPU_TARGET for _, o, t in pairs))


Comparison = tuple[str, str | None, bool | None]
"""(what is compared, the figures or None when either side was not measured, schoolgate better)."""


def _better_row(r: dict[str, Any]) -> Target:
    """One verdict over every comparison, only when every one of them was measured."""
    target = "better than ThingsBoard (same run)"
    if not r.get("thingsboard"):
        return (target, None, None)
    found = [
        *_latency_comparisons(r),
        _per_cpu_comparison(r),
        _single_comparison(r, "idle RSS", ("footprint_single", "idle_rss_mb"), "MB"),
        _lost_comparison(r),
    ]
    parts = [text for _, text, _ in found if text is not None]
    missing = [what for what, text, _ in found if text is None]
    if missing:
        measured = "; ".join(parts) + ("; " if parts else "")
        return (target, measured + "not measured in this run: " + ", ".join(missing), None)
    return (target, "; ".join(parts), all(bool(ok) for _, _, ok in found))


def _latency_comparisons(r: dict[str, Any]) -> list[Comparison]:
    polls = [str(p) for p in get(r, "settings", "polls_ms") or (20, 50, 100)]
    found: list[Comparison] = []
    p99s = [
        (get(r, "schoolgate", "latency", p, "p99"), get(r, "thingsboard", "latency", p, "p99"))
        for p in polls
    ]
    if all(o is not None and t is not None for o, t in p99s):
        ok = all(o < t for o, t in p99s)
        found.append(
            (
                "latency",
                "latency p99 " + ("lower at every poll" if ok else "NOT lower everywhere"),
                ok,
            )
        )
    else:
        found.append(("latency at every poll", None, None))
    found.append(_single_comparison(r, "RTU line p99", ("rtu", "p99"), "ms"))
    runs = [("latency", p) for p in polls] + [("rtu",)]
    pairs = [(get(r, "schoolgate", *path), get(r, "thingsboard", *path)) for path in runs]
    if all(o and t for o, t in pairs):
        o_missed = sum(o.get("missed") or 0 for o, _ in pairs)
        t_missed = sum(t.get("missed") or 0 for _, t in pairs)
        text = f"presses never arrived {o_missed} vs {t_missed}"
        found.append(("presses never arrived", text, o_missed <= t_missed))
    else:
        found.append(("presses never arrived", None, None))
    return found


def _single_comparison(
    r: dict[str, Any], what: str, path: tuple[str, ...], unit: str
) -> Comparison:
    """Lower is better: schoolgate's figure at `path` against ThingsBoard's."""
    o, t = get(r, "schoolgate", *path), get(r, "thingsboard", *path)
    if o is None or t is None:
        return (what, None, None)
    return (what, f"{what} {o:.1f} vs {t:.1f} {unit}", o < t)


def _per_cpu_comparison(r: dict[str, Any]) -> Comparison:
    what = "datapoints per CPU-second per unique datapoint"
    pairs = per_cpu_pairs(r)
    if not pairs:
        return (what, None, None)
    text = "datapoints per CPU-second (per unique datapoint, one destination each) " + ", ".join(
        f"{o:.0f} vs {t:.0f} at {n} devices" for n, o, t in pairs
    )
    return (what, text, all(o > t for _, o, t in pairs))


def _lost_comparison(r: dict[str, Any]) -> Comparison:
    o, t = get(r, "schoolgate", "outage", "lost"), get(r, "thingsboard", "outage", "lost")
    if o is None or t is None:
        return ("lost in the outage", None, None)
    text = f"lost in the outage {o} vs {t}" + (f" (equal, {o} each)" if o == t else "")
    return ("lost in the outage", text, o <= t)


def _window(r: dict[str, Any], s: dict[str, Any]) -> float:
    """The 'never arrived' window of this run (older results kept it per run only)."""
    if "miss_after_s" in s:
        return float(s["miss_after_s"])
    for name in SUBJECTS:
        for run in (get(r, name, "latency") or {}).values():
            if run and "miss_after_s" in run:
                return float(run["miss_after_s"])
    return 3.0


def _cell(x: dict[str, Any] | None) -> str:
    if not x or "p99" not in x:
        return "n/a"
    return f"{x['p50']:.1f} / {x['p99']:.1f} / {x['max']:.1f}"


def _count(x: dict[str, Any] | None) -> str:
    """'arrived of pressed', with the presses that never arrived (and came late) called out."""
    if not x:
        return "n/a"
    arrived = x.get("n", 0)
    missed = x.get("missed", 0)
    text = f"{arrived} of {x.get('presses', arrived + missed)}"
    if missed:
        late = len(x.get("late_ms") or [])
        text += f" (**{missed} never arrived**" + (f", {late} of them late" if late else "") + ")"
    return text


def _cut_short(name: str, x: dict[str, Any] | None, what: str) -> str | None:
    """A sentence when the budget stopped a run before its presses were done."""
    if not x or "presses_asked" not in x or x.get("presses", 0) >= x["presses_asked"]:
        return None
    return (
        f"{name}, {what}: stopped by the {x['budget_s']:.0f} s budget after {x['presses']} of "
        f"{x['presses_asked']} presses."
    )


def _latency(r: dict[str, Any], add: Any, s: dict[str, Any]) -> None:
    add("### 1. Alarm latency: press in the simulator -> arrival at a subscriber on the broker\n")
    window = _window(r, s)
    tb_runs = (get(r, "thingsboard", "latency") or {}).values()
    tb_longest = max((run["max"] for run in tb_runs if run and "max" in run), default=None)
    late_wait = s.get("late_wait_s", 1.0)
    theirs = [n for n in SUBJECTS[1:] if get(r, n, "latency")]
    add(
        "Modbus TCP, one alarm box (DI/DO module). A press is held "
        "until it arrives, then released (schoolgate: the latched alarm is reset over the control "
        "socket and the bench waits for its `alarm.reset` at the broker); the next press follows "
        "after two poll intervals, the 30 ms debounce and a random fraction of a poll, so "
        "presses land at every phase of the poll cycle. In this phase the bench does not wait "
        "for ThingsBoard's release (`panic` 0) to reach the broker: the gap gives its connector "
        "two polls to see the release, not the time to deliver it. "
        f"schoolgate: {s['presses']} presses per interval; ThingsBoard: "
        f"{s['tb_presses']} per interval (a {s.get('tb_budget_s', 0):.0f} s budget per interval "
        "is a safety net only; a run it stops is named below the table). The method is the "
        "same for every column.\n"
    )
    _storage_legend(r, add, ["schoolgate", *theirs])
    why = ""
    if window < 3:
        in_run = f"; in this run, {tb_longest:.0f} ms" if tb_longest else ""
        why = (
            " The window is over three times the longest ThingsBoard press-to-arrival measured "
            "on Modbus TCP when it was 3 s (447.7 ms on 2026-11-24, 200 presses per interval"
            f"{in_run}): a generous margin, and a miss no longer costs the bench 3 s, which is "
            "what lets 500 ThingsBoard presses per interval fit."
        )
    add(
        f"'Never arrived': no message showing the press within {window:g} s while the button "
        f"was held.{why} After a miss the button is released and the bench watches "
        f"{late_wait:g} s more before the next press; a press that shows up then is still "
        "counted as never arrived ('late' below), which shows whether the window cut a slow "
        "delivery short. ThingsBoard reports on change: when it misses the short release "
        "between two presses, the next press is no change to it and is never sent, the merging "
        "of states a user would see as a lost alarm.\n"
    )
    head = "| poll | schoolgate p50 / p99 / max (ms) | arrived |"
    for name in theirs:
        head += f" {LABELS[name]} p50 / p99 / max (ms) | arrived |"
    head += "".join(f" p99 {LABELS[n]} / schoolgate |" for n in theirs)
    add(head)
    add("| --- " * (3 + 3 * len(theirs)) + "|")
    cut: list[str] = []
    for poll in (str(p) for p in s["polls_ms"]):
        o = get(r, "schoolgate", "latency", poll) or {}
        row = f"| {poll} ms | {_cell(o)} | {_count(o)} |"
        cut += [c for c in (_cut_short("schoolgate", o, f"poll {poll} ms"),) if c]
        for name in theirs:
            t = get(r, name, "latency", poll) or {}
            row += f" {_cell(t)} | {_count(t)} |"
            cut += [c for c in (_cut_short(LABELS[name], t, f"poll {poll} ms"),) if c]
        for name in theirs:
            t = get(r, name, "latency", poll) or {}
            row += f" {ratio(o.get('p99'), t.get('p99'))} |"
        add(row)
    if cut:
        add("\n" + " ".join(cut))
    add("")
    _rtu(r, add, s, window)
    add("Presses shorter than the poll interval (20 ms press, 100 ms poll), delivered:\n")
    add("| | schoolgate | ThingsBoard |")
    add("| --- | --- | --- |")
    o, t = get(r, "schoolgate", "short_presses"), get(r, "thingsboard", "short_presses")

    def short(x: dict[str, Any] | None) -> str:
        return f"{x['delivered']} of {x['presses']}" if x else "n/a"

    add(f"| short presses delivered | {short(o)} | {short(t)} |")
    add("\n" + _release_note(o, t))
    add("\n![latency](img/latency.png)\n")


def _storage_legend(r: dict[str, Any], add: Any, names: list[str]) -> None:
    """What each column's storage risks, from the subjects of the run."""
    risks = r.get("storage_risks") or {}
    lines = [f"- **{LABELS[n]}**: {risks[n]}." for n in names if risks.get(n)]
    if lines:
        add("Storage, and what each risks:\n")
        add("\n".join(lines) + "\n")
    else:  # results from before the subjects said so
        add("Storage: SQLite on both sides (what each risks was not recorded in this run).\n")


def _release_note(o: dict[str, Any] | None, t: dict[str, Any] | None) -> str:
    """Whether the short-press test waited for each delivered press's release at the broker."""
    runs = [x for x in (o, t) if x]
    if not runs:
        return ""
    if all(x.get("waited_for_release") for x in runs):
        missing = ", ".join(
            f"{label} {x['releases_missing']}"
            for label, x in (("schoolgate", o), ("ThingsBoard", t))
            if x
        )
        return (
            "After each delivered press the bench waited for the release to reach the broker "
            "before the next press, for both gateways: schoolgate's `alarm.reset` (its alarm "
            "latches until reset; a button's release is no message of its own), ThingsBoard's "
            f"`panic` 0. Releases that did not arrive within the wait: {missing}."
        )
    return (
        "In this run the short-press test did **not** wait for a delivered press's release to "
        "reach the broker before the next press (ThingsBoard's release may not have been sent "
        "yet when the next press came)."
    )


def _rtu(r: dict[str, Any], add: Any, s: dict[str, Any], window: float) -> None:
    o, t = get(r, "schoolgate", "rtu"), get(r, "thingsboard", "rtu")
    if not o and not t:
        return
    add("#### On a shared 9600-baud Modbus RTU line\n")
    if o and "baudrate" not in o:
        # results from before both gateways ran bench/scenarios.py's rtu_latency
        add(
            "bench/shared_line.py's end-to-end set-up (alarm box at 50 ms and four bollard "
            "socket modules at 200 ms, one of them dead, line timeout 100 ms), schoolgate: "
            f"{_cell(o)} ms (p50 / p99 / max) over {o.get('n')} presses. ThingsBoard was not run "
            "on the RTU line.\n"
        )
        return
    ref = o or t or {}
    add(
        "bench/shared_line.py's end-to-end set-up, built the same way for both gateways "
        "(bench/scenarios.py `rtu_latency`): one emulated "
        f"{ref.get('baudrate', 9600)}-baud RTU line (`VirtualSerialLink`: every byte takes its "
        "wire time), the alarm box (unit 1) polled every 50 ms and four insert-type bollard "
        f"socket DI modules (units 2-5) every {ref.get('other_poll_ms', 200)} ms, unit 5 dead "
        f"(silent), line timeout {ref.get('timeout_ms', 100)} ms. Presses start once the dead "
        "unit has been seen offline at the police broker (schoolgate: its `device.offline`; "
        "ThingsBoard: its `v1/gateway/disconnect` for that device) and are "
        f"{s.get('rtu_gap_s', 0.5):g} s plus a random fraction of a poll apart (shared_line.py's "
        f"pause); 'never arrived' as above ({window:g} s). ThingsBoard's Modbus connector runs "
        "in serial RTU mode on the line's pseudo-terminal (type `serial`, method `rtu`, 9600 "
        "8N1, `timeout` 0.1 s, `retries` 0, all five slaves on the one port, which the "
        "connector polls one request at a time).\n"
    )
    add("| gateway | presses | p50 / p99 / max (ms) | arrived |")
    add("| --- | --- | --- | --- |")
    for label, x in (("schoolgate", o), ("ThingsBoard", t)):
        presses = x.get("presses", x.get("n")) if x else None
        add(f"| {label} | {num(presses, 0)} | {_cell(x)} | {_count(x)} |")
    cut = [
        c for c in (_cut_short("schoolgate", o, "RTU"), _cut_short("ThingsBoard", t, "RTU")) if c
    ]
    p99s = (get(r, "schoolgate", "rtu", "p99"), get(r, "thingsboard", "rtu", "p99"))
    if p99s[0] and p99s[1]:
        cut.append(f"p99 ThingsBoard / schoolgate on the RTU line: {ratio(*p99s)}.")
    if cut:
        add("\n" + " ".join(cut))
    add("")


def per_broker(step: dict[str, Any]) -> str:
    return ", ".join(f"{name} {b['datapoints_per_s']:.0f}" for name, b in step["brokers"].items())


def destinations_label(destinations: list[str]) -> str:
    count = {1: "one", 2: "two"}.get(len(destinations), str(len(destinations)))
    return f"{count} ({' and '.join(destinations)})"


def _throughput(r: dict[str, Any], add: Any) -> None:
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


def _outage(r: dict[str, Any], add: Any) -> None:
    add("### 3. Outage and drain\n")
    o = get(r, "schoolgate", "outage") or get(r, "thingsboard", "outage") or {}
    if not o and not get(r, "schoolgate", "reconnects") and not get(r, "thingsboard", "reconnects"):
        add("Not measured in this run.\n")
        return
    add(
        f"The police broker is stopped for {num(o.get('down_s'), 0)} s (SIGTERM, so mosquitto "
        f"keeps the subscriber's session) while {o.get('devices')} devices keep changing "
        f"{o.get('points')} registers each every {o.get('period_ms')} ms (polled every "
        f"{o.get('poll_ms')} ms, every datapoint to police) and the panic button is pressed once; "
        "then it comes back. Lost = changes made while the gateway ran that never reached the "
        "police subscriber; presses continue while the backlog drains (until it has drained: "
        "few presses fit when it drains fast).\n"
    )
    add("| figure | schoolgate | ThingsBoard | ThingsBoard / schoolgate |")
    add("| --- | --- | --- | --- |")
    rows = [
        ("changes made", "changes", 0),
        ("lost", "lost", 0),
        ("duplicated", "duplicates", 0),
        ("backlog at the return (datapoints)", "backlog_datapoints", 0),
        ("first delivery after the return (s)", "first_delivery_after_up_s", 2),
        ("drain time after the return (s)", "drain_s", 2),
        (
            "press during the outage: arrived after the return (s)",
            "press_during_outage_delivered_after_up_s",
            2,
        ),
    ]
    for label, key, digits in rows:
        o, t = get(r, "schoolgate", "outage", key), get(r, "thingsboard", "outage", key)
        add(f"| {label} | {num(o, digits)} | {num(t, digits)} | {ratio(o, t)} |")
    for label, key in (
        ("press-to-arrival before the outage p50 / p99 (ms)", "latency_before_ms"),
        ("press-to-arrival during the drain p50 / p99 (ms)", "latency_during_drain_ms"),
    ):
        cells = []
        for name in SUBJECTS:
            values = get(r, name, "outage", key) or []
            if values:
                ordered = sorted(values)
                p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
                cells.append(f"{ordered[len(ordered) // 2]:.1f} / {p99:.1f} (n={len(values)})")
            else:
                cells.append("n/a")
        add(f"| {label} | {cells[0]} | {cells[1]} | |")
    cells = []
    for name in SUBJECTS:
        rc = get(r, name, "reconnects") or {}
        if "p50" in rc:
            cells.append(
                f"p50 {rc['p50']:.2f} / max {rc['max']:.2f} over {rc['cycles']} outages of "
                f"{rc['down_s']:.0f} s" + (f", {rc['never']} never" if rc["never"] else "")
            )
        else:
            cells.append("n/a")
    add(f"| first delivery after the return, repeated outages (s) | {cells[0]} | {cells[1]} | |")
    for name in SUBJECTS:
        rerun = get(r, name, "outage", "rerun")
        if rerun:
            add(
                f"\n{name}'s outage run failed in the suite run ({rerun['first_attempt_error']}) "
                f"and was re-run alone at {rerun['at']} (load "
                f"{'/'.join(f'{x:.2f}' for x in rerun['load'])}), with the broker on a port "
                "below the ephemeral range."
            )
    add("\n![drain](img/drain.png)\n")


def _footprint(r: dict[str, Any], add: Any) -> None:
    add("### 4. Footprint\n")
    floor = get(r, "schoolgate", "footprint_floor")
    floor_mb = floor["idle_rss_mb"] if floor else None
    add(
        "The gateway's own share is its idle RSS less the stack's floor (the first row) measured "
        "in the same run; 'n/a' for ThingsBoard, which runs on a stack of its own.\n"
    )
    add(
        "| set-up | gateway | start-up (s) | idle CPU (% of a core) | idle RSS (MB) "
        "| own share over the floor (MB) | peak RSS (MB) |"
    )
    add("| --- " * 7 + "|")
    if floor:
        add(
            "| the stack alone (the floor): Python with asyncio, aiomqtt/paho, pydantic, pymodbus, "
            "pyserial-asyncio-fast, structlog and sqlite3 imported, idle | none | n/a | "
            f"{floor['idle_cpu_percent']:.2f} | {floor['idle_rss_mb']:.1f} | n/a | n/a |"
        )
    for key, setup in (
        ("footprint_demo", "demo gate (5 devices on 3 lines, default intervals), guard page off"),
        ("footprint_demo_guard", "the same, guard page on (`[guard]`, no browser connected)"),
        (
            "footprint_demo_signed",
            "demo gate, page off, with [security]: events signed, commands verified",
        ),
    ):
        demo = get(r, "schoolgate", key)
        if demo:
            add(
                f"| {setup} | schoolgate | "
                f"{num(demo['startup_to_all_devices_polled_s'], 2)} (to every device polled) | "
                f"{demo['idle_cpu_percent']:.2f} | {demo['idle_rss_mb']:.1f} | "
                f"{num(own_share(demo['idle_rss_mb'], floor_mb))} | {demo['peak_rss_mb']:.1f} |"
            )
    for name in SUBJECTS:
        fp = get(r, name, "footprint_single")
        if fp:
            share = own_share(fp["idle_rss_mb"], floor_mb) if name == "schoolgate" else None
            add(
                f"| one alarm box polled each second | {LABELS[name]} | "
                f"{fp['startup_to_first_poll_s']:.2f} (to first poll) | "
                f"{fp['idle_cpu_percent']:.2f} | {fp['idle_rss_mb']:.1f} | {num(share)} | "
                f"{fp['peak_rss_mb']:.1f} |"
            )
    add("")


def _transactions(r: dict[str, Any], add: Any) -> None:
    cost = get(r, "schoolgate", "transaction_cost")
    if not cost:
        return
    add("### 5. CPU per Modbus transaction (bench/transaction_cost.py)\n")
    add(
        "The alarm box's two reads in turn (8 discrete inputs, one press counter) from the DI/DO "
        "simulator in a child process (for RTU over an emulated 9600-baud cable), one request at "
        "a time: schoolgate's line (`drivers.lines.modbus.ModbusLine`) against a bare pymodbus "
        "client loop (`AsyncModbusTcpClient` / `AsyncModbusSerialClient`, retries 0), the "
        "library's practical floor. CPU is the client process's own (user + system). The bare "
        "loop keeps no RTU inter-frame gap; the line does (a timer and a loop iteration per "
        "request when requests follow back to back, as here).\n"
    )
    from transaction_cost import render as render_cost  # noqa: PLC0415 - bench sibling

    add(render_cost(cost) + "\n")


def _notes(r: dict[str, Any], add: Any) -> None:
    add("### Where the comparison is not like for like\n")
    add(
        "- **Alarm semantics.** schoolgate latches a press as `alarm.panic` (one event, then a "
        "reset); ThingsBoard forwards the discrete input as a telemetry value (`panic` 0/1) and "
        "would leave alarm logic to a server rule chain. Latency is timed to the first message "
        "that shows the press in each case.\n"
        "- **Reporting.** ThingsBoard is configured with `reportStrategy: ON_CHANGE` per device "
        "(its shipped default, ON_RECEIVED, sends every poll): the same rule as ours, and fewer "
        "messages for it to send. It packs all changed values of a device into one message; "
        "schoolgate sends one event per datapoint. Throughput is counted in datapoints for both, "
        "per unique datapoint where the two are compared.\n"
        "- **Brokers.** ThingsBoard connects to one broker (the police mosquitto here). In the "
        "throughput comparison (row 1) schoolgate is configured with that one destination too; "
        "in row 2, on the RTU line and in the outage it forwards to two (police and bureau), "
        "so there it does twice ThingsBoard's publishing.\n"
        "- **A server stand-in.** The ThingsBoard gateway sends nothing until the server answers "
        "its `getSessionLimits` RPC; mosquitto is not ThingsBoard, so the bench answers that RPC "
        "on the broker (no rate limits, 100 in flight). Remote configuration is off, statistics "
        "on (its default).\n"
        "- **Short presses.** schoolgate reads the module's press counter (the example "
        "config's `press_counter_register`); ThingsBoard polls the input as a user would "
        "configure it and cannot see a press that ends between two polls.\n"
        "- **Modbus reads.** ThingsBoard reads each configured register with its own request; "
        "schoolgate reads a device's points in one block. Both are what each does with a "
        "natural config, and the simulator's CPU is shown so a simulator-bound step is visible.\n"
        + _rtu_note(r)
    )


def _rtu_note(r: dict[str, Any]) -> str:
    t = get(r, "thingsboard", "rtu")
    if not t or "baudrate" not in t:
        error = (r.get("errors") or {}).get("thingsboard RTU shared line")
        why = f" (it failed: `{error[:300]}`)" if error else ""
        return f"- **RTU.** ThingsBoard was not measured on the shared RTU line{why}.\n"
    o = get(r, "schoolgate", "rtu") or {}
    reports = ""
    if t.get("dead_offline_reports") is not None and t.get("wall_s"):
        reports = (
            f": {t['dead_offline_reports']} disconnects for it during the {t['wall_s']:.0f} s "
            "of presses"
            + (
                f" (schoolgate in its run: {o['dead_offline_reports']} `device.offline`, having "
                "reported the unit offline once before the presses)"
                if o.get("dead_offline_reports") is not None
                else ""
            )
        )
    return (
        "- **RTU.** Both gateways on the same emulated line, slaves and intervals. ThingsBoard's "
        "connector is given `retries` 0 (its default is 3), as schoolgate's line does not "
        "retry: an unanswered request holds the line for the 100 ms timeout once, not four "
        "times. It keeps polling the dead unit every 200 ms and at each failed poll tells "
        f"the server the device disconnected, and connected at the next{reports}; schoolgate "
        "takes a silent unit offline once and backs off its polls. "
        "ThingsBoard polls serial slaves one request at a time from one first-come queue; "
        "schoolgate's line serves the alarm box first. schoolgate's alarm box has no press "
        "counter here (as in bench/shared_line.py).\n"
    )


__all__ = ["render", "write"]
