"""A private 3-node RabbitMQ cluster on loopback, for the city-scale test and bench (issue 15).

Owns starting Debian's `rabbitmq-server` as three nodes of one cluster (distinct node names;
AMQP, MQTT and distribution ports picked free; a private epmd on its own port; a private
RABBITMQ_MNESIA_BASE / LOG_BASE and a shared Erlang cookie in a temporary folder; the
`rabbitmq_mqtt` plugin enabled through an enabled_plugins file; quorum queues for MQTT durable
sessions when the version knows `mqtt.durable_queue_type`), waiting until all three are
clustered, SIGKILLing one node and starting it again, and ending every process it started.
It does not speak MQTT (the tests and `bench/fleet.py` do) and never touches a system-wide
RabbitMQ: everything lives under its temporary folder and its own epmd.

Node `a` starts first; `b` and `c` start beside each other and join it (`join_cluster`), which
is what the documentation's manual clustering does, and is free of the first-boot race of
peer discovery.

Once clustered it sets one policy, `CLEAN_SESSION_POLICY`: RabbitMQ 3.10's MQTT plugin puts a
clean session's QoS 1 subscription in a *durable*, non-replicated classic queue named after the
client id (`mqtt-subscription-<client id>qos1`, on the node the client was connected to). When
that node dies, the queue's record stays, "down", until the node is back, and every later
SUBSCRIBE at QoS 1 by the same client id on any other node fails (`NOT_FOUND - home node ... of
durable queue ... is down or inaccessible`; the plugin then drops the connection without a
SUBACK). A gateway keeps its client id and its QoS 1 command subscription, so it could not work
on another node until the dead one came back. Mirroring those queues on every node
(`ha-mode: all`) lets a survivor take the queue over; quorum queues (durable sessions) are
replicated already and ignore the policy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog

from gateway.core.lifecycle import AsyncResource

log = structlog.get_logger(__name__)

_SBIN: Final = Path("/usr/lib/rabbitmq/bin")
_SCHEMA_GLOB: Final = "rabbitmq_server-*/plugins/rabbitmq_mqtt-*/priv/schema/rabbitmq_mqtt.schema"
_NAMES: Final = ("a", "b", "c")
_PORT_RANGE: Final = (20_000, 44_000)
"""RabbitMQ's CLI tools take distribution ports 10 000 above the node's; stay well below 65 535."""


JOIN_ATTEMPTS = 5
JOIN_RETRY_S = 1.0
"""A node's join to the cluster: tries, and the pause between them."""


@dataclass(frozen=True, slots=True)
class Policy:
    """A RabbitMQ policy: `rabbitmqctl set_policy --apply-to queues NAME PATTERN DEFINITION`."""

    name: str
    pattern: str
    definition: str
    """JSON, as rabbitmqctl takes it."""


CLEAN_SESSION_POLICY: Final = Policy(
    "schoolgate-mqtt-clean-sessions", r"^mqtt-subscription-.*qos1$", '{"ha-mode": "all"}'
)
"""What `RabbitCluster` sets (and docs/receiving-centre.md tells a city to set) so a clean MQTT
session's QoS 1 subscription survives the loss of its node (see the module docstring)."""


class RabbitError(Exception):
    """rabbitmq-server is missing, or a node would not start, join or stop."""


def find_rabbitmq() -> Path:
    server = _SBIN / "rabbitmq-server"
    if not server.is_file() or shutil.which("epmd") is None:
        raise RabbitError("rabbitmq-server is not installed (./run setup installs it with apt)")
    return _SBIN


def supports_quorum_sessions() -> bool:
    """True when this RabbitMQ's MQTT plugin knows `mqtt.durable_queue_type` (quorum queues
    for durable MQTT sessions)."""
    return any(
        "durable_queue_type" in path.read_text(errors="replace")
        for path in Path("/usr/lib/rabbitmq/lib").glob(_SCHEMA_GLOB)
    )


def _free_port(taken: set[int]) -> int:
    while True:
        port = random.randint(*_PORT_RANGE)
        if port in taken or port + 10_000 in taken:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port


