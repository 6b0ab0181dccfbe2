"""`schoolgate doctor` and `schoolgate scan` on the command line (issue 13): the words become the
library's calls (tests/test_doctor.py and tests/test_scan.py test the checks themselves), bad
words are usage errors (exit 2), and a scan says how long it takes before it starts.

The commands that run set up logging for the whole process (stderr, warnings only), so they run
here as processes of their own, as an installer runs them: in this process they would leave
structlog filtering every later test's info events."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.commissioning.commands import UsageError, parse_bauds, parse_ids, parse_parities
from simulators.dido import DiDoModule, serve_tcp


def test_unit_ids_ranges_and_lists() -> None:
    assert parse_ids("1-3,7,2") == [1, 2, 3, 7]
    assert parse_bauds("9600,19200") == [9600, 19200]
    assert parse_parities("n,E") == ["N", "E"]
    for bad in ("0-3", "5-2", "x", "1-300"):
        with pytest.raises(UsageError, match="unit ids"):
            parse_ids(bad)
    with pytest.raises(UsageError, match="parities"):
        parse_parities("N,X")


def schoolgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_doctor_reports_a_broken_config_as_a_failure_with_its_fix(tmp_path: Path) -> None:
    config = tmp_path / "schoolgate.toml"
    config.write_text("[site]\nschool_id = 1\n")
    done = schoolgate("doctor", "-c", str(config), "--as-user", "nobody", "--json")
    assert done.returncode == 2, done.stderr
    report = json.loads(done.stdout)  # nothing but the report on standard output
    failed = [s for s in report["steps"] if s["status"] == "fail"]
    assert report["exit_code"] == 2 and failed, report
    assert any("school_id" in json.dumps(step) for step in failed)


async def test_scan_lists_the_units_that_answer() -> None:
    module = DiDoModule(unit_id=3)
    async with serve_tcp(module) as (_, port):
        args = ("scan", f"127.0.0.1:{port}", "--ids", "1-4", "--timeout", "0.2")
        done = await asyncio.to_thread(schoolgate, *args)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("4 probes, at most")  # the estimate comes before a probe
    assert "unit 3 (tcp): function codes" in done.stdout and "unit 1 " not in done.stdout


def test_a_long_scan_asks_for_yes(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["scan", "/dev/ttyNONE", "--baud", "1200,2400,4800,9600,19200", "--parity", "N,E"]
    assert main(argv) == 2  # 247 ids x 10 settings: over the limit without --yes
    assert "add --yes" in capsys.readouterr().err


def test_bad_words_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", "127.0.0.1:502", "--ids", "0-9"])
    assert exit_info.value.code == 2
    assert "1..247" in capsys.readouterr().err
