"""The `[security]` section: the gateway's signing key and the receivers' keys it trusts.

Owns the shape of the section (`SecurityConfig`, pydantic, `extra="forbid"`): ids, paths, the
freshness window, and the form of each trusted key's command list. Any problem refuses the whole
section with every error listed.

    [security]
    gateway_key_file = "keys/gate-1.key"    # relative to the config file's directory
    gateway_key_id = "gate-1"               # the `signer` of the gateway's events
    window_past_s = 40                      # DC-09 freshness window
    window_future_s = 20

    [[security.trusted_keys]]
    id = "police-console"
    public_key = "base64 of the 32 raw bytes, or a path to a PEM / .pub file"
    commands = ["acknowledge", "replay"]    # or ["*"] for every command

It does not read the key files, nor know which command names exist: turning the section into
usable keys, and checking the command names against the gateway's commands, is
`gateway.security.load_security` (the daemon and check-config run it after this schema).
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from edge_config.base import Ident, Strict, require_distinct
from edge_config.fields import ConfigPath

ANY_COMMAND = "*"
"""In a trusted key's `commands`: every command (the gateway's `auth.ANY_COMMAND`)."""


class TrustedKeyConfig(Strict):
    id: Ident
    public_key: str = Field(min_length=1, pattern=r"^[^\x00-\x1f]+$")  # no NUL: a path
    commands: list[str] = Field(min_length=1)

    @field_validator("commands")
    @classmethod
    def _one_list_of_names(cls, value: list[str]) -> list[str]:
        if ANY_COMMAND in value and len(value) > 1:
            raise ValueError('"*" already allows every command; list it alone')
        require_distinct(value, "a command is listed twice")
        return value


class SecurityConfig(Strict):
    gateway_key_file: ConfigPath
    gateway_key_id: Ident
    trusted_keys: list[TrustedKeyConfig] = Field(default_factory=list)
    window_past_s: float = Field(
        default=40, gt=0, le=600, description="commands issued longer ago are refused (stale)"
    )
    window_future_s: float = Field(
        default=20, ge=0, le=600, description="commands dated further ahead are refused (future)"
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> SecurityConfig:
        ids = [key.id for key in self.trusted_keys]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"trusted_keys: duplicate id(s) {duplicates}")
        return self
