"""Checks of a schema-valid configuration against this machine: can the store be written where
`store.path` points, does the control socket's path fit a Unix socket address, can each
destination's password be read and is it kept private, and does a password cross the network
in clear text.

Owns those checks and reading a password (`read_password`, also used by the daemon). Each check
returns messages that start with the key they are about; the loader decides what is an error and
what a warning. It does not parse files or check the schema (`edge_config.loader`,
`edge_config.models`).
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import stat
from collections.abc import Callable
from pathlib import Path

from edge_config.models import DestinationConfig, GatewayConfig

SERVICE_USER = "schoolgate"
"""The account systemd/schoolgate.service runs as (`User=`, `Group=`)."""

STATE_DIRECTORY = Path("/var/lib/schoolgate")
"""The unit's `StateDirectory=`: systemd creates it, owned by the service user, at start."""

UNIX_SOCKET_MAX_BYTES = 107
"""`sun_path` is 108 bytes on Linux, including the terminating NUL."""


class SecretError(Exception):
    """A destination's password cannot be used; `key` is the config key it comes from."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key
        self.message = message


def read_password(dest: DestinationConfig) -> str | None:
    """The destination's password from its file or environment variable (never inline).

    Raises SecretError when it cannot be read, is not UTF-8 or is empty."""
    if dest.password_file is not None:
        path = dest.password_file
        try:
            text = path.read_bytes().decode("utf-8")
        except OSError as exc:
            raise SecretError(
                "password_file", f"cannot read {path}: {exc.strerror or exc}"
            ) from None
        except UnicodeDecodeError:
            raise SecretError("password_file", f"{path} is not UTF-8 text") from None
        password = text.strip()
        if not password:
            raise SecretError("password_file", f"{path} is empty")
        return password
    if dest.password_env is not None:
        value = os.environ.get(dest.password_env)
        if value is None:
            raise SecretError(
                "password_env", f"environment variable {dest.password_env!r} is not set"
            )
        if not value.strip():
            raise SecretError(
                "password_env", f"environment variable {dest.password_env!r} is empty"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise SecretError(
                "password_env", f"environment variable {dest.password_env!r} is not UTF-8"
            ) from None
        return value
    return None


def service_group_ids() -> frozenset[int]:
    """The groups the service runs with: the service user's when we are root (an installer
    checking the config), our own otherwise (the unit's `ExecStartPre` runs as the service)."""
    if os.geteuid() == 0:
        try:
            return frozenset({pwd.getpwnam(SERVICE_USER).pw_gid})
        except KeyError:
            pass
    return frozenset({os.getegid()})


def password_file_errors(name: str, dest: DestinationConfig, groups: frozenset[int]) -> list[str]:
    """A password file others can read is no longer a secret (the TLS key and the gateway key
    are held to the same rule); group-readable is allowed only for the service's own group."""
    path = dest.password_file
    if path is None:
        return []
    key = f"destinations.{name}.password_file"
    try:
        info = path.stat()
    except OSError:
        return []  # read_password reports it, with the reason
    mode, gid = info.st_mode, info.st_gid
    fix = f"chmod 600 {path}"
    if mode & stat.S_IROTH:
        return [f"{key}: {path} is readable by others (mode {mode & 0o777:04o}); {fix}"]
    if mode & stat.S_IRGRP and gid not in groups:
        return [
            f"{key}: {path} is readable by group {group_name(gid)} (mode {mode & 0o777:04o}), "
            f"not the service's; {fix}"
        ]
    return []


def group_name(gid: int) -> str:
    """The group's name, or its number where the system has no name for it."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def clear_text_password_warnings(config: GatewayConfig) -> list[str]:
    """A password sent without TLS to another machine can be read on the way."""
    warnings: list[str] = []
    for name, dest in config.destinations.items():
        source = "password_file" if dest.password_file is not None else "password_env"
        remote = [host for host, _ in dest.addresses if not is_loopback(host)]
        if dest.tls is not None or getattr(dest, source) is None or not remote:
            continue
        warnings.append(
            f"destinations.{name}.{source}: the password goes to {', '.join(remote)} without TLS, "
            f"readable on the network; add [destinations.{name}.tls] (docs/security.md)"
        )
    return warnings


def control_socket_errors(config: GatewayConfig) -> list[str]:
    path = config.control_socket
    size = len(os.fsencode(path))
    if size <= UNIX_SOCKET_MAX_BYTES:
        return []
    if config.control.socket_path is not None:
        return [
            f"control.socket_path: {size} bytes long, over the {UNIX_SOCKET_MAX_BYTES} a Unix "
            "socket path may have; choose a shorter path"
        ]
    return [
        f"store.path: the control socket beside it ({path}) would be {size} bytes long, over "
        f"the {UNIX_SOCKET_MAX_BYTES} a Unix socket path may have; set control.socket_path "
        "to a shorter path"
    ]


# -- can the store be written ------------------------------------------------------------------

CanUse = Callable[[Path, int], bool]
"""(path, os.R_OK | os.W_OK | os.X_OK bits) -> whether the user may."""


def _self_can(path: Path, want: int) -> bool:
    return os.access(path, want)


def user_can(uid: int, gids: frozenset[int]) -> CanUse:
    """Permission bits read for another account (what root checks on the service's behalf)."""

    def can(path: Path, want: int) -> bool:
        if uid == 0:
            return True
        for folder in reversed(path.parents):  # every folder on the way must be searchable
            if not _bits_allow(folder.stat(), uid, gids, os.X_OK):
                return False
        return _bits_allow(path.stat(), uid, gids, want)

    return can


def _bits_allow(st: os.stat_result, uid: int, gids: frozenset[int], want: int) -> bool:
    if st.st_uid == uid:
        shift = 6
    elif st.st_gid in gids:
        shift = 3
    else:
        shift = 0
    return (st.st_mode >> shift) & want == want


def store_path_problem(path: Path, can: CanUse = _self_can, who: str = "this user") -> str | None:
    """Why the store cannot be opened or created at `path` by `who`; None when it can."""
    try:
        return _store_path_problem(path.absolute(), can, who)
    except OSError as exc:
        return f"cannot check {path}: {exc.strerror or exc}"


def _store_path_problem(path: Path, can: CanUse, who: str) -> str | None:
    if path.is_dir():
        return f"{path} is a directory; name the database file in it, e.g. {path / 'outbox.db'}"
    folder = path.parent
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return f"cannot create the folder {folder}: {existing} is not a folder"
    if existing != folder:
        if not can(existing, os.W_OK | os.X_OK):
            return f"cannot create the folder {folder}: {existing} is not writable by {who}"
        return None
    # SQLite creates the -wal and -shm files beside the database: the folder must be writable.
    if not can(folder, os.W_OK | os.X_OK):
        return f"the folder {folder} is not writable by {who}"
    for suffix in ("", "-wal", "-shm"):
        file = Path(f"{path}{suffix}")
        if not file.exists():
            continue
        if not file.is_file():
            return f"{file} is not a regular file"
        if not can(file, os.R_OK | os.W_OK):
            return f"{file} is not writable by {who}"
    return None


def store_path_errors(config: GatewayConfig) -> list[str]:
    problem = store_path_problem(config.store.path)
    return [] if problem is None else [f"store.path: {problem}"]


def service_store_warnings(config: GatewayConfig, user: str = SERVICE_USER) -> list[str]:
    """As root, the checks above pass for anything; check for the account the unit runs as."""
    if os.geteuid() != 0:
        return []
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        return []
    path = config.store.path.absolute()
    if path.is_relative_to(STATE_DIRECTORY) and not STATE_DIRECTORY.exists():
        return []  # systemd creates the state directory for the service at start
    gids = frozenset({account.pw_gid, *os.getgrouplist(user, account.pw_gid)})
    problem = store_path_problem(path, user_can(account.pw_uid, gids), f"user {user}")
    if problem is None:
        return []
    owner = f"{user}:{group_name(account.pw_gid)}"
    return [
        f"store.path: {problem}, which the service runs as; fix: chown -R {owner} {path.parent}"
    ]
