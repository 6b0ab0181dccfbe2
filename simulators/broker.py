"""Private mosquitto brokers on loopback for the demo, the tests and the benchmarks.

Owns starting, stopping and restarting one mosquitto process on a fixed free port with a
throw-away config (anonymous access, loopback only, state in a temporary folder), optionally with
a TLS listener beside the plain one, and optionally with per-client credentials (a password file
made with `mosquitto_passwd`) and an ACL file (docs/acl/mosquitto.acl). Never a public broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gateway.core.lifecycle import AsyncResource


class BrokerError(Exception):
    """mosquitto is missing or would not start."""


def find_mosquitto() -> str:
    # Debian installs it in /usr/sbin, which is not on an ordinary user's PATH.
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    if found is None:
        raise BrokerError("mosquitto is not installed (sudo apt-get install mosquitto)")
    return found


def _write_password_file(path: Path, passwords: Mapping[str, str]) -> None:
    """A mosquitto password file (salted hashes), made by `mosquitto_passwd` itself."""
    tool = shutil.which("mosquitto_passwd") or shutil.which("mosquitto_passwd", path="/usr/sbin")
    if tool is None:
        raise BrokerError("mosquitto_passwd is not installed (it comes with mosquitto)")
    path.touch(mode=0o600)
    for username, password in passwords.items():
        done = subprocess.run(
            [tool, "-b", str(path), username, password], capture_output=True, check=False
        )
        if done.returncode != 0:
            raise BrokerError(f"mosquitto_passwd {username}: {done.stderr.decode().strip()}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The broker's side of TLS: the CA it trusts for client certificates, and its own."""

    ca_file: Path
    cert_file: Path
    key_file: Path


class MosquittoBroker(AsyncResource):
    """One mosquitto with a plain listener on `port`; with `tls`, also a TLS listener on
    `tls_port` (the plain one stays, so a test's subscriber can watch what arrives over TLS).
    `allow_anonymous=False` without a password file refuses every client: the way to see a
    refused login. `passwords` (username -> password) turns logins on and anonymous access
    off; `acl_file` is given to mosquitto as it is."""

    def __init__(
        self,
        name: str = "broker",
        port: int | None = None,
        *,
        tls: TlsFiles | None = None,
        require_client_cert: bool = False,
        allow_anonymous: bool = True,
        passwords: Mapping[str, str] | None = None,
        acl_file: Path | None = None,
    ) -> None:
        self.name = name
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.tls_port: int | None = None
        self._dir = Path(tempfile.mkdtemp(prefix=f"schoolgate-{name}-"))
        self._conf = self._dir / "mosquitto.conf"
        tls_listener = ""
        if tls is not None:
            self.tls_port = free_port()
            tls_listener = (
                f"listener {self.tls_port} {self.host}\n"
                f"cafile {tls.ca_file}\n"
                f"certfile {tls.cert_file}\n"
                f"keyfile {tls.key_file}\n"
                f"require_certificate {str(require_client_cert).lower()}\n"
            )
        access = ""
        if passwords is not None:
            allow_anonymous = False
            _write_password_file(self._dir / "passwd", passwords)
            access += f"password_file {self._dir / 'passwd'}\n"
        if acl_file is not None:
            access += f"acl_file {acl_file.resolve()}\n"
        self._conf.write_text(
            f"listener {self.port} {self.host}\n"
            + tls_listener
            + access
            + f"allow_anonymous {str(allow_anonymous).lower()}\n"
            # Persistent sessions let a test's listener keep its queue across a broker restart.
            "persistence true\n"
            f"persistence_location {self._dir}/\n"
            # Run as root, mosquitto would switch to user `mosquitto`, who cannot write here.
            f"user {getpass.getuser()}\n"
            "autosave_interval 1\n"
            "log_dest none\n"
            "max_inflight_messages 0\n"
            "max_queued_messages 0\n"
        )
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    async def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        # Popen returns at once; the wait for the listener below is async.
        self._proc = subprocess.Popen(  # noqa: ASYNC220
            [find_mosquitto(), "-c", str(self._conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise BrokerError(f"mosquitto {self.name} exited at start: {err.strip()}")
            if await self._listening(self.port) and (
                self.tls_port is None or await self._listening(self.tls_port)
            ):
                return
            await asyncio.sleep(0.02)
        await self.stop()
        raise BrokerError(f"mosquitto {self.name} did not listen on port {self.port}")

    async def _listening(self, port: int) -> bool:
        try:
            _, writer = await asyncio.open_connection(self.host, port)
        except OSError:
            return False
        writer.close()
        with contextlib.suppress(OSError):  # a TLS listener may drop a bare TCP probe early
            await writer.wait_closed()
        return True

    async def stop(self, *, graceful: bool = False) -> None:
        """SIGKILL by default (a broker that dies); `graceful` sends SIGTERM, which lets
        mosquitto save its sessions so subscribers' queues survive the restart."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if graceful:
                proc.terminate()
            else:
                proc.kill()
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        if proc.stderr:
            proc.stderr.close()

    async def restart(self, *, graceful: bool = False) -> None:
        await self.stop(graceful=graceful)
        await self.start()

    open = start
    """`async with broker:` starts it; leaving stops it and removes its folder."""

    async def close(self) -> None:
        await self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __repr__(self) -> str:
        return f"MosquittoBroker({self.name!r}, port={self.port})"
