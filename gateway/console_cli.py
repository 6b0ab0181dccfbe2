"""`schoolgate console`: its arguments, their validation, and the terminal around a `Console`.

Owns turning the command line into `ConsoleOptions` (refusing bad input with exit status 2, never
guessing), loading the keys, the JSON-lines output of `--json`, and the interactive terminal
(cbreak keystrokes, redraw on every tick). `gateway.cli` only registers it. The console itself
(MQTT, verification, state) is `gateway.console`; nothing heavy is imported until it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from gateway.console import ConsoleOptions

_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ROOT_PART: Final = re.compile(r"^[A-Za-z0-9_.-]+$")
_PROG: Final = "schoolgate console"


class UsageError(Exception):
    """The command line asks for something the console cannot do; exit status 2."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "console",
        help="receiving console: live alarms from gateways, acknowledge, gap and silence checks",
    )
    p.add_argument(
        "gateways",
        nargs="*",
        metavar="SCHOOL/GATEWAY",
        help="which gateways (an id or + for each part; default +/+: all)",
    )
    p.add_argument("--host", default="127.0.0.1", help="broker host (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="broker port (default 1883, 8883 with --tls-ca)")
    p.add_argument("--username")
    p.add_argument("--password-file", type=Path, help="file holding the broker password")
    p.add_argument("--tls-ca", type=Path, help="CA file to verify the broker (turns TLS on)")
    p.add_argument("--tls-cert", type=Path, help="client certificate for mutual TLS")
    p.add_argument("--tls-key", type=Path, help="client certificate's private key")
    p.add_argument("--tls-server-name", help="name to expect in the broker's certificate")
    p.add_argument("--client-id", help="MQTT client id (default: a random one)")
    p.add_argument("--root", default="schoolgate/v1", help="topic root (default schoolgate/v1)")
    p.add_argument(
        "--gateway-key",
        action="append",
        default=[],
        metavar="ID=PATH_OR_BASE64",
        help="a gateway's public key by its key id (repeatable)",
    )
    p.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept payloads without a signature (gateways without [security])",
    )
    p.add_argument("--key", type=Path, help="this console's private key, to sign commands")
    p.add_argument("--key-id", help="the id the gateways trust --key under")
    p.add_argument("--operator", help="who acknowledges (default: $USER)")
    p.add_argument(
        "--silent-after",
        type=float,
        default=90.0,
        metavar="S",
        help="report a gateway silent after S seconds without a word (default 90)",
    )
    p.add_argument("--share", metavar="GROUP", help="shared subscription group ($share/GROUP)")
    p.add_argument("--json", action="store_true", help="JSON lines, no interactive view")
    p.add_argument("--duration", type=float, metavar="S", help="end after S seconds")
    p.add_argument("--count", type=int, metavar="N", help="end after N events")
    p.add_argument("--once", action="store_true", help="end after the first event (--count 1)")
    p.set_defaults(func=cmd_console)


