"""The scenario runner: plays a tester's TOML timeline against the whole simulated gate and, with
`--expect`, checks what the police and bureau brokers received.

    python -m simulators scenario simulators/scenarios/panic_and_reset.toml --expect
    schoolgate scenario FILE [--expect]

Owns playing the steps on a monotonic clock from the moment the gate is ready, what each step
does to the simulators, judging the expectations against the listeners' records, the pass/fail
table, and the exit codes: 0 all passed (or no --expect), 1 a mismatch or the gate failed, 2 the
scenario file is invalid. The file format is `simulators.scenario_model`; the gate is
`simulators.gate`. docs/simulators/scenarios.md is the tester's guide.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from gateway.core.clock import TEST_WALL_START_VAR
from simulators.bollard import BollardController
from simulators.broker import BrokerError
from simulators.gate import (
    RESET_INPUT,
    SITE_TZ,
    GateError,
    SimulatedGate,
    arrival_s,
    simulated_gate,
)
from simulators.scenario_model import (
    BollardFault,
    BollardJam,
    BollardMove,
    BrokerStep,
    Card,
    Door,
    Expect,
    Garbage,
    Press,
    Pulse,
    ResetKey,
    Scenario,
    ScenarioError,
    Silent,
    Slow,
    Socket,
    Step,
    Tamper,
    Wait,
    load_scenario,
)


@dataclass(frozen=True, slots=True)
class Verdict:
    number: int
    expect: Expect
    window: tuple[float, float]
    """Seconds from start; the start is -inf when the window is not tied to a step."""
    arrivals: list[float]
    """First arrival (seconds from start) of each distinct matching event, in order."""
    in_order: bool = True
    """With `before`: this one's first event came before the other expectation's first."""

    @property
    def passed(self) -> bool:
        got = len(self.arrivals)
        if self.expect.count is not None:
            return got == self.expect.count and self.in_order
        return got >= (self.expect.at_least or 1) and self.in_order


# -- playing ---------------------------------------------------------------------------------


def describe_step(step: Step) -> str:
    fields = step.model_dump(exclude={"do", "at", "id"})
    return " ".join([step.do, *(f"{k}={v}" for k, v in fields.items())])


_BOLLARD_ACTIONS: dict[str, Callable[[BollardController], None]] = {
    # The local panel: the gateway sees the bollard move without its command.
    "lower_bollard": lambda b: b.operate("lower"),
    "raise_bollard": lambda b: b.operate("raise"),
    "emergency_raise": lambda b: b.press_efo(),  # the EFO input stays active until release_efo
    "release_efo": lambda b: b.release_efo(),
}


async def _perform(gate: SimulatedGate, step: Step, tg: asyncio.TaskGroup) -> None:
    """Do one step to the simulators, as the person or the fault at the gate would."""
    match step:
        case Press():
            (gate.panic_box.press if step.do == "press" else gate.panic_box.release)(step.button)
        case Pulse():
            # Alongside the timeline, so a long press does not push later steps back.
            tg.create_task(gate.panic_box.pulse(step.button, step.ms), name="pulse")
        case ResetKey():
            tg.create_task(gate.panic_box.pulse(RESET_INPUT, step.ms), name="reset-key")
        case BollardMove():
            _BOLLARD_ACTIONS[step.do](gate.bollards[step.bollard])
        case Socket():
            (gate.sockets.pull if step.do == "pull_socket" else gate.sockets.insert)(
                step.socket - 1
            )
        case Card():
            gate.doors.present_card(step.card, step.reader, granted=step.granted)
        case Door():
            getattr(gate.doors, step.do)(step.door)  # the step names are the simulator's methods
        case Tamper():
            gate.doors.tamper(step.active)
        case _:
            await _inject(gate, step)


async def _inject(gate: SimulatedGate, step: Step) -> None:
    """The steps that are faults, outages or the timeline's own pause."""
    match step:
        case BollardFault():
            gate.bollards[step.bollard].fault_code = step.code
        case BollardJam():
            gate.bollards[step.bollard].jammed = step.on
        case Silent():
            gate.devices[step.device].silent = step.on
        case Slow():
            gate.devices[step.device].delay_ms = step.ms
        case Garbage():
            gate.lines[step.line].inject_garbage("to_host", bytes.fromhex(step.hex))
        case BrokerStep():
            broker = gate.brokers[step.broker]
            if step.do == "start_broker":
                await broker.start()
            else:
                # Gracefully, so mosquitto keeps the listener's session: what the gateway sends
                # before the listener has reconnected is queued for it, not lost to the check.
                await broker.stop(graceful=True)
        case Wait():
            await asyncio.sleep(step.seconds)  # the timeline's own pause, not a wait for state


