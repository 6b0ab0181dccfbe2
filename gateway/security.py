"""The `[security]` section turned into keys the gateway can use, and the configuration load that
checks them.

Owns `load_security`: the private key file must be readable by its owner only, every public key
must decode, and each trusted key may only list commands the gateway knows (`gateway.core.auth`);
any problem refuses the section with every error listed, named by key. It also owns `load`, the
one way the daemon and check-config read a config file: `edge_config.loader.load` with these
checks added, so a config check-config passes is one the daemon starts with. It does not own the
section's shape (`edge_config.security`), verify commands (`gateway.core.auth`) nor create keys
(`gateway.core.keys`). `cryptography` is imported only when a config has the section.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from edge_config.errors import ConfigError
from edge_config.loader import LoadedConfig
from edge_config.loader import load as load_schema
from edge_config.models import GatewayConfig
from edge_config.security import SecurityConfig
from gateway.core import auth

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class Security:
    """The section, loaded: what the command handler and the uplink need."""

    gateway_key: Ed25519PrivateKey
    gateway_key_id: str
    trust: auth.TrustStore
    window: auth.FreshnessWindow


def _command_errors(config: SecurityConfig) -> list[str]:
    errors = []
    for index, entry in enumerate(config.trusted_keys):
        unknown = [
            name for name in entry.commands if name not in auth.COMMANDS | {auth.ANY_COMMAND}
        ]
        if unknown:
            errors.append(
                f"security.trusted_keys[{index}].commands: unknown command(s) {unknown}; "
                f"known: {', '.join(sorted(auth.COMMANDS))} or *"
            )
    return errors


def load_security(config: SecurityConfig, config_dir: Path) -> Security:
    """Read the keys named by `config`; relative paths are relative to `config_dir`.

    Raises ConfigError listing every key that cannot be used.
    """
    from gateway.core import keys  # noqa: PLC0415 - cryptography only with a [security] section

    errors = _command_errors(config)
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


def security_errors(config: GatewayConfig, config_dir: Path) -> list[str]:
    """Why the config's `[security]` keys cannot be used; empty when they can (or it has none)."""
    if config.security is None:
        return []
    try:
        load_security(config.security, config_dir)
    except ConfigError as exc:
        return list(exc.errors)
    return []


def load(path: Path, *, store_fatal: bool = True) -> LoadedConfig:
    """Read and check a config file, keys included; raises ConfigError listing every problem.
    `store_fatal` as in `edge_config.loader.parse`."""
    return load_schema(path, store_fatal=store_fatal, extra_checks=(security_errors,))
