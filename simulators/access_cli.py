"""The `access` bench command: serve simulated access controllers and drive them from stdin.

    python -m simulators access --pty [--address 1 --address 2] [--baud 9600]
    python -m simulators access --serial /dev/ttyUSB1 --address 3

Owns the argument parser of that subcommand and its command prompt; the controllers live in
`simulators.access_controller`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from simulators.access_controller import SimBus, SimController, serve_serial
from simulators.vserial import VirtualSerialLink

HELP = """commands go to the current controller (the first address; `use ADDR` changes it):
  card NUMBER [READER] [denied]   present a card (granted unless 'denied'; refused in lockdown)
  open D | close D                door D opens / closes normally
  force D                         door D is forced open
  hold D                          door D's held-open timer runs out now
  exit D                          the exit button of door D is pressed
  tamper [off]                    the tamper switch opens (or closes again)
  skew MS                         put the controller's clock MS milliseconds off
  use ADDR                        send the following commands to controller ADDR
  status                          lockdown, clock, pending events, fault knobs
  silent on|off                   stop / resume answering
  delay MS                        answer MS milliseconds late
  drop N | corrupt N | garbage N  lose / break the CRC of / put noise before the next N answers
  noise HEX                       put raw bytes on the bus now, e.g. `noise 02 ff 03`
  unplug | plug                   disconnect from / reconnect to the bus
  quit                            stop serving"""


def add_parser(devices: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    access = devices.add_parser("access", help="access controllers on a serial bus")
    where = access.add_mutually_exclusive_group(required=True)
    where.add_argument("--serial", metavar="DEVICE", help="serve on a serial device")
    where.add_argument("--pty", action="store_true", help="serve on a new virtual serial link")
    access.add_argument(
        "--address", type=int, action="append", help="bus address (repeat for several; default 1)"
    )
    access.add_argument("--doors", type=int, default=2, help="doors per controller (default 2)")
    access.add_argument("--baud", type=int, default=9600, help="baud rate (default 9600)")


@contextlib.asynccontextmanager
async def _serving(
    args: argparse.Namespace, controllers: list[SimController]
) -> AsyncIterator[tuple[SimBus, str]]:
    if args.serial:
        async with serve_serial(controllers, args.serial, baudrate=args.baud) as bus:
            yield bus, f"on {args.serial} at {args.baud} baud"
    else:
        async with (
            VirtualSerialLink(baudrate=args.baud) as link,
            serve_serial(controllers, link.device_end, baudrate=args.baud) as bus,
        ):
            yield bus, f"at {args.baud} baud; point the gateway's serial line at {link.host_end}"


def _status(sim: SimController) -> str:
    pending = ", ".join(f"{e.seq}:{e.code.name.lower()}" for e in sim.pending_events) or "none"
    return (
        f"controller {sim.address}  doors {list(sim.doors)}  lockdown={sim.lockdown}  "
        f"clock_offset_ms={sim.clock_offset_ms}  held_open_s={sim.held_open_s}\n"
        f"  unlocks {sim.unlocks}\n  pending events: {pending}\n"
        f"  silent={sim.silent} delay_ms={sim.delay_ms} drop={sim.drop_answers} "
        f"corrupt={sim.corrupt_answers} garbage={sim.garbage_answers}"
    )


_DOOR_ACTIONS = {
    "open": SimController.open_door,
    "close": SimController.close_door,
    "force": SimController.force_door,
    "hold": SimController.hold_door,
    "exit": SimController.exit_button,
}
_KNOBS = {
    "skew": "clock_offset_ms",
    "delay": "delay_ms",
    "drop": "drop_answers",
    "corrupt": "corrupt_answers",
    "garbage": "garbage_answers",
}


def _device_command(sim: SimController, words: list[str]) -> bool:
    """Something happening at the controller; False if `words` is not such a command."""
    match words:
        case ["card", number, *rest]:
            reader = int(rest[0]) if rest and rest[0].isdigit() else 1
            event = sim.present_card(int(number), reader, granted="denied" not in rest)
            print(f"card {number} at reader {reader}: {'granted' if event.granted else 'denied'}")
        case [action, door] if action in _DOOR_ACTIONS:
            _DOOR_ACTIONS[action](sim, int(door))
        case ["tamper", *rest]:
            sim.tamper(active=rest != ["off"])
        case [knob, value] if knob in _KNOBS:
            setattr(sim, _KNOBS[knob], int(value))
        case ["silent", ("on" | "off") as state]:
            sim.silent = state == "on"
        case _:
            return False
    return True


async def _command(bus: SimBus, current: list[SimController], words: list[str]) -> bool:
    """Run one command on `current[0]`; False means quit."""
    match words:
        case ["quit" | "exit"]:
            return False
        case ["use", address]:
            current[0] = bus.controllers[int(address)]
        case ["status"]:
            print(_status(current[0]))
        case ["noise", *hex_bytes]:
            bus.send_garbage(bytes.fromhex("".join(hex_bytes)))
        case ["unplug"]:
            await bus.disconnect()
        case ["plug"]:
            await bus.open()
        case [] | ["help"]:
            print(HELP)
        case _ if not _device_command(current[0], words):
            print(f"unknown command {' '.join(words)!r}; try help")
    return True


async def run(args: argparse.Namespace) -> None:
    doors = range(1, args.doors + 1)
    controllers = [SimController(a, doors=doors) for a in (args.address or [1])]
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with _serving(args, controllers) as (bus, where):
        addresses = ", ".join(str(c.address) for c in controllers)
        print(f"access controllers {addresses} {where}\n{HELP}", flush=True)
        current = [controllers[0]]
        while line := await stdin.readline():
            try:
                if not await _command(bus, current, line.decode().split()):
                    break
            except (ValueError, KeyError) as exc:
                print(f"error: {exc}", flush=True)
