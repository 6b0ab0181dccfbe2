"""`doctor` against a healthy simulated gate (real mosquitto brokers, a DiDoModule over Modbus
TCP, a store and a key on disk) and against each fault it diagnoses, with the fix it gives."""

from __future__ import annotations

import grp
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from commissioning_support import GateFiles

from edge_config.models import DestinationConfig
from gateway.commissioning import environment
from gateway.commissioning.brokers import check_broker
from gateway.commissioning.doctor import doctor
from gateway.commissioning.report import Report, Status
from gateway.commissioning.system import check_store
from gateway.core import keys
from gateway.core.contract import Site
from simulators.broker import MosquittoBroker, TlsFiles, free_port
from simulators.certs import make_pki
from simulators.dido import DiDoModule, serve_tcp
from simulators.vserial import VirtualSerialLink

CHILD = Path(__file__).parent / "doctor_diskfull_child.py"
MIB = 1024 * 1024


def problems(report: Report) -> list[str]:
    """Every step that is not ok, apart from the box's own clock (this machine's, not ours)."""
    return [
        f"{s.section} / {s.name}: {s.reason}"
        for s in report.steps
        if s.status is not Status.OK and s.section != "clock"
    ]


def only_failure(report: Report) -> str:
    """The one failed step's fix, asserting that nothing else failed."""
    failed = [s for s in report.steps if s.status is Status.FAIL and s.section != "clock"]
    assert len(failed) == 1, report.render()
    return failed[0].fix


