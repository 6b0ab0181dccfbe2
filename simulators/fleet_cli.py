"""`python -m simulators fleet`: the fleet simulator's command line (issue 15).

Owns the options (broker nodes, rates, keys, connection pacing) and running a `Fleet` until
`--duration` ends; the fleet itself is simulators/fleet.py. A bad option (a keepalive below the
connect timeout, a rate of 0) ends it with one line naming it, exit status 1, no traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from pathlib import Path
from typing import Any

import structlog

from gateway.core import keys
from simulators.fleet import Fleet, FleetOptions
from simulators.fleet_pacing import DEFAULT_CONNECT_RATE_PER_S, DEFAULT_CONNECT_WINDOW

log = structlog.get_logger(__name__)


def _endpoint(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host or "127.0.0.1", int(port)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fleet", help="N simulated gateways speaking the MQTT contract")
    p.add_argument("--gateways", type=int, required=True, help="how many gateways")
    p.add_argument("--schools", type=int, help="spread over this many schools (default: N)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument(
        "--node",
        action="append",
        default=[],
        metavar="HOST:PORT",
        help="broker nodes of a cluster (repeatable; replaces --host/--port)",
    )
    p.add_argument(
        "--keys-dir",
        type=Path,
        required=True,
        help="gateway keys are written (and reused) here; give it to the console",
    )
    p.add_argument(
        "--trust",
        action="append",
        default=[],
        metavar="ID=PUB",
        help="a receiver key the gateways take commands from (repeatable)",
    )
    p.add_argument("--alarms-per-min", type=float, default=1.0, help="fleet-wide")
    p.add_argument("--events-per-min", type=float, default=60.0, help="fleet-wide")
    p.add_argument("--heartbeat-s", type=float, default=30.0)
    p.add_argument("--root", default="schoolgate/v1")
    p.add_argument("--duration", type=float, help="end after S seconds")
    add_connect_arguments(p)


def add_connect_arguments(p: argparse.ArgumentParser) -> None:
    """The connection pacing options (also bench/fleet.py's)."""
    p.add_argument(
        "--connect-rate",
        type=float,
        default=DEFAULT_CONNECT_RATE_PER_S,
        metavar="N",
        help="connection attempts started per second, fleet-wide (default %(default)g)",
    )
    p.add_argument(
        "--connect-window",
        type=int,
        default=DEFAULT_CONNECT_WINDOW,
        metavar="N",
        help="handshakes open at once; a slow broker makes the rest wait (default %(default)d)",
    )
    p.add_argument(
        "--connect-timeout-s",
        type=float,
        default=30.0,
        help="each gateway's CONNECT/SUBSCRIBE (default %(default)g)",
    )
    p.add_argument(
        "--keepalive-s",
        type=int,
        default=60,
        help="each gateway's MQTT keepalive, at least the connect timeout (default %(default)d)",
    )


def options_from_args(args: argparse.Namespace) -> FleetOptions:
    trusted = {}
    for text in args.trust:
        key_id, _, value = text.partition("=")
        trusted[key_id] = keys.load_public_key(value, Path.cwd())
    return FleetOptions(
        nodes=[_endpoint(n) for n in args.node] or [(args.host, args.port)],
        gateways=args.gateways,
        keys_dir=args.keys_dir,
        schools=args.schools,
        trusted=trusted,
        alarms_per_min=args.alarms_per_min,
        events_per_min=args.events_per_min,
        heartbeat_s=args.heartbeat_s,
        root=args.root,
        **connect_options(args),
    )


def connect_options(args: argparse.Namespace) -> dict[str, Any]:
    """`FleetOptions`' pacing fields from `add_connect_arguments`' options."""
    return {
        "connect_timeout_s": args.connect_timeout_s,
        "keepalive_s": args.keepalive_s,
        "connect_rate_per_s": args.connect_rate,
        "connect_window": args.connect_window,
    }


async def run_cli(args: argparse.Namespace) -> None:
    options = options_from_args(args)
    try:
        fleet = Fleet(options)
    except ValueError as exc:
        raise SystemExit(f"fleet: {exc}") from None
    async with fleet:
        await fleet.wait_connected(timeout_s=300)
        log.info("fleet_connected", gateways=len(fleet.gateways), keys_dir=str(options.keys_dir))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.duration):
                await asyncio.Event().wait()
