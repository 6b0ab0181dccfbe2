"""The way back to a gateway's first-choice broker node once that node accepts connections again
(issue 15): without it, the gateways a lost node sent elsewhere stay there, and the load of a
cluster stays uneven after the node is back.

Owns when a gateway that is not on its first node (`NodeRing.first`) checks that node: every
`return_after_s` on the injected clock, each wait drawn between half of it and all of it so the
gateways that left one node together do not all check (and move) in the same second, until a
check succeeds. It does not connect (the check is handed in: the uplink logs in to the node and
leaves at once) and does not move anything (the uplink ends its session and connects to the
first node, with the same promises as a failover: rows are marked sent only on a PUBACK, so what
was in flight is sent again, by the same id).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.core.clock import Clock
from gateway.uplink.nodes import Node

Check = Callable[[Node], Awaitable[bool]]
"""True when the node accepted a connection (and the check left it again)."""


@dataclass(frozen=True, slots=True)
class Homing:
    return_after_s: float
    """0: never go back (the gateway stays where a failover put it)."""
    clock: Clock
    rand: Callable[[], float] = random.random

    def next_check_s(self) -> float:
        return self.return_after_s * (0.5 + 0.5 * self.rand())

    async def wait_until_back(self, first: Node, check: Check) -> None:
        """Returns once `check(first)` succeeds; checks every `next_check_s()` until then."""
        if self.return_after_s <= 0:
            raise ValueError("return_after_s 0 means never: nothing to wait for")
        while True:
            await self.clock.sleep(self.next_check_s())
            if await check(first):
                return
