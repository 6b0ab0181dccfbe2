"""`schoolgate console`: its arguments, their validation, and the terminal around a `Console`.

Owns turning the command line into `ConsoleOptions` (refusing bad input with exit status 2, never
guessing), loading the keys, the JSON-lines output of `--json`, and the interactive terminal: a
`rich.live.Live` showing `receiver.view.Screen`, refreshed on every tick, and single keystrokes
read in cbreak mode (rich reads no keys). `gateway.cli` only registers it, for every command of
the daemon's command line, so importing this module loads nothing heavy: the console itself
(MQTT, verification, state: `receiver.console`), `rich` and `cryptography` load when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TextIO

if TYPE_CHECKING:
    import rich.console
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from gateway.uplink.mqtt import TlsParams
    from receiver.console import ConsoleOptions, Signer

_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_ROOT_PART: Final = re.compile(r"^[A-Za-z0-9_.-]+$")
_PROG: Final = "schoolgate console"


class UsageError(Exception):
    """The command line asks for something the console cannot do; exit status 2."""


class _Version(argparse.Action):
    """`--version`: the installed package's version, looked up only when asked for."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from importlib import metadata  # noqa: PLC0415 - only for --version

        print(f"{_PROG} {metadata.version('schoolgate')}")
        parser.exit(0)


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
    p.add_argument(
        "--client-id",
        help="MQTT client id of the persistent session (default: from --key-id; else random)",
    )
    p.add_argument(
        "--clean-session",
        action="store_true",
        help="no persistent session: the broker keeps nothing for this console while it is away",
    )
    p.add_argument(
        "--mqtt",
        choices=("3.1.1", "5"),
        default="3.1.1",
        help="MQTT version (default 3.1.1, what RabbitMQ 3.10 speaks; 5 on mosquitto 2)",
    )
    p.add_argument(
        "--session-expiry",
        type=int,
        default=86_400,
        metavar="S",
        help="with --mqtt 5: the broker keeps the persistent session S seconds after the "
        "console is gone (default 86400: a day)",
    )
    p.add_argument("--root", default="schoolgate/v1", help="topic root (default schoolgate/v1)")
    p.add_argument(
        "--gateway-key",
        action="append",
        default=[],
        metavar="ID=PATH_OR_BASE64",
        help="a gateway's public key by its key id (repeatable)",
    )
    p.add_argument(
        "--gateway-keys",
        type=Path,
        metavar="DIR_OR_FILE",
        help="gateways' public keys: a directory of <key id>.pub files, or a file of ID KEY lines",
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
    p.add_argument(
        "--school",
        metavar="PATTERN",
        help="only schools whose id matches this pattern (e.g. 'haidian-*' for a district)",
    )
    p.add_argument("--json", action="store_true", help="JSON lines, no interactive view")
    p.add_argument("--duration", type=float, metavar="S", help="end after S seconds")
    p.add_argument("--count", type=int, metavar="N", help="end after N events")
    p.add_argument("--once", action="store_true", help="end after the first event (--count 1)")
    p.add_argument("--version", action=_Version)
    p.set_defaults(func=cmd_console)


def parse_gateway_filter(text: str) -> str:
    parts = text.split("/")
    if len(parts) != 2 or not all(part == "+" or _ID.match(part) for part in parts):
        raise UsageError(f"{text!r}: give SCHOOL/GATEWAY, each an id or +")
    return text


def parse_gateway_key(text: str, base_dir: Path) -> tuple[str, Ed25519PublicKey]:
    from gateway.core import keys  # noqa: PLC0415 - keep the parser free of crypto

    key_id, sep, value = text.partition("=")
    if not sep or not keys.KEY_ID.match(key_id) or not value:
        raise UsageError(f"--gateway-key {text!r}: give ID=PATH_OR_BASE64")
    try:
        return key_id, keys.load_public_key(value, base_dir)
    except keys.KeyFileError as exc:
        raise UsageError(f"--gateway-key {key_id}: {exc}") from None


def _is_topic_root(root: str) -> bool:
    return all(_ROOT_PART.match(part) for part in root.split("/"))


_CHECKS: Final[tuple[tuple[str, Callable[[Any], object], str], ...]] = (
    ("silent_after", lambda s: s > 0, "--silent-after must be positive"),
    ("duration", lambda s: s > 0, "--duration must be positive"),
    ("count", lambda n: n >= 1, "--count must be at least 1"),
    ("share", _ROOT_PART.match, "--share {!r}: letters, digits, _ . - only"),
    ("port", lambda n: 0 < n < 65536, "--port {}: not a TCP port"),
    (
        "session_expiry",
        lambda s: 0 < s <= 0xFFFF_FFFF,
        "--session-expiry {}: 1 to 4294967295 seconds (MQTT 5's limit)",
    ),
    ("root", _is_topic_root, "--root {!r}: topic levels of letters, digits, _ . - (no wildcards)"),
)
"""Each option given (not None) must pass its test, or the message (formatted with its value)."""


def _check_values(args: argparse.Namespace) -> None:
    for name, test, message in _CHECKS:
        value = getattr(args, name)
        if value is not None and not test(value):
            raise UsageError(message.format(value))


def _signer(args: argparse.Namespace) -> Signer | None:
    from gateway.core import keys  # noqa: PLC0415 - keep `schoolgate --help` light
    from receiver.console import Signer  # noqa: PLC0415

    if (args.key is None) != (args.key_id is None):
        raise UsageError("--key and --key-id go together")
    if args.key is None:
        return None
    if not keys.KEY_ID.match(args.key_id):
        raise UsageError(f"--key-id {args.key_id!r}: lower-case letters, digits, _ and -")
    try:
        return Signer(keys.load_private_key(args.key), args.key_id)
    except keys.KeyFileError as exc:
        raise UsageError(str(exc)) from None


def _keyring(args: argparse.Namespace) -> dict[str, Ed25519PublicKey]:
    if args.gateway_keys is None:
        return {}
    from receiver.keyring import KeyRingError, load_gateway_keys  # noqa: PLC0415 - crypto

    try:
        return load_gateway_keys(args.gateway_keys)
    except KeyRingError as exc:
        raise UsageError(f"--gateway-keys: {exc}") from None


def _password(args: argparse.Namespace) -> str | None:
    if args.password_file is None:
        return None
    try:
        return str(args.password_file.read_text(encoding="utf-8").rstrip("\r\n"))
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--password-file: cannot read {args.password_file}: {exc}") from None


def _tls(args: argparse.Namespace) -> TlsParams | None:
    from gateway.uplink import mqtt  # noqa: PLC0415

    tls_extras = (args.tls_cert, args.tls_key, args.tls_server_name)
    if args.tls_ca is None and any(extra is not None for extra in tls_extras):
        raise UsageError("--tls-cert, --tls-key and --tls-server-name need --tls-ca")
    if args.tls_key is not None and args.tls_cert is None:
        raise UsageError("--tls-key needs --tls-cert")
    if args.tls_ca is None:
        return None
    for path in (args.tls_ca, args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file")
    return mqtt.TlsParams(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)


def options_from_args(args: argparse.Namespace) -> ConsoleOptions:
    """The validated options, or UsageError with what to fix."""
    from gateway.uplink import mqtt  # noqa: PLC0415 - keep `schoolgate --help` light
    from receiver.console import ConsoleOptions  # noqa: PLC0415

    gateways = tuple(parse_gateway_filter(g) for g in args.gateways) or ("+/+",)
    gateway_keys = _keyring(args)
    gateway_keys |= dict(parse_gateway_key(text, Path.cwd()) for text in args.gateway_key)
    if not gateway_keys and not args.allow_unsigned:
        raise UsageError(
            "give --gateway-keys DIR, --gateway-key ID=KEY for each gateway, or --allow-unsigned"
        )
    signer = _signer(args)
    client_id = args.client_id or (
        None if signer is None else f"schoolgate-console-{signer.key_id}"
    )
    if args.once:
        args.count = 1
    _check_values(args)
    password = _password(args)
    tls = _tls(args)
    broker = mqtt.BrokerParams(
        host=args.host,
        port=args.port or (8883 if tls else 1883),
        client_id=client_id or f"schoolgate-console-{os.urandom(4).hex()}",
        # A fixed client id gets a persistent session: the broker queues (QoS 1) what comes
        # while the console is away and hands it over when it is back (docs/console.md).
        clean_session=client_id is None or args.clean_session,
        username=args.username,
        password=password,
        tls=tls,
        protocol=args.mqtt,
        session_expiry_s=args.session_expiry,
    )
    return ConsoleOptions(
        broker=broker,
        gateway_keys=gateway_keys,
        root=args.root,
        gateways=gateways,
        allow_unsigned=args.allow_unsigned,
        signer=signer,
        operator=args.operator or os.environ.get("USER") or "console",
        silent_after_s=args.silent_after,
        share_group=args.share,
        school_pattern=args.school,
        max_events=args.count,
        tick_s=min(1.0, args.silent_after / 4),
    )


def cmd_console(args: argparse.Namespace) -> int:
    try:
        options = options_from_args(args)
    except UsageError as exc:
        print(f"{_PROG}: {exc}", file=sys.stderr)
        return 2
    from receiver.probe import ShareUnsupported  # noqa: PLC0415 - light, but only when run

    try:
        asyncio.run(run(options, json_lines=args.json, duration_s=args.duration))
    except KeyboardInterrupt:
        return 130
    except ShareUnsupported as exc:
        print(f"{_PROG}: --share {args.share}: {exc}", file=sys.stderr)
        return 2
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
    terminal: rich.console.Console | None = None,
) -> None:
    """`--json`: one line per event and notice on `out`. Otherwise the view on `terminal` (a
    rich console on `out` by default), redrawn on every tick, and keystrokes when standard
    input is a terminal. A terminal shows the view full screen; a file or pipe gets the last
    view once, at the end."""
    from receiver import console  # noqa: PLC0415 - loads cryptography and aiomqtt

    if json_lines:
        await console.Console(options, json_line_sink(out)).run(duration_s)
        return
    import rich.console  # noqa: PLC0415 - only the interactive view draws
    from rich.live import Live  # noqa: PLC0415

    from receiver.view import Screen  # noqa: PLC0415

    if terminal is None:
        terminal = rich.console.Console(file=out)
    keys: asyncio.Queue[str] = asyncio.Queue()
    live = Live(
        console=terminal,
        screen=terminal.is_terminal,
        auto_refresh=False,  # refreshed on the console's tick, in the loop's thread
        redirect_stdout=False,
        redirect_stderr=False,
    )
    view = console.Console(options, lambda record: None, keys=keys, on_tick=live.refresh)
    live.update(Screen(view))
    with _keystrokes(keys), live:  # cbreak before the first screen: no key typed is lost
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
