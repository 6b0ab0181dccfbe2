"""Which destinations receive which event types (pure).

A destination lists patterns: `*` (everything), `lane:alarm` (every type of a priority lane),
`alarm.*` (a category or any dotted prefix), or an exact type such as `alarm.panic`. Without a
list, `police` receives the alarm lane and every `alarm.*` event (so resets too), and any other
destination receives everything (device health and compliance reach the bureau). The
announcements of test mode (`TOLD_EVERYWHERE`) go to every destination whatever its list: a
test press may reach any of them, so each is told before the test starts and when it ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from gateway.core.events import Lane, lane_of

DEFAULT_ROUTES: dict[str, list[str]] = {"police": ["lane:alarm", "alarm.*"]}
"""Defaults by destination name; a name not listed here receives everything."""
TOLD_EVERYWHERE = frozenset({"gateway.test_started", "gateway.test_stopped"})
"""Event types every destination receives, whatever its routes."""


def default_routes(destination: str) -> list[str]:
    return DEFAULT_ROUTES.get(destination, ["*"])


class Route:
    def __init__(self, patterns: Iterable[str]) -> None:
        self._all = False
        self._prefixes: list[str] = []
        self._exact: set[str] = set()
        self._lanes: set[Lane] = set()
        for pattern in patterns:
            if pattern == "*":
                self._all = True
            elif pattern.startswith("lane:"):
                self._lanes.add(Lane[pattern.removeprefix("lane:").upper()])
            elif pattern.endswith(".*"):
                self._prefixes.append(pattern[:-1])
            else:
                self._exact.add(pattern)

    def accepts(self, event_type: str) -> bool:
        if self._all or event_type in self._exact or lane_of(event_type) in self._lanes:
            return True
        return any(event_type.startswith(prefix) for prefix in self._prefixes)


class Router:
    def __init__(self, routes: Mapping[str, Iterable[str]]) -> None:
        self._routes = {name: Route(patterns) for name, patterns in routes.items()}

    @property
    def destinations(self) -> list[str]:
        return list(self._routes)

    def destinations_for(self, event_type: str) -> list[str]:
        if event_type in TOLD_EVERYWHERE:
            return list(self._routes)
        return [name for name, route in self._routes.items() if route.accepts(event_type)]
