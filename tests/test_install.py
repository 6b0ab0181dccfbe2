"""systemd/install.sh on this machine, into a temporary prefix (no systemd, no user created: the
existing account `nobody` stands in for the service user): the tree it makes, with owners and
modes, `schoolgate` on the PATH, keys made readable by the service user, the doctor step, and
the same result when run again."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "systemd" / "install.sh"
pytestmark = [
    pytest.mark.timeout(600),  # the first run installs the venv from the pinned wheels
    pytest.mark.skipif(os.geteuid() != 0, reason="the installer sets owners: needs root"),
]

Snapshot = dict[str, tuple[int, int, int, str]]


def install(prefix: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        ["bash", str(SCRIPT), "--prefix", str(prefix), "--no-systemd", "--user", "nobody"],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def snapshot(prefix: Path) -> Snapshot:
    """Every path: mode, owner, group, and a symlink's target (or a small file's size)."""
    found: Snapshot = {}
    for path in sorted(prefix.rglob("*")):
        if "__pycache__" in path.parts:
            continue
        info = path.lstat()
        extra = os.readlink(path) if path.is_symlink() else str(info.st_size)
        found[str(path.relative_to(prefix))] = (info.st_mode, info.st_uid, info.st_gid, extra)
    return found


def owner(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


@pytest.mark.long(25)
def test_install_script_into_a_prefix_twice(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    nobody_uid, nogroup_gid = 65534, 65534
    first = install(prefix)
    conf = prefix / "etc" / "schoolgate"
    assert owner(conf) == (0, nogroup_gid, 0o750)
    for sub in ("keys", "secrets", "tls"):
        assert owner(conf / sub) == (0, nogroup_gid, 0o750)
    assert owner(conf / "schoolgate.toml") == (0, nogroup_gid, 0o640)
    command = prefix / "usr" / "local" / "bin" / "schoolgate"
    assert os.readlink(command) == str(
        prefix / "opt" / "schoolgate" / "venv" / "bin" / "schoolgate"
    )
    version = subprocess.run([str(command), "--help"], capture_output=True, text=True, check=False)
    assert version.returncode == 0, version.stderr
    unit = prefix / "etc" / "systemd" / "system" / "schoolgate.service"
    assert unit.read_text() == (ROOT / "systemd" / "schoolgate.service").read_text()
    # The example config names password files that do not exist yet: it says what to do.
    assert "edit " + str(conf / "schoolgate.toml") in first.stdout
    assert "schoolgate doctor" in first.stdout, first.stdout

    before = snapshot(prefix)
    second = install(prefix)
    assert snapshot(prefix) == before
    assert "installing schoolgate" not in second.stdout  # nothing changed: no reinstall

    # Keys made by root (`sudo schoolgate keys new`) are root's 0600: the service could not read
    # them. A password left world-readable is tightened.
    key = conf / "keys" / "north-gate.key"
    key.write_text("not really a key\n")
    key.chmod(0o600)
    public = conf / "keys" / "north-gate.pub"
    public.write_text("AAAA\n")
    password = conf / "secrets" / "police.password"
    password.write_text("secret\n")
    password.chmod(0o644)
    install(prefix)
    assert owner(key) == (nobody_uid, nogroup_gid, 0o600)
    assert owner(public) == (0, nogroup_gid, 0o644)
    assert owner(password) == (0, nogroup_gid, 0o640)


def test_install_script_refuses_an_unknown_user(tmp_path: Path) -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), "--prefix", str(tmp_path), "--no-systemd", "--user", "no-such-user"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1 and "no user no-such-user" in done.stderr
    assert not (tmp_path / "etc" / "schoolgate").exists()


def test_install_script_rejects_unknown_options() -> None:
    done = subprocess.run(
        ["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 2 and "usage:" in done.stderr
