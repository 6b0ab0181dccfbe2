"""The guard's page server: aiohttp on a configured local address, one page, live over SSE.

Owns the HTTP side of the page: `GuardServer` (start, the bound port, stop) and `serve`, the task
the daemon runs in its TaskGroup until it is cancelled. Routes:

    GET  /               the page (static/index.html; everything is served from the package)
    GET  /static/{name}  page.css, page.js
    GET  /catalogue.json the message catalogue, the default language and the heartbeat
    GET  /events         server-sent events: `state` (the whole snapshot) at once and when the
                         source's version moves (awaited, never polled; changes closer together
                         than `COALESCE_S` go out as one), `beat` after `heartbeat_s` of quiet
                         so the page can tell a live but quiet gateway from a lost one
    POST /api/action     {"action", "target", "pin", "reason"?}: reset / test_press /
                         silence_siren, after the PIN gate; answers JSON

Untrusted input meets `_action`: any bad body is a counted refusal, never a dead task. Actions
must come as JSON from the page's own origin (a browser cannot send that cross-site without a
CORS preflight we never answer). It does not hold state (`GuardSource`), hash PINs
(`gateway.guard.pin`) nor know the strings (`gateway.guard.catalogue`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from importlib import resources
from typing import Any, Literal

import structlog
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_config.guard import GuardConfig
from gateway.core.clock import Clock, SystemClock
from gateway.guard import catalogue
from gateway.guard.pin import PinGate, PinLockedOut, PinRejected
from gateway.guard.view import ActionRefused, GuardSource
from gateway.guard.wire import snapshot_to_json

log = structlog.get_logger("gateway.guard")

_STATIC = resources.files("gateway.guard") / "static"
_STATIC_FILES = {"page.css": "text/css", "page.js": "text/javascript"}
_MAX_BODY_BYTES = 4096
_SHUTDOWN_S = 2.0
COALESCE_S = 0.1
"""At most one `state` per stream in this long (on the injected clock): a burst of changes is
drawn once, with the latest state; a change after a quiet spell goes out at once."""


class _ActionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    action: Literal["reset", "test_press", "silence_siren"]
    target: str = Field(min_length=1, max_length=64)
    pin: str = Field(min_length=1, max_length=32)
    reason: str | None = Field(default=None, min_length=1, max_length=200)


class GuardServer:
    def __init__(
        self,
        source: GuardSource,
        config: GuardConfig,
        *,
        clock: Clock | None = None,
    ) -> None:
        self._source = source
        self._config = config
        self._clock: Clock = clock or SystemClock()
        self._gate = PinGate(
            [(g.name, g.pin_hash) for g in config.guards],
            max_failures=config.pin_limit.max_failures,
            window_s=config.pin_limit.window_s,
            lockout_s=config.pin_limit.lockout_s,
            clock=clock,
        )
        self._pin_lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self.refusals = 0  # bad action requests (untrusted input refused), for tests and stats

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the guard page is not started")
        return self._port

    async def start(self) -> None:
        app = web.Application(client_max_size=_MAX_BODY_BYTES)
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/catalogue.json", self._catalogue)
        app.router.add_get("/events", self._events)
        app.router.add_post("/api/action", self._action)
        runner = web.AppRunner(
            app, handle_signals=False, access_log=None, shutdown_timeout=_SHUTDOWN_S
        )
        await runner.setup()
        site = web.TCPSite(runner, self._config.host, self._config.port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        # The bound port (port = 0 picks a free one): AppRunner.addresses is aiohttp's public view.
        addresses = runner.addresses
        self._port = int(addresses[0][1]) if addresses else self._config.port
        log.info("guard_page_started", host=self._config.host, port=self._port)

    async def stop(self) -> None:
        self._stopping.set()  # live streams end now rather than at the shutdown timeout
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            log.info("guard_page_stopped", port=self._port)

    # --- the page --------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.Response:
        del request
        html = (_STATIC / "index.html").read_text(encoding="utf-8")
        return web.Response(text=html, content_type="text/html", headers=_NO_STORE)

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC_FILES:
            raise web.HTTPNotFound()
        text = (_STATIC / name).read_text(encoding="utf-8")
        return web.Response(text=text, content_type=_STATIC_FILES[name], headers=_NO_STORE)

    async def _catalogue(self, request: web.Request) -> web.Response:
        del request
        body = {
            "language": self._config.language,
            "heartbeat_s": self._config.heartbeat_s,
            "messages": catalogue.as_json_ready(),
        }
        return web.json_response(body, headers=_NO_STORE, dumps=_dumps)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **_NO_STORE, "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            snapshot = self._source.snapshot()
            await _send(response, "state", snapshot_to_json(snapshot))
            version, sent_s = snapshot.version, self._clock.monotonic()
            while not self._stopping.is_set():
                change = asyncio.ensure_future(self._source.changed(version))
                done, _ = await asyncio.wait(
                    {change, stopping},
                    timeout=self._config.heartbeat_s,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if change not in done:
                    change.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await change
                    if stopping not in done:
                        await _send(response, "beat", str(version))
                    continue
                calm_s = sent_s + COALESCE_S - self._clock.monotonic()
                if calm_s > 0:
                    await self._clock.sleep(calm_s)  # the changes meanwhile join this one
                snapshot = self._source.snapshot()
                version, sent_s = snapshot.version, self._clock.monotonic()
                await _send(response, "state", snapshot_to_json(snapshot))
        except ConnectionError:
            pass  # the browser went away; it reconnects by itself if it is still there
        finally:
            stopping.cancel()
        return response

    # --- the guard's actions ---------------------------------------------------------------
    async def _action(self, request: web.Request) -> web.Response:
        if request.content_type != "application/json" or not _same_origin(request):
            return self._refuse("forbidden", 403)
        try:
            body = _ActionRequest.model_validate_json(await request.read())
        except (ValidationError, ValueError, web.HTTPRequestEntityTooLarge):
            return self._refuse("bad_request", 400)
        async with self._pin_lock:  # one scrypt at a time; the gate's counters stay in order
            try:
                by = await asyncio.to_thread(self._gate.check, body.pin)
            except PinRejected as exc:
                log.warning("guard_pin_wrong", action=body.action, attempts_left=exc.attempts_left)
                return web.json_response(
                    {"ok": False, "error": "pin_wrong", "attempts_left": exc.attempts_left},
                    status=401,
                )
            except PinLockedOut as exc:
                log.warning("guard_pin_locked", action=body.action, retry_after_s=exc.retry_after_s)
                return web.json_response(
                    {"ok": False, "error": "locked", "retry_after_s": exc.retry_after_s},
                    status=429,
                )
        try:
            if body.action == "reset":
                await self._source.reset(body.target, by, body.reason)
            elif body.action == "test_press":
                await self._source.test_press(body.target, by)
            else:
                await self._source.silence_siren(body.target, by)
        except ActionRefused as exc:
            log.info("guard_action_refused", action=body.action, target=body.target, by=by,
                     reason=exc.reason)  # fmt: skip
            return web.json_response(
                {"ok": False, "error": "refused", "reason": exc.reason}, status=409
            )
        log.info("guard_action", action=body.action, target=body.target, by=by, reason=body.reason)
        return web.json_response({"ok": True, "by": by}, dumps=_dumps)

    def _refuse(self, error: str, status: int) -> web.Response:
        self.refusals += 1
        log.warning("guard_request_refused", error=error, status=status)
        return web.json_response({"ok": False, "error": error}, status=status)


_NO_STORE = {"Cache-Control": "no-store"}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


async def _send(response: web.StreamResponse, event: str, data: str) -> None:
    await response.write(f"event: {event}\ndata: {data}\n\n".encode())


def _same_origin(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    return origin is None or origin == f"{request.scheme}://{request.host}"


async def serve(
    source: GuardSource,
    config: GuardConfig,
    *,
    ready: asyncio.Event | None = None,
    clock: Clock | None = None,
) -> None:
    """Serve the guard's page until cancelled, then close every connection and return."""
    server = GuardServer(source, config, clock=clock)
    await server.start()
    try:
        if ready is not None:
            ready.set()
        await asyncio.Event().wait()  # until the daemon's TaskGroup cancels us
    finally:
        await asyncio.shield(server.stop())
