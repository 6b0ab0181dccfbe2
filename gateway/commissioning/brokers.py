"""Doctor's broker steps, per destination: DNS, TCP connect, TLS handshake and the broker's
certificate, login, a QoS 1 publish and its PUBACK on a test topic under the gateway's own
topics, and a subscription to the command topic. Each step is bounded by a timeout; the first
failure ends that destination's steps (the later ones cannot pass).

Limits: a broker's SUBACK and (on MQTT 3.1.1) PUBACK say nothing of its ACL: mosquitto grants a
subscription it will never deliver to and acknowledges a publish it drops. These steps prove the
session and the acknowledgements; they cannot prove the ACL (docs/acl/mosquitto.acl does).

Owns those probes and their fixes. The MQTT session goes through `gateway.uplink.mqtt` (the only
aiomqtt import) with a client id of its own, so a running daemon's session is not kicked off.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import ssl
import time
from datetime import UTC, datetime

from edge_config.checks import SecretError, read_password
from edge_config.models import DestinationConfig, GatewayConfig
from gateway.commissioning.report import Report
from gateway.core.contract import Site, commands_topic
from gateway.uplink import mqtt

CERT_WARN_DAYS = 30
"""A broker certificate that expires sooner than this is a warning."""
DOCTOR_CLIENT_SUFFIX = "-doctor"


def doctor_topic(site: Site) -> str:
    """Under `events/`, which the gateway's ACL lets it write (docs/acl/mosquitto.acl)."""
    return f"{site.base_topic}/events/doctor"


def _site(config: GatewayConfig) -> Site:
    from zoneinfo import ZoneInfo  # noqa: PLC0415 - only for the Site value

    return Site(
        config.site.school_id,
        config.site.gateway_id,
        ZoneInfo(config.site.timezone),
        config.contract.topic_root,
    )


async def check_brokers(config: GatewayConfig, report: Report, *, timeout_s: float) -> None:
    site = _site(config)
    for name, dest in config.destinations.items():
        await check_broker(name, dest, site, report, timeout_s=timeout_s)


async def check_broker(
    name: str, dest: DestinationConfig, site: Site, report: Report, *, timeout_s: float
) -> None:
    """Every step for each node of the destination (one, or each of its `nodes`)."""
    for host, port in dest.addresses:
        # A copy that names one node as its host; `nodes` stays set so the section says which.
        node = dest.model_copy(update={"host": host, "port": port})
        await _check_node(name, node, site, report, timeout_s=timeout_s)


def _section(name: str, dest: DestinationConfig) -> str:
    return f"broker {name}" if dest.nodes is None else f"broker {name} node {dest.host}:{dest.port}"


async def _check_node(
    name: str, dest: DestinationConfig, site: Site, report: Report, *, timeout_s: float
) -> None:
    section = _section(name, dest)
    where = f"{dest.host}:{dest.port}"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout_s):
            infos = await loop.getaddrinfo(dest.host, dest.port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError) as exc:
        report.fail(
            section,
            f"DNS {dest.host}",
            f"cannot resolve: {exc}" if str(exc) else "timed out",
            f"check destinations.{name}.host and the box's DNS (/etc/resolv.conf); "
            "an IP address avoids DNS",
        )
        return
    addresses = sorted({str(info[4][0]) for info in infos})
    report.ok(section, f"DNS {dest.host}", ", ".join(addresses))
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(dest.host, dest.port)
    except (OSError, TimeoutError) as exc:
        report.fail(
            section,
            f"TCP connect {where}",
            _connect_error(exc),
            f"the broker is not reachable: check that it runs and listens on port {dest.port}, "
            f"destinations.{name}.port, and any firewall between this box and {dest.host}",
        )
        return
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    report.ok(section, f"TCP connect {where}")
    tls = None
    if dest.tls is not None:
        tls = mqtt.TlsParams(
            dest.tls.ca_file,
            dest.tls.cert_file,
            dest.tls.key_file,
            dest.tls.server_name,
            dest.tls.min_version,
        )
        if not await _check_tls(name, dest, tls, report, timeout_s):
            return
    try:
        password = read_password(dest)
    except SecretError as exc:
        report.fail(
            section,
            "login",
            f"no password: {exc.message}",
            f"fix destinations.{name}.{exc.key} (see the config steps)",
        )
        return
    host, port = dest.addresses[0]  # the node this copy names
    params = mqtt.BrokerParams(
        host=host,
        port=port,
        client_id=(dest.client_id + DOCTOR_CLIENT_SUFFIX)[-64:],
        username=dest.username,
        password=password,
        connect_timeout_s=timeout_s,
        tls=tls,
        protocol=dest.protocol,
    )
    await _session_steps(name, dest, params, site, report, timeout_s)


