"""`schoolgate keys new` and `schoolgate keys sign-command`, and the `[security]` section they
produce snippets for (edge_config.security)."""

from __future__ import annotations

import stat
import tomllib
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives import serialization
from pydantic import ValidationError

from edge_config import ConfigError
from edge_config.security import SecurityConfig
from gateway.cli import main
from gateway.core import auth, contract, keys
from gateway.security import load_security

SITE = contract.Site("school-1", "gate-1", ZoneInfo("Asia/Shanghai"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def new_key(capsys: pytest.CaptureFixture[str], out: Path, role: str, key_id: str) -> str:
    code, stdout, _ = run(capsys, "keys", "new", "--role", role, "--id", key_id, "--out", str(out))
    assert code == 0
    return stdout


def printed_public_key(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("public key: ")).split()[-1]


def snippet(stdout: str) -> str:
    return stdout[stdout.index("# in ") :]


def test_keys_new_writes_a_private_key_only_its_owner_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stdout = new_key(capsys, tmp_path / "keys", "receiver", "police-console")
    key_file = tmp_path / "keys" / "police-console.key"
    pub_file = tmp_path / "keys" / "police-console.pub"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert pub_file.read_text().strip() == printed_public_key(stdout)
    public = keys.load_public_key(printed_public_key(stdout), tmp_path)
    assert keys.public_b64(keys.load_private_key(key_file).public_key()) == keys.public_b64(public)


def test_keys_new_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    new_key(capsys, tmp_path, "gateway", "gate-1")
    before = (tmp_path / "gate-1.key").read_bytes()
    code, _, err = run(
        capsys, "keys", "new", "--role", "gateway", "--id", "gate-1", "--out", str(tmp_path)
    )
    assert code == 1
    assert "refusing to overwrite" in err
    assert (tmp_path / "gate-1.key").read_bytes() == before


def test_keys_new_refuses_a_bad_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "keys", "new", "--role", "receiver", "--id", "../x", "--out", ".")
    assert code == 1
    assert "key id" in err


def test_signed_command_verifies_with_the_printed_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stdout = new_key(capsys, tmp_path, "receiver", "police-console")
    trust = auth.TrustStore(
        {
            "police-console": auth.TrustedKey(
                keys.load_public_key(printed_public_key(stdout), tmp_path), frozenset({"*"})
            )
        }
    )
    code, out, _ = run(
        capsys,
        "keys",
        "sign-command",
        "--key",
        str(tmp_path / "police-console.key"),
        "--id",
        "police-console",
        "--gateway",
        "gate-1",
        "--school",
        "school-1",
        "--issued-at",
        "2026-11-24T08:00:00.000+08:00",
        "bollard.raise",
        "device=bollard-1",
        "hold_s=30",
    )
    assert code == 0
    now_ms = round(datetime.fromisoformat("2026-11-24T08:00:05+08:00").timestamp() * 1000)
    command = auth.verify_command(
        out.strip().encode(),
        trust=trust,
        now_ms=now_ms,
        site=SITE,
        replay=auth.ReplayCache(since_ms=0),
    )
    assert command.command == "bollard.raise"
    assert command.args == {"device": "bollard-1", "hold_s": 30}


def test_sign_command_refuses_a_key_others_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_key(capsys, tmp_path, "receiver", "tester")
    (tmp_path / "tester.key").chmod(0o644)
    argv = ["keys", "sign-command", "--key", str(tmp_path / "tester.key"), "--id", "tester"]
    code, _, err = run(capsys, *argv, "--gateway", "g", "--school", "s", "reset")
    assert code == 1
    assert "chmod 600" in err


def test_sign_command_refuses_an_unknown_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    new_key(capsys, tmp_path, "receiver", "tester")
    argv = ["keys", "sign-command", "--key", str(tmp_path / "tester.key"), "--id", "tester"]
    code, _, err = run(capsys, *argv, "--gateway", "g", "--school", "s", "explode")
    assert code == 2
    assert "unknown command" in err


def test_printed_snippets_make_a_working_security_section(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway_out = new_key(capsys, tmp_path / "gw", "gateway", "gate-1")
    receiver_out = new_key(capsys, tmp_path / "rx", "receiver", "police-console")
    data = tomllib.loads(snippet(gateway_out) + "\n" + snippet(receiver_out))
    security = load_security(SecurityConfig.model_validate(data["security"]), tmp_path)
    assert security.gateway_key_id == "gate-1"
    assert set(security.trust.keys) == {"police-console"}
    assert security.trust.keys["police-console"].allows("acknowledge")
    assert not security.trust.keys["police-console"].allows("unlock")
    assert security.window == auth.FreshnessWindow(40_000, 20_000)


# --- edge_config.security on its own -----------------------------------------------------------


def section(tmp_path: Path, **extra: object) -> dict[str, object]:
    keys.write_key_pair(tmp_path, "gate-1")
    rx = keys.write_key_pair(tmp_path, "rx")
    base: dict[str, object] = {
        "gateway_key_file": "gate-1.key",
        "gateway_key_id": "gate-1",
        "trusted_keys": [
            {"id": "inline", "public_key": rx.public_b64, "commands": ["*"]},
            {"id": "from-pub", "public_key": "rx.pub", "commands": ["acknowledge"]},
        ],
    }
    return base | extra


def test_public_keys_inline_pub_file_and_pem(tmp_path: Path) -> None:
    data = section(tmp_path, window_past_s=30, window_future_s=5)
    pem = (
        keys.load_private_key(tmp_path / "rx.key")
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "rx.pem").write_bytes(pem)
    trusted = data["trusted_keys"]
    assert isinstance(trusted, list)
    trusted.append({"id": "from-pem", "public_key": str(tmp_path / "rx.pem"), "commands": ["*"]})
    security = load_security(SecurityConfig.model_validate(data), tmp_path)
    b64 = {keys.public_b64(k.public_key) for k in security.trust.keys.values()}
    assert len(b64) == 1  # the same key, read three ways
    assert security.window == auth.FreshnessWindow(30_000, 5_000)


def test_gateway_key_open_to_others_is_refused(tmp_path: Path) -> None:
    config = SecurityConfig.model_validate(section(tmp_path))
    (tmp_path / "gate-1.key").chmod(0o640)
    with pytest.raises(ConfigError) as caught:
        load_security(config, tmp_path)
    assert caught.value.errors[0].startswith("security.gateway_key_file: ")
    assert "chmod 600" in caught.value.errors[0]


def test_every_bad_key_is_listed(tmp_path: Path) -> None:
    data = section(tmp_path, gateway_key_file="missing.key")
    data["trusted_keys"] = [
        {"id": "a", "public_key": "AAAA", "commands": ["*"]},
        {"id": "b", "public_key": "gate-1.key", "commands": ["*"]},  # a private key file
    ]
    with pytest.raises(ConfigError) as caught:
        load_security(SecurityConfig.model_validate(data), tmp_path)
    assert [e.split(":")[0] for e in caught.value.errors] == [
        "security.gateway_key_file",
        "security.trusted_keys[0].public_key",
        "security.trusted_keys[1].public_key",
    ]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"commands": ["*", "reset"]}, "list it alone"),
        ({"commands": ["reset", "reset"]}, "listed twice"),
        ({"commands": []}, "at least 1"),
        ({"id": "Police Console"}, "should match pattern"),
        ({"secret": "x"}, "Extra inputs"),
    ],
)
def test_trusted_key_rules(change: dict[str, object], message: str) -> None:
    entry = {"id": "rx", "public_key": "x", "commands": ["reset"]} | change
    with pytest.raises(ValidationError, match=message):
        SecurityConfig.model_validate(
            {"gateway_key_file": "k", "gateway_key_id": "g", "trusted_keys": [entry]}
        )


