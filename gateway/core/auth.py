"""Signed commands and signed events: the envelope, its canonical form, and its verification.

Owns what makes a command trustworthy before anything acts on it: the Ed25519 signature by a key
the gateway trusts for that command, the freshness window (DC-09: -40 s/+20 s of our clock) and
replay protection (`ReplayCache`). It also signs outgoing event payloads so a receiver can verify
the gateway (`sign_payload` / `verify_payload`). Pure and synchronous: no I/O, no clock (the caller
passes `now_ms`), no logging. It imports `cryptography` only when a signature is checked: keys
come from `gateway.core.keys`, so a gateway without a `[security]` section never loads it
(about 7 MB).

It does not read keys or config (`gateway.core.keys`, `edge_config.security`), subscribe to MQTT or
answer rejected commands (the uplink's command handler), nor check a command's `args` against
what the device can do (the command handler and the driver do).

Envelope (JSON object, UTF-8):
    {"schema": 1, "id": "<uuid>", "gateway": "<gateway_id>", "school": "<school_id>",
     "command": "<name>", "args": {...}, "issued_at": "<ISO 8601 with offset>",
     "issuer": "<key id>", "sig": "<base64 Ed25519 signature>"}
The signature covers `canonical()` of every field except `sig`.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Literal

from gateway.core.contract import SCHEMA_VERSION, Site

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

COMMANDS: Final = frozenset(
    {
        "acknowledge",
        "reset",
        "bollard.raise",
        "bollard.lower",
        "unlock",
        "lockdown",
        "lockdown.release",
        "drill.start",
        "drill.stop",
        "time.set",
        "replay",
        "ledger.close",
    }
)
"""Every command a receiver may send; a trusted key lists a subset of these, or "*"."""

ANY_COMMAND: Final = "*"

Reason = Literal[
    "malformed",
    "wrong_gateway",
    "unknown_key",
    "not_allowed",
    "bad_signature",
    "stale",
    "future",
    "replayed",
    "rate_limited",
]

MAX_COMMAND_BYTES: Final = 16 * 1024
"""Commands are a few hundred bytes; anything larger is refused before it is parsed."""
_SIG_BYTES: Final = 64
_ENVELOPE_FIELDS: Final = frozenset(
    {"schema", "id", "gateway", "school", "command", "args", "issued_at", "issuer", "sig"}
)


class AuthError(Exception):
    """A signed message was refused; `reason` is a short machine-readable word."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason
        self.detail = detail


class CommandRejected(AuthError):
    """A command is not acted upon; answer the sender with `reason`."""


class PayloadRejected(AuthError):
    """A receiver could not verify an event payload from a gateway."""


@dataclass(frozen=True, slots=True)
class Command:
    """A verified command: signed by a trusted key, fresh, addressed to us, seen once."""

    id: str
    gateway: str
    school: str
    command: str
    args: dict[str, Any]
    issued_at_ms: int
    issuer: str


@dataclass(frozen=True, slots=True)
class TrustedKey:
    public_key: Ed25519PublicKey
    commands: frozenset[str]
    """Command names this key may issue; `{"*"}` means all of them."""

    def allows(self, command: str) -> bool:
        return ANY_COMMAND in self.commands or command in self.commands


@dataclass(frozen=True, slots=True)
class TrustStore:
    """The receivers' keys the gateway accepts commands from, by key id."""

    keys: Mapping[str, TrustedKey]


@dataclass(frozen=True, slots=True)
class FreshnessWindow:
    """How far `issued_at` may be from our clock: DC-09's -40 s/+20 s by default."""

    past_ms: int = 40_000
    future_ms: int = 20_000


DEFAULT_WINDOW: Final = FreshnessWindow()


class ReplayCache:
    """Command ids seen within the freshness window.

    An id is remembered until its command would be refused as stale anyway (issued_at + past
    window); after that the freshness check stops a replay, so the entry is dropped. Memory is
    also capped: when `max_entries` fresh ids are held, new commands are refused ("rate_limited")
    rather than forgetting a fresh id, which would reopen that id to replay. Reaching the cap
    needs that many authenticated commands within one window (60 s), i.e. a trusted key gone
    wrong, so refusing is the safe side.

    The cache lives in memory, so it only knows ids accepted since `since_ms` (when it was
    created, i.e. the gateway started). A command issued before that may have been accepted by
    the previous run, so it is refused as "stale": its sender issues a new one.

    A clock step backwards keeps entries longer (still capped); a step forwards drops them, but
    then their commands are stale too.
    """

    def __init__(self, *, since_ms: int, max_entries: int = 4096) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.since_ms = since_ms
        self.max_entries = max_entries
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []  # (expires_at_ms, id): oldest first

    def __len__(self) -> int:
        return len(self._expiry)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._expiry

    def forget_expired(self, now_ms: int) -> None:
        while self._heap and self._heap[0][0] < now_ms:
            _, command_id = heapq.heappop(self._heap)
            del self._expiry[command_id]

    def remember(
        self, command_id: str, *, issued_at_ms: int, expires_at_ms: int, now_ms: int
    ) -> None:
        """Record a fresh, authenticated id; CommandRejected "stale", "replayed" or
        "rate_limited"."""
        if issued_at_ms < self.since_ms:
            raise CommandRejected("stale", "issued before this gateway started; issue it again")
        self.forget_expired(now_ms)
        if command_id in self._expiry:
            raise CommandRejected("replayed", f"command {command_id} was already accepted")
        if len(self._expiry) >= self.max_entries:
            raise CommandRejected("rate_limited", f"{self.max_entries} commands in one window")
        self._expiry[command_id] = expires_at_ms
        heapq.heappush(self._heap, (expires_at_ms, command_id))