@dataclass(slots=True)
class RabbitNode:
    name: str
    """Short name (`a`); the Erlang node is `schoolgate-<name>@localhost`."""
    amqp_port: int
    mqtt_port: int
    dist_port: int
    base: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def node(self) -> str:
        return f"schoolgate-{self.name}@localhost"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class RabbitCluster(AsyncResource):
    """Three clustered RabbitMQ nodes with MQTT on loopback. `async with RabbitCluster() as
    cluster:` starts them and waits for the cluster; leaving ends every process."""

    def __init__(self, *, start_timeout_s: float = 90.0) -> None:
        self._bin = find_rabbitmq()
        self._dir = Path(tempfile.mkdtemp(prefix="schoolgate-rabbit-"))
        self._timeout_s = start_timeout_s
        taken: set[int] = set()
        self.epmd_port = _free_port(taken)
        self.nodes = [
            RabbitNode(n, _free_port(taken), _free_port(taken), _free_port(taken), self._dir / n)
            for n in _NAMES
        ]
        self.quorum_sessions = supports_quorum_sessions()
        self._epmd: subprocess.Popen[bytes] | None = None
        (self._dir / ".erlang.cookie").write_text(os.urandom(16).hex())
        (self._dir / ".erlang.cookie").chmod(0o400)
        (self._dir / "enabled_plugins").write_text("[rabbitmq_mqtt].\n")
        for node in self.nodes:
            node.base.mkdir()
            (node.base / "rabbitmq.conf").write_text(self._config(node))

    def _config(self, node: RabbitNode) -> str:
        lines = [
            f"listeners.tcp.default = 127.0.0.1:{node.amqp_port}",
            f"mqtt.listeners.tcp.default = 127.0.0.1:{node.mqtt_port}",
            "mqtt.allow_anonymous = true",
            "loopback_users = none",
            "log.console = false",
            "log.file.level = warning",
        ]
        if self.quorum_sessions:
            lines.append("mqtt.durable_queue_type = quorum")
        return "\n".join(lines) + "\n"

    def _env(self, node: RabbitNode | None = None) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._dir),  # where erl finds the shared .erlang.cookie
            "LANG": "C.UTF-8",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self._dir / "enabled_plugins"),
        }
        if node is not None:
            env |= {
                "RABBITMQ_NODENAME": node.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(node.amqp_port),
                "RABBITMQ_DIST_PORT": str(node.dist_port),
                "RABBITMQ_MNESIA_BASE": str(node.base / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node.base / "log"),
                "RABBITMQ_CONFIG_FILE": str(node.base / "rabbitmq.conf"),
                "RABBITMQ_PID_FILE": str(node.base / "pid"),
            }
        return env

    def node(self, name: str) -> RabbitNode:
        return next(n for n in self.nodes if n.name == name)

    def mqtt_endpoints(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", n.mqtt_port) for n in self.nodes]

    # --- processes ----------------------------------------------------------------------------

    def _start_epmd(self) -> None:
        epmd = shutil.which("epmd")
        assert epmd is not None  # find_rabbitmq checked
        self._epmd = subprocess.Popen(
            [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def _spawn(self, node: RabbitNode) -> None:
        # A session of its own: the script, erl, beam.smp and erl_child_setup die together.
        node.proc = subprocess.Popen(
            [str(self._bin / "rabbitmq-server")],
            env=self._env(node),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    async def _ctl(self, node: RabbitNode, *args: str, timeout_s: float = 60.0) -> str:
        proc = await asyncio.create_subprocess_exec(
            str(self._bin / "rabbitmqctl"),
            "-n",
            node.node,
            *args,
            env=self._env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            async with asyncio.timeout(timeout_s):
                out, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise RabbitError(f"rabbitmqctl {' '.join(args)} on {node.node} timed out") from None
        if proc.returncode != 0:
            text = (err or out).decode(errors="replace").strip()
            raise RabbitError(f"rabbitmqctl {' '.join(args)} on {node.node}: {text}")
        return out.decode(errors="replace")

    async def _await_listening(self, node: RabbitNode, port: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        while loop.time() < deadline:
            if node.proc is not None and node.proc.poll() is not None:
                raise RabbitError(f"{node.node} exited at start (logs in {node.base / 'log'})")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
        raise RabbitError(f"{node.node} did not listen on {port} (logs in {node.base / 'log'})")

    async def _start_joined(self, node: RabbitNode, first: RabbitNode) -> None:
        self._spawn(node)
        # Listening on AMQP = booted (rabbitmqctl await_startup fails while distribution is
        # not up yet).
        await self._await_listening(node, node.amqp_port)
        await self._ctl(node, "stop_app")
        # Two nodes joining the first at once, or the first still settling after its boot, can
        # make a join fail with "unable to perform an operation on node" (seen once in a full
        # suite run on 2 cores; the test passed alone after): retried a few times before failing.
        for attempt in range(1, JOIN_ATTEMPTS + 1):
            try:
                await self._ctl(node, "join_cluster", first.node)
                break
            except RabbitError:
                if attempt == JOIN_ATTEMPTS:
                    raise
                await asyncio.sleep(JOIN_RETRY_S)
        await self._ctl(node, "start_app", timeout_s=self._timeout_s)
        await self._await_listening(node, node.mqtt_port)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        began = loop.time()
        self._start_epmd()
        first = self.nodes[0]
        self._spawn(first)
        await self._await_listening(first, first.mqtt_port)
        async with asyncio.TaskGroup() as group:  # one failing cancels the other
            for node in self.nodes[1:]:
                group.create_task(self._start_joined(node, first), name=f"rabbit:{node.name}")
        await self.wait_clustered(len(self.nodes))
        await self.set_clean_session_policy()
        log.info(
            "rabbit_cluster_up",
            nodes=[n.node for n in self.nodes],
            mqtt_ports=[n.mqtt_port for n in self.nodes],
            seconds=round(loop.time() - began, 1),
            quorum_sessions=self.quorum_sessions,
        )

    async def set_clean_session_policy(self) -> None:
        """Mirror clean MQTT sessions' QoS 1 queues on every node (`CLEAN_SESSION_POLICY`)."""
        policy = CLEAN_SESSION_POLICY
        await self._ctl(
            self.nodes[0],
            "set_policy",
            "--apply-to",
            "queues",
            policy.name,
            policy.pattern,
            policy.definition,
        )

    async def run_admin_script(self, script: Path, *args: str, via: str = "a") -> str:
        """Run a shell script that calls `rabbitmqctl` (a shipped recipe, as an operator would)
        against node `via`: `rabbitmqctl` on its PATH is a wrapper naming that node."""
        node = self.node(via)
        wrappers = self._dir / "admin-bin"
        wrappers.mkdir(exist_ok=True)
        wrapper = wrappers / "rabbitmqctl"
        wrapper.write_text(f'#!/bin/sh\nexec "{self._bin}/rabbitmqctl" -n {node.node} "$@"\n')
        wrapper.chmod(0o755)
        env = self._env() | {"PATH": f"{wrappers}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        proc = await asyncio.create_subprocess_exec(
            "sh",
            str(script),
            *args,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        async with asyncio.timeout(120):
            out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise RabbitError(f"{script.name} {' '.join(args)}: {out.decode(errors='replace')}")
        return out.decode(errors="replace")

    async def memory(self, name: str) -> dict[str, object]:
        """`rabbitmqctl status`'s memory section of node `name` (bytes, by what holds them;
        `total` as the node counts it)."""
        status = json.loads(await self._ctl(self.node(name), "status", "--formatter", "json"))
        memory = status.get("memory", {})
        return memory if isinstance(memory, dict) else {"memory": memory}

    async def running_nodes(self, via: RabbitNode | None = None) -> list[str]:
        asking = via or next(n for n in self.nodes if n.running)
        status = json.loads(await self._ctl(asking, "cluster_status", "--formatter", "json"))
        running: list[str] = status.get("running_nodes", [])
        return running

    async def wait_clustered(self, count: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        while loop.time() < deadline:
            if len(await self.running_nodes()) >= count:
                return
            await asyncio.sleep(0.5)
        raise RabbitError(f"fewer than {count} nodes running in the cluster")

    async def kill(self, name: str) -> None:
        """SIGKILL node `name` (all its processes): a machine that dies."""
        node = self.node(name)
        proc, node.proc = node.proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.get_running_loop().run_in_executor(None, proc.wait)
        log.info("rabbit_node_killed", node=node.node)

    async def restart(self, name: str) -> None:
        """Start a killed node again; it rejoins the cluster it was part of."""
        node = self.node(name)
        self._spawn(node)
        await self._await_listening(node, node.mqtt_port)
        await self.wait_clustered(len(self.nodes))

    async def stop(self) -> None:
        for node in self.nodes:
            await self.kill(node.name)
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(epmd.pid, signal.SIGKILL)
            await asyncio.get_running_loop().run_in_executor(None, epmd.wait)

    async def open(self) -> None:
        """`async with cluster:` starts it; a start that fails half-way is undone at once."""
        try:
            await self.start()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


async def _main(argv: Sequence[str] = ()) -> None:
    """`python -m simulators.rabbitmq`: start a cluster, print its MQTT ports, keep it up."""
    async with RabbitCluster() as cluster:
        print(json.dumps({"mqtt": [p for _, p in cluster.mqtt_endpoints()]}), flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
