"""`schoolgate doctor` and `schoolgate scan`: the installer's side of the commissioning library.

Owns these two commands' options, turning their words into calls of `doctor.doctor` and
`scan.scan`, and drawing the results (a rich progress bar for a scan). Importing it is light:
the checks, the drivers and rich load only when a command runs. It does not check anything
itself (`doctor`, `scan` do); `gateway.cli` registers the commands on its group.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import click

if TYPE_CHECKING:
    from gateway.commissioning.scan import Parity

MAX_PROBES_WITHOUT_YES = 2_000
"""A scan longer than this many probes asks for `--yes`: an RS-485 scan of every id at 8
settings is about 2,000 probes and minutes of a bus that must be quiet meanwhile."""


class UsageError(ValueError):
    """Words the command cannot use; the message says what was expected."""


def parse_ids(text: str) -> list[int]:
    """`1-10,20` -> [1, ..., 10, 20]; Modbus unit ids are 1..247."""
    ids: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            low, high = int(first), int(last or first)
        except ValueError:
            raise UsageError(f"unit ids: {part!r} is not a number or a range like 1-10") from None
        if not 1 <= low <= high <= 247:
            raise UsageError(f"unit ids: {part!r} is outside 1..247 or runs backwards")
        ids.extend(range(low, high + 1))
    return sorted(set(ids))


def parse_bauds(text: str) -> list[int]:
    try:
        return [int(b) for b in text.split(",")]
    except ValueError:
        raise UsageError(f"baud rates: {text!r} is not a list like 9600,19200") from None


def parse_parities(text: str) -> list[Literal["N", "E", "O"]]:
    parities = [p.strip().upper() for p in text.split(",")]
    wrong = [p for p in parities if p not in ("N", "E", "O")]
    if wrong:
        raise UsageError(f"parities: {wrong} (N, E or O)")
    return cast(list[Literal["N", "E", "O"]], parities)


def _quiet_logs() -> None:
    """Library logs to stderr, warnings only: the report (or its JSON) owns standard output."""
    from gateway import logsetup  # noqa: PLC0415 - only when a command runs

    logsetup.configure(fmt="auto", level="warning")


def run_doctor(
    config: Path,
    *,
    as_user: str | None,
    as_json: bool,
    timeout_s: float,
    environment_file: Path | None = None,
    unit: Path | None = None,
) -> int:
    from gateway.commissioning import environment  # noqa: PLC0415 - only when asked for
    from gateway.commissioning.doctor import doctor  # noqa: PLC0415 - only when asked for

    _quiet_logs()
    report = asyncio.run(
        doctor(
            config,
            as_user=as_user,
            timeout_s=timeout_s,
            environment_file=environment_file,
            unit=unit or environment.DEFAULT_UNIT,
        )
    )
    print(report.to_json() if as_json else report.render(), end="" if not as_json else "\n")
    return report.exit_code


def run_scan(
    target: str,
    *,
    unit_ids: Sequence[int],
    bauds: Sequence[int],
    parities: Sequence[Parity],
    timeout_s: float,
    yes: bool,
) -> int:
    from rich.progress import Progress as Bar  # noqa: PLC0415 - the daemon never loads rich

    from gateway.commissioning import scan  # noqa: PLC0415 - only when asked for
    from gateway.commissioning.scan import ScanError  # noqa: PLC0415 - only when asked for

    try:
        settings = scan.settings_for(scan.parse_target(target), bauds, parities)
    except ScanError as exc:
        print(f"schoolgate scan: {exc}", file=sys.stderr)
        return 2
    probes = len(unit_ids) * len(settings)
    estimate = scan.estimate_s(unit_ids, settings, timeout_s)
    print(f"{probes} probes, at most {estimate:.0f} s ({len(settings)} setting(s))", flush=True)
    if probes > MAX_PROBES_WITHOUT_YES and not yes:
        print("that is long: narrow the ids or settings, or add --yes", file=sys.stderr)
        return 2
    _quiet_logs()
    with Bar(transient=True) as bar:
        task = bar.add_task("scanning", total=probes)

        def progress(step: scan.Progress) -> None:
            bar.update(task, completed=step.done, description=f"{step.setting} unit {step.unit_id}")

        try:
            result = asyncio.run(
                scan.scan(
                    target,
                    unit_ids=unit_ids,
                    bauds=bauds,
                    parities=parities,
                    timeout_s=timeout_s,
                    progress=progress,
                )
            )
        except ScanError as exc:
            print(f"schoolgate scan: {exc}", file=sys.stderr)
            return 2
    print(result.render(), end="")
    return 0 if result.found else 1


def register(group: click.Group) -> None:
    """Add `doctor` and `scan` to the `schoolgate` group (its command class: --version etc.)."""

    @group.command("doctor", help="check a gate before it goes live, each step with its fix")
    @click.option("-c", "--config", type=click.Path(path_type=Path), default=_default_config())
    @click.option(
        "--as-user", help="check file and port rights for this user (default: schoolgate)"
    )
    @click.option("--json", "as_json", is_flag=True, help="the report as JSON")
    @click.option("--timeout", "timeout_s", type=click.FloatRange(0.1, 30), default=3.0)
    @click.option(
        "--environment-file",
        type=click.Path(path_type=Path),
        help="the service's environment (default: the unit's EnvironmentFile=, "
        "else /etc/schoolgate/environment)",
    )
    @click.option(
        "--unit",
        type=click.Path(path_type=Path),
        help="the unit to take EnvironmentFile= from (default /etc/systemd/system/"
        "schoolgate.service)",
    )
    def doctor_command(config: Path, **words: Any) -> int:
        return run_doctor(config, **words)

    @group.command("scan", help="find the Modbus units on a serial port or a TCP host")
    @click.argument("target")
    @click.option("--ids", default="1-247", show_default=True, help="unit ids, e.g. 1-10,20")
    @click.option("--baud", default="9600", show_default=True, help="serial: e.g. 9600,19200")
    @click.option("--parity", default="N", show_default=True, help="serial: e.g. N,E")
    @click.option("--timeout", "timeout_s", type=click.FloatRange(0.02, 5), default=0.2)
    @click.option("--yes", is_flag=True, help="start a long scan without asking")
    def scan_command(target: str, **words: str | float | bool) -> int:
        try:
            unit_ids = parse_ids(str(words["ids"]))
            bauds = parse_bauds(str(words["baud"]))
            parities = parse_parities(str(words["parity"]))
        except UsageError as exc:
            raise click.BadParameter(str(exc)) from None
        return run_scan(
            target,
            unit_ids=unit_ids,
            bauds=bauds,
            parities=parities,
            timeout_s=float(words["timeout_s"]),
            yes=bool(words["yes"]),
        )


def _default_config() -> Path:
    import os  # noqa: PLC0415 - as gateway.cli reads it

    return Path(os.environ.get("SCHOOLGATE_CONFIG", "/etc/schoolgate/schoolgate.toml"))
