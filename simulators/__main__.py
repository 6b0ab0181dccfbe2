"""Bench tester CLI: serve a simulated device and drive it by hand from stdin.

    python -m simulators dido --tcp 127.0.0.1:5020 [--unit 1]
    python -m simulators dido --rtu /dev/ttyUSB0 --baud 9600
    python -m simulators dido --pty            # prints the tty the gateway should open
    python -m simulators access --pty [--address 1 --address 2]   # access controllers
    python -m simulators bollard --tcp 127.0.0.1:5021 [--layout vendor_b]   # rising bollard
    python -m simulators scenario FILE [--expect]   # a timeline against the whole simulated gate
    python -m simulators fleet --gateways N --keys-dir DIR   # N simulated gateways (MQTT contract)

Owns argument parsing and the command prompt only; the devices live in their own modules.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Sequence
from importlib import metadata
from typing import Any

from simulators import access_cli, bollard_cli, fleet_cli, scenario
from simulators.dido import DiDoModule, serve_rtu, serve_tcp
from simulators.vserial import VirtualSerialLink

HELP = """commands:
  press N          close input contact N (counts a press)
  release N        open input contact N
  pulse N [MS]     press, wait MS milliseconds (default 200), release
  status           show inputs, coils and press counters
  silent on|off    stop / resume answering
  delay MS         answer MS milliseconds late
  quit             stop serving"""


class _Version(argparse.Action):
    """`--version`: the program's name (with its device) and the installed package's version."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        print(f"{parser.prog} {metadata.version('schoolgate')}")
        parser.exit(0)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m simulators", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--version", action=_Version)
    devices = parser.add_subparsers(dest="device", required=True)
    dido = devices.add_parser("dido", help="8-in/8-out Modbus DI/DO module")
    where = dido.add_mutually_exclusive_group(required=True)
    where.add_argument("--tcp", metavar="HOST:PORT", help="serve Modbus TCP")
    where.add_argument("--rtu", metavar="DEVICE", help="serve Modbus RTU on a serial device")
    where.add_argument("--pty", action="store_true", help="serve RTU on a new virtual serial link")
    dido.add_argument("--unit", type=int, default=1, help="Modbus unit id (default 1)")
    dido.add_argument("--baud", type=int, default=9600, help="RTU baud rate (default 9600)")
    access_cli.add_parser(devices)
    bollard_cli.add_parser(devices)
    scenario.add_parser(devices)
    fleet_cli.add_parser(devices)
    for device in devices.choices.values():
        device.add_argument("--version", action=_Version)
    return parser.parse_args(argv)


@contextlib.asynccontextmanager
async def _serving(args: argparse.Namespace, module: DiDoModule) -> AsyncIterator[str]:
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        async with serve_tcp(module, host or "127.0.0.1", int(port)) as (bound_host, bound_port):
            yield f"Modbus TCP on {bound_host}:{bound_port}"
    elif args.rtu:
        async with serve_rtu(module, args.rtu, baudrate=args.baud):
            yield f"Modbus RTU on {args.rtu} at {args.baud} baud"
    else:
        async with (
            VirtualSerialLink(baudrate=args.baud) as link,
            serve_rtu(module, link.device_end, baudrate=args.baud),
        ):
            yield f"Modbus RTU at {args.baud} baud; point the gateway at {link.host_end}"


def _status(module: DiDoModule) -> str:
    def bits(values: list[bool]) -> str:
        return " ".join("1" if v else "0" for v in values)

    return (
        f"unit {module.unit_id}  silent={module.silent} delay_ms={module.delay_ms}\n"
        f"  inputs   {bits(module.inputs())}\n"
        f"  coils    {bits(module.coils())}   (0 = lamp, 1 = siren)\n"
        f"  counters {' '.join(str(c) for c in module.counters())}"
    )


async def _command(module: DiDoModule, words: list[str]) -> bool:
    """Run one command; False means quit."""
    match words:
        case ["quit" | "exit"]:
            return False
        case ["press", n]:
            module.press(int(n))
        case ["release", n]:
            module.release(int(n))
        case ["pulse", n, *rest]:
            await module.pulse(int(n), int(rest[0]) if rest else 200)
        case ["status"]:
            print(_status(module))
        case ["silent", ("on" | "off") as state]:
            module.silent = state == "on"
        case ["delay", ms]:
            module.delay_ms = int(ms)
        case [] | ["help"]:
            print(HELP)
        case _:
            print(f"unknown command {' '.join(words)!r}; try help")
    return True


async def _run(args: argparse.Namespace) -> None:
    module = DiDoModule(args.unit)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with _serving(args, module) as where:
        print(f"DI/DO module unit {args.unit}: {where}\n{HELP}", flush=True)
        while line := await stdin.readline():
            try:
                if not await _command(module, line.decode().split()):
                    break
            except ValueError as exc:
                print(f"error: {exc}")
            except IndexError:
                print(f"error: the module has inputs and coils 0..{len(module.inputs()) - 1}")


def main(argv: list[str] | None = None) -> None:
    args = _parse_args(argv)
    if args.device == "scenario":
        sys.exit(scenario.main(args.file, expect=args.expect))
    with contextlib.suppress(KeyboardInterrupt):
        runners = {"access": access_cli.run, "bollard": bollard_cli.run, "fleet": fleet_cli.run_cli}
        asyncio.run(runners.get(args.device, _run)(args))


if __name__ == "__main__":
    main()
