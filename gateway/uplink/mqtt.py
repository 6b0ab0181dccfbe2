"""The only module that imports aiomqtt/paho: connection parameters, TLS, the will, publishing,
and noticing that a connection dropped. Everything above it sees `MqttFailure`, never a library
error.

It does not decide when to reconnect (that is `uplink`, with `backoff`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiomqtt
from paho.mqtt import client as mqtt_client
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.core.cancel import honour_dropped_cancel


class MqttFailure(Exception):
    """The broker could not be reached, refused us, or the connection dropped."""


@dataclass(frozen=True, slots=True)
class TlsParams:
    """TLS to the broker: always verify it against `ca_file`; with a certificate and key, also
    prove who we are (mutual TLS)."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None
    server_name: str | None = None
    """Sent as SNI and matched against the broker's certificate instead of the host."""
    min_version: Literal["1.2", "1.3"] = "1.2"


class _NamedServerContext(ssl.SSLContext):
    """paho wraps the socket with `server_hostname=<the host it dialled>` and offers no way to
    change it. The SSLContext is ours, so it substitutes the configured name at that seam:
    SNI and the certificate check both use it, and paho skips its own check because
    `check_hostname` is on."""

    server_name: str

    def wrap_socket(  # noqa: PLR0917 - the signature of the method it overrides
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock,
            server_side=server_side,
            do_handshake_on_connect=do_handshake_on_connect,
            suppress_ragged_eofs=suppress_ragged_eofs,
            server_hostname=self.server_name,
            session=session,
        )


def _no_passphrase() -> bytes:
    # An encrypted key would make OpenSSL prompt on the terminal; a daemon must fail instead.
    raise ValueError("encrypted private keys are not supported")


def tls_context(tls: TlsParams) -> ssl.SSLContext:
    """A client context that verifies the broker (CA and name) and, for mutual TLS, carries our
    certificate. Built per connection so renewed certificates are picked up on reconnect."""
    context: ssl.SSLContext
    if tls.server_name is None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    else:
        named = _NamedServerContext(ssl.PROTOCOL_TLS_CLIENT)
        named.server_name = tls.server_name
        context = named
    # PROTOCOL_TLS_CLIENT already sets these; stated so a reader need not know that.
    context.verify_mode = ssl.CERT_REQUIRED
    context.check_hostname = True
    context.minimum_version = (
        ssl.TLSVersion.TLSv1_3 if tls.min_version == "1.3" else ssl.TLSVersion.TLSv1_2
    )
    context.load_verify_locations(cafile=tls.ca_file)
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    return context


@dataclass(frozen=True, slots=True)
class BrokerParams:
    host: str
    port: int
    client_id: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs or reprs
    keepalive_s: int = 30
    max_inflight: int = 32
    connect_timeout_s: float = 5.0
    clean_session: bool = True
    """The gateway uses clean sessions (the outbox, not the broker, is its store); a receiver
    may keep a persistent session so the broker queues for it while it is away."""
    will_topic: str | None = None
    will_payload: bytes = b""
    tls: TlsParams | None = None
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    session_expiry_s: int = 86_400
    """MQTT 5 with a persistent session (clean_session False): how long the broker keeps the
    session once we are gone. MQTT 5 drops a session at disconnect unless this is set; 3.1.1
    has no such field (the broker keeps the session until a clean one replaces it)."""


@dataclass(frozen=True, slots=True)
class Message:
    """One received message; the MQTT 5 reply fields are None on 3.1.1."""

    topic: str
    payload: bytes
    response_topic: str | None = None
    correlation_data: bytes | None = None
    retain: bool = False
    """The broker kept this message and handed it over at subscribe (not a live publish)."""


def _reply_fields(message: aiomqtt.Message) -> tuple[str | None, bytes | None]:
    props = message.properties
    if props is None:
        return None, None
    topic = getattr(props, "ResponseTopic", None)
    data = getattr(props, "CorrelationData", None)
    return (topic if isinstance(topic, str) else None), (
        bytes(data) if isinstance(data, bytes | bytearray) else None
    )


