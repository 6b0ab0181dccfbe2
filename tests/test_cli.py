"""The `schoolgate` command line on click (issue 11 item 7, issue 13): `--version` on every
program and every command, `check-config -c FILE`, usage errors with exit status 2, and no
traceback when the reader of the output went away or the user pressed Ctrl-C.

The commands are found by walking the click tree, so a command added later is checked too. The
closed pipe is a real pipe whose reading end is closed before the program writes, which is what
`| head -1` leaves behind once head has read its line and gone.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import click
import pytest

from config_cases import Place
from gateway import cli
from gateway.cli import main
from simulators import __main__ as simulators_main

ROOT = Path(__file__).parent.parent
VERSION = metadata.version("schoolgate")


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*prefix, name)
        if isinstance(command, click.Group):
            yield from command_paths(command, (*prefix, name))


def exit_code(argv: list[str]) -> int:
    """`main`'s exit status, whether it returns it or exits with it (usage errors, as argparse)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


def python(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )


def test_the_tree_has_every_documented_command() -> None:
    """The control for the walks below: they see the commands (and sub-commands) there are."""
    paths = set(command_paths(cli.schoolgate))
    assert {("run",), ("check-config",), ("outbox", "export"), ("keys", "sign-command")} <= paths
    assert {("doctor",), ("scan",)} <= paths
    assert {("calendar",), ("ledger",), ("ledger", "close"), ("report",)} <= paths
    assert {("watch",), ("test", "start"), ("test", "stop"), ("test", "report")} <= paths
    assert {("drill",), ("drill", "start"), ("drill", "stop")} <= paths
    assert len(paths) == 31


@pytest.mark.parametrize(
    "path", sorted(p for p in command_paths(cli.schoolgate) if p != ("console",))
)
def test_every_command_prints_the_version(
    path: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code([*path, "--version"]) == 0
    assert capsys.readouterr().out == f"schoolgate {VERSION}\n"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["-m", "gateway", "--version"], f"schoolgate {VERSION}"),
        (["-m", "simulators", "--version"], f"python -m simulators {VERSION}"),
    ],
)
def test_each_program_prints_the_version(argv: list[str], expected: str) -> None:
    done = python(*argv)
    assert (done.returncode, done.stdout, done.stderr) == (0, expected + "\n", "")


def test_the_installed_schoolgate_script_prints_the_version() -> None:
    script = Path(sys.executable).parent / "schoolgate"
    done = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stdout) == (0, f"schoolgate {VERSION}\n")


@pytest.mark.parametrize("device", ["dido", "access", "bollard", "scenario", "fleet"])
def test_each_simulator_prints_the_version(device: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        simulators_main.main([device, "--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out == f"python -m simulators {device} {VERSION}\n"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return Place(tmp_path).write({})


def test_check_config_takes_the_file_with_c_as_well(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["check-config", str(config)]) == 0
    positional = capsys.readouterr().out
    assert exit_code(["check-config", "-c", str(config)]) == 0
    assert capsys.readouterr().out == positional
    assert positional.endswith("ok\n")


def test_check_config_with_c_refuses_a_bad_file_as_the_positional_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.toml"
    assert exit_code(["check-config", "-c", str(missing)]) == 2
    assert f"{missing}: invalid configuration:" in capsys.readouterr().err


def test_check_config_refuses_the_file_given_twice(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(["check-config", str(config), "-c", str(config)]) == 2
    err = capsys.readouterr().err
    assert "give the file once: FILE or -c FILE" in err
    assert "ok" not in err


def test_check_config_without_a_file_checks_the_default_like_every_command(
    config: Path,
) -> None:
    env = os.environ | {"SCHOOLGATE_CONFIG": str(config)}
    done = python("-m", "gateway", "check-config", env=env)
    assert (done.returncode, done.stdout.splitlines()[-1]) == (0, "ok"), done.stderr
    env["SCHOOLGATE_CONFIG"] = str(config.parent / "missing.toml")
    done = python("-m", "gateway", "check-config", env=env)
    assert done.returncode == 2
    assert "missing.toml: invalid configuration:" in done.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "Usage: schoolgate"),
        (["no-such-command"], "No such command 'no-such-command'"),
        (["keys", "new", "--id", "x", "--out", "."], "Missing option '--role'"),
        (["keys", "new", "--role", "admin", "--id", "x", "--out", "."], "'admin' is not one of"),
        (["events", "--limit", "five"], "'five' is not a valid integer"),
        (["run", "--log-level", "loud"], "'loud' is not one of"),
        (["reset"], "Missing argument 'ALARM_ID'"),
    ],
)
def test_usage_errors_exit_2_with_the_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert exit_code(argv) == 2
    out = capsys.readouterr()
    assert message in out.out + out.err


def run_into_closed_pipe(*argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m gateway ARGV` writing into a pipe nobody reads any more (writes fail: EPIPE)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [sys.executable, "-m", "gateway", *argv],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        os.close(write_end)


def assert_quiet_end(done: subprocess.CompletedProcess[str]) -> None:
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert "BrokenPipeError" not in done.stderr
    assert "Exception ignored" not in done.stderr


def test_keys_new_into_a_closed_pipe_ends_without_a_traceback(tmp_path: Path) -> None:
    done = run_into_closed_pipe(
        "keys", "new", "--role", "gateway", "--id", "gate-1", "--out", str(tmp_path)
    )
    assert_quiet_end(done)
    assert (tmp_path / "gate-1.key").exists()  # the work was done; only the report was lost


def test_ctrl_c_while_waiting_for_the_daemon_ends_with_130_and_no_traceback(config: Path) -> None:
    """A daemon that takes the request and never answers; the user gives up with Ctrl-C."""
    with socket.socket(socket.AF_UNIX) as daemon:
        daemon.bind(str(config.parent / "c.sock"))  # the config's [control] socket_path
        daemon.listen()
        daemon.settimeout(30)
        waiting = subprocess.Popen(
            [sys.executable, "-m", "gateway", "alarms", "-c", str(config)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            connection, _ = daemon.accept()
            with connection, connection.makefile("rb") as request:
                assert b'"op": "alarms"' in request.readline()  # it now waits for the answer
                waiting.send_signal(signal.SIGINT)
                _, err = waiting.communicate(timeout=30)
        finally:
            if waiting.returncode is None:
                waiting.kill()
                waiting.wait()
    assert waiting.returncode == 130, err
    assert "Traceback" not in err
