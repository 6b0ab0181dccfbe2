"""Reading a configuration file: TOML parsing, schema validation (with the device profiles read
from `edge_config.profile_files`), the checks that span sections (a device's line exists and is
of a type its kind accepts, a `police` destination exists, secrets can be read), the caller's
extra checks (the daemon's `[security]` keys), and turning every failure into a list of
messages that name the key and what was expected.

It never fixes bad input: a config with any error is refused whole. What is allowed but unwise
(a password sent without TLS) comes back as a warning in `LoadedConfig.warnings`.
"""

from __future__ import annotations

import ssl
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from pydantic import ValidationError

from edge_config import checks
from edge_config.base import LineType
from edge_config.checks import SecretError, read_password
from edge_config.devices_alarm import AlarmBoxDevice
from edge_config.errors import ConfigError
from edge_config.kinds import KIND_NAMES, line_types_for
from edge_config.models import GatewayConfig, TlsConfig
from edge_config.profile_files import SHIPPED, ProfileDirectory, validation_context
from edge_config.rules import rules_errors

REQUIRED_DESTINATIONS = ("police",)


_UNION_TAGS = frozenset(get_args(LineType)) | KIND_NAMES
"""Line `type` and device `kind` values: pydantic puts the union member it tried in the path."""


def _format_location(loc: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif item in _UNION_TAGS and parts:
            continue  # the union member pydantic tried: the installer never wrote this key
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(top level)"


def _describe(error: Any) -> str:
    where = _format_location(tuple(error["loc"]))
    message = str(error["msg"]).removeprefix("Value error, ")
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{where}: unknown key (check the spelling; see edge_config/examples)"
    if kind == "missing":
        return f"{where}: required key is missing"
    value = error.get("input")
    if isinstance(value, str | int | float | bool) and kind not in ("model_type",):
        return f"{where}: {message} (got {value!r})"
    return f"{where}: {message}"


__all__ = [
    "ExtraCheck",
    "LoadedConfig",
    "load",
    "load_config",
    "parse",
    "parse_config",
    "read_password",
]

ExtraCheck = Callable[[GatewayConfig, Path], list[str]]
"""A check the caller adds to the load: `(config, config_dir) -> errors` (each `key: message`).
The daemon adds the `[security]` keys this way (`gateway.security`), as reading them needs the
gateway's key formats and command names, which the schema does not import."""


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A usable configuration and what in it is allowed but unwise (each `key: message`)."""

    config: GatewayConfig
    warnings: list[str]


def _no_passphrase() -> bytes:
    # An encrypted key would make OpenSSL prompt on the terminal; a daemon must fail instead.
    raise ValueError("encrypted private keys are not supported")


def tls_errors(name: str, tls: TlsConfig) -> list[str]:
    """Why this destination's TLS files cannot be used; empty when they can."""
    where = f"destinations.{name}.tls"
    errors: list[str] = []
    files = {"ca_file": tls.ca_file, "cert_file": tls.cert_file, "key_file": tls.key_file}
    for key, path in files.items():
        if path is None:
            continue
        try:
            mode = path.stat().st_mode
            with path.open("rb"):
                pass
        except OSError as exc:
            errors.append(f"{where}.{key}: cannot read {path}: {exc.strerror or exc}")
            continue
        # As ssh does: a private key others can read is no longer private.
        if key == "key_file" and mode & 0o077:
            errors.append(
                f"{where}.key_file: {path} is open to group or others "
                f"(mode {mode & 0o777:04o}); chmod 600 it"
            )
    if errors:
        return errors
    # Load them once now, so a bad PEM or a key that does not match the certificate stops the
    # start-up instead of every connection attempt.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=tls.ca_file)
    except ssl.SSLError as exc:
        errors.append(f"{where}.ca_file: {tls.ca_file} holds no usable CA certificate ({exc})")
    if tls.cert_file is not None and tls.key_file is not None:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
        except (ssl.SSLError, ValueError) as exc:
            errors.append(
                f"{where}.cert_file: {tls.cert_file} and key_file {tls.key_file} are not a "
                f"usable certificate and matching unencrypted key ({exc})"
            )
    return errors


def _cross_checks(config: GatewayConfig) -> list[str]:
    errors = [
        f"destinations.{name}: required destination is missing"
        for name in REQUIRED_DESTINATIONS
        if name not in config.destinations
    ]
    for device_id, device in config.devices.items():
        line = config.lines.get(device.line)
        if line is None:
            known = ", ".join(sorted(config.lines)) or "none defined"
            errors.append(
                f"devices.{device_id}.line: no line named {device.line!r} (lines: {known})"
            )
        elif line.type not in line_types_for(device.kind):
            errors.append(
                f"devices.{device_id}.line: kind {device.kind} needs a "
                f"{' or '.join(line_types_for(device.kind))} line; {device.line!r} is {line.type}"
            )
    groups = checks.service_group_ids()
    for name, dest in config.destinations.items():
        try:
            read_password(dest)
        except SecretError as exc:
            errors.append(f"destinations.{name}.{exc.key}: {exc.message}")
        errors.extend(checks.password_file_errors(name, dest, groups))
        if dest.tls is not None:
            errors.extend(tls_errors(name, dest.tls))
    # Two sessions with one client id on one broker keep kicking each other off.
    sessions = [(d.host, d.port, d.client_id) for d in config.destinations.values()]
    if len(set(sessions)) != len(sessions):
        errors.append("destinations: two destinations use the same client_id on the same broker")
    return errors


def _reference_checks(config: GatewayConfig) -> list[str]:
    errors: list[str] = []
    if config.alarms.ack_destination not in config.destinations:
        errors.append(
            f"alarms.ack_destination: no destination named {config.alarms.ack_destination!r}"
        )
    fault_device = config.supervision.fault_device
    if fault_device is not None:
        device = config.devices.get(fault_device)
        if not isinstance(device, AlarmBoxDevice) or device.fault_coil is None:
            errors.append(
                f"supervision.fault_device: {fault_device!r} is not an alarm box with a fault_coil"
            )
    return errors


def parse(
    data: dict[str, Any],
    path: Path,
    *,
    store_fatal: bool = True,
    extra_checks: Sequence[ExtraCheck] = (),
    profiles: ProfileDirectory = SHIPPED,
) -> LoadedConfig:
    """Validate parsed TOML; raises ConfigError listing every problem.

    `store_fatal=False` (the daemon) turns a store path this user cannot write into a warning:
    the gateway then starts with its alarms in memory and retries the file (gateway.store.outbox),
    because a gateway that refuses to start sends no alarm at all. check-config keeps it an
    error, so an installer fixes it before going live. `extra_checks` run after the others on a
    config the schema took; their errors are listed with the rest. Device profiles are read
    from `profiles` (the shipped ones by default)."""
    try:
        config = GatewayConfig.model_validate(data, context=validation_context(profiles))
    except ValidationError as exc:
        raise ConfigError(path, [_describe(e) for e in exc.errors()]) from None
    errors = _cross_checks(config) + _reference_checks(config)
    store_problems = checks.store_path_errors(config)
    errors += checks.control_socket_errors(config)
    if store_fatal:
        errors += store_problems
    if config.rules is not None:
        errors += rules_errors(config.rules, config.devices, path.parent)
    for check in extra_checks:
        errors.extend(check(config, path.parent))
    if errors:
        raise ConfigError(path, errors)
    warnings = checks.clear_text_password_warnings(config) + checks.service_store_warnings(config)
    if not store_fatal:
        warnings = store_problems + warnings
    return LoadedConfig(config, warnings)


def parse_config(data: dict[str, Any], path: Path) -> GatewayConfig:
    return parse(data, path).config


def load(
    path: Path, *, store_fatal: bool = True, extra_checks: Sequence[ExtraCheck] = ()
) -> LoadedConfig:
    """Read, parse and check the file; raises ConfigError listing every problem."""
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(path, [f"cannot read the file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, [f"not UTF-8 text (byte {exc.start}); TOML files are UTF-8"]
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError(path, ["not valid TOML: nested too deeply"]) from None
    return parse(data, path, store_fatal=store_fatal, extra_checks=extra_checks)


def load_config(path: Path) -> GatewayConfig:
    return load(path).config
