"""Issue 10, classes 5 and 7 at check-config: a store path the service user cannot write is
flagged under `store.path`; a password file others can read is refused with the fix; a password
sent without TLS to another machine is a warning printed before `ok` (exit 0)."""

from __future__ import annotations

import grp
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from config_cases import Place, Sections
from edge_config import checks
from edge_config.loader import load
from gateway.cli import main

NOBODY = 65534
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act for another user")


def check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(["check-config", str(path)])
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder every user can reach (pytest's own is private to us)."""
    path = Path(tempfile.mkdtemp(prefix="schoolgate-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


# -- passwords ---------------------------------------------------------------------------------


def test_clear_text_password_to_another_machine_is_a_warning_before_ok(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changes: Sections = {
        "destinations.police": {"host": '"alarm.police.example.cn"', "password_file": '"{pw}"'}
    }
    code, out, err = check(Place(tmp_path).write(changes), capsys)
    assert code == 0, err
    assert out.splitlines() == [
        "warning: destinations.police.password_file: the password goes to "
        "alarm.police.example.cn without TLS, readable on the network; add "
        "[destinations.police.tls] (docs/security.md)",
        "ok",
    ]


@pytest.mark.parametrize("host", ['"127.0.0.1"', '"localhost"', '"::1"'])
def test_clear_text_password_on_loopback_is_not_warned(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str
) -> None:
    changes: Sections = {"destinations.police": {"host": host, "password_file": '"{pw}"'}}
    code, out, err = check(Place(tmp_path).write(changes), capsys)
    assert (code, out) == (0, "ok\n"), err


def test_no_password_no_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    changes: Sections = {"destinations.police": {"host": '"alarm.police.example.cn"'}}
    code, out, _ = check(Place(tmp_path).write(changes), capsys)
    assert (code, out) == (0, "ok\n")


def test_password_file_readable_by_others_is_refused_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    changes: Sections = {"destinations.police": {"password_file": '"{pw_open}"'}}
    code, _, err = check(Place(tmp_path).write(changes), capsys)
    assert code == 2
    expected = (
        f"  destinations.police.password_file: {tmp_path / 'pw_open'} is readable by others "
        f"(mode 0644); chmod 600 {tmp_path / 'pw_open'}"
    )
    assert expected in err.splitlines()


@ROOT_ONLY
def test_password_file_readable_by_a_foreign_group_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Place(tmp_path).write({"destinations.police": {"password_file": '"{pw}"'}})
    secret = tmp_path / "pw"
    assert NOBODY not in checks.service_group_ids()
    os.chown(secret, -1, NOBODY)
    secret.chmod(0o640)
    code, _, err = check(path, capsys)
    assert code == 2
    assert "destinations.police.password_file: " in err
    assert "not the service's; chmod 600" in err


def test_password_file_readable_by_the_service_group_is_accepted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = Place(tmp_path).write({"destinations.police": {"password_file": '"{pw}"'}})
    secret = tmp_path / "pw"
    os.chown(secret, -1, min(checks.service_group_ids()))
    secret.chmod(0o640)
    code, out, err = check(path, capsys)
    assert (code, out) == (0, "ok\n"), err


@pytest.mark.parametrize(
    ("content", "expected"),
    [(b"", "is empty"), (b"  \n", "is empty"), (b"\xff\xfe", "is not UTF-8 text")],
)
def test_unusable_password_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, expected: str
) -> None:
    path = Place(tmp_path).write({"destinations.police": {"password_file": '"{pw}"'}})
    (tmp_path / "pw").write_bytes(content)
    code, _, err = check(path, capsys)
    assert code == 2
    assert f"  destinations.police.password_file: {tmp_path / 'pw'} {expected}" in err


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_password_variable_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SCHOOLGATE_TEST_PW", value)
    changes: Sections = {"destinations.police": {"password_env": '"SCHOOLGATE_TEST_PW"'}}
    code, _, err = check(Place(tmp_path).write(changes), capsys)
    assert code == 2
    assert "  destinations.police.password_env: environment variable " in err
    assert "'SCHOOLGATE_TEST_PW' is empty" in err


# -- the store path ----------------------------------------------------------------------------


def _store_at(place: Place, store: Path) -> Path:
    return place.write({"store": {"path": f'"{store}"'}})


def test_store_folder_not_writable_is_flagged(shared_tmp: Path) -> None:
    """Through the real command, run as a user who cannot write the folder."""
    folder = shared_tmp / "state"
    folder.mkdir(mode=0o555)
    folder.chmod(0o555)
    config = _store_at(Place(shared_tmp), folder / "outbox.db")
    config.chmod(0o644)
    command = [sys.executable, "-m", "gateway", "check-config", str(config)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("needs setpriv to drop root")
        command = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *command]
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, cwd=Path(__file__).parent.parent
    )
    assert result.returncode == 2, result.stderr
    assert f"  store.path: the folder {folder} is not writable by this user" in result.stderr
    assert "Traceback" not in result.stderr


def _as_nobody(path: Path) -> str | None:
    return checks.store_path_problem(path, checks.user_can(NOBODY, frozenset({NOBODY})), "nobody")


@ROOT_ONLY
def test_store_files_owned_by_another_user_are_flagged(shared_tmp: Path) -> None:
    """The audit's case: outbox.db (or only its -wal) owned by root after `sudo schoolgate run`."""
    folder = shared_tmp / "state"
    folder.mkdir()
    os.chown(folder, NOBODY, NOBODY)
    store = folder / "outbox.db"
    assert _as_nobody(store) is None
    wal = folder / "outbox.db-wal"
    wal.write_bytes(b"")
    wal.chmod(0o644)
    assert _as_nobody(store) == f"{wal} is not writable by nobody"
    os.chown(wal, NOBODY, NOBODY)
    assert _as_nobody(store) is None


@ROOT_ONLY
def test_store_folder_others_cannot_create_is_flagged(shared_tmp: Path) -> None:
    problem = _as_nobody(shared_tmp / "new" / "outbox.db")
    assert problem == f"cannot create the folder {shared_tmp / 'new'}: {shared_tmp} is not " + (
        "writable by nobody"
    )


@ROOT_ONLY
def test_as_root_check_config_warns_for_the_service_user_with_the_fix(shared_tmp: Path) -> None:
    folder = shared_tmp / "state"
    folder.mkdir()
    config = load(_store_at(Place(shared_tmp), folder / "outbox.db")).config
    warnings = checks.service_store_warnings(config, user="nobody")
    assert warnings == [
        f"store.path: the folder {folder} is not writable by user nobody, which the service "
        f"runs as; fix: chown -R nobody:{grp.getgrgid(NOBODY).gr_name} {folder}"
    ]
    os.chown(folder, NOBODY, NOBODY)
    assert checks.service_store_warnings(config, user="nobody") == []


def test_no_service_account_no_warning(tmp_path: Path) -> None:
    config = load(Place(tmp_path).write({})).config
    assert checks.service_store_warnings(config, user="no-such-user-here") == []
