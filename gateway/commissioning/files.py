"""Doctor's file and key steps: every file the config names (exists, owner, mode, readable by the
service user; secrets private), and the `[security]` keys (present, loadable, ids matching the
file names `schoolgate keys new` gives them).

Owns the account the checks are made for (`Account`: the service user `schoolgate` when it
exists, else the current user, or the one the caller names) and these steps. Permission bits are
read for that account when it is not the current one (root can read anything, the service
cannot), with `edge_config.checks.user_can`.
"""

from __future__ import annotations

import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

from edge_config.checks import SERVICE_USER, group_name, user_can
from edge_config.models import GatewayConfig
from gateway.commissioning.report import Report
from gateway.core import keys


class UnknownUserError(Exception):
    """The account named for the checks does not exist on this box."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int
    gids: frozenset[int]

    @property
    def group(self) -> str:
        return group_name(self.gid)

    @property
    def is_current(self) -> bool:
        return self.uid == os.geteuid()

    def can(self, path: Path, want: int) -> bool:
        """Whether this account may read (os.R_OK) / write / search `path`."""
        try:
            if self.is_current:
                return os.access(path, want)
            return user_can(self.uid, self.gids)(path.absolute(), want)
        except OSError:
            return False


def account(name: str | None) -> Account:
    """`name`, else the service user when it exists, else whoever runs this."""
    if name is None:
        try:
            entry = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            entry = pwd.getpwuid(os.geteuid())
    else:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise UnknownUserError(f"no user {name!r} on this box") from None
    gids = frozenset({entry.pw_gid, *os.getgrouplist(entry.pw_name, entry.pw_gid)})
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, gids)


def _owner_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


@dataclass(frozen=True, slots=True)
class NamedFile:
    key: str
    path: Path
    secret: bool
    """A password or private key: must be readable by the service and nobody else."""


def named_files(config: GatewayConfig, config_path: Path) -> list[NamedFile]:
    found = [NamedFile("(the config file)", config_path, secret=False)]
    for name, dest in config.destinations.items():
        where = f"destinations.{name}"
        if dest.password_file is not None:
            found.append(NamedFile(f"{where}.password_file", dest.password_file, secret=True))
        if dest.tls is not None:
            found.append(NamedFile(f"{where}.tls.ca_file", dest.tls.ca_file, secret=False))
            if dest.tls.cert_file is not None:
                found.append(NamedFile(f"{where}.tls.cert_file", dest.tls.cert_file, False))
            if dest.tls.key_file is not None:
                found.append(NamedFile(f"{where}.tls.key_file", dest.tls.key_file, secret=True))
    if config.security is not None:
        base = config_path.parent
        found.append(
            NamedFile(
                "security.gateway_key_file", base / config.security.gateway_key_file, secret=True
            )
        )
        for i, entry in enumerate(config.security.trusted_keys):
            if keys.parse_public_b64(entry.public_key) is None:
                found.append(
                    NamedFile(
                        f"security.trusted_keys[{i}].public_key",
                        base / entry.public_key,
                        secret=False,
                    )
                )
    return found


def check_files(config: GatewayConfig, config_path: Path, user: Account, report: Report) -> None:
    for named in named_files(config, config_path):
        _check_file(named, user, report)


def _check_file(named: NamedFile, user: Account, report: Report) -> None:
    section = "files"
    path = named.path
    try:
        info = path.stat()
    except OSError as exc:
        report.fail(
            section,
            f"{named.key} {path}",
            f"missing: {exc.strerror or exc}",
            f"create it, or correct {named.key} in the config",
        )
        return
    mode = stat.S_IMODE(info.st_mode)
    owner = f"{_owner_name(info.st_uid)}:{group_name(info.st_gid)}"
    described = f"{owner} {mode:04o}"
    name = f"{named.key} {path}"
    private_fix = f"chown {user.name}:{user.group} {path} && chmod 600 {path}"
    if not user.can(path, os.R_OK):
        fix = private_fix if named.secret else f"chgrp {user.group} {path} && chmod g+r {path}"
        report.fail(
            section,
            name,
            f"{described}: not readable by user {user.name}, whom the service runs as",
            fix,
        )
        return
    if named.secret and mode & stat.S_IRWXO:
        report.fail(section, name, f"{described}: others can read this secret", private_fix)
        return
    if named.secret and mode & stat.S_IRWXG and info.st_gid not in user.gids:
        report.fail(
            section,
            name,
            f"{described}: group {group_name(info.st_gid)} can read this secret",
            private_fix,
        )
        return
    report.ok(section, name, described)


def check_keys(config: GatewayConfig, config_path: Path, report: Report) -> None:
    section = "keys"
    security = config.security
    if security is None:
        report.warn(
            section,
            "[security]",
            "no [security] section: commands are refused and no acknowledgement can arrive, so "
            "every alarm escalates",
            "schoolgate keys new --role gateway --id "
            f"{config.site.gateway_id} --out /etc/schoolgate/keys, then paste the lines it "
            "prints (docs/security.md)",
        )
        return
    base = config_path.parent
    key_path = base / security.gateway_key_file
    try:
        private = keys.load_private_key(key_path)
    except keys.KeyFileError as exc:
        report.fail(
            section,
            "gateway key",
            str(exc),
            f"schoolgate keys new --role gateway --id {security.gateway_key_id} --out "
            f"{key_path.parent} (or fix the file as the files steps say)",
        )
        return
    report.ok(section, "gateway key", f"{key_path} loads")
    if key_path.stem != security.gateway_key_id:
        report.warn(
            section,
            "gateway key id",
            f"gateway_key_id {security.gateway_key_id!r} but the file is {key_path.name}",
            "receivers verify events by gateway_key_id: make sure they list this key under "
            f"that id, or rename to {security.gateway_key_id}.key",
        )
    pub_path = key_path.with_suffix(".pub")
    if pub_path.exists():
        published = keys.parse_public_b64(pub_path.read_text(errors="replace"))
        if published is None or keys.public_b64(published) != keys.public_b64(private.public_key()):
            report.fail(
                section,
                "gateway key pair",
                f"{pub_path} does not hold the public half of {key_path.name}",
                f"give receivers the public key printed by `schoolgate keys new`; remove the "
                f"stale {pub_path}",
            )
        else:
            report.ok(section, "gateway key pair", f"{pub_path.name} matches")
    for i, entry in enumerate(security.trusted_keys):
        name = f"trusted key {entry.id}"
        try:
            keys.load_public_key(entry.public_key, base)
        except keys.KeyFileError as exc:
            report.fail(section, name, str(exc), f"fix security.trusted_keys[{i}].public_key")
            continue
        stem = Path(entry.public_key).stem
        if keys.parse_public_b64(entry.public_key) is None and stem != entry.id:
            report.warn(
                section,
                name,
                f"id {entry.id!r} but the file is {Path(entry.public_key).name}",
                "check that this is that receiver's key",
            )
        else:
            report.ok(section, name, ", ".join(entry.commands))
