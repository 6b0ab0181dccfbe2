"""Builds the running gateway from a validated config and owns its root TaskGroup.

Owns start-up order (store, latches, control socket, uplinks, drivers, the guard's page when
configured), signal handling, systemd readiness and watchdog pings, and shutdown. Every
long-lived task is created here, named, inside one TaskGroup. It does not poll, store or
publish anything itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import os
import signal
from collections.abc import AsyncGenerator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog

from drivers.alarm_box import AlarmBox
from drivers.base import Driver, DriverContext
from drivers.kinds import build_driver
from drivers.lines import Line, make_line
from drivers.lines.modbus import ModbusLine
from edge_config.loader import read_password
from edge_config.models import AlarmBoxDevice, GatewayConfig
from gateway import sdnotify
from gateway.alarms.drill import Drill
from gateway.alarms.latch import AlarmLatches, BoxInfo, Latch
from gateway.alarms.test_mode import TestMode
from gateway.commands import control
from gateway.commands.access import ControlAccess
from gateway.commands.handlers import Commands
from gateway.commands.local_ops import LocalOps
from gateway.commands.watch import WatchHub
from gateway.core import auth, contract
from gateway.core.backoff import Backoff
from gateway.core.changes import ChangeCounter
from gateway.core.clock import SystemClock
from gateway.core.events import DeviceRef, Event
from gateway.device_state import alarm_delivery, device_states
from gateway.rules.ledger import LedgerError
from gateway.security import Security, load_security
from gateway.store import sql
from gateway.store.outbox import Marks
from gateway.store.retention import Retention, RetentionPolicy
from gateway.store.routing import Router, default_routes
from gateway.store.storage import Storage
from gateway.uplink import mqtt
from gateway.uplink.destination import Failover, Services, Uplink
from gateway.uplink.nodes import NodeRing
from gateway.uplink.paths import PathBoard

if TYPE_CHECKING:
    from gateway.guard_source import DaemonGuardSource
    from gateway.rules.service import RulesService

log = structlog.get_logger(__name__)


class _Stop(Exception):
    """Raised inside the TaskGroup to end it cleanly."""


def site_of(config: GatewayConfig) -> contract.Site:
    return contract.Site(
        school_id=config.site.school_id,
        gateway_id=config.site.gateway_id,
        tz=ZoneInfo(config.site.timezone),
        topic_root=config.contract.topic_root,
    )


def broker_params(
    config: GatewayConfig, name: str, security: Security | None = None
) -> mqtt.BrokerParams:
    dest = config.destinations[name]
    site = site_of(config)
    will = contract.status_payload(site, online=False)
    if security is not None:
        will = auth.sign_payload(will, security.gateway_key, security.gateway_key_id)
    host, port = dest.addresses[0]  # with several nodes the uplink picks (`failover_of`)
    return mqtt.BrokerParams(
        host=host,
        port=port,
        client_id=dest.client_id,
        username=dest.username,
        password=read_password(dest),
        keepalive_s=dest.keepalive_s,
        max_inflight=dest.max_inflight,
        will_topic=contract.status_topic(site),
        will_payload=will,
        protocol=dest.protocol,
        tls=None
        if dest.tls is None
        else mqtt.TlsParams(
            ca_file=dest.tls.ca_file,
            cert_file=dest.tls.cert_file,
            key_file=dest.tls.key_file,
            server_name=dest.tls.server_name,
            min_version=dest.tls.min_version,
        ),
    )


DEFAULT_NODE_SPREAD_S = 5.0
"""`reconnect_spread_s` of a destination with nodes when the config leaves it out: the gateways
of a lost node come back over 5 s, not in the same second."""


def failover_of(config: GatewayConfig, name: str) -> Failover:
    dest = config.destinations[name]
    spread_s = dest.reconnect_spread_s
    if spread_s is None and dest.nodes is not None:
        spread_s = DEFAULT_NODE_SPREAD_S
    key = f"{config.site.school_id}/{config.site.gateway_id}"
    return Failover(NodeRing(dest.addresses, key), spread_s, dest.return_after_s)


class Gateway:
    def __init__(
        self, config: GatewayConfig, *, config_dir: Path = Path(), clock: SystemClock | None = None
    ) -> None:
        self.config = config
        self.clock = clock or SystemClock()
        """THE clock of every timer in the daemon (tests of a part inject a FakeClock; the
        scenario runner a ShiftedClock, a real one showing another date)."""
        self.site = site_of(config)
        self.security = (
            None if config.security is None else load_security(config.security, config_dir)
        )
        router = Router(
            {
                name: d.routes if d.routes is not None else default_routes(name)
                for name, d in config.destinations.items()
            }
        )
        self.store = Storage(
            config.store.path,
            self.site,
            router,
            batch_delay_ms=config.store.batch_delay_ms,
            spill_limit=config.store.memory_limit_events,
            signer=None if self.security is None else self.sign,
            marks=Marks(  # both modes are made next: lambdas, asked at each stamp
                drill=lambda: self.drill_mode.active(),  # noqa: PLW0108
                test=lambda: self.test_mode.active(),  # noqa: PLW0108
            ),
            clock=self.clock,
        )
        self.outbox = self.store.outbox
        self.changes = ChangeCounter()
        """Bumped by every part at a change the guard's page shows; the page awaits it."""
        self.test_mode = TestMode(
            self.outbox,
            self.store.log.memory("gateway"),
            self.site,
            clock=self.clock,
            changed=self.changes.bump,
        )
        store = config.store
        self.retention = Retention(
            self.store.maintenance,
            RetentionPolicy(
                max_bytes=int(store.max_mb * 1024 * 1024),
                retain_ms=int(store.retain_days * 86_400_000),
                max_age_ms=None
                if store.max_age_days is None
                else int(store.max_age_days * 86_400_000),
            ),
            clock=self.clock,
        )
        refs = {
            device_id: DeviceRef(device_id, device.kind, device.location)
            for device_id, device in config.devices.items()
        }
        boxes = {
            device_id: BoxInfo(
                device=refs[device_id],
                button_names={b.input: b.name for b in device.buttons},
                drill=device.drill,
            )
            for device_id, device in config.devices.items()
            if isinstance(device, AlarmBoxDevice)
        }
        alarms = config.alarms
        self.latches = AlarmLatches(
            self.store.alarms,
            boxes,
            ack_destination=alarms.ack_destination,
            ack_timeout_s=alarms.ack_timeout_s,
            escalate_siren=alarms.escalate_siren,
            clock=self.clock,
            changed=self.changes.bump,
        )
        self.lines: dict[str, Line] = {
            name: make_line(name, line) for name, line in config.lines.items()
        }
        self.watch_hub = WatchHub(
            {
                (device.line, unit): device_id
                for device_id, device in config.devices.items()
                if isinstance(unit := getattr(device, "unit_id", None), int)
            },
            self.site.tz,
            self.clock.wall_ms,
        )
        for name, line in self.lines.items():
            if isinstance(line, ModbusLine):
                line.tap = self.watch_hub.line_tap(name)
        self.rules = None if config.rules is None else self._rules_service(refs, config_dir)
        # The rules and the installer's `watch` see every event once it is stored.
        self.outbox.on_stored = self._on_stored
        # The police are told of every drill (their route may not include gateway.*).
        announce = set(router.destinations_for("gateway.drill_started"))
        announce |= {config.alarms.ack_destination} & set(config.destinations)
        self.drill_mode = Drill(
            self.outbox,  # the rules see its events through the outbox's on_stored hook
            clock=self.clock,
            memory=self.store.log.memory("gateway"),
            announce_to=sorted(announce),
        )
        self.drivers: dict[str, Driver] = {}
        for device_id, device in config.devices.items():
            ctx = DriverContext(
                device=refs[device_id],
                panic=self.latches,
                emit=self.outbox.emit,
                clock_ms=self.clock.wall_ms,
                drill=device.drill,
                memory=self.store.log.memory(device_id),
                store=self.outbox.append,
                changed=self.changes.bump,
            )
            driver = build_driver(device, self.lines[device.line], ctx)
            self.drivers[device_id] = driver
            if isinstance(driver, AlarmBox):
                self.latches.attach_feedback(device_id, driver.set_pattern)
        supervision = config.supervision
        self.paths = PathBoard(
            config.destinations,
            self.outbox,
            self.site,
            report_after_s=supervision.report_after_s,
            fault_output=None if supervision.fault_device is None else self._show_path_fault,
            clock=self.clock,
            changed=self.changes.bump,
        )
        self.commands = Commands(self.site, self.security, self)
        services = Services(
            commands=self.commands,
            paths=self.paths,
            heartbeat_s=supervision.heartbeat_s,
            on_sent=self.latches.delivered,
            sign=None if self.security is None else self.sign,
        )
        self.uplinks = [
            Uplink(
                name,
                broker_params(config, name, self.security),
                self.store.uplink,
                self.site,
                backoff=Backoff(base_s=0.2, cap_s=config.destinations[name].reconnect_max_s),
                clock=self.clock,
                services=services,
                failover=failover_of(config, name),
            )
            for name in config.destinations
        ]
        self.control_access = ControlAccess(
            reset_group=config.control.reset_group,
            device_group=config.control.device_group,
            daemon_uid=os.getuid(),
        )
        self.control_ops = LocalOps(self, self.control_access)
        self.guard_source = None if config.guard is None else self._guard_source()
        self.guard_page_ready = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.devices_ready = asyncio.Event()
        self._ready_count = 0

    # The two builders below import their part where it is built: a gateway without [rules]
    # never loads the rules' service, daily report and report reads, and one without [guard]
    # never loads the page's source and view (memory the idle gateway has no use for;
    # tests/test_startup_imports.py checks).

    def _rules_service(self, refs: Mapping[str, DeviceRef], config_dir: Path) -> RulesService:
        from gateway import report_source  # noqa: PLC0415
        from gateway.rules.engine import RulesLinks  # noqa: PLC0415
        from gateway.rules.service import RulesService  # noqa: PLC0415

        assert self.config.rules is not None
        return RulesService(
            self.config.rules,
            RulesLinks(
                clock=self.clock,
                devices=refs,
                emit=self.outbox.emit,
                command=self.device_command,
                changed=self.changes.bump,
                flush=self.outbox.flush,
                siren=self.latches.sound_siren,
                append=self.outbox.append,
                live=lambda: report_source.live_figures(refs, self.drivers, self.paths),
            ),
            config_dir=config_dir,
            store_path=self.config.store.path,
            tz=self.site.tz,
        )

    def _guard_source(self) -> DaemonGuardSource:
        from gateway.guard_source import DaemonGuardSource, GuardTestMode  # noqa: PLC0415

        return DaemonGuardSource(
            self.config,
            self.latches,
            self.paths,
            self.drivers,
            self.clock,
            changes=self.changes,
            rules_today=None if self.rules is None else self.rules.today,
            test_mode=GuardTestMode(self.test_mode, self.test_mode_start),
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop_requested.set)
        try:
            async with self.store, contextlib.AsyncExitStack() as stack:
                await self.latches.restore()
                await self.test_mode.restore()
                await self.drill_mode.restore()
                await stack.enter_async_context(
                    control.serve(self.config.control_socket, self.handle_control)
                )
                for line in self.lines.values():
                    stack.push_async_callback(line.close)
                log.info(
                    "gateway_started",
                    school=self.site.school_id,
                    gateway=self.site.gateway_id,
                    boot=self.store.log.boot_count,
                    devices=len(self.drivers),
                    destinations=[u.name for u in self.uplinks],
                )
                # What start-up made (modules, config, drivers) lives as long as the process:
                # out of the cyclic collector's reach, its full collections stop walking it
                # again and again (measured: about a fifth of the idle CPU, 0.7 MB of RSS).
                gc.collect()
                gc.freeze()
                sdnotify.notify("READY=1")
                try:
                    async with asyncio.TaskGroup() as tg:
                        for uplink in self.uplinks:
                            tg.create_task(uplink.run(), name=f"uplink:{uplink.name}")
                        for device_id, driver in self.drivers.items():
                            tg.create_task(
                                driver.run(functools.partial(self._device_ready, device_id)),
                                name=f"driver:{device_id}",
                            )
                        tg.create_task(self.outbox.run(), name="outbox:flush")
                        tg.create_task(self.store.log.run(), name="store:recovery")
                        if not self.store.log.store_open:
                            tg.create_task(
                                self._restore_latches_when_store_opens(), name="latches:reopen"
                            )
                        tg.create_task(self.latches.run(), name="latches:escalation")
                        tg.create_task(self.paths.run(), name="paths:supervision")
                        tg.create_task(self.drill_mode.run(), name="drill:timer")
                        tg.create_task(self.test_mode.run(), name="test-mode:timer")
                        tg.create_task(self.retention.run(), name="outbox:retention")
                        tg.create_task(self._watchdog(), name="watchdog")
                        if self.guard_source is not None:
                            tg.create_task(self.guard_source.run(), name="guard:watch")
                            tg.create_task(self._serve_guard_page(), name="guard:page")
                        if self.rules is not None:
                            tg.create_task(self.rules.run(), name="rules")
                        tg.create_task(self._stop_on_request(), name="stop")
                except* _Stop:
                    pass
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            sdnotify.notify("STOPPING=1")
            log.info("gateway_stopped")

    # -- signing and the path fault output ----------------------------------------------

    def sign(self, payload: bytes) -> bytes:
        assert self.security is not None
        return auth.sign_payload(payload, self.security.gateway_key, self.security.gateway_key_id)

    async def _show_path_fault(self, on: bool) -> None:
        device_id = self.config.supervision.fault_device
        driver = self.drivers.get(device_id or "")
        if isinstance(driver, AlarmBox):
            await driver.set_output("fault", on)

    # -- what commands act on (gateway.commands.handlers.CommandTarget) ----------------------

    async def acknowledge(self, alarm_id: str, *, by: str, issuer: str, command_id: str) -> None:
        await self.latches.acknowledge(
            alarm_id,
            by=by,
            issuer=issuer,
            command_id=command_id,
            occurred_at_ms=self.clock.wall_ms(),
        )

    async def reset(self, alarm_id: str, *, by: str) -> None:
        await self.latches.reset(alarm_id, by=by, occurred_at_ms=self.clock.wall_ms())

    async def device_command(
        self, device_id: str, name: str, args: Mapping[str, object]
    ) -> dict[str, object]:
        return await self.drivers[device_id].command(name, args)

    async def ledger_close(self, entry_id: str, *, by: str, note: str) -> None:
        if self.rules is None:
            raise LedgerError("this gateway has no [rules] section: it keeps no ledger")
        await self.rules.close_ledger(entry_id, by=by, note=note)

    def devices_of_kind(self, kind: str) -> list[str]:
        return [d for d, device in self.config.devices.items() if device.kind == kind]

    async def drill(self, *, start: bool, minutes: int, by: str) -> None:
        if start:
            await self.drill_mode.start(minutes=minutes, by=by)
        else:
            await self.drill_mode.stop(by=by)

    def _device_ready(self, device_id: str) -> None:
        if self.rules is not None:
            self.rules.on_device_ready(device_id)
        self._ready_count += 1
        if self._ready_count == len(self.drivers):
            self.devices_ready.set()
            log.info("devices_ready", count=self._ready_count)

    async def _restore_latches_when_store_opens(self) -> None:
        """The store could not be opened at start: once it opens, the latches learn the alarms
        latched in the file (and their lamps light again)."""
        await self.store.log.store_opened.wait()
        await self.latches.restore()

    async def _serve_guard_page(self) -> None:
        """The guard's page, until cancelled. It must never take the alarm path down with it: a
        port it cannot bind is logged and tried again (capped backoff), the rest runs on.
        aiohttp is imported here, so a daemon without `[guard]` never loads it."""
        from gateway.guard.server import serve  # noqa: PLC0415 - aiohttp only when the page is on

        assert self.guard_source is not None and self.config.guard is not None
        backoff = Backoff(base_s=1.0, cap_s=30.0)
        while True:
            try:
                await serve(
                    self.guard_source,
                    self.config.guard,
                    ready=self.guard_page_ready,
                    clock=self.clock,
                )
            except OSError as exc:
                delay_s = backoff.next_delay_s()
                log.error(
                    "guard_page_failed",
                    host=self.config.guard.host,
                    port=self.config.guard.port,
                    error=str(exc),
                    retry_in_s=round(delay_s, 3),
                )
                await self.clock.sleep(delay_s)

    async def _stop_on_request(self) -> None:
        await self.stop_requested.wait()
        log.info("gateway_stopping")
        raise _Stop

    async def _watchdog(self) -> None:
        interval = sdnotify.watchdog_interval_s()
        if interval is None:
            return
        while True:  # the ping proves the event loop still turns
            sdnotify.notify("WATCHDOG=1")
            await self.clock.sleep(interval)

    async def handle_control(
        self, request: dict[str, Any], peer: control.Peer
    ) -> dict[str, Any] | control.Stream:
        """One control-socket request: gateway.commands.local_ops dispatches it."""
        return await self.control_ops.handle(request, peer)

    # -- what the control socket's ops act on (gateway.commands.local.ControlTarget) ---------

    def open_alarms(self) -> list[Latch]:
        return self.latches.open_alarms

    async def reset_by_user(self, alarm_id: str, *, by: str, uid: int, user: str) -> None:
        await self.latches.reset(
            alarm_id, by=by, occurred_at_ms=self.clock.wall_ms(), uid=uid, user=user
        )

    def has_device(self, device_id: str) -> bool:
        return device_id in self.drivers

    async def test_mode_start(self, *, minutes: int, by: str) -> int:
        return await self.test_mode.start(minutes=minutes, by=by)

    async def test_mode_stop(self, *, by: str) -> None:
        await self.test_mode.stop(by=by)

    async def test_receipts(self) -> list[dict[str, Any]]:
        return await self.store.log.call(sql.test_receipts)

    def watch(self, device: str | None) -> AsyncGenerator[dict[str, Any], None]:
        return self.watch_hub.subscribe(device)

    def _on_stored(self, event: Event) -> None:
        if self.rules is not None:
            self.rules.on_stored(event)
        if event.device.id in self.config.devices:  # a device's events, alarms included
            self.watch_hub.event(event)

    async def alarm_delivery(self, alarm_ids: Sequence[str]) -> dict[str, dict[str, bool]]:
        return await alarm_delivery(self.store.alarms, list(self.config.destinations), alarm_ids)

    def status_report(self) -> dict[str, Any]:
        devices = device_states(self.config, self.drivers, self.site.tz)
        offline_boxes = [
            device_id
            for device_id, state in devices.items()
            if state["kind"] == "alarm_box" and state["online"] is not True
        ]
        return {
            "devices": devices,
            "ready": self.devices_ready.is_set() and not offline_boxes,
            "offline_alarm_boxes": offline_boxes,
            "uplinks": {
                u.name: {"connected": u.connected, "node": u.node, "sent": u.sent_count}
                for u in self.uplinks
            },
            "paths": {
                name: {
                    "up": path.up,
                    "since_ms": path.since_ms,
                    "error": path.error,
                    "last_puback_ms": path.last_puback_ms,
                    "last_ack_ms": path.last_ack_ms,
                    "fault_reported": path.reported,
                }
                for name, path in self.paths.paths.items()
            },
            "commands": {
                "accepted": self.commands.accepted,
                "rejected": self.commands.rejected,
                "refusals": dict(self.commands.refusals),
                "ignored_retained": self.commands.ignored_retained,
            },
            "open_alarms": len(self.latches.open_alarms),
            "devices_ready": self.devices_ready.is_set(),
            "test_mode_until": None
            if not self.test_mode.active() or self.test_mode.until_ms is None
            else contract.iso_ms(self.test_mode.until_ms, self.site.tz),
        }
