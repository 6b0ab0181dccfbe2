"""`schoolgate demo`: the whole simulated gate on one machine, no hardware.

Runs `simulators.gate` (alarm box, two rising bollards and the bollard sockets on a shared
RS-485 line, the access controller on its own serial line, private police and bureau brokers,
the real gateway process) and shows every message both brokers receive. Presses a panic button
on a timer (the two buttons in turn), resets each alarm the way a guard would (the reset key, or
`schoolgate reset`), and between presses plays a little life at the gate: a card, a door, a
bollard going down and up, a socket bollard pulled and put back. Reports press-to-police latency
(p50, p99) at the end. Exit 0 when every press reached the police and was reset; 1 otherwise.
The guard's page is on, at 127.0.0.1 on a free port (its address is printed; the demo guard's
PIN is `DEMO_PIN`). On Ctrl-C, and at the end of `--duration`, it prints its summary and
removes its temporary folder (kept only when something failed).

Owns the demo's script and its report, nothing else: the gate's layout is `simulators.gate`.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from gateway.commands import control
from gateway.guard.pin import hash_pin
from simulators.broker import BrokerError, free_port
from simulators.gate import RESET_INPUT, GateError, SimulatedGate, simulated_gate
from simulators.measure import percentile


def _life(gate: SimulatedGate) -> list[tuple[str, Callable[[], object]]]:
    """Things that happen at a gate between alarms, one per interval, in a loop."""
    doors, sockets, bollard = gate.doors, gate.sockets, gate.bollards[1]
    return [
        ("a pupil badges in at the gate", lambda: doors.present_card(12345678, 1)),
        ("the pedestrian gate opens", lambda: doors.open_door(1)),
        ("the guard lowers bollard 1 for a delivery van", lambda: bollard.operate("lower")),
        ("the pedestrian gate closes", lambda: doors.close_door(1)),
        ("the van driver pulls socket bollard 1", lambda: sockets.pull(0)),
        ("the guard raises bollard 1 again", lambda: bollard.operate("raise")),
        ("socket bollard 1 is put back", lambda: sockets.insert(0)),
        ("an unknown card is refused", lambda: doors.present_card(87654321, 1, granted=False)),
        ("a teacher leaves by the staff door (exit button)", lambda: doors.exit_button(2)),
    ]


async def _press_and_reset(gate: SimulatedGate, button: int) -> float:
    """One guard's press and its reset: returns press-to-police latency in ms."""
    police, bureau, box = gate.police, gate.bureau, gate.panic_box
    since = len(police.messages)
    pressed_ns = time.time_ns()
    pulse = asyncio.create_task(box.pulse(button, 150))
    arrived = await police.wait_for(
        lambda m: (
            "/events/alarm" in m.topic
            and m.json["type"] == "alarm.panic"
            and m.json["data"]["button"] == button
        ),
        since=since,
        timeout_s=10,
    )
    alarm = arrived.json
    await pulse
    await box.wait_coil(0, True, timeout_s=5)  # the guard's lamp shows the alarm is latched
    await bureau.wait_event(lambda e: e.get("alarm_id") == alarm["alarm_id"], timeout_s=10)
    if button == 0:
        await box.pulse(RESET_INPUT, 150)  # the key switch on the box
    else:
        await control.request(
            gate.control_socket, {"op": "reset", "alarm_id": alarm["alarm_id"], "by": "demo guard"}
        )
    await police.wait_event(
        lambda e: e["type"] == "alarm.reset" and e["alarm_id"] == alarm["alarm_id"], timeout_s=10
    )
    await box.wait_coil(0, False, timeout_s=5)
    return (arrived.arrived_ns - pressed_ns) / 1e6


DEMO_PIN = "2468"


def guard_section(port: int) -> str:
    """The demo's `[guard]`: the page on loopback, one guard whose PIN is `DEMO_PIN`."""
    return (
        f'\n[guard]\nhost = "127.0.0.1"\nport = {port}\nheartbeat_s = 1.0\n'
        f'[[guard.guards]]\nname = "演示保安"\npin_hash = "{hash_pin(DEMO_PIN)}"\n'
    )


async def _page_answers(url: str) -> bool:
    def get() -> bool:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return bool(answer.status == 200)

    try:
        return await asyncio.to_thread(get)
    except OSError:
        return False


def _summary(latencies: list[float]) -> None:
    if latencies:
        print(
            f"{len(latencies)} presses, every one delivered to police and bureau and reset. "
            f"Press-to-police latency: p50 {statistics.median(latencies):.1f} ms, "
            f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms",
            flush=True,
        )


async def _script(
    gate: SimulatedGate, duration_s: float | None, press_every_s: float, latencies: list[float]
) -> list[float]:
    """Presses and life at the gate until `duration_s` is over; the latencies of the presses."""
    life = _life(gate)
    stop_at = None if duration_s is None else time.monotonic() + duration_s
    while stop_at is None or time.monotonic() < stop_at:
        if gate.gateway_exited() is not None:
            raise GateError(f"the gateway exited ({gate.gateway_exited()}); see its log")
        button = len(latencies) % 2
        latency = await _press_and_reset(gate, button)
        latencies.append(latency)
        how = "the reset key" if button == 0 else "`schoolgate reset`"
        print(f"  press {len(latencies)} (button {button}): police had it in {latency:.1f} ms;")
        print(f"  lamp lit, alarm reset with {how}, lamp off")
        what, act = life[(len(latencies) - 1) % len(life)]
        print(f"  at the gate: {what}", flush=True)
        act()
        await asyncio.sleep(press_every_s)
    return latencies


async def run_demo(*, duration_s: float | None, press_every_s: float = 2.0) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="schoolgate-demo-"))
    print("schoolgate demo: a simulated school gate (Ctrl-C to stop)", flush=True)
    latencies: list[float] = []
    page_port = free_port()
    page_url = f"http://127.0.0.1:{page_port}/"
    try:
        async with simulated_gate(workdir, extra_config=guard_section(page_port)) as gate:
            print(gate.summary(), flush=True)
            answers = "answers" if await _page_answers(page_url) else "does NOT answer"
            print(f"guard page: {page_url} ({answers}; PIN {DEMO_PIN})", flush=True)
            gate.show_live()
            try:
                await _script(gate, duration_s, press_every_s, latencies)
            finally:
                for listener in gate.listeners.values():
                    listener.on_message = None  # the shutdown's status messages are no news
    except (TimeoutError, control.ControlError) as exc:
        print(f"FAILED: a press was not delivered and reset in time ({exc!r})")
        print(f"(gateway config and log kept in {workdir})")
        return 1
    except (GateError, BrokerError) as exc:
        print(f"FAILED: {exc}\n(files kept in {workdir})")
        return 1
    except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels us; the gate is torn down
        print("\nstopped (Ctrl-C)", flush=True)
        _summary(latencies)
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    _summary(latencies)
    shutil.rmtree(workdir, ignore_errors=True)  # kept only when something failed
    return 0