async def test_healthy_gate_is_all_ok(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    module = DiDoModule(unit_id=1)
    async with serve_tcp(module) as (_, modbus_port):
        gate = GateFiles(tmp_path, police_broker.port, bureau_broker.port, modbus_port)
        report = await doctor(gate.write(), timeout_s=3.0)
    assert problems(report) == [], report.render()
    sections = [s.section for s in report.steps]
    # In the documented order, each part present.
    order = ["config", "files", "broker police", "broker bureau", "device panic_box", "store"]
    firsts = [sections.index(name) for name in order]
    assert firsts == sorted(firsts)
    assert sections[-2:] == ["clock", "keys"] or sections[-3:-1] == ["clock", "keys"]
    names = {s.name for s in report.find("device panic_box")}
    assert "answers at unit id 1" in names
    assert "reads buttons[0].press_counter_register (input register 0)" in names
    assert "reads lamp_coil (coil 0)" in names
    assert any(s.name.startswith("QoS 1 publish") for s in report.find("broker police"))
    (clock,) = report.find("clock")
    assert any(w in clock.reason for w in ("timedatectl", "adjtimex", "timesync")), clock
    data = json.loads(report.to_json())
    assert data["exit_code"] == report.exit_code and len(data["steps"]) == len(report.steps)
    assert "[broker police]" in report.render()


async def test_wrong_unit_id_names_the_unit_that_answers(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    module = DiDoModule(unit_id=1)
    async with serve_tcp(module) as (_, modbus_port):
        gate = GateFiles(tmp_path, police_broker.port, bureau_broker.port, modbus_port, unit_id=2)
        report = await doctor(gate.write(), timeout_s=3.0)
    fix = only_failure(report)
    assert fix.startswith("wrong unit id: set unit_id = 1 in [devices.panic_box]"), fix
    assert report.exit_code == 2


async def test_device_that_does_not_answer(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    module = DiDoModule(unit_id=1)
    module.silent = True
    async with serve_tcp(module) as (_, modbus_port):
        gate = GateFiles(tmp_path, police_broker.port, bureau_broker.port, modbus_port)
        report = await doctor(gate.write(), timeout_s=3.0)
    fix = only_failure(report)
    assert fix.startswith("the device does not answer: check its power and wiring"), fix


async def test_register_the_device_refuses(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    """The module has 8 counters (input registers 0-7); register 20 is refused (exception 2)."""
    gate = GateFiles(tmp_path, police_broker.port, bureau_broker.port, box[1])
    gate.press_counter_register = 20
    report = await doctor(gate.write(), timeout_s=3.0)
    fix = only_failure(report)
    assert fix.startswith("check buttons[0].press_counter_register against the device's"), fix
    assert report.find("device panic_box", "answers at unit id 1")[0].status is Status.OK


async def test_stopped_broker(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    await bureau_broker.stop()
    gate = GateFiles(tmp_path, police_broker.port, bureau_broker.port, box[1])
    report = await doctor(gate.write(), timeout_s=3.0)
    fix = only_failure(report)
    assert fix.startswith("the broker is not reachable: check that it runs and listens on port")
    (failed,) = [s for s in report.find("broker bureau") if s.status is Status.FAIL]
    assert failed.name.startswith("TCP connect") and "refused" in failed.reason


async def test_wrong_password(
    tmp_path: Path, bureau_broker: MosquittoBroker, box: tuple[DiDoModule, int]
) -> None:
    async with MosquittoBroker("police", passwords={"north-gate": "right"}) as police:
        gate = GateFiles(
            tmp_path,
            police.port,
            bureau_broker.port,
            box[1],
            username="north-gate",
            password="wrong",
        )
        report = await doctor(gate.write(), timeout_s=3.0)
        gate.password = "right"
        good = await doctor(gate.write(), timeout_s=3.0)
    fix = only_failure(report)
    assert fix.startswith("check destinations.police.username and the password in"), fix
    assert "police.password" in fix
    assert problems(good) == [], good.render()


async def test_key_file_the_service_user_cannot_read(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    """The key is root's 0600 (made by `sudo schoolgate keys new`); the service cannot read it.
    Checked for `nobody`, an account that exists on every Debian box."""
    if os.geteuid() != 0:
        pytest.skip("needs root: files owned by another user")
    # Outside pytest's 0700 folder: every folder on the way is searchable by anyone.
    with tempfile.TemporaryDirectory(prefix="doctor-") as folder:
        workdir = Path(folder)
        workdir.chmod(0o755)
        gate = GateFiles(workdir, police_broker.port, bureau_broker.port, box[1])
        config = gate.write()
        config.chmod(0o644)
        (gate.workdir / "keys").chmod(0o755)
        report = await doctor(config, as_user="nobody", timeout_s=3.0)
    key = gate.gateway_key
    assert only_failure(report) == f"chown nobody:nogroup {key} && chmod 600 {key}"
    assert "not run as the service user nobody" in report.notes[0]


def test_full_disk_fails_the_store_step(tmp_path: Path) -> None:
    """A real full disk: a 600 KiB tmpfs in a private mount namespace (as tests/test_disk_full)."""
    unshare = shutil.which("unshare")
    assert unshare, "unshare (util-linux) is on every Debian system"
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    done = subprocess.run(
        [unshare, "-rm", sys.executable, str(CHILD), str(mountpoint)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent.parent,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    steps = {s["name"]: s for s in json.loads(done.stdout)["steps"]}
    assert steps["integrity check"]["status"] == "ok"
    assert steps["WAL mode"]["status"] == "ok"
    full = steps["free disk"]
    assert full["status"] == "fail", full
    assert "the disk is full" in full["reason"]
    assert full["fix"].startswith("free space on the disk of")


async def test_free_space_thresholds_through_the_seam(tmp_path: Path) -> None:
    readings = {50 * MIB: Status.WARN, 4096 * MIB: Status.OK, 1 * MIB: Status.FAIL}
    for free, expected in readings.items():
        report = Report()

        def reading(_folder: Path, free: int = free) -> int:
            return free

        await check_store(tmp_path / "outbox.db", report, timeout_s=3.0, free_bytes=reading)
        (step,) = report.find("store", "free disk")
        assert step.status is expected, step


async def test_unknown_user_is_a_failure(tmp_path: Path) -> None:
    report = await doctor(tmp_path / "none.toml", as_user="no-such-user-here")
    assert report.exit_code == 2 and "no user" in report.steps[0].reason


async def test_broken_config_stops_early_with_a_fix(tmp_path: Path) -> None:
    config = tmp_path / "schoolgate.toml"
    config.write_text('[site]\nschool_id = "x"\ngateway_id = "y"\n')
    report = await doctor(config)
    # The service's environment is read first (so the config sees its secrets), then nothing
    # after the config.
    assert report.steps[0].section == "environment"
    assert {s.section for s in report.steps[1:]} == {"config"}
    first = report.find("config")[0]
    assert first.fix.startswith("edit destinations in") or "edit" in first.fix


def access_line(port: str) -> str:
    return f"""
[lines.doors]
type = "serial"
port = "{port}"

[devices.front_door]
kind = "access_controller"
line = "doors"
address = 1
doors = {{1 = "main gate"}}
"""


async def test_serial_port_steps(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    """A real pseudo-terminal as the access controller's port: present and opens; the
    controller itself is named as not probed."""
    async with VirtualSerialLink() as link:
        gate = GateFiles(tmp_path, police_broker.port, bureau_broker.port, box[1])
        gate.extra = access_line(link.host_end)
        report = await doctor(gate.write(), timeout_s=3.0)
    assert problems(report) == [], report.render()
    names = [s.name for s in report.find(f"serial {link.host_end}")]
    assert names[0] == "present" and names[-1] == "opens at 9600 8N1", names
    assert any("front_door (access_controller) is not probed" in n for n in report.notes)


async def test_missing_serial_port(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    gate = GateFiles(tmp_path, police_broker.port, bureau_broker.port, box[1])
    gate.extra = access_line("/dev/ttyUSB-not-plugged-in")
    report = await doctor(gate.write(), timeout_s=3.0)
    assert only_failure(report).startswith("plug the adapter in (dmesg | tail shows its name)")


async def test_serial_port_the_service_user_may_not_open(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    """A pty is root:tty 0620; `nobody` is not in group tty: the fix adds it to the group."""
    if os.geteuid() != 0:
        pytest.skip("needs root: checks permissions for another user")
    async with VirtualSerialLink() as link:
        with tempfile.TemporaryDirectory(prefix="doctor-") as folder:
            workdir = Path(folder)
            workdir.chmod(0o755)
            gate = GateFiles(workdir, police_broker.port, bureau_broker.port, box[1])
            gate.with_security = False
            gate.extra = access_line(link.host_end)
            gate.write().chmod(0o644)
            report = await doctor(gate.config, as_user="nobody", timeout_s=3.0)
        group = grp.getgrgid(Path(link.host_end).stat().st_gid).gr_name
    (step,) = [s for s in report.find(f"serial {link.host_end}") if s.status is Status.FAIL]
    assert step.fix == f"usermod -a -G {group} nobody (then restart the service)"


async def test_tls_broker_trusted_and_untrusted(
    tmp_path: Path, bureau_broker: MosquittoBroker, box: tuple[DiDoModule, int]
) -> None:
    """The police broker over TLS: verified with the right CA (and its expiry shown), refused
    with a CA that did not sign it."""
    pki = make_pki(tmp_path / "pki")
    stranger = make_pki(tmp_path / "other-pki")
    tls = TlsFiles(pki.ca_cert, pki.server_cert, pki.server_key)
    async with MosquittoBroker("police", tls=tls) as police:
        assert police.tls_port is not None
        gate = GateFiles(tmp_path, police.tls_port, bureau_broker.port, box[1])
        gate.extra = f'[destinations.police.tls]\nca_file = "{pki.ca_cert}"\n'
        good = await doctor(gate.write(), timeout_s=3.0)
        gate.extra = f'[destinations.police.tls]\nca_file = "{stranger.ca_cert}"\n'
        bad = await doctor(gate.write(), timeout_s=3.0)
    # The test CA issues certificates valid for a day: verified, and flagged as expiring.
    (expiring,) = problems(good)
    assert "TLS certificate: the broker's certificate expires in 0 days" in expiring
    assert good.find("broker police", "TLS certificate")[0].fix.startswith("ask the broker's")
    assert good.exit_code == 1 or good.find("clock")[0].status is Status.FAIL
    assert only_failure(bad).startswith("ca_file must hold the CA that signed 127.0.0.1's")


async def test_modbus_module_not_on_the_network(
    tmp_path: Path, police_broker: MosquittoBroker, bureau_broker: MosquittoBroker
) -> None:
    gate = GateFiles(tmp_path, police_broker.port, bureau_broker.port, free_port())
    report = await doctor(gate.write(), timeout_s=3.0)
    assert only_failure(report).startswith("check that the module at 127.0.0.1:")
    assert report.find("device panic_box")[0].name == "line opens"


async def test_broker_name_that_does_not_resolve() -> None:
    dest = DestinationConfig(host="no-such-broker.invalid", client_id="north-gate-police")
    site = Site("sz-nanshan-042", "north-gate", ZoneInfo("Asia/Shanghai"))
    report = Report()
    await check_broker("police", dest, site, report, timeout_s=3.0)
    (step,) = report.steps
    assert step.status is Status.FAIL and step.name == "DNS no-such-broker.invalid"
    assert step.fix.startswith("check destinations.police.host and the box's DNS")


async def test_keys_that_do_not_match(
    tmp_path: Path,
    police_broker: MosquittoBroker,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
) -> None:
    """A .pub beside the key that is another key's public half fails; a key id that is not the
    file's name is a warning."""
    gate = GateFiles(tmp_path, police_broker.port, bureau_broker.port, box[1])
    config = gate.write()
    other = keys.write_key_pair(tmp_path / "other", "north-gate")
    gate.gateway_key.with_suffix(".pub").write_text(other.public_b64 + "\n")
    config.write_text(
        config.read_text().replace('gateway_key_id = "north-gate"', 'gateway_key_id = "gate-7"')
    )
    report = await doctor(config, timeout_s=3.0)
    assert only_failure(report).startswith("give receivers the public key printed by")
    (warned,) = [s for s in report.find("keys") if s.status is Status.WARN]
    assert warned.name == "gateway key id" and "north-gate.key" in warned.reason


def test_the_environment_file_is_taken_from_the_unit_and_parsed_as_systemd_does(
    tmp_path: Path,
) -> None:
    unit = tmp_path / "schoolgate.service"
    unit.write_text("[Service]\nUser=schoolgate\nEnvironmentFile=-/etc/elsewhere/env\n")
    assert environment.locate(None, unit) == Path("/etc/elsewhere/env")
    assert environment.locate(tmp_path / "given", unit) == tmp_path / "given"
    assert environment.locate(None, tmp_path / "no-unit") == environment.DEFAULT_FILE
    text = "# secrets\n; also a comment\n\nPOLICE_PASSWORD=\"s3 cret\"\nexport B='x'\nC=plain\n"
    assert environment.parse(text, Path("env")) == {
        "POLICE_PASSWORD": "s3 cret",
        "B": "x",
        "C": "plain",
    }
    with pytest.raises(environment.EnvironmentFileError, match="env line 1: not KEY=VALUE"):
        environment.parse("just words\n", Path("env"))


async def test_doctor_checks_the_password_the_service_will_see(
    tmp_path: Path,
    bureau_broker: MosquittoBroker,
    box: tuple[DiDoModule, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 13: doctor run by hand used the installer's shell; the service reads the unit's
    EnvironmentFile. A password only in the file is found; one only in the shell is reported
    as one the service will not see (and the login check then fails as the service would)."""
    async with MosquittoBroker("police", passwords={"north-gate": "right"}) as police:
        gate = GateFiles(
            tmp_path,
            police.port,
            bureau_broker.port,
            box[1],
            username="north-gate",
            password_env="SG_TEST_POLICE_PASSWORD",
        )
        env_file = tmp_path / "environment"
        env_file.write_text("SG_TEST_POLICE_PASSWORD=right\n")
        unit = tmp_path / "schoolgate.service"
        unit.write_text(f"[Service]\nEnvironmentFile=-{env_file}\n")
        good = await doctor(gate.write(), timeout_s=3.0, unit=unit)
        assert problems(good) == [], good.render()
        assert "SG_TEST_POLICE_PASSWORD" not in os.environ  # the run's environment is undone
        (step,) = good.find("environment")
        assert step.name == str(env_file) and step.reason.startswith("1 variable(s)")

        env_file.write_text("# nothing yet\n")
        monkeypatch.setenv("SG_TEST_POLICE_PASSWORD", "right")
        shell_only = await doctor(gate.write(), timeout_s=3.0, environment_file=env_file)
        assert os.environ["SG_TEST_POLICE_PASSWORD"] == "right"  # given back afterwards
    warned = [s for s in shell_only.find("environment") if s.status is Status.WARN]
    assert [s.name for s in warned] == ["SG_TEST_POLICE_PASSWORD"]
    assert "the service will not see it" in warned[0].reason
    assert warned[0].fix.startswith(f"add SG_TEST_POLICE_PASSWORD=... to {env_file}")
    assert any(
        "'SG_TEST_POLICE_PASSWORD' is not set" in s.reason for s in shell_only.find("config")
    ), shell_only.render()


async def test_an_unreadable_environment_file_says_to_run_with_sudo(tmp_path: Path) -> None:
    unreadable = tmp_path / "environment"
    unreadable.mkdir()  # a folder: read as root too, it fails like a file root keeps to itself
    report = await doctor(tmp_path / "none.toml", environment_file=unreadable)
    (step,) = report.find("environment")
    assert step.status is Status.WARN and "cannot read" in step.reason
    assert step.fix.startswith("run doctor with sudo")
