"""The `[guard]` section: the guard's local page (served by `gateway.guard.server`).

Owns the shape of the section (`GuardConfig`, pydantic, `extra="forbid"`, strict types): where
the page listens, who may act on it (each guard's name and the hash of their PIN, never the PIN),
and how failed PIN attempts are limited. The page is off unless the section is present.

    [guard]
    host = "127.0.0.1"            # the gatehouse screen's browser runs on the box itself
    port = 8470
    language = "zh"               # the page's first language; the guard can switch to "en"
    test_press_minutes = 5        # a test press puts the gate in test mode this long (1..30)

    [[guard.guards]]
    name = "王师傅"
    pin_hash = "scrypt$16384$8$1$<salt, base64>$<hash, base64>"   # python -m gateway.guard.pin

It does not hash or check PINs (`gateway.guard.pin`) nor serve the page (`gateway.guard.server`);
it imports nothing of ours; `GatewayConfig.guard` (edge_config/models.py) holds it.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

_B64 = r"[A-Za-z0-9+/]+={0,2}"
PIN_HASH_PATTERN = rf"^scrypt\$[0-9]{{1,7}}\$[0-9]{{1,3}}\$[0-9]{{1,3}}\${_B64}\${_B64}$"
"""`scrypt$n$r$p$salt$hash` (salt and hash in standard base64): what `gateway.guard.pin` writes."""

GuardName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=32)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class GuardAccount(_Strict):
    """One guard who may act on the page; the name is what each action is recorded under."""

    name: GuardName
    pin_hash: Annotated[str, Field(pattern=PIN_HASH_PATTERN)]


class PinLimitConfig(_Strict):
    """Failed PIN attempts: `max_failures` within `window_s` locks the page's actions for
    `lockout_s` (for every guard: the page cannot tell who typed a wrong PIN)."""

    max_failures: int = Field(default=5, ge=1, le=20)
    window_s: float = Field(default=300.0, gt=0, le=86_400)
    lockout_s: float = Field(default=300.0, gt=0, le=86_400)


class GuardConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=0, le=65_535)  # 0: any free port (tests)
    language: Literal["zh", "en"] = "zh"
    guards: list[GuardAccount] = Field(min_length=1)
    pin_limit: PinLimitConfig = PinLimitConfig()
    test_press_minutes: int = Field(default=5, ge=1, le=30)
    """How long a test press from the page puts the gate in test mode: long enough to walk to
    the box and press it, short enough that a forgotten one ends by itself the same break (the
    installer's walk test, `schoolgate test start`, may take longer)."""
    heartbeat_s: float = Field(default=2.0, gt=0, le=30)
    """How often the live stream says "still here" when nothing changed; the page shows the
    connection as lost after three silent heartbeats."""

    @field_validator("host")
    @classmethod
    def _host_is_an_address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"guard.host must be an IP address, not {value!r}") from None
        return value

    @field_validator("guards")
    @classmethod
    def _names_unique(cls, value: list[GuardAccount]) -> list[GuardAccount]:
        names = [g.name for g in value]
        doubled = sorted({n for n in names if names.count(n) > 1})
        if doubled:
            raise ValueError(f"guard names must be unique: {doubled}")
        return value
