"""Configurations for the check-config tests: one small valid config, written section by section
so a case can change one key, and the tables of malformed and of valid variants.

A value is raw TOML text. Placeholders in braces are filled per test with real paths: {store}
and {socket} in a fresh folder, {folder} an existing folder, {file} a regular file, {pw} a
password file of mode 0600, {pw_open} one of mode 0644, {pw_empty} an empty one, {pw_latin1}
one that is not UTF-8.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

Sections = dict[str, dict[str, str]]

BASE: Sections = {
    "site": {"school_id": '"school-1"', "gateway_id": '"gate-1"'},
    "store": {"path": '"{store}"'},
    "control": {"socket_path": '"{socket}"'},
    "alarms": {},
    "supervision": {},
    "destinations.police": {"host": '"127.0.0.1"', "client_id": '"g1-police"'},
    "destinations.bureau": {"host": '"127.0.0.1"', "client_id": '"g1-bureau"'},
    "lines.io": {"type": '"modbus_tcp"', "host": '"127.0.0.1"'},
    "lines.door_bus": {"type": '"serial"', "port": '"/dev/ttyUSB1"'},
    "devices.box": {"kind": '"alarm_box"', "line": '"io"', "buttons": "[{ input = 0 }]"},
    "devices.doors": {
        "kind": '"access_controller"',
        "line": '"door_bus"',
        "address": "1",
        "doors": '{ 1 = "gate" }',
    },
    "devices.ups": {
        "kind": '"modbus_points"',
        "line": '"io"',
        "points": '[{ name = "v", function = "input_register", address = 0, scale = 0.01 }]',
    },
}

EMPTY_ENV = "SCHOOLGATE_TEST_EMPTY_PASSWORD"
"""Set to "" by the tests; a destination naming it must be refused."""
SET_ENV = "SCHOOLGATE_TEST_PASSWORD"
"""Set to a password by the tests."""


def render(changes: Sections) -> str:
    """BASE with `changes` applied (a value of "" removes the key), as TOML text."""
    sections = {name: dict(keys) for name, keys in BASE.items()}
    for name, keys in changes.items():
        section = sections.setdefault(name, {})
        for key, value in keys.items():
            if value:
                section[key] = value
            else:
                section.pop(key, None)
    lines: list[str] = []
    for name, keys in sections.items():
        lines.append(f"[{name}]")
        lines.extend(f"{key} = {value}" for key, value in keys.items())
        lines.append("")
    return "\n".join(lines)


@dataclass(frozen=True)
class Place:
    """The real files the placeholders stand for."""

    root: Path

    def fill(self, text: str) -> str:
        root = self.root
        (root / "folder").mkdir(exist_ok=True)
        (root / "file").write_text("not a folder\n")
        secrets = {
            "pw": (b"s3cret\n", 0o600),
            "pw_open": (b"s3cret\n", 0o644),
            "pw_empty": (b"", 0o600),
            "pw_latin1": ("pässword".encode("latin-1"), 0o600),
        }
        for name, (data, mode) in secrets.items():
            path = root / name
            path.write_bytes(data)
            os.chmod(path, mode)
        values = {
            "store": root / "state" / "outbox.db",
            "socket": root / "c.sock",
            "folder": root / "folder",
            "file": root / "file",
        }
        values |= {name: root / name for name in secrets}
        for name, value in values.items():
            text = text.replace("{" + name + "}", str(value))
        return text

    def write(self, changes: Sections) -> Path:
        path = self.root / "schoolgate.toml"
        path.write_text(self.fill(render(changes)), encoding="utf-8")
        return path


def case(section: str, key: str, value: str, expected: str | None = None) -> tuple[Sections, str]:
    """One key set to `value`; the error must name `expected` (default section.key)."""
    return {section: {key: value}}, expected or f"{section}.{key}"


LONG = "/" + "s" * 120 + "/c.sock"
POLICE = "destinations.police"

MALFORMED: dict[str, tuple[Sections, str]] = {
    # numbers are finite and bounded
    "max_mb-inf": case("store", "max_mb", "inf"),
    "max_mb-nan": case("store", "max_mb", "nan"),
    "max_mb-huge": case("store", "max_mb", "1e300"),
    "max_mb-over-bound": case("store", "max_mb", "1_000_001"),
    "max_mb-zero": case("store", "max_mb", "0"),
    "max_mb-bool": case("store", "max_mb", "true"),
    "max_mb-string": case("store", "max_mb", '"512"'),
    "retain_days-inf": case("store", "retain_days", "inf"),
    "retain_days-1e300": case("store", "retain_days", "1e300"),
    "retain_days-negative": case("store", "retain_days", "-1"),
    "max_age_days-inf": case("store", "max_age_days", "inf"),
    "max_age_days-over-bound": case("store", "max_age_days", "3651"),
    "batch_delay_ms-float": case("store", "batch_delay_ms", "1.5"),
    "batch_delay_ms-bool": case("store", "batch_delay_ms", "true"),
    "memory_limit_events-over-bound": case("store", "memory_limit_events", "100_000_000"),
    # store.path
    "store-path-empty": case("store", "path", '""'),
    "store-path-nul": case("store", "path", '"{folder}/out\\u0000.db"'),
    "store-path-number": case("store", "path", "5"),
    "store-path-directory": case("store", "path", '"{folder}"'),
    "store-path-parent-is-file": case("store", "path", '"{file}/outbox.db"'),
    "store-path-uncreatable": case("store", "path", '"{file}/sub/outbox.db"'),
    # the control socket
    "socket-too-long": case("control", "socket_path", f'"{{folder}}{LONG}"'),
    "socket-empty": case("control", "socket_path", '""'),
    "socket-derived-too-long": (
        {"store": {"path": f'"{{folder}}{LONG}/../outbox.db"'}, "control": {"socket_path": ""}},
        "store.path",
    ),
    # destinations
    "port-true": case(POLICE, "port", "true"),
    "port-string": case(POLICE, "port", '"1883"'),
    "port-float": case(POLICE, "port", "1883.0"),
    "port-zero": case(POLICE, "port", "0"),
    "port-too-big": case(POLICE, "port", "70000"),
    "keepalive-bool": case(POLICE, "keepalive_s", "true"),
    "reconnect-inf": case(POLICE, "reconnect_max_s", "inf"),
    "reconnect-nan": case(POLICE, "reconnect_max_s", "nan"),
    "max_inflight-false": case(POLICE, "max_inflight", "false"),
    "host-empty": case(POLICE, "host", '""'),
    "host-space": case(POLICE, "host", '"bad host"'),
    "host-nul": case(POLICE, "host", '"a\\u0000b"'),
    "client_id-number": case(POLICE, "client_id", "5"),
    "protocol-number": case(POLICE, "protocol", "5"),
    "password_env-bad-name": case(POLICE, "password_env", '"A=B"'),
    "password_env-nul": case(POLICE, "password_env", '"X\\u0000"'),
    "password_env-empty-value": case(POLICE, "password_env", f'"{EMPTY_ENV}"'),
    "password_file-empty-path": case(POLICE, "password_file", '""'),
    "password_file-missing": case(POLICE, "password_file", '"{folder}/nope"'),
    "password_file-nul": case(POLICE, "password_file", '"{folder}/p\\u0000w"'),
    "password_file-not-utf8": case(POLICE, "password_file", '"{pw_latin1}"'),
    "password_file-empty": case(POLICE, "password_file", '"{pw_empty}"'),
    "password_file-open": case(POLICE, "password_file", '"{pw_open}"'),
    "password_file-directory": case(POLICE, "password_file", '"{folder}"'),
    # several broker nodes (issue 15): host/port or nodes, never both, never neither
    "nodes-and-host": case(POLICE, "nodes", '["127.0.0.1:1883", "127.0.0.1:1884"]', POLICE),
    "nodes-and-port": (
        {POLICE: {"host": "", "port": "1884", "nodes": '["127.0.0.1:1883"]'}},
        POLICE,
    ),
    "neither-host-nor-nodes": ({POLICE: {"host": ""}}, POLICE),
    "nodes-empty": ({POLICE: {"host": "", "nodes": "[]"}}, f"{POLICE}.nodes"),
    "nodes-no-port": ({POLICE: {"host": "", "nodes": '["127.0.0.1"]'}}, f"{POLICE}.nodes[0]"),
    "nodes-port-too-big": ({POLICE: {"host": "", "nodes": '["a:70000"]'}}, f"{POLICE}.nodes[0]"),
    "nodes-port-not-ascii": ({POLICE: {"host": "", "nodes": '["a:\u00b2"]'}}, f"{POLICE}.nodes[0]"),
    "nodes-space": ({POLICE: {"host": "", "nodes": '["a b:1883"]'}}, f"{POLICE}.nodes[0]"),
    "nodes-number": ({POLICE: {"host": "", "nodes": "[1883]"}}, f"{POLICE}.nodes[0]"),
    "nodes-twice": ({POLICE: {"host": "", "nodes": '["a:1883", "a:1883"]'}}, POLICE),
    "reconnect-spread-negative": case(POLICE, "reconnect_spread_s", "-1"),
    "return-after-negative": (
        {POLICE: {"host": "", "nodes": '["a:1883", "b:1883"]', "return_after_s": "-1"}},
        f"{POLICE}.return_after_s",
    ),
    "return-after-too-often": (
        {POLICE: {"host": "", "nodes": '["a:1883", "b:1883"]', "return_after_s": "2"}},
        f"{POLICE}.return_after_s",
    ),
    "return-after-nan": (
        {POLICE: {"host": "", "nodes": '["a:1883", "b:1883"]', "return_after_s": "nan"}},
        f"{POLICE}.return_after_s",
    ),
    "return-after-with-one-host": case(POLICE, "return_after_s", "300", POLICE),
    "tls-ca-empty": ({f"{POLICE}.tls": {"ca_file": '""'}}, f"{POLICE}.tls.ca_file"),
    "tls-ca-nul": ({f"{POLICE}.tls": {"ca_file": '"a\\u0000"'}}, f"{POLICE}.tls.ca_file"),
    # alarms and supervision
    "ack_timeout-string": case("alarms", "ack_timeout_s", '"30"'),
    "ack_timeout-inf": case("alarms", "ack_timeout_s", "inf"),
    "escalate_siren-string": case("alarms", "escalate_siren", '"yes"'),
    "escalate_siren-number": case("alarms", "escalate_siren", "1"),
    "heartbeat-nan": case("supervision", "heartbeat_s", "nan"),
    "report_after-1e300": case("supervision", "report_after_s", "1e300"),
    # lines
    "tcp-port-true": case("lines.io", "port", "true"),
    "tcp-timeout-float": case("lines.io", "timeout_ms", "1e3"),
    "serial-baudrate-float": case("lines.door_bus", "baudrate", "9600.0"),
    "serial-stopbits-true": case("lines.door_bus", "stopbits", "true"),
    "serial-bytesize-float": case("lines.door_bus", "bytesize", "8.0"),
    "serial-port-nul": case("lines.door_bus", "port", '"/dev/tty\\u0000"'),
    # devices
    "unit_id-true": case("devices.box", "unit_id", "true"),
    "drill-string": case("devices.box", "drill", '"no"'),
    "poll-inf": case("devices.box", "poll_interval_ms", "inf"),
    "button-input-true": case(
        "devices.box", "buttons", "[{ input = true }]", "devices.box.buttons[0].input"
    ),
    "point-scale-inf": case(
        "devices.ups",
        "points",
        '[{ name = "v", function = "input_register", address = 0, scale = inf }]',
        "devices.ups.points[0].scale",
    ),
    "point-deadband-huge": case(
        "devices.ups",
        "points",
        '[{ name = "v", function = "input_register", address = 0, deadband = 1e300 }]',
        "devices.ups.points[0].deadband",
    ),
    "door-key-not-number": case("devices.doors", "doors", '{ x = "gate" }', "devices.doors.doors"),
    # site
    "timezone-number": case("site", "timezone", "5"),
    "name-number": case("site", "name", "5"),
    # security
    "window-inf": (
        {
            "security": {
                "gateway_key_file": '"{pw}"',
                "gateway_key_id": '"g"',
                "window_past_s": "inf",
            }
        },
        "security.window_past_s",
    ),
    # Checked by gateway.security after the schema (edge_config does not know the commands).
    "trusted-key-unknown-command": (
        {
            "security": {
                "gateway_key_file": '"{pw}"',
                "gateway_key_id": '"g"',
                "trusted_keys": '[{ id = "rx", public_key = "x", commands = ["explode"] }]',
            }
        },
        "security.trusted_keys[0].commands: unknown command(s) ['explode']; known: ",
    ),
}

VALID: dict[str, Sections] = {
    "base": {},
    "floats-as-integers": {"store": {"max_mb": "1", "retain_days": "30"}},
    "bounds": {"store": {"max_mb": "1_000_000", "retain_days": "3650", "max_age_days": "3650"}},
    "fractions": {"store": {"max_mb": "0.5"}, "alarms": {"ack_timeout_s": "0.5"}},
    "store-folder-created": {"store": {"path": '"{folder}/a/b/outbox.db"'}},
    "password-file-loopback": {POLICE: {"username": '"u"', "password_file": '"{pw}"'}},
    "password-env-loopback": {POLICE: {"username": '"u"', "password_env": f'"{SET_ENV}"'}},
    "password-clear-text-warned": {
        POLICE: {"host": '"alarm.police.example.cn"', "password_file": '"{pw}"'}
    },
    "nodes": {POLICE: {"host": "", "nodes": '["127.0.0.1:1883", "[::1]:1884", "localhost:1885"]'}},
    "nodes-spread": {
        POLICE: {"host": "", "nodes": '["127.0.0.1:1883"]', "reconnect_spread_s": "0"}
    },
    "nodes-never-go-back": {
        POLICE: {"host": "", "nodes": '["127.0.0.1:1883", "[::1]:1884"]', "return_after_s": "0"}
    },
    "serial-settings": {"lines.door_bus": {"baudrate": "19200", "stopbits": "2", "bytesize": "7"}},
}