def test_unknown_commands_are_refused_with_the_keys(tmp_path: Path) -> None:
    # The schema does not know the gateway's commands; loading the keys checks them, naming
    # the key as check-config always has.
    data = section(tmp_path)
    trusted = data["trusted_keys"]
    assert isinstance(trusted, list)
    trusted[1]["commands"] = ["acknowledge", "explode"]
    config = SecurityConfig.model_validate(data)
    with pytest.raises(ConfigError) as caught:
        load_security(config, tmp_path)
    assert caught.value.errors == [
        "security.trusted_keys[1].commands: unknown command(s) ['explode']; "
        f"known: {', '.join(sorted(auth.COMMANDS))} or *"
    ]


def test_duplicate_trusted_ids_and_bad_windows_are_refused() -> None:
    entry = {"id": "rx", "public_key": "x", "commands": ["*"]}
    base = {"gateway_key_file": "k", "gateway_key_id": "g"}
    with pytest.raises(ValidationError, match="duplicate"):
        SecurityConfig.model_validate(base | {"trusted_keys": [entry, entry]})
    with pytest.raises(ValidationError, match="greater than 0"):
        SecurityConfig.model_validate(base | {"window_past_s": 0})
    with pytest.raises(ValidationError, match="required"):
        SecurityConfig.model_validate({"gateway_key_file": "k"})
