"""Sections 3 and 4 of the report and what follows them: the broker outage and the
reconnects, the footprint (the gateway's own share over the stack's floor, the guard page on and
off), the cost per Modbus transaction, and where the comparison is not like for like."""

from __future__ import annotations

from typing import Any

from .common import LABELS, SUBJECTS, get, num, own_share, ratio

DEMO_ANSWERS_PER_S = 2 * 1000 / 50 + 5 * 1000 / 200 + 1000 / 100
"""Answers a second the demo gate's reads bring (bench/bare_poller.py READS): the alarm box's two
reads every 50 ms, five reads on the RTU line every 200 ms, the access controller every 100 ms."""


def outage_section(r: dict[str, Any], add: Any) -> None:
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


def footprint_section(r: dict[str, Any], add: Any) -> None:
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
    page_floor = get(r, "schoolgate", "footprint_floor_page")
    if page_floor:
        add(
            "| the same stack with aiohttp.web imported (the guard page's prescribed server), "
            f"idle | none | n/a | {page_floor['idle_cpu_percent']:.2f} | "
            f"{page_floor['idle_rss_mb']:.1f} | n/a | n/a |"
        )
    bare = get(r, "schoolgate", "footprint_bare_poller")
    if bare:
        add(
            "| the demo gate's reads by a bare asyncio poller (`bench/bare_poller.py`: the same "
            "reads at the same intervals, compared as bytes; the floor of the idle CPU of any "
            f"asyncio gateway making them) | none | n/a | {bare['idle_cpu_percent']:.2f} | "
            "n/a | n/a | n/a |"
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


def wakeups_section(r: dict[str, Any], add: Any) -> None:
    """Idle CPU as wake-ups a second times the CPU each one costs (bench/wake_cost.py)."""
    cost = get(r, "schoolgate", "footprint_wake_cost")
    rows = [
        (what, get(r, "schoolgate", key))
        for key, what in (
            ("footprint_bare_poller", "the demo gate's reads by a bare asyncio poller"),
            ("footprint_demo", "schoolgate, demo gate, guard page off"),
        )
    ]
    if not cost and not any(run and "idle_wakeups_per_s" in run for _, run in rows):
        return
    add("#### Idle CPU in wake-ups\n")
    add(
        "An idle poller's CPU goes in wake-ups: each time it sleeps (epoll_wait) and an answer or "
        "a timer wakes it. Wake-ups are voluntary context switches over all threads, from /proc; "
        "the cost of one without the event loop (a bare `epoll.poll` with a 10 ms timeout) and "
        "with it (an asyncio task's `asyncio.sleep`) is measured by bench/wake_cost.py in the "
        "same run.\n"
    )
    add("| what | wake-ups a second | CPU per wake-up (µs) | idle CPU (% of a core) |")
    add("| --- | --- | --- | --- |")
    if cost:
        add(f"| one bare epoll wake-up | n/a | {cost['epoll_us_per_wakeup']:.0f} | n/a |")
        add(f"| one asyncio sleep | n/a | {cost['asyncio_us_per_wakeup']:.0f} | n/a |")
    for what, run in rows:
        if run and "idle_wakeups_per_s" in run:
            add(
                f"| {what} | {run['idle_wakeups_per_s']:.0f} | "
                f"{num(run.get('idle_cpu_us_per_wakeup'), 0)} | {run['idle_cpu_percent']:.2f} |"
            )
    if cost:
        add(
            f"\nAt these costs 1% of a core is {1e4 / cost['asyncio_us_per_wakeup']:.0f} asyncio "
            f"wake-ups a second ({1e4 / cost['epoll_us_per_wakeup']:.0f} with no event loop at "
            "all); the demo gate's reads bring at least one answer each, "
            f"{DEMO_ANSWERS_PER_S:.0f} a second, before any timer.\n"
        )
    add("")


def transactions_section(r: dict[str, Any], add: Any) -> None:
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


def notes_section(r: dict[str, Any], add: Any) -> None:
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