# --- canonical form ---------------------------------------------------------------------------


def canonical(obj: Mapping[str, Any]) -> bytes:
    """The bytes that are signed: sorted keys, no spaces, UTF-8 (not \\u-escaped).

    Raises ValueError for what has no single form: NaN/Infinity, or a string that is not valid
    Unicode (a lone surrogate).
    """
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers that disagree on which duplicate wins would verify one object and act on
    # another; refusing duplicates closes that gap.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return obj


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_object(raw: bytes) -> dict[str, Any]:
    """Strict JSON object parsing; raises ValueError for anything else."""
    try:
        obj = json.loads(raw, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except RecursionError as exc:  # deeply nested arrays: not a stack overflow, just bad input
        raise ValueError("JSON nested too deeply") from exc
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")  # noqa: TRY004 - callers map ValueError to "malformed"
    return obj


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _signature(text: object) -> bytes | None:
    if not isinstance(text, str):
        return None
    try:
        sig = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    # Only the canonical encoding: base64 ignores the unused low bits of the last character, so
    # several texts decode to one signature; a receiver deduplicating by payload would be fooled.
    return sig if len(sig) == _SIG_BYTES and _b64(sig) == text else None


def _epoch_ms(text: str) -> int:
    """ISO 8601 with a UTC offset to epoch milliseconds; a time without offset is ambiguous."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("issued_at has no UTC offset")
    return round(when.timestamp() * 1000)


# --- commands ---------------------------------------------------------------------------------


def build_command(
    *,
    gateway: str,
    school: str,
    command: str,
    args: Mapping[str, Any],
    issued_at: datetime,
    command_id: str | None = None,
) -> dict[str, Any]:
    """An unsigned command envelope (for `sign_command`): a new random id unless given."""
    if command not in COMMANDS:
        raise ValueError(f"unknown command {command!r}")
    if issued_at.tzinfo is None:
        raise ValueError("issued_at needs a time zone")
    return {
        "schema": SCHEMA_VERSION,
        "id": command_id or str(uuid.uuid4()),
        "gateway": gateway,
        "school": school,
        "command": command,
        "args": dict(args),
        "issued_at": issued_at.isoformat(timespec="milliseconds"),
    }


def sign_command(
    obj: Mapping[str, Any], private_key: Ed25519PrivateKey, key_id: str
) -> dict[str, Any]:
    """A copy of `obj` with `issuer` set to `key_id` and `sig` over everything but `sig`."""
    body = {k: v for k, v in obj.items() if k != "sig"}
    body["issuer"] = key_id
    return {**body, "sig": _b64(private_key.sign(canonical(body)))}


def _str_field(obj: Mapping[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str) or not value:
        raise CommandRejected("malformed", f"{name} must be a non-empty string")
    return value


def _parse_envelope(raw: bytes) -> tuple[dict[str, Any], Command]:
    if len(raw) > MAX_COMMAND_BYTES:
        raise CommandRejected("malformed", f"larger than {MAX_COMMAND_BYTES} bytes")
    try:
        obj = _parse_object(raw)
    except ValueError as exc:  # includes JSONDecodeError and UnicodeDecodeError
        raise CommandRejected("malformed", str(exc)) from None
    unknown = obj.keys() - _ENVELOPE_FIELDS
    if unknown:
        raise CommandRejected("malformed", f"unknown fields {sorted(unknown)}")
    schema = obj.get("schema")
    if type(schema) is not int or schema != SCHEMA_VERSION:  # `True == 1`, so compare the type
        raise CommandRejected("malformed", f"schema must be {SCHEMA_VERSION}")
    command_id = _str_field(obj, "id")
    try:
        if str(uuid.UUID(command_id)) != command_id:
            raise ValueError(command_id)
    except ValueError:
        # Only the canonical spelling, so one command cannot be replayed under another spelling.
        raise CommandRejected("malformed", "id must be a lower-case hyphenated UUID") from None
    name = _str_field(obj, "command")
    if name not in COMMANDS:
        raise CommandRejected("malformed", f"unknown command {name[:64]!r}")
    args = obj.get("args")
    if not isinstance(args, dict):
        raise CommandRejected("malformed", "args must be an object")
    try:
        issued_at_ms = _epoch_ms(_str_field(obj, "issued_at"))
    except (ValueError, OverflowError, OSError):
        raise CommandRejected("malformed", "issued_at must be ISO 8601 with an offset") from None
    command = Command(
        id=command_id,
        gateway=_str_field(obj, "gateway"),
        school=_str_field(obj, "school"),
        command=name,
        args=args,
        issued_at_ms=issued_at_ms,
        issuer=_str_field(obj, "issuer"),
    )
    return obj, command


def verify_command(
    raw: bytes,
    *,
    trust: TrustStore,
    now_ms: int,
    site: Site,
    replay: ReplayCache,
    window: FreshnessWindow = DEFAULT_WINDOW,
) -> Command:
    """The verified command, or CommandRejected with the first reason that applies.

    Checks run cheapest first, and the signature before freshness and replay, so that nothing
    unauthenticated reaches the replay cache (a forger cannot fill it or burn a real id).
    """
    obj, command = _parse_envelope(raw)
    if command.gateway != site.gateway_id or command.school != site.school_id:
        raise CommandRejected("wrong_gateway", f"for {command.school}/{command.gateway}")
    key = trust.keys.get(command.issuer)
    if key is None:
        raise CommandRejected("unknown_key", f"issuer {command.issuer[:64]!r}")
    if not key.allows(command.command):
        raise CommandRejected("not_allowed", f"{command.issuer} may not {command.command}")
    sig = _signature(obj.get("sig"))
    if sig is None:
        raise CommandRejected("bad_signature", "missing or not a base64 Ed25519 signature")
    # Reached only with a trusted key, which gateway.core.keys made: cryptography is loaded.
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - only with keys

    try:
        signed = canonical({k: v for k, v in obj.items() if k != "sig"})
        key.public_key.verify(sig, signed)
    except ValueError:  # a lone surrogate somewhere in args: no canonical form
        raise CommandRejected("malformed", "a string is not valid Unicode") from None
    except InvalidSignature:
        raise CommandRejected("bad_signature", f"not signed by {command.issuer}") from None
    if command.issued_at_ms < now_ms - window.past_ms:
        raise CommandRejected("stale", f"issued {now_ms - command.issued_at_ms} ms ago")
    if command.issued_at_ms > now_ms + window.future_ms:
        raise CommandRejected("future", f"issued {command.issued_at_ms - now_ms} ms ahead")
    replay.remember(
        command.id,
        issued_at_ms=command.issued_at_ms,
        expires_at_ms=command.issued_at_ms + window.past_ms,
        now_ms=now_ms,
    )
    return command


# --- event payloads ---------------------------------------------------------------------------


UNSIGNED_FIELDS: Final = frozenset({"sig", "signer", "historical", "attempt"})
"""Not covered by a payload's signature: the signature itself, and an event's delivery fields,
which differ per broker and attempt (an event is signed once, when it is stored)."""


def _signed_part(obj: Mapping[str, Any]) -> bytes:
    return canonical({k: v for k, v in obj.items() if k not in UNSIGNED_FIELDS})


def sign_payload(payload: bytes, private_key: Ed25519PrivateKey, key_id: str) -> bytes:
    """`payload` (a JSON object) with `"sig"` and `"signer"` appended.

    The signature is over the canonical form of the payload's fields except `UNSIGNED_FIELDS`;
    the payload's own bytes are kept (not re-encoded), so a receiver that ignores signatures sees
    the same fields as before.
    """
    obj = _parse_object(payload)
    if "sig" in obj or "signer" in obj:
        raise ValueError("payload is already signed")
    sig = _b64(private_key.sign(_signed_part(obj)))
    tail = json.dumps({"sig": sig, "signer": key_id}, ensure_ascii=False, separators=(",", ":"))
    body = payload.rstrip()
    separator = b"," if obj else b""
    return body[:-1] + separator + tail[1:].encode("utf-8")


def verify_payload(raw: bytes, public_keys: Mapping[str, Ed25519PublicKey]) -> dict[str, Any]:
    """The payload without `sig` (with `signer`), or PayloadRejected: for receivers."""
    try:
        obj = _parse_object(raw)
    except ValueError as exc:
        raise PayloadRejected("malformed", str(exc)) from None
    signer = obj.get("signer")
    if not isinstance(signer, str):
        raise PayloadRejected("bad_signature", "no signer")
    key = public_keys.get(signer)
    if key is None:
        raise PayloadRejected("unknown_key", f"signer {signer[:64]!r}")
    sig = _signature(obj.pop("sig", None))
    if sig is None:
        raise PayloadRejected("bad_signature", "missing or not a base64 Ed25519 signature")
    from cryptography.exceptions import InvalidSignature  # noqa: PLC0415 - only with keys

    try:
        key.verify(sig, _signed_part(obj))
    except ValueError:
        raise PayloadRejected("malformed", "a string is not valid Unicode") from None
    except InvalidSignature:
        raise PayloadRejected("bad_signature", f"not signed by {signer}") from None
    return obj
