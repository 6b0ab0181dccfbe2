"""The `bollard` bench command: serve a simulated rising-bollard controller and drive it from
stdin.

    python -m simulators bollard --tcp 127.0.0.1:5021 [--unit 2] [--layout vendor_b]
    python -m simulators bollard --rtu /dev/ttyUSB0 --baud 9600
    python -m simulators bollard --pty [--travel-ms 3000]

Owns the argument parser of that subcommand and its command prompt; the controller lives in
`simulators.bollard`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from simulators.bollard import LAYOUTS, BollardController, serve_rtu, serve_tcp
from simulators.vserial import VirtualSerialLink

HELP = """commands:
  raise | lower | emergency     operate the bollard as its local buttons would
  efo on|off                    the emergency fast operation input goes active / clears
  fault CODE                    report fault CODE (0 clears it)
  jam on|off                    movements start but never arrive (a stuck bollard)
  travel MS                     travel time of a normal raise or lower
  status                        position, fault, cycles, EFO, commands taken, fault knobs
  silent on|off                 stop / resume answering
  delay MS                      answer MS milliseconds late
  quit                          stop serving"""


def add_parser(devices: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bollard = devices.add_parser("bollard", help="rising bollard controller (Modbus)")
    where = bollard.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="serve Modbus TCP")
    where.add_argument("--rtu", metavar="DEVICE", help="serve Modbus RTU on a serial device")
    where.add_argument("--pty", action="store_true", help="serve RTU on a new virtual serial link")
    bollard.add_argument("--unit", type=int, default=2, help="Modbus unit id (default 2)")
    bollard.add_argument("--baud", type=int, default=9600, help="RTU baud rate (default 9600)")
    bollard.add_argument(
        "--layout", choices=sorted(LAYOUTS), default="generic", help="register map (profile)"
    )
    bollard.add_argument("--travel-ms", type=int, default=3000, help="raise/lower travel time")


@contextlib.asynccontextmanager
async def _serving(args: argparse.Namespace, sim: BollardController) -> AsyncIterator[str]:
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        async with serve_tcp(sim, host or "127.0.0.1", int(port)) as (bound_host, bound_port):
            yield f"Modbus TCP on {bound_host}:{bound_port}"
    elif args.rtu:
        async with serve_rtu(sim, args.rtu, baudrate=args.baud):
            yield f"Modbus RTU on {args.rtu} at {args.baud} baud"
    else:
        async with (
            VirtualSerialLink(baudrate=args.baud) as link,
            serve_rtu(sim, link.device_end, baudrate=args.baud),
        ):
            yield f"Modbus RTU at {args.baud} baud; point the gateway at {link.host_end}"


def _status(sim: BollardController) -> str:
    return (
        f"unit {sim.unit_id} ({sim.layout.name})  position={sim.position} "
        f"fault={sim.fault_code} cycles={sim.cycles} efo={'on' if sim.efo_input else 'off'}\n"
        f"  jammed={sim.jammed} silent={sim.silent} delay_ms={sim.delay_ms} "
        f"travel_ms={sim.travel_ms}  commands taken: {' '.join(sim.commands) or '-'}"
    )


def _operate(sim: BollardController, words: list[str]) -> bool:
    """The bollard's own commands; False if `words` is none of them."""
    match words:
        case ["raise" | "lower" as what]:
            sim.operate(what)
        case ["emergency"]:
            sim.operate("emergency_raise")
        case ["efo", "on"]:
            sim.press_efo()
        case ["efo", "off"]:
            sim.release_efo()
        case ["fault", code]:
            sim.fault_code = int(code)
        case ["jam", ("on" | "off") as state]:
            sim.jammed = state == "on"
        case ["travel", ms]:
            sim.travel_ms = int(ms)
        case _:
            return False
    return True


def _command(sim: BollardController, words: list[str]) -> bool:
    """Run one command; False means quit."""
    match words:
        case ["quit" | "exit"]:
            return False
        case ["status"]:
            print(_status(sim))
        case ["silent", ("on" | "off") as state]:
            sim.silent = state == "on"
        case ["delay", ms]:
            sim.delay_ms = int(ms)
        case [] | ["help"]:
            print(HELP)
        case _ if not _operate(sim, words):
            print(f"unknown command {' '.join(words)!r}; try help")
    return True


async def run(args: argparse.Namespace) -> None:
    sim = BollardController(args.unit, layout=LAYOUTS[args.layout], travel_ms=args.travel_ms)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with _serving(args, sim) as where:
        print(f"bollard controller unit {args.unit}: {where}\n{HELP}", flush=True)
        while line := await stdin.readline():
            try:
                if not _command(sim, line.decode().split()):
                    break
            except ValueError as exc:
                print(f"error: {exc}", flush=True)
        sim.stop()
