"""Section 1 of the report, alarm latency: Modbus TCP at each poll interval for every
subject, ThingsBoard's storages labelled with what they risk, the short presses and the shared
RTU line."""

from __future__ import annotations

from typing import Any

from .common import LABELS, SUBJECTS, get, num, ratio


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


def latency_section(r: dict[str, Any], add: Any, s: dict[str, Any]) -> None:
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