async def play(gate: SimulatedGate, scenario: Scenario, t0: float) -> list[float]:
    """Run the steps; returns when each one started, in seconds from `t0` (monotonic)."""
    started: list[float] = []
    async with asyncio.TaskGroup() as tg:
        for number, step in enumerate(scenario.step, 1):
            if step.at is not None:
                await asyncio.sleep(max(0.0, t0 + step.at - time.monotonic()))
            if gate.gateway_exited() is not None:
                raise GateError(
                    f"the gateway exited ({gate.gateway_exited()}) before step {number}"
                )
            started.append(time.monotonic() - t0)
            label = f" [{step.id}]" if step.id else ""
            print(f"  {started[-1]:7.2f}s  step {number}{label}: {describe_step(step)}", flush=True)
            await _perform(gate, step, tg)
    return started


# -- judging ---------------------------------------------------------------------------------


def _open_ended(expect: Expect) -> bool:
    return expect.within is None and expect.by is None


def _window(
    scenario: Scenario, expect: Expect, started: list[float], end_s: float
) -> tuple[float, float]:
    """Seconds from start; an open-ended window closes at `end_s`, the end of the run."""
    begin = -math.inf if expect.after is None else started[scenario.step_number(expect.after) - 1]
    if expect.within is not None:
        return begin, begin + expect.within
    return begin, expect.by if expect.by is not None else end_s


def has(actual: Any, wanted: Any) -> bool:
    """`wanted` as a pattern: a table matches when each of its keys does (other keys are ignored,
    at any depth); a list matches a list of the same length item by item; else by equality."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            k in actual and has(actual[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(has(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return bool(actual == wanted)


def _arrivals(
    gate: SimulatedGate, expect: Expect, window: tuple[float, float], t0: float
) -> list[float]:
    first_seen: dict[str, float] = {}
    for message in gate.listeners[expect.broker].messages:
        if "/events/" not in message.topic:
            continue
        event = message.json
        data = event.get("data", {})
        at = arrival_s(message, t0)
        if (
            expect.matches_type(event.get("type", ""))
            and (expect.device is None or event.get("device", {}).get("id") == expect.device)
            and (expect.historical is None or event.get("historical") is expect.historical)
            and has(data, expect.data)
            and window[0] <= at <= window[1]
        ):
            first_seen.setdefault(event["id"], at)  # a repeated delivery has the same id
    return sorted(first_seen.values())


async def _decide(
    gate: SimulatedGate, number: int, expect: Expect, window: tuple[float, float], t0: float
) -> Verdict:
    listener = gate.listeners[expect.broker]
    close_at = t0 + window[1]
    if expect.count is None:
        # At least N: decided as soon as N have come; otherwise when the window closes.
        need = expect.at_least or 1
        while len(_arrivals(gate, expect, window, t0)) < need and time.monotonic() < close_at:
            try:
                await listener.wait_for(
                    lambda _m: True,
                    since=len(listener.messages),
                    timeout_s=close_at - time.monotonic(),
                )
            except TimeoutError:
                break
    else:
        # Exactly N (0: must not come): only the closed window can tell.
        await asyncio.sleep(max(0.0, close_at - time.monotonic()))
    return Verdict(number, expect, window, _arrivals(gate, expect, window, t0))


async def judge(
    gate: SimulatedGate, scenario: Scenario, started: list[float], t0: float
) -> list[Verdict]:
    """Expectations with a window of their own first; then the open-ended ones, whose window is
    the whole run: until the others are decided, and at least `settle_s` after the last step."""
    settled_s = time.monotonic() - t0 + scenario.settle_s
    numbered = list(enumerate(scenario.expect, 1))
    verdicts: dict[int, Verdict] = {}
    for phase in (False, True):
        end_s = max(settled_s, time.monotonic() - t0)
        async with asyncio.TaskGroup() as tg:
            tasks = [
                tg.create_task(
                    _decide(gate, n, e, _window(scenario, e, started, end_s), t0),
                    name=f"expect-{n}",
                )
                for n, e in numbered
                if _open_ended(e) is phase
            ]
        verdicts.update((task.result().number, task.result()) for task in tasks)
    return in_order([verdicts[n] for n, _ in numbered])


def in_order(verdicts: list[Verdict]) -> list[Verdict]:
    """Judge each `before`: its first event must have come, and before the other's first."""
    judged = []
    for verdict in verdicts:
        before = verdict.expect.before
        if before is None:
            judged.append(verdict)
            continue
        mine, theirs = verdict.arrivals, verdicts[before - 1].arrivals
        ok = bool(mine) and (not theirs or mine[0] < theirs[0])
        judged.append(replace(verdict, in_order=ok))
    return judged


