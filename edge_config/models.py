"""The configuration schema: what an installer may write in schoolgate.toml.

Owns the shape and the per-field rules of the configuration (pydantic v2, `extra="forbid"` so a
mistyped key is an error, never silently ignored). It does not read files, resolve secrets or
check references between sections: that is `edge_config.loader`.
"""

from __future__ import annotations

import re
import zoneinfo
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from edge_config.base import MODBUS_LINE_TYPES, Ident, Port, Strict, TimeoutMs
from edge_config.devices_alarm import AlarmBoxDevice, PanicButton
from edge_config.fields import (
    ConfigPath,
    DevicePath,
    EnvName,
    Host,
    NodeAddress,
    WholeNumber,
    split_node,
)
from edge_config.guard import GuardConfig
from edge_config.kinds import DeviceConfig
from edge_config.rules import RulesConfig
from edge_config.security import SecurityConfig

__all__ = [  # Strict, Ident and the alarm box live in their own modules; named here too
    "MODBUS_LINE_TYPES",
    "AlarmBoxDevice",
    "AlarmsConfig",
    "ContractConfig",
    "ControlConfig",
    "DestinationConfig",
    "DeviceConfig",
    "GatewayConfig",
    "Ident",
    "LineConfig",
    "ModbusRtuLine",
    "ModbusTcpLine",
    "PanicButton",
    "SerialLine",
    "SiteConfig",
    "StoreConfig",
    "Strict",
    "SupervisionConfig",
    "TlsConfig",
]


class SiteConfig(Strict):
    school_id: Ident
    gateway_id: Ident
    timezone: str = "Asia/Shanghai"
    name: str = ""

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r} (e.g. 'Asia/Shanghai')") from exc
        return value


class StoreConfig(Strict):
    path: ConfigPath = Path("/var/lib/schoolgate/outbox.db")
    batch_delay_ms: int = Field(
        default=50,
        ge=0,
        le=100,
        description="lower-lane events are committed together within this delay (one fsync "
        "per burst); alarms are always committed at once",
    )
    max_mb: float = Field(
        default=512,
        gt=0,
        le=1_000_000,
        description="size cap of the store; over it, delivered rows are evicted first, then "
        "undelivered telemetry, then state; undelivered alarms never",
    )
    max_age_days: float | None = Field(
        default=None,
        gt=0,
        le=3650,
        description="optional: undelivered telemetry and state older than this are evicted",
    )
    retain_days: float = Field(
        default=90,
        gt=0,
        le=3650,
        description="delivered events are kept this long as the local record",
    )
    memory_limit_events: int = Field(
        default=50_000,
        ge=100,
        le=10_000_000,
        description="lower-lane events held in memory while the disk cannot be written",
    )


_GROUP = r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$"


class ControlConfig(Strict):
    """The local control socket `schoolgate reset` talks to (root/group only, never the network).
    Who may do what: gateway.commands.access."""

    socket_path: ConfigPath | None = None
    reset_group: Annotated[str, Field(pattern=_GROUP)] | None = Field(
        default=None,
        description="members may reset alarms (unset: whoever can open the socket, as before)",
    )
    device_group: Annotated[str, Field(pattern=_GROUP)] | None = Field(
        default=None,
        description="members may command devices: bollards, doors, lockdown, lamps (unset: "
        "only root and the service user)",
    )


