"""A gate to commission in tests: writes a schoolgate.toml (police and bureau brokers, an alarm
box over Modbus TCP, a store, a gateway key) for `doctor` to check. Not a fake: every part it
names is real (mosquitto, a pymodbus server, files on disk)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.core import keys


@dataclass
class GateFiles:
    """What a test may change before writing the config."""

    workdir: Path
    police_port: int
    bureau_port: int
    modbus_port: int
    unit_id: int = 1
    username: str | None = None
    password: str | None = None
    password_env: str | None = None
    """With `username`: the password comes from this environment variable, not a file."""
    with_security: bool = True
    press_counter_register: int = 0
    extra: str = ""
    """More TOML appended (another line, a device)."""

    @property
    def config(self) -> Path:
        return self.workdir / "schoolgate.toml"

    @property
    def store(self) -> Path:
        return self.workdir / "state" / "outbox.db"

    @property
    def gateway_key(self) -> Path:
        return self.workdir / "keys" / "north-gate.key"

    def write(self) -> Path:
        (self.workdir / "state").mkdir(exist_ok=True)
        login = ""
        if self.username is not None and self.password_env is not None:
            login = f'username = "{self.username}"\npassword_env = "{self.password_env}"\n'
        elif self.username is not None:
            secret = self.workdir / "police.password"
            secret.write_text((self.password or "") + "\n")
            secret.chmod(0o600)
            login = f'username = "{self.username}"\npassword_file = "{secret}"\n'
        security = ""
        if self.with_security:
            if not self.gateway_key.exists():
                keys.write_key_pair(self.gateway_key.parent, "north-gate")
            security = (
                f'[security]\ngateway_key_file = "{self.gateway_key}"\n'
                'gateway_key_id = "north-gate"\n'
            )
        self.config.write_text(
            f"""
[site]
school_id = "sz-nanshan-042"
gateway_id = "north-gate"

[store]
path = "{self.store}"

[destinations.police]
host = "127.0.0.1"
port = {self.police_port}
client_id = "north-gate-police"
{login}
[destinations.bureau]
host = "127.0.0.1"
port = {self.bureau_port}
client_id = "north-gate-bureau"

[lines.io]
type = "modbus_tcp"
host = "127.0.0.1"
port = {self.modbus_port}

[devices.panic_box]
kind = "alarm_box"
line = "io"
unit_id = {self.unit_id}
lamp_coil = 0
siren_coil = 1
reset_input = 7

[[devices.panic_box.buttons]]
input = 0
name = "gatehouse desk"
press_counter_register = {self.press_counter_register}

{security}
{self.extra}"""
        )
        return self.config
