"""`doctor`: is this gate ready to go live, and if not, what to do. One run checks, in order, the
config, every file it names, each serial port, each broker, each device, the store, the box's
clock and the keys, and returns a `Report` (each step ok / warn / FAIL with the reason and the
fix; exit code 0, 1 or 2). The checks run in the service's environment: the unit's
EnvironmentFile is read first (`environment`), so a secret set only in the installer's shell is
reported, not silently used.

Owns the order of the steps, the per-step timeout and the note about who the checks ran as. The
steps themselves live beside it (`files`, `system`, `brokers`, `devices`). It prints nothing (the
CLI renders the report) and changes nothing on the box, the brokers or the devices, apart from
one test message published under the gateway's own topics.
"""

from __future__ import annotations

import os
from pathlib import Path

import structlog

from edge_config.errors import ConfigError
from edge_config.loader import load
from gateway.commissioning import brokers, devices, environment, files, system
from gateway.commissioning.report import Report

DEFAULT_STEP_TIMEOUT_S = 3.0
"""Each network or device step; a healthy gate answers in milliseconds, so a full run stays well
under 30 s."""

log = structlog.get_logger()


async def doctor(
    config_path: Path,
    *,
    as_user: str | None = None,
    timeout_s: float = DEFAULT_STEP_TIMEOUT_S,
    free_bytes: system.FreeBytes = system.disk_free_bytes,
    environment_file: Path | None = None,
    unit: Path = environment.DEFAULT_UNIT,
) -> Report:
    """Check everything a live gate needs; `as_user` names the account file and port
    permissions are checked for (default: `schoolgate` if it exists, else the current user).
    `free_bytes` reads the free space of a folder (a seam for tests). The secrets are those of
    the service's environment: `environment_file`, else the `unit`'s EnvironmentFile=."""
    report = Report()
    try:
        user = files.account(as_user)
    except files.UnknownUserError as exc:
        report.fail("user", "service user", str(exc), "name an existing user, or install first")
        return report
    report.notes.append(_who_note(user))
    env, hidden = _service_environment(config_path, environment_file, unit, report)
    with environment.applied(env, hidden):
        await _checks(config_path, user, report, timeout_s=timeout_s, free_bytes=free_bytes)
    return report


def _service_environment(
    config_path: Path, environment_file: Path | None, unit: Path, report: Report
) -> tuple[environment.ServiceEnvironment, list[str]]:
    """Read the service's environment file (a step of its own), and the password variables
    the service would not have: named by the config, set only in this shell."""
    path = environment.locate(environment_file, unit)
    try:
        env = environment.read(path)
    except environment.EnvironmentFileError as exc:
        report.warn(
            "environment",
            str(path),
            str(exc),
            "run doctor with sudo (systemd reads this file as root), or fix the line",
        )
        env = environment.ServiceEnvironment(path, found=False)
    else:
        reason = (
            f"{len(env.variables)} variable(s): the secrets below are checked as the service "
            "sees them"
            if env.found
            else "no file (optional): the service gets no variables from it"
        )
        report.ok("environment", str(path), reason)
    hidden = [n for n in environment.password_variables(config_path) if n not in env.variables]
    for name in hidden:
        if name in os.environ:
            report.warn(
                "environment",
                name,
                f"set in this shell but not in {path}: the service will not see it",
                f"add {name}=... to {path} (root:root, mode 0600) and restart the service",
            )
    return env, hidden


async def _checks(
    config_path: Path,
    user: files.Account,
    report: Report,
    *,
    timeout_s: float,
    free_bytes: system.FreeBytes,
) -> None:
    try:
        loaded = load(config_path)
    except ConfigError as exc:
        for error in exc.errors:
            report.fail("config", str(config_path), error, _config_fix(config_path, error))
        log.info("doctor_done", exit_code=report.exit_code, config_ok=False)
        return
    config = loaded.config
    report.ok("config", str(config_path), "loads")
    for warning in loaded.warnings:
        report.warn("config", str(config_path), warning, _config_fix(config_path, warning))
    files.check_files(config, config_path, user, report)
    await system.check_serial_ports(config, user, report, timeout_s=timeout_s)
    await brokers.check_brokers(config, report, timeout_s=timeout_s)
    await devices.check_devices(config, report, timeout_s=timeout_s)
    await system.check_store(config.store.path, report, timeout_s=timeout_s, free_bytes=free_bytes)
    await system.check_clock(report, timeout_s=timeout_s)
    files.check_keys(config, config_path, report)
    log.info("doctor_done", exit_code=report.exit_code, steps=len(report.steps))


def _who_note(user: files.Account) -> str:
    if user.is_current:
        return f"checks run as user {user.name}"
    me = _current_name()
    return (
        f"not run as the service user {user.name} (running as {me}): file and port "
        f"permissions are read for {user.name}; run `sudo -u {user.name} schoolgate doctor` "
        "to check as it"
    )


def _current_name() -> str:
    import pwd  # noqa: PLC0415 - only for this note

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return str(os.geteuid())


def _config_fix(config_path: Path, message: str) -> str:
    key = message.split(":", 1)[0]
    if " " in key:
        return f"edit {config_path}"
    return f"edit {key} in {config_path}, then run schoolgate check-config"
