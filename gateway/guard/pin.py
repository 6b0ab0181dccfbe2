"""Guard PINs: hashing (scrypt, standard library), checking, and limiting failed attempts.

Owns the hash format `scrypt$n$r$p$salt$hash` (salt and hash in standard base64), the
constant-time check, `PinGate` (which guard a PIN belongs to, with a lockout after too many
failures, on an injected monotonic clock) and `python -m gateway.guard.pin`, which prints a hash
for a PIN typed at the terminal so the PIN itself never goes into a config file.

It does not know the page or the config file; `gateway.guard.server` builds a `PinGate` from
`edge_config.guard.GuardConfig`.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import hashlib
import hmac
import os
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.core.clock import Clock, SystemClock

SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
_KEY_BYTES = 32
_MIN_PIN_DIGITS = 4


class PinError(Exception):
    """Base of the PIN errors."""


class PinHashError(PinError):
    """A configured PIN hash that is not `scrypt$n$r$p$salt$hash`."""


class PinRejected(PinError):
    """The PIN matches no guard; `attempts_left` before the lockout."""

    def __init__(self, attempts_left: int) -> None:
        super().__init__(f"wrong PIN ({attempts_left} attempts left)")
        self.attempts_left = attempts_left


class PinLockedOut(PinError):
    """Too many wrong PINs: no PIN is checked for `retry_after_s` more seconds."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"locked out for {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


def hash_pin(pin: str, *, salt: bytes | None = None) -> str:
    """The `scrypt$n$r$p$salt$hash` string to put in the config for `pin`."""
    salt = os.urandom(16) if salt is None else salt
    key = _scrypt(pin, salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return "$".join(
        (
            "scrypt",
            str(SCRYPT_N),
            str(SCRYPT_R),
            str(SCRYPT_P),
            base64.b64encode(salt).decode(),
            base64.b64encode(key).decode(),
        )
    )


@dataclass(frozen=True)
class PinHash:
    n: int
    r: int
    p: int
    salt: bytes
    key: bytes

    @classmethod
    def parse(cls, encoded: str) -> PinHash:
        parts = encoded.split("$")
        if len(parts) != 6 or parts[0] != "scrypt":
            raise PinHashError("a PIN hash is scrypt$n$r$p$salt$hash")
        try:
            n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
            salt = base64.b64decode(parts[4], validate=True)
            key = base64.b64decode(parts[5], validate=True)
        except (ValueError, binascii.Error) as exc:
            raise PinHashError(f"unreadable PIN hash: {exc}") from None
        if n < 2 or n & (n - 1) or not 1 <= r <= 64 or not 1 <= p <= 16 or not salt or not key:
            raise PinHashError("PIN hash parameters out of range")
        return cls(n, r, p, salt, key)

    def matches(self, pin: str) -> bool:
        candidate = _scrypt(pin, self.salt, n=self.n, r=self.r, p=self.p, dklen=len(self.key))
        return hmac.compare_digest(candidate, self.key)


def _scrypt(pin: str, salt: bytes, *, n: int, r: int, p: int, dklen: int = _KEY_BYTES) -> bytes:
    return hashlib.scrypt(
        pin.encode(), salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=256 * n * r + (1 << 20)
    )


class PinGate:
    """Which guard a PIN belongs to, with failed attempts limited.

    `max_failures` wrong PINs within `window_s` lock the gate for `lockout_s`: while locked no
    PIN is checked at all, right or wrong. A right PIN does not clear earlier failures (else a
    guessing person who knows one PIN could keep guessing others)."""

    def __init__(
        self,
        guards: Sequence[tuple[str, str]],
        *,
        max_failures: int = 5,
        window_s: float = 300.0,
        lockout_s: float = 300.0,
        clock: Clock | None = None,
    ) -> None:
        self._guards = [(name, PinHash.parse(encoded)) for name, encoded in guards]
        self._max_failures = max_failures
        self._window_s = window_s
        self._lockout_s = lockout_s
        self._clock = clock or SystemClock()
        self._failures: deque[float] = deque()
        self._locked_until: float | None = None

    def check(self, pin: str) -> str:
        """The name of the guard whose PIN this is; `PinRejected` or `PinLockedOut` if none."""
        now = self._clock.monotonic()
        if self._locked_until is not None:
            if now < self._locked_until:
                raise PinLockedOut(self._locked_until - now)
            self._locked_until = None
            self._failures.clear()
        while self._failures and now - self._failures[0] >= self._window_s:
            self._failures.popleft()
        for name, pin_hash in self._guards:
            if pin_hash.matches(pin):
                return name
        self._failures.append(now)
        if len(self._failures) >= self._max_failures:
            self._locked_until = now + self._lockout_s
            raise PinLockedOut(self._lockout_s)
        raise PinRejected(self._max_failures - len(self._failures))


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m gateway.guard.pin`: ask for a PIN twice, print its hash for `[[guard.guards]]`."""
    del argv
    pin = getpass.getpass("PIN: ")
    if len(pin) < _MIN_PIN_DIGITS or not pin.isdigit():
        sys.stderr.write(f"a PIN is at least {_MIN_PIN_DIGITS} digits\n")
        return 2
    if getpass.getpass("PIN again: ") != pin:
        sys.stderr.write("the two PINs differ\n")
        return 2
    sys.stdout.write(hash_pin(pin) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
