"""The one error type of configuration loading (its own module: the schema and the loader both
raise it, and the schema must not import the loader)."""

from __future__ import annotations

from pathlib import Path


class ConfigError(Exception):
    """The configuration cannot be used; `errors` lists every problem found."""

    def __init__(self, path: Path, errors: list[str]) -> None:
        super().__init__(f"{path}: " + "; ".join(errors))
        self.path = path
        self.errors = errors
