"""Issue 10, class 6: every malformed config is refused by the real `schoolgate check-config`
with exit 2 and a message naming the key, never a traceback; and every config it passes starts
(the real Gateway is built, its store opened and closed, its control socket bound)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from config_cases import EMPTY_ENV, MALFORMED, SET_ENV, VALID, Place, Sections
from edge_config.loader import load
from gateway.app import Gateway
from gateway.cli import main
from gateway.commands import control

EXAMPLES = sorted(
    path
    for path in (Path(__file__).parent.parent / "edge_config" / "examples").glob("*.toml")
    if not path.name.startswith("calendar-")  # a school calendar, not a gateway config
)


@pytest.fixture(autouse=True)
def _secrets_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EMPTY_ENV, "")
    monkeypatch.setenv(SET_ENV, "s3cret")


def check_in_process(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(["check-config", str(path)])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_table_is_big_enough() -> None:
    assert len(MALFORMED) >= 50


@pytest.mark.parametrize(("changes", "key"), MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_config_is_refused_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: Sections, key: str
) -> None:
    code, out, err = check_in_process(Place(tmp_path).write(changes), capsys)
    assert code == 2, (out, err)
    assert f"  {key}" in err, err
    assert out == ""


SUBPROCESS_CASES = [
    "max_mb-inf",
    "port-true",
    "store-path-nul",
    "password_file-not-utf8",
    "socket-too-long",
]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_malformed_config_through_the_command_prints_no_traceback(
    tmp_path: Path, name: str
) -> None:
    changes, key = MALFORMED[name]
    result = subprocess.run(
        [sys.executable, "-m", "gateway", "check-config", str(Place(tmp_path).write(changes))],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", EMPTY_ENV: ""},
    )
    assert result.returncode == 2, result.stderr
    assert f"  {key}" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_file_that_is_not_utf8_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schoolgate.toml"
    path.write_bytes('[site]\nname = "Schülertor"\n'.encode("latin-1"))
    code, _, err = check_in_process(path, capsys)
    assert code == 2
    assert "not UTF-8 text" in err


def test_config_nested_too_deeply_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "schoolgate.toml"
    path.write_text("a = " + "[" * 100_000 + "]" * 100_000)
    code, _, err = check_in_process(path, capsys)
    assert code == 2
    assert "nested too deeply" in err


async def _starts(path: Path) -> None:
    """What `schoolgate run` does first: build the Gateway, open the store, bind the socket."""
    config = load(path).config
    gateway = Gateway(config, config_dir=path.parent)
    async with gateway.store, control.serve(config.control_socket, gateway.handle_control):
        assert config.control_socket.exists()


@pytest.mark.parametrize("changes", VALID.values(), ids=VALID.keys())
async def test_a_config_that_passes_check_config_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changes: Sections
) -> None:
    path = Place(tmp_path).write(changes)
    code, out, err = check_in_process(path, capsys)
    assert code == 0, err
    assert out.splitlines()[-1] == "ok"
    await _starts(path)


def _example_here(example: Path, place: Place) -> Path:
    """The example with its secrets made and its store and socket moved into `place`."""
    text = example.read_text(encoding="utf-8")
    data = tomllib.loads(text)
    text = text.replace(data["store"]["path"], "{store}")
    text = text.replace(data["control"]["socket_path"], "{socket}")
    for dest in data["destinations"].values():
        if "password_file" in dest:
            text = text.replace(dest["password_file"], "{pw}")
        if "password_env" in dest:
            text = text.replace(dest["password_env"], SET_ENV)
    path = place.root / example.name
    path.write_text(place.fill(text), encoding="utf-8")
    return path


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
async def test_the_examples_pass_check_config_and_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], example: Path
) -> None:
    path = _example_here(example, Place(tmp_path))
    code, _, err = check_in_process(path, capsys)
    assert code == 0, err
    await _starts(path)
