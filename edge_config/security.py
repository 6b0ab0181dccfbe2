"""The `[security]` section: the gateway's signing key and the receivers' keys it trusts.

Owns the shape of the section (`SecurityConfig`, pydantic, `extra="forbid"`) and turning it into
usable keys (`load_security`): the private key file must be readable by its owner only, every
public key must decode, and each trusted key lists the commands it may issue. Any problem refuses
the whole section with every error listed.

    [security]
    gateway_key_file = "keys/gate-1.key"    # relative to the config file's directory
    gateway_key_id = "gate-1"               # the `signer` of the gateway's events
    window_past_s = 40                      # DC-09 freshness window
    window_future_s = 20

    [[security.trusted_keys]]
    id = "police-console"
    public_key = "base64 of the 32 raw bytes, or a path to a PEM / .pub file"
    commands = ["acknowledge", "replay"]    # or ["*"] for every command

It does not verify commands (`gateway.core.auth`) nor create keys (`gateway.core.keys`). Only
`load_security` imports `cryptography` (through `gateway.core.keys`): a config without the section
never loads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from pydantic import Field, field_validator, model_validator

from edge_config.errors import ConfigError
from edge_config.fields import ConfigPath
from edge_config.models import Ident, Strict
from gateway.core import auth

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class TrustedKeyConfig(Strict):
    id: Ident
    public_key: str = Field(min_length=1, pattern=r"^[^\x00-\x1f]+$")  # no NUL: a path
    commands: list[str] = Field(min_length=1)

    @field_validator("commands")
    @classmethod
    def _known_commands(cls, value: list[str]) -> list[str]:
        if auth.ANY_COMMAND in value and len(value) > 1:
            raise ValueError('"*" already allows every command; list it alone')
        unknown = [name for name in value if name not in auth.COMMANDS | {auth.ANY_COMMAND}]
        if unknown:
            raise ValueError(
                f"unknown command(s) {unknown}; known: {', '.join(sorted(auth.COMMANDS))} or *"
            )
        if len(set(value)) != len(value):
            raise ValueError("a command is listed twice")
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


@dataclass(frozen=True, slots=True)
class Security:
    """The section, loaded: what the command handler and the uplink need."""

    gateway_key: Ed25519PrivateKey
    gateway_key_id: str
    trust: auth.TrustStore
    window: auth.FreshnessWindow


def load_security(config: SecurityConfig, config_dir: Path) -> Security:
    """Read the keys named by `config`; relative paths are relative to `config_dir`.

    Raises ConfigError listing every key that cannot be used.
    """
    from gateway.core import keys  # noqa: PLC0415 - cryptography only with a [security] section

    errors: list[str] = []
    gateway_key: Ed25519PrivateKey | None = None
    try:
        gateway_key = keys.load_private_key(config_dir / config.gateway_key_file)
    except keys.KeyFileError as exc:
        errors.append(f"security.gateway_key_file: {exc}")
    trusted: dict[str, auth.TrustedKey] = {}
    for index, entry in enumerate(config.trusted_keys):
        try:
            public_key = keys.load_public_key(entry.public_key, config_dir)
        except keys.KeyFileError as exc:
            errors.append(f"security.trusted_keys[{index}].public_key: {exc}")
            continue
        trusted[entry.id] = auth.TrustedKey(public_key, frozenset(entry.commands))
    if errors or gateway_key is None:
        raise ConfigError(config_dir, errors)
    return Security(
        gateway_key=gateway_key,
        gateway_key_id=config.gateway_key_id,
        trust=auth.TrustStore(MappingProxyType(trusted)),
        window=auth.FreshnessWindow(
            past_ms=round(config.window_past_s * 1000),
            future_ms=round(config.window_future_s * 1000),
        ),
    )