class Connection:
    """One live MQTT session."""

    def __init__(self, client: aiomqtt.Client, *, v5: bool = False) -> None:
        self._client = client
        self.v5 = v5

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        timeout_s: float | None = 10.0,
        correlation_data: bytes | None = None,
    ) -> None:
        """Return once the broker has acknowledged (PUBACK for QoS 1). `timeout_s=None` waits
        without a timer of its own (the caller supervises; one timer per message is costly).
        `correlation_data` is sent on MQTT 5 only (a reply to a request that carried it)."""
        timeout = math.inf if timeout_s is None else timeout_s
        properties = None
        if correlation_data is not None and self.v5:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            properties.CorrelationData = correlation_data
        try:
            await self._client.publish(
                topic, payload, qos=qos, retain=retain, properties=properties, timeout=timeout
            )
        except aiomqtt.MqttError as exc:
            raise MqttFailure(f"publish to {topic} failed: {exc}") from exc
        if timeout_s is not None:
            honour_dropped_cancel()  # aiomqtt waited with asyncio.wait_for (gateway.core.cancel)

    async def subscribe(self, topic_filter: str, qos: int = 1) -> None:
        try:
            await self._client.subscribe(topic_filter, qos=qos)
        except aiomqtt.MqttError as exc:
            raise MqttFailure(f"subscribe to {topic_filter} failed: {exc}") from exc
        honour_dropped_cancel()  # aiomqtt waited with asyncio.wait_for (gateway.core.cancel)

    async def messages(self) -> AsyncIterator[Message]:
        """Incoming messages; raises MqttFailure when the connection drops. Iterating this is
        also how a publisher notices a dead connection promptly: a pending publish would
        otherwise only time out."""
        try:
            async for message in self._client.messages:
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload).encode()
                response_topic, correlation = _reply_fields(message) if self.v5 else (None, None)
                yield Message(
                    message.topic.value, data, response_topic, correlation, bool(message.retain)
                )
        except aiomqtt.MqttError as exc:
            raise MqttFailure(f"connection lost: {exc}") from exc
        raise MqttFailure("connection closed")

    async def wait_closed(self) -> None:
        """Block until the connection drops, then raise MqttFailure."""
        async for _ in self.messages():
            pass


@asynccontextmanager
async def connect(params: BrokerParams) -> AsyncIterator[Connection]:
    will = None
    if params.will_topic is not None:
        will = aiomqtt.Will(params.will_topic, params.will_payload, qos=1, retain=True)
    try:
        context = None if params.tls is None else tls_context(params.tls)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise MqttFailure(f"TLS set-up for {params.host}:{params.port} failed: {exc}") from exc
    v5 = params.protocol == "5"
    connect_properties = None
    if v5 and not params.clean_session:
        connect_properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect_properties.SessionExpiryInterval = params.session_expiry_s
    client = aiomqtt.Client(
        params.host,
        params.port,
        identifier=params.client_id,
        username=params.username,
        password=params.password,
        keepalive=params.keepalive_s,
        will=will,
        timeout=params.connect_timeout_s,
        max_inflight_messages=params.max_inflight,
        protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        # MQTT 5 has clean start instead (paho refuses clean_session there).
        clean_session=None if v5 else params.clean_session,
        clean_start=params.clean_session if v5 else mqtt_client.MQTT_CLEAN_START_FIRST_ONLY,
        tls_context=context,
        properties=connect_properties,
    )
    # aiomqtt warns above 10 pending publishes; a pipelined drain keeps a window of them.
    client.pending_calls_threshold = params.max_inflight * 2 + 10
    try:
        entered = await client.__aenter__()
    except aiomqtt.MqttError as exc:
        raise MqttFailure(f"cannot connect to {params.host}:{params.port}: {exc}") from exc
    except OSError as exc:  # DNS or socket errors escape aiomqtt's translation in places
        raise MqttFailure(f"cannot connect to {params.host}:{params.port}: {exc}") from exc
    try:
        yield Connection(entered, v5=v5)
    finally:
        # The connection is gone either way; a failed goodbye changes nothing.
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can drop a shutdown's cancel.
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError, OSError):
            async with asyncio.timeout(2.0):
                await client.__aexit__(None, None, None)
