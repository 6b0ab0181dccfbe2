"""`schoolgate demo`: the whole simulated gate on one machine: the whole alarm loop.

Runs `simulators.gate` (alarm box, two rising bollards and the bollard sockets on a shared
RS-485 line, the access controller on its own serial line, private police and bureau brokers,
the real gateway process) and shows every message both brokers receive. It makes its own keys in
its temporary folder (the gateway's and a police desk's; `[security]` set, so events are signed
and only the desk may acknowledge). Presses a panic button on a timer (the two buttons in turn);
the simulated police desk (`simulators.police_desk`) acknowledges each alarm after a moment with
a signed `acknowledge`; the alarm stays latched (lamp steady) until the simulated guard resets it:
through the guard page's action with the demo PIN for button 0, with the reset key on the box for
button 1. Between presses it plays a little life at the gate: a card, a door, a bollard going
down and up, a socket bollard pulled and put back. Reports press-to-police latency (p50, p99) at
the end. Exit 0 when every press reached the police, was acknowledged and reset; 1 otherwise.
The guard's page is on, at 127.0.0.1 on a free port (its address is printed; the demo guard's
PIN is `DEMO_PIN`). On Ctrl-C (to the demo alone or to its whole process group, brokers and
gateway included) and on SIGTERM, and at the end of `--duration`, it prints its summary and
removes its temporary folder (kept only when something failed).

Owns the demo's script and its report, nothing else: the gate's layout is `simulators.gate`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

from gateway.guard.pin import hash_pin
from simulators import police_desk
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


async def _press_and_reset(
    gate: SimulatedGate, desk: police_desk.PoliceDesk, page_url: str, button: int
) -> float:
    """One guard's press, the police desk's acknowledgement and the guard's reset: returns
    press-to-police latency in ms."""
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
    alarm_id = arrived.json["alarm_id"]
    await pulse
    await box.wait_coil(0, True, timeout_s=5)  # the guard's lamp shows the alarm is latched
    await bureau.wait_event(lambda e: e.get("alarm_id") == alarm_id, timeout_s=10)
    await desk.acknowledge(alarm_id)
    await bureau.wait_event(
        lambda e: e["type"] == "alarm.acknowledged" and e["alarm_id"] == alarm_id, timeout_s=10
    )
    if button == 0:
        await _page_reset(page_url, alarm_id)  # the guard, on the page, with the PIN
    else:
        await box.pulse(RESET_INPUT, 150)  # the key switch on the box
    await police.wait_event(
        lambda e: e["type"] == "alarm.reset" and e["alarm_id"] == alarm_id, timeout_s=10
    )
    await box.wait_coil(0, False, timeout_s=5)
    return (arrived.arrived_ns - pressed_ns) / 1e6


class PageRefused(Exception):
    """The guard page did not take the demo guard's reset."""


async def _page_reset(page_url: str, alarm_id: str) -> None:
    """POST the page's reset action with the demo PIN, as the page's button does."""
    body = json.dumps({"action": "reset", "target": alarm_id, "pin": DEMO_PIN}).encode()
    request = urllib.request.Request(
        page_url + "api/action", data=body, headers={"Content-Type": "application/json"}
    )

    def post() -> dict[str, object]:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return dict(json.load(answer))

    try:
        answer = await asyncio.to_thread(post)
    except OSError as exc:  # urllib's HTTPError (a refusal) is an OSError too
        raise PageRefused(f"reset of {alarm_id} on the guard page: {exc}") from exc
    if answer.get("ok") is not True:
        raise PageRefused(f"reset of {alarm_id} on the guard page: {answer}")


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
            f"{len(latencies)} presses, every one delivered to police and bureau, "
            "acknowledged and reset. "
            f"Press-to-police latency: p50 {statistics.median(latencies):.1f} ms, "
            f"p99 {percentile(latencies, 0.99):.1f} ms, max {max(latencies):.1f} ms",
            flush=True,
        )


