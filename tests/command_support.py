"""Shared by the command-path tests: a site, a trusted console key, signed commands, and a
`CommandTarget` built from our own seam that records what it was asked (and can be told to fail
in ways no real part is expected to)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.commands.handlers import Commands
from gateway.core import auth, contract
from gateway.core.backoff import Backoff
from gateway.rules.ledger import EntryNotFound
from gateway.security import Security
from gateway.store.routing import Router
from gateway.store.storage import Storage
from gateway.uplink import mqtt
from gateway.uplink.destination import Services, Uplink
from simulators.broker import MosquittoBroker

TZ = ZoneInfo("Asia/Shanghai")
SITE = contract.Site("school-1", "gate-1", TZ)
GATEWAY_KEY = Ed25519PrivateKey.generate()
CONSOLE_KEY = Ed25519PrivateKey.generate()
TRUST = auth.TrustStore(
    MappingProxyType({"console": auth.TrustedKey(CONSOLE_KEY.public_key(), frozenset({"*"}))})
)
SECURITY = Security(GATEWAY_KEY, "gate-1", TRUST, auth.DEFAULT_WINDOW)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def command(name: str, args: Mapping[str, Any], *, at_ms: int | None = None) -> dict[str, Any]:
    """A signed command for SITE by the trusted console key, issued now (or at `at_ms`)."""
    issued = datetime.fromtimestamp((now_ms() if at_ms is None else at_ms) / 1000, TZ)
    body = auth.build_command(
        gateway=SITE.gateway_id,
        school=SITE.school_id,
        command=name,
        args=args,
        issued_at=issued,
    )
    return auth.sign_command(body, CONSOLE_KEY, "console")


def encode(obj: object) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


class Boom(Exception):
    """A failure no command handler expects."""


@dataclass
class Target:
    """The gateway as commands see it; `fail` makes every call raise `Boom`."""

    fail: bool = False
    calls: list[tuple[str, Any]] = field(default_factory=list)

    def _called(self, name: str, detail: Any) -> None:
        self.calls.append((name, detail))
        if self.fail:
            raise Boom(f"{name} broke \ud800")

    async def acknowledge(self, alarm_id: str, *, by: str, issuer: str, command_id: str) -> None:
        self._called("acknowledge", alarm_id)

    async def reset(self, alarm_id: str, *, by: str) -> None:
        self._called("reset", alarm_id)

    async def device_command(
        self, device_id: str, name: str, args: Mapping[str, object]
    ) -> dict[str, object]:
        self._called(name, device_id)
        return {}

    def devices_of_kind(self, kind: str) -> list[str]:
        return {"bollard": ["bollard-1"], "access_controller": ["doors"]}.get(kind, [])

    async def drill(self, *, start: bool, minutes: int, by: str) -> None:
        self._called("drill", start)

    async def ledger_close(self, entry_id: str, *, by: str, note: str) -> None:
        self._called("ledger_close", (entry_id, by, note))
        if entry_id != "20261124-001":
            raise EntryNotFound(f"no ledger entry {entry_id!r}")


def sign_result(payload: bytes) -> bytes:
    return auth.sign_payload(payload, GATEWAY_KEY, "gate-1")


@dataclass
class CommandUplink:
    """The real command path of one destination: an `Uplink` with the real `Commands` handler,
    a real store and our `Target`, against a real broker."""

    uplink: Uplink
    commands: Commands
    target: Target
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        assert self.task is None
        self.task = asyncio.create_task(self.uplink.run(), name="test:command-uplink")

    async def stop(self) -> None:
        task, self.task = self.task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def restart(self) -> None:
        """A new connection and subscription: the broker hands its retained messages over."""
        await self.stop()
        self.start()


@contextlib.asynccontextmanager
async def command_uplink(
    tmp_path: Path,
    broker: MosquittoBroker,
    *,
    protocol: str = "3.1.1",
    target: Target | None = None,
    sign: Callable[[bytes], bytes] = sign_result,
    started: bool = True,
) -> AsyncIterator[CommandUplink]:
    target = target or Target()
    params = mqtt.BrokerParams(
        host=broker.host,
        port=broker.port,
        client_id=f"gate-1-police-{protocol}",
        protocol="5" if protocol == "5" else "3.1.1",
    )
    async with Storage(
        tmp_path / f"outbox-{protocol}.db", SITE, Router({"police": ["*"]})
    ) as store:
        handler = Commands(SITE, SECURITY, target)
        uplink = Uplink(
            "police",
            params,
            store.uplink,
            SITE,
            backoff=Backoff(base_s=0.02, cap_s=0.2),
            services=Services(commands=handler, sign=sign),
        )
        running = CommandUplink(uplink, handler, target)
        if started:
            running.start()
        try:
            yield running
        finally:
            await running.stop()


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Until `condition()` holds (a counter the code under test moves)."""
    async with asyncio.timeout(timeout_s):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)