def _what(expect: Expect) -> str:
    extra = [f"{k}={v}" for k, v in expect.data.items()]
    if expect.historical is not None:
        extra.append(f"historical={str(expect.historical).lower()}")
    if expect.before is not None:
        extra.append(f"before expect {expect.before}")
    device = expect.device or "any device"
    return f"{expect.type} from {device}" + (f" ({', '.join(extra)})" if extra else "")


def _window_text(scenario: Scenario, verdict: Verdict) -> str:
    expect, (begin, end) = verdict.expect, verdict.window
    if expect.after is not None:
        step = scenario.step_number(expect.after)
        return f"step {step} +{end - begin:.1f}s" if expect.within else f"step {step} to the end"
    return f"by {end:.1f}s" if expect.by else "whole run"


def report(scenario: Scenario, verdicts: list[Verdict]) -> str:
    rows = [("#", "result", "broker", "expected", "window", "wanted", "got")]
    for v in verdicts:
        got = str(len(v.arrivals))
        if v.arrivals:
            got += f" (first at {v.arrivals[0]:.2f}s)"
        rows.append(
            (
                str(v.number),
                "pass" if v.passed else "FAIL",
                v.expect.broker,
                _what(v.expect),
                _window_text(scenario, v),
                v.expect.wanted,
                got,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]
    failed = [v for v in verdicts if not v.passed]
    for v in failed:
        lines.append(
            f"FAIL expect {v.number}: {v.expect.broker} should receive {v.expect.wanted} "
            f"{_what(v.expect)} ({_window_text(scenario, v)}), got {len(v.arrivals)}"
        )
    passed = len(verdicts) - len(failed)
    lines.append(f"{scenario.name}: {passed} of {len(verdicts)} expectations passed")
    return "\n".join(lines)


# -- running ---------------------------------------------------------------------------------


def gateway_env(scenario: Scenario, workdir: Path) -> dict[str, str]:
    """Put the scenario's calendar next to the gateway config; the clock seam's variable when
    the scenario sets the gateway's clock (`gateway.core.clock.scenario_clock_from_env`)."""
    setup = scenario.gate
    if setup.calendar is not None:
        shutil.copyfile(setup.calendar, workdir / "calendar.toml")
    if setup.clock_start is None:
        return {}
    start = setup.clock_start.replace(tzinfo=ZoneInfo(SITE_TZ))
    print(f"  the gateway's clock starts at {start.isoformat()} (site time)", flush=True)
    return {TEST_WALL_START_VAR: str(int(start.timestamp() * 1000))}


async def run(scenario: Scenario, *, expect: bool) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="schoolgate-scenario-"))
    print(f"scenario {scenario.name!r}: starting the simulated gate", flush=True)
    verdicts: list[Verdict] = []
    failure: str | None = None
    env = gateway_env(scenario, workdir)
    try:
        async with simulated_gate(workdir, extra_config=scenario.gate.config, env=env) as gate:
            print(gate.summary(), flush=True)
            t0 = gate.ready_at
            gate.show_live(t0)
            started = await play(gate, scenario, t0)
            if expect:
                verdicts = await judge(gate, scenario, started, t0)
            else:
                await asyncio.sleep(scenario.settle_s)  # let the last steps' events arrive
            for listener in gate.listeners.values():
                listener.on_message = None  # the shutdown's status messages are no news
    except* (GateError, BrokerError) as group:  # from inside the task groups too
        failure = "; ".join(str(exc) for exc in group.exceptions)
    if failure is not None:
        print(f"FAILED: {failure}\n(files kept in {workdir})", flush=True)
        return 1
    if not expect:
        print(f"{scenario.name}: played {len(scenario.step)} steps (no --expect: nothing checked)")
    else:
        print(report(scenario, verdicts), flush=True)
        if not all(v.passed for v in verdicts):
            print(f"(gateway config and log kept in {workdir})")
            return 1
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


def main(path: Path, *, expect: bool) -> int:
    """The whole command: 2 for an invalid file, else what `run` returns."""
    try:
        scenario = load_scenario(path)
    except ScenarioError as exc:
        print(f"{exc.path}: invalid scenario:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    # paho logs each dropped connection of the listeners; a stopped broker is the scenario's own
    # doing, and the runner prints what matters.
    logging.getLogger("mqtt").setLevel(logging.CRITICAL)
    return asyncio.run(run(scenario, expect=expect))


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("scenario", help="play a scenario file against the whole simulated gate")
    p.add_argument("file", type=Path, help="scenario TOML (see docs/simulators/scenarios.md)")
    p.add_argument(
        "--expect", action="store_true", help="check the [[expect]] entries; exit 1 on a mismatch"
    )