def parse_gateway_filter(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 2 or not all(part == "+" or _ID.match(part) for part in parts):
        raise UsageError(f"{text!r}: give SCHOOL/GATEWAY, each an id or +")
    return text


def parse_gateway_key(text: str, base_dir: Path) -> tuple[str, Ed25519PublicKey]:
    from gateway import keys  # noqa: PLC0415 - keep the parser free of crypto

    key_id, sep, value = text.partition("=")
    if not sep or not keys.KEY_ID.match(key_id) or not value:
        raise UsageError(f"--gateway-key {text!r}: give ID=PATH_OR_BASE64")
    try:
        return key_id, keys.load_public_key(value, base_dir)
    except keys.KeyFileError as exc:
        raise UsageError(f"--gateway-key {key_id}: {exc}") from None


def _check_root(root: str) -> str:
    if not all(_ROOT_PART.match(part) for part in root.split("/")):
        raise UsageError(f"--root {root!r}: topic levels of letters, digits, _ . - (no wildcards)")
    return root


def options_from_args(args: argparse.Namespace) -> ConsoleOptions:  # noqa: PLR0912 - one check per option
    """The validated options, or UsageError with what to fix."""
    from gateway import keys, mqtt  # noqa: PLC0415 - keep `schoolgate --help` light
    from gateway.console import ConsoleOptions, Signer  # noqa: PLC0415

    gateways = tuple(parse_gateway_filter(g) for g in args.gateways) or ("+/+",)
    gateway_keys = dict(parse_gateway_key(text, Path.cwd()) for text in args.gateway_key)
    if not gateway_keys and not args.allow_unsigned:
        raise UsageError("give --gateway-key ID=KEY for each gateway, or --allow-unsigned")
    if (args.key is None) != (args.key_id is None):
        raise UsageError("--key and --key-id go together")
    signer = None
    if args.key is not None:
        if not keys.KEY_ID.match(args.key_id):
            raise UsageError(f"--key-id {args.key_id!r}: lower-case letters, digits, _ and -")
        try:
            signer = Signer(keys.load_private_key(args.key), args.key_id)
        except keys.KeyFileError as exc:
            raise UsageError(str(exc)) from None
    if args.silent_after <= 0:
        raise UsageError("--silent-after must be positive")
    if args.duration is not None and args.duration <= 0:
        raise UsageError("--duration must be positive")
    count = 1 if args.once else args.count
    if count is not None and count < 1:
        raise UsageError("--count must be at least 1")
    if args.share is not None and not _ROOT_PART.match(args.share):
        raise UsageError(f"--share {args.share!r}: letters, digits, _ . - only")
    if args.port is not None and not 0 < args.port < 65536:
        raise UsageError(f"--port {args.port}: not a TCP port")
    password = None
    if args.password_file is not None:
        try:
            password = args.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--password-file: cannot read {args.password_file}: {exc}") from None
    tls = None
    tls_extras = (args.tls_cert, args.tls_key, args.tls_server_name)
    if args.tls_ca is None and any(extra is not None for extra in tls_extras):
        raise UsageError("--tls-cert, --tls-key and --tls-server-name need --tls-ca")
    if args.tls_key is not None and args.tls_cert is None:
        raise UsageError("--tls-key needs --tls-cert")
    if args.tls_ca is not None:
        for path in (args.tls_ca, args.tls_cert, args.tls_key):
            if path is not None and not path.is_file():
                raise UsageError(f"{path}: no such file")
        tls = mqtt.TlsParams(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    broker = mqtt.BrokerParams(
        host=args.host,
        port=args.port or (8883 if tls else 1883),
        client_id=args.client_id or f"schoolgate-console-{os.urandom(4).hex()}",
        username=args.username,
        password=password,
        tls=tls,
    )
    operator = args.operator or os.environ.get("USER") or "console"
    return ConsoleOptions(
        broker=broker,
        gateway_keys=gateway_keys,
        root=_check_root(args.root),
        gateways=gateways,
        allow_unsigned=args.allow_unsigned,
        signer=signer,
        operator=operator,
        silent_after_s=args.silent_after,
        share_group=args.share,
        max_events=count,
        tick_s=min(1.0, args.silent_after / 4),
    )


def cmd_console(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
    except UsageError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run(options, json_lines=args.json, duration_s=args.duration))
    except KeyboardInterrupt:
        return 130
    return 0


def json_line_sink(out: TextIO) -> Any:
    def write(record: dict[str, Any]) -> None:
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
        out.flush()

    return write


async def run(
    options: ConsoleOptions,
    *,
    json_lines: bool,
    duration_s: float | None,
    out: TextIO = sys.stdout,
) -> None:
    """`--json`: one line per event and notice. Otherwise the view, redrawn on every tick, and
    keystrokes when standard input is a terminal."""
    from gateway import console, console_view  # noqa: PLC0415

    if json_lines:
        await console.Console(options, json_line_sink(out)).run(duration_s)
        return
    keys: asyncio.Queue[str] = asyncio.Queue()
    color = out.isatty()

    def draw() -> None:
        text = console_view.render(view, view.now_ms(), color=color)
        out.write(console_view.CLEAR + text)
        out.flush()

    view = console.Console(options, lambda record: None, keys=keys, on_tick=draw)
    with _keystrokes(keys):
        await view.run(duration_s)


@contextlib.contextmanager
def _keystrokes(keys: asyncio.Queue[str]) -> Iterator[None]:
    """Single keystrokes from a terminal on standard input (cbreak: no Enter, no echo)."""
    if not sys.stdin.isatty():
        yield
        return
    import termios  # noqa: PLC0415 - POSIX only, and only for the interactive view
    import tty  # noqa: PLC0415

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    loop = asyncio.get_running_loop()
    tty.setcbreak(fd)
    loop.add_reader(fd, lambda: keys.put_nowait(os.read(fd, 64).decode(errors="ignore")))
    try:
        yield
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
