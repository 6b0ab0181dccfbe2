"""Which node of a broker cluster a gateway uses, and where it goes when that node is lost.

Owns the order in which one gateway tries the nodes of one destination: rendezvous hashing of
the gateway's name with each node (the node with the highest hash first), so a fleet spreads
evenly over the nodes, each gateway always starts on the same node, and the gateways of a lost
node spread evenly over the others (not all onto the next one in the list). It does not
connect, wait or decide when to move (the uplink does, with `Backoff` on the injected clock,
and `homing.Homing` for the way back to the first node). Pure.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

Node = tuple[str, int]
"""(host, port)"""


def node_name(node: Node) -> str:
    host, port = node
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def preference(nodes: Sequence[Node], key: str) -> list[Node]:
    """`nodes` in the order the gateway called `key` tries them (rendezvous hashing)."""

    def weight(node: Node) -> bytes:
        return hashlib.sha256(f"{key}\x00{node_name(node)}".encode()).digest()

    return sorted(nodes, key=weight, reverse=True)


class NodeRing:
    """The node in use, and the next one when it is lost (round the preference order)."""

    def __init__(self, nodes: Sequence[Node], key: str) -> None:
        if not nodes:
            raise ValueError("a destination needs at least one node")
        self.order = preference(nodes, key)
        self._index = 0

    @property
    def current(self) -> Node:
        return self.order[self._index]

    @property
    def several(self) -> bool:
        return len(self.order) > 1

    @property
    def first(self) -> Node:
        """The node this gateway prefers (where it starts, and goes back to)."""
        return self.order[0]

    @property
    def on_first(self) -> bool:
        return self._index == 0

    def back_to_first(self) -> Node:
        """The first node accepts connections again: it is the current one once more."""
        self._index = 0
        return self.current

    def lost(self) -> Node:
        """The current node failed (could not connect, or the connection dropped): move on."""
        self._index = (self._index + 1) % len(self.order)
        return self.current
