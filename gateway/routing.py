"""Which destinations receive which event types (pure).

A destination lists patterns: `*` (everything), `alarm.*` (a category or any dotted prefix), or an
exact type such as `alarm.panic`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class Route:
    def __init__(self, patterns: Iterable[str]) -> None:
        self._all = False
        self._prefixes: list[str] = []
        self._exact: set[str] = set()
        for pattern in patterns:
            if pattern == "*":
                self._all = True
            elif pattern.endswith(".*"):
                self._prefixes.append(pattern[:-1])
            else:
                self._exact.add(pattern)

    def accepts(self, event_type: str) -> bool:
        if self._all or event_type in self._exact:
            return True
        return any(event_type.startswith(prefix) for prefix in self._prefixes)


class Router:
    def __init__(self, routes: Mapping[str, Iterable[str]]) -> None:
        self._routes = {name: Route(patterns) for name, patterns in routes.items()}

    @property
    def destinations(self) -> list[str]:
        return list(self._routes)

    def destinations_for(self, event_type: str) -> list[str]:
        return [name for name, route in self._routes.items() if route.accepts(event_type)]