async def _check_tls(
    name: str, dest: DestinationConfig, tls: mqtt.TlsParams, report: Report, timeout_s: float
) -> bool:
    section = _section(name, dest)
    try:
        context = mqtt.tls_context(tls)
    except (OSError, ValueError) as exc:
        report.fail(
            section,
            "TLS set-up",
            str(exc),
            f"check the files in [destinations.{name}.tls] (see the files steps)",
        )
        return False
    server_name = tls.server_name or dest.host
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(
                dest.host, dest.port, ssl=context, server_hostname=server_name
            )
    except ssl.SSLCertVerificationError as exc:
        report.fail(
            section,
            "TLS handshake",
            f"the broker's certificate is not trusted: {exc.verify_message}",
            f"ca_file must hold the CA that signed {dest.host}'s certificate, and the "
            f"certificate must name {server_name} (else set server_name)",
        )
        return False
    except (OSError, TimeoutError) as exc:
        report.fail(
            section,
            "TLS handshake",
            str(exc) or "timed out",
            f"check that port {dest.port} is the broker's TLS listener (usually 8883) and "
            "min_version; with mutual TLS, that the broker trusts cert_file",
        )
        return False
    cert = writer.get_extra_info("peercert") or {}
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    not_after = cert.get("notAfter")
    if not isinstance(not_after, str):
        report.ok(section, "TLS handshake", "certificate verified")
        return True
    expires = datetime.fromtimestamp(ssl.cert_time_to_seconds(not_after), UTC)
    days = (expires - datetime.now(UTC)).days
    if days < CERT_WARN_DAYS:
        report.warn(
            section,
            "TLS certificate",
            f"the broker's certificate expires in {days} days ({expires:%Y-%m-%d})",
            "ask the broker's operator to renew it before then",
        )
    else:
        report.ok(section, "TLS handshake", f"certificate verified, valid to {expires:%Y-%m-%d}")
    return True


async def _session_steps(  # noqa: PLR0917 - one destination's context
    name: str,
    dest: DestinationConfig,
    params: mqtt.BrokerParams,
    site: Site,
    report: Report,
    timeout_s: float,
) -> None:
    section = _section(name, dest)
    login = f"login as {dest.username}" if dest.username else "login (anonymous)"
    try:
        async with asyncio.timeout(timeout_s * 3), mqtt.connect(params) as connection:
            report.ok(section, login)
            topic = doctor_topic(site)
            payload = json.dumps({"doctor": True, "at_ms": time.time_ns() // 1_000_000})
            try:
                await connection.publish(topic, payload.encode(), qos=1, timeout_s=timeout_s)
            except mqtt.MqttFailure as exc:
                report.fail(
                    section,
                    f"QoS 1 publish to {topic}",
                    f"no PUBACK: {exc}",
                    "the broker's ACL must let this user write under "
                    f"{site.base_topic}/events/ (docs/acl/mosquitto.acl)",
                )
                return
            report.ok(section, f"QoS 1 publish to {topic}", "PUBACK received")
            command_topic = commands_topic(site)
            try:
                await connection.subscribe(command_topic)
            except mqtt.MqttFailure as exc:
                report.fail(
                    section,
                    f"subscribe to {command_topic}",
                    str(exc),
                    "the broker's ACL must let this user read its command topic "
                    "(docs/acl/mosquitto.acl)",
                )
                return
            report.ok(section, f"subscribe to {command_topic}")
    except mqtt.MqttFailure as exc:
        text = str(exc)
        if _is_refused_login(text):
            source = (
                f"destinations.{name}.password_file ({dest.password_file})"
                if dest.password_file is not None
                else f"destinations.{name}.password_env ({dest.password_env})"
            )
            report.fail(
                section,
                login,
                f"the broker refused the login: {text}",
                f"check destinations.{name}.username and the password in {source} with the "
                "broker's operator",
            )
        else:
            report.fail(
                section,
                login,
                text,
                "the broker took the TCP connection but no MQTT session came up: check that "
                f"port {dest.port} is an MQTT listener and the protocol version ({dest.protocol})",
            )
    except TimeoutError:
        report.fail(
            section,
            login,
            f"no answer within {timeout_s * 3:.0f} s",
            "the broker is slow or drops us: check its logs for this client id",
        )


def _is_refused_login(text: str) -> bool:
    lowered = text.lower()
    return any(word in lowered for word in ("not authori", "password", "bad user"))


def _connect_error(exc: OSError | TimeoutError) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens there"
    if isinstance(exc, TimeoutError):
        return "timed out: no answer (a firewall that drops packets, or a wrong address)"
    return exc.strerror or str(exc)
