"""What the service's environment holds, for doctor: the unit's `EnvironmentFile=` read the way
systemd reads it, so doctor run by hand checks the secrets the service will see, not the ones
in the installer's shell.

Owns finding the file (`--environment-file`, else the unit's `EnvironmentFile=`, else
/etc/schoolgate/environment), parsing it (systemd's syntax: `KEY=VALUE` lines, `#` and `;`
comments, single or double quotes, a leading `export ` tolerated), and applying it for the
length of a doctor run: its variables set, and each variable the config's `password_env`
names that the file does not set taken away (the service would not have it). It restores the
process's environment afterwards. It checks nothing else and never prints a value.
"""

from __future__ import annotations

import contextlib
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_UNIT = Path("/etc/systemd/system/schoolgate.service")
DEFAULT_FILE = Path("/etc/schoolgate/environment")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class EnvironmentFileError(Exception):
    """The file exists but cannot be read or has a line that is not KEY=VALUE."""


@dataclass(frozen=True, slots=True)
class ServiceEnvironment:
    path: Path
    found: bool
    variables: Mapping[str, str] = field(default_factory=dict)


def file_of_unit(unit: Path) -> Path | None:
    """The unit's (last) `EnvironmentFile=`, its optional `-` taken off; None when it has
    none or cannot be read."""
    try:
        text = unit.read_text(encoding="utf-8")
    except OSError:
        return None
    found = None
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key.strip() == "EnvironmentFile" and value.strip():
            found = Path(value.strip().removeprefix("-"))
    return found


def parse(text: str, path: Path) -> dict[str, str]:
    """systemd's EnvironmentFile syntax (the parts an installer writes)."""
    variables: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not _NAME.match(key):
            raise EnvironmentFileError(f"{path} line {number}: not KEY=VALUE")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        variables[key] = value
    return variables


def read(path: Path) -> ServiceEnvironment:
    """The file's variables; `found` False when there is no file (the unit's `-` allows it)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ServiceEnvironment(path, found=False)
    except (OSError, UnicodeDecodeError) as exc:
        raise EnvironmentFileError(f"cannot read {path}: {exc}") from exc
    return ServiceEnvironment(path, found=True, variables=parse(text, path))


def locate(environment_file: Path | None, unit: Path = DEFAULT_UNIT) -> Path:
    return environment_file or file_of_unit(unit) or DEFAULT_FILE


def password_variables(config_path: Path) -> list[str]:
    """The `password_env` names of the config's destinations (none when it does not parse:
    the config step says why)."""
    try:
        raw = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    destinations = raw.get("destinations")
    if not isinstance(destinations, dict):
        return []
    names = (d.get("password_env") for d in destinations.values() if isinstance(d, dict))
    return [name for name in names if isinstance(name, str)]


@contextlib.contextmanager
def applied(env: ServiceEnvironment, hidden: list[str]) -> Iterator[None]:
    """The process environment as the service would have it, for the block; restored after."""
    saved = dict(os.environ)
    try:
        for name in hidden:
            os.environ.pop(name, None)
        os.environ.update(env.variables)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