class Demo:
    """One run: the presses so far and how it ended."""

    def __init__(self, duration_s: float | None, press_every_s: float) -> None:
        self.duration_s = duration_s
        self.press_every_s = press_every_s
        self.latencies: list[float] = []
        self.workdir = Path(tempfile.mkdtemp(prefix="schoolgate-demo-"))
        self.page_port = free_port()
        self.page_url = f"http://127.0.0.1:{self.page_port}/"

    async def session(self) -> None:
        """Start the gate, then press and reset until `duration_s` is over."""
        security, desk_key = police_desk.make_keys(self.workdir, "north-gate")
        extra = guard_section(self.page_port) + security
        async with simulated_gate(self.workdir, extra_config=extra) as gate:
            print(gate.summary(), flush=True)
            answers = "answers" if await _page_answers(self.page_url) else "does NOT answer"
            print(f"guard page: {self.page_url} ({answers}; PIN {DEMO_PIN})", flush=True)
            police = gate.brokers["police"]
            desk = police_desk.PoliceDesk(desk_key, "sim-school", "north-gate", police.host,
                                          police.port)  # fmt: skip
            gate.show_live()
            try:
                await self._script(gate, desk)
            finally:
                for listener in gate.listeners.values():
                    listener.on_message = None  # the shutdown's status messages are no news

    async def _script(self, gate: SimulatedGate, desk: police_desk.PoliceDesk) -> None:
        life = _life(gate)
        stop_at = None if self.duration_s is None else time.monotonic() + self.duration_s
        while stop_at is None or time.monotonic() < stop_at:
            if gate.gateway_exited() is not None:
                raise GateError(f"the gateway exited ({gate.gateway_exited()}); see its log")
            button = len(self.latencies) % 2
            latency = await _press_and_reset(gate, desk, self.page_url, button)
            self.latencies.append(latency)
            how = "on the guard page (PIN)" if button == 0 else "with the reset key"
            print(f"  press {len(self.latencies)} (button {button}): police had it in "
                  f"{latency:.1f} ms;")  # fmt: skip
            print(f"  acknowledged by the police desk, reset {how}, lamp off")
            what, act = life[(len(self.latencies) - 1) % len(life)]
            print(f"  at the gate: {what}", flush=True)
            act()
            await asyncio.sleep(self.press_every_s)


async def _until_stopped(session: Awaitable[None]) -> bool:
    """Run `session` until it ends or SIGINT/SIGTERM comes; True when a signal stopped it.

    The demo takes the signals itself rather than leaving SIGINT to `asyncio.run`: Ctrl-C in a
    terminal reaches the whole process group, so mosquitto and the gateway die at the same
    moment, and a wait that was about to end (asyncio.wait_for in 3.11 returns a result that
    completes together with its cancellation) could swallow asyncio.run's one cancel and leave
    the demo waiting on a dead broker. Here a stop cancels the session task again until it is
    done, and what it raises while stopping is the teardown of a gate that is going away."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(session)
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # the session's own outcome: done, or its failure
            return False
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)  # cancelled again if it swallowed one
        with contextlib.suppress(asyncio.CancelledError, *_FAILURES):
            task.result()
        return True
    finally:
        stopping.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


_FAILURES = (TimeoutError, PageRefused, GateError, BrokerError)


async def run_demo(*, duration_s: float | None, press_every_s: float = 2.0) -> int:
    demo = Demo(duration_s, press_every_s)
    print("schoolgate demo: a simulated school gate (Ctrl-C to stop)", flush=True)
    try:
        stopped = await _until_stopped(demo.session())
    except (TimeoutError, PageRefused) as exc:
        print(f"FAILED: a press was not delivered, acknowledged and reset in time ({exc!r})")
        print(f"(gateway config and log kept in {demo.workdir})")
        return 1
    except (GateError, BrokerError) as exc:
        print(f"FAILED: {exc}\n(files kept in {demo.workdir})")
        return 1
    if stopped:
        print("\nstopped (Ctrl-C)", flush=True)
    _summary(demo.latencies)
    shutil.rmtree(demo.workdir, ignore_errors=True)  # kept only when something failed
    return 0