class TlsConfig(Strict):
    """TLS to one broker; with `cert_file` and `key_file` also mutual TLS (the broker checks us).

    Paths only: the loader checks that the files can be read and that the key is private."""

    ca_file: ConfigPath = Field(
        description="PEM file of the CA(s) that signed the broker's certificate"
    )
    cert_file: ConfigPath | None = Field(
        default=None, description="our client certificate chain (PEM)"
    )
    key_file: ConfigPath | None = Field(
        default=None, description="our unencrypted private key (PEM), mode 0600 or 0400"
    )
    server_name: str | None = Field(
        default=None,
        min_length=1,
        description="name sent as SNI and checked in the broker's certificate, when it differs "
        "from `host` (e.g. connecting by IP address)",
    )
    min_version: Literal["1.2", "1.3"] = "1.2"

    @model_validator(mode="after")
    def _cert_and_key_together(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file (mutual TLS), or neither")
        return self


DEFAULT_RETURN_AFTER_S = 300.0
MIN_RETURN_AFTER_S = 10.0
"""Each check logs in to the node: more often than this would only load a node coming back."""
MAX_RETURN_AFTER_S = 86_400.0


class DestinationConfig(Strict):
    host: Host | None = Field(default=None, description="the broker (one node); or give nodes")
    port: Port = 1883
    nodes: list[NodeAddress] | None = Field(
        default=None,
        min_length=1,
        max_length=16,
        description="several nodes of one broker cluster, 'host:port' each, instead of host and "
        "port: the gateway picks one (spread across gateways by its id) and fails over to "
        "another when its node is lost",
    )
    reconnect_spread_s: float | None = Field(
        default=None,
        ge=0,
        le=300,
        description="after a connection to a node is lost, the first attempt on the next node "
        "waits a random time below this, so the gateways of a lost node do not all reconnect in "
        "the same second. Default: 5 with nodes; with one host, reconnect_max_s's back-off",
    )
    return_after_s: float = Field(
        default=DEFAULT_RETURN_AFTER_S,
        description="with nodes: a gateway that is not on its first node checks that node about "
        "this often (a random time between half of it and all of it) and goes back once it "
        "accepts a connection, so a cluster's load evens out again after a node returns. "
        f"0: never go back; otherwise {MIN_RETURN_AFTER_S:g}-{MAX_RETURN_AFTER_S:g} s",
    )
    client_id: str = Field(min_length=1, max_length=64)
    username: str | None = None
    password_file: ConfigPath | None = None
    password_env: EnvName | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    reconnect_max_s: float = Field(
        default=2.0,
        ge=0.2,
        le=300,
        description="longest wait between reconnect attempts (random below it): the delay of "
        "the first delivery after the broker is back",
    )
    max_inflight: int = Field(default=32, ge=1, le=1000)
    routes: list[str] | None = Field(
        default=None,
        description="event type patterns this destination receives: '*', a category 'device.*', "
        "a type 'alarm.panic', or 'lane:alarm' for every alarm-lane type. Default: police gets "
        "alarms and their resets, every other destination everything",
    )
    tls: TlsConfig | None = None
    protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1",
        description="MQTT version; with 5, commands' response topic and correlation data are used",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        if isinstance(data, dict) and "password" in data:
            raise ValueError(
                "inline 'password' is not allowed: put it in a file (password_file) "
                "or an environment variable (password_env)"
            )
        return data

    @model_validator(mode="after")
    def _host_or_nodes(self) -> DestinationConfig:
        if self.nodes is not None and (self.host is not None or "port" in self.model_fields_set):
            raise ValueError(
                "give host (and port) for one broker, or nodes for several, not both "
                "(host/port and nodes are both set)"
            )
        if self.nodes is None and self.host is None:
            raise ValueError("give host (one broker) or nodes (several: ['host:port', ...])")
        if self.nodes is not None and len(set(self.nodes)) != len(self.nodes):
            raise ValueError("nodes lists the same node twice")
        if self.nodes is None and "return_after_s" in self.model_fields_set:
            raise ValueError(
                "return_after_s is for a destination with nodes (the way back to its first "
                "node); with one host there is nowhere to go back to"
            )
        return self

    @field_validator("return_after_s")
    @classmethod
    def _return_after(cls, value: float) -> float:
        if value != 0 and not MIN_RETURN_AFTER_S <= value <= MAX_RETURN_AFTER_S:
            raise ValueError(
                f"expected 0 (never go back to the first node) or {MIN_RETURN_AFTER_S:g} to "
                f"{MAX_RETURN_AFTER_S:g} seconds"
            )
        return value

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Every node as (host, port): one for `host`, the list for `nodes`."""
        if self.host is not None:
            return [(self.host, self.port)]
        return [split_node(node) for node in self.nodes or []]  # _host_or_nodes: one is set

    @model_validator(mode="after")
    def _one_password_source(self) -> DestinationConfig:
        if self.password_file is not None and self.password_env is not None:
            raise ValueError("give password_file or password_env, not both")
        return self

    @field_validator("routes")
    @classmethod
    def _route_patterns(cls, value: list[str] | None) -> list[str] | None:
        for pattern in value or []:
            if not re.fullmatch(
                r"\*|lane:(alarm|state|telemetry)|[a-z_]+(\.[a-z_]+)*(\.\*)?", pattern
            ):
                raise ValueError(
                    f"route {pattern!r} is not an event type pattern "
                    "(expected '*', 'lane:alarm', 'alarm.*' or 'alarm.panic')"
                )
        return value


class ContractConfig(Strict):
    topic_root: str = Field(default="schoolgate/v1", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")


Baudrate = Annotated[Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200], WholeNumber]


class ModbusTcpLine(Strict):
    type: Literal["modbus_tcp"]
    host: Host
    port: Port = 502
    timeout_ms: TimeoutMs = 300


class _SerialPort(Strict):
    """The port and character settings of a line over a serial port, whatever it carries."""

    port: DevicePath = Field(description="serial device, e.g. /dev/ttyUSB0")
    baudrate: Baudrate = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Annotated[Literal[1, 2], WholeNumber] = 1
    bytesize: Annotated[Literal[7, 8], WholeNumber] = 8


class ModbusRtuLine(_SerialPort):
    type: Literal["modbus_rtu"]
    timeout_ms: TimeoutMs = 300


class SerialLine(_SerialPort):
    """A plain serial line for devices that speak their own framing (access controllers)."""

    type: Literal["serial"]
    timeout_ms: TimeoutMs = 500


LineConfig = Annotated[ModbusTcpLine | ModbusRtuLine | SerialLine, Field(discriminator="type")]


class AlarmsConfig(Strict):
    """The acknowledgement loop: who acknowledges, and what happens when nobody does."""

    ack_destination: Ident = Field(
        default="police", description="the destination whose PUBACK and acknowledgement count"
    )
    ack_timeout_s: float = Field(
        default=30, gt=0, le=3600, description="no acknowledgement this long: escalate"
    )
    escalate_siren: bool = Field(default=True, description="sound the box's siren on escalation")


class SupervisionConfig(Strict):
    """Path supervision (EN 50136 style): heartbeats out, and a local fault when a path is lost."""

    heartbeat_s: float = Field(default=30, ge=1, le=3600)
    report_after_s: float = Field(
        default=60,
        ge=1,
        le=86_400,
        description="a destination unreachable this long is a fault: reported on the other "
        "paths and shown locally",
    )
    fault_device: Ident | None = Field(
        default=None, description="an alarm box whose `fault` output shows a path fault"
    )


class GatewayConfig(Strict):
    site: SiteConfig
    store: StoreConfig = StoreConfig()
    control: ControlConfig = ControlConfig()
    contract: ContractConfig = ContractConfig()
    destinations: dict[Ident, DestinationConfig]
    lines: dict[Ident, LineConfig] = Field(default_factory=dict)
    devices: dict[Ident, DeviceConfig] = Field(default_factory=dict)
    alarms: AlarmsConfig = AlarmsConfig()
    supervision: SupervisionConfig = SupervisionConfig()
    security: SecurityConfig | None = Field(
        default=None,
        description="signing keys: without it commands are refused and payloads go unsigned",
    )
    guard: GuardConfig | None = Field(
        default=None, description="the guard's local page (gateway.guard); off when absent"
    )
    rules: RulesConfig | None = None  # the school's rules (edge_config.rules); off when absent

    @property
    def control_socket(self) -> Path:
        if self.control.socket_path is not None:
            return self.control.socket_path
        return self.store.path.parent / "control.sock"
