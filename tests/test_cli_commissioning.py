"""`schoolgate doctor` and `schoolgate scan` on the command line (issue 13): the words become the
library's calls (tests/test_doctor.py and tests/test_scan.py test the checks themselves), bad
words are usage errors (exit 2), and a scan says how long it takes before it starts."""

from __future__ import annotations

import json
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


def test_doctor_reports_a_broken_config_as_a_failure_with_its_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "schoolgate.toml"
    config.write_text("[site]\nschool_id = 1\n")
    assert main(["doctor", "-c", str(config), "--as-user", "nobody", "--json"]) == 2
    report = json.loads(capsys.readouterr().out)
    failed = [s for s in report["steps"] if s["status"] == "fail"]
    assert report["exit_code"] == 2 and failed, report
    assert any("school_id" in json.dumps(step) for step in failed)


async def test_scan_lists_the_units_that_answer(capsys: pytest.CaptureFixture[str]) -> None:
    module = DiDoModule(unit_id=3)
    async with serve_tcp(module) as (_, port):
        argv = ["scan", f"127.0.0.1:{port}", "--ids", "1-4", "--timeout", "0.2"]
        code = await asyncio_to_thread_main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.startswith("4 probes, at most")  # the estimate comes before the first probe
    assert "unit 3 (tcp): function codes" in out and "unit 1 " not in out


async def asyncio_to_thread_main(argv: list[str]) -> int:
    """The command runs its own event loop (asyncio.run): off this test's loop."""
    import asyncio  # noqa: PLC0415 - local to this helper

    return await asyncio.to_thread(main, argv)


def test_a_long_scan_asks_for_yes(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["scan", "/dev/ttyNONE", "--baud", "1200,2400,4800,9600,19200", "--parity", "N,E"]
    assert main(argv) == 2  # 247 ids x 10 settings: over the limit without --yes
    assert "add --yes" in capsys.readouterr().err


def test_bad_words_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", "127.0.0.1:502", "--ids", "0-9"])
    assert exit_info.value.code == 2
    assert "1..247" in capsys.readouterr().err
