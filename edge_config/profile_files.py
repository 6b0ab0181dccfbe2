"""Device profiles as data: the register maps of bollard controller models and the points of
other device models, one TOML file per model (`generic_bollard.toml`, `vendor_b.toml`,
`power_meter_generic.toml`, ...) in edge_config/profiles/, shipped in the wheel. A new vendor is
a new file there, no code.

Owns finding the profiles of one directory and reading one into its schema by its `kind`
(`edge_config.devices_modbus.BollardProfile` or `PointsProfile`): `ProfileDirectory`, and
`SHIPPED`, the directory the package ships. The loader hands a directory to the schema through
pydantic's validation context (`validation_context`), so the device models resolve their profile
without importing this module. It does not merge a device's overrides into a profile (the device
models do) and does not talk to any device.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Annotated, Any

from pydantic import Field, TypeAdapter, ValidationError

from edge_config.devices_modbus import (
    PROFILES_CONTEXT_KEY,
    BollardProfile,
    PointsProfile,
    ProfileError,
)

Profile = Annotated[BollardProfile | PointsProfile, Field(discriminator="kind")]
_PROFILE = TypeAdapter[BollardProfile | PointsProfile](Profile)

__all__ = [
    "SHIPPED",
    "ProfileDirectory",
    "ProfileError",
    "bollard_profile",
    "load_profile",
    "points_profile",
    "profile_names",
    "validation_context",
]


class ProfileDirectory:
    """The profiles of one directory, each read once (profiles are read-only data)."""

    def __init__(self, directory: Traversable) -> None:
        self.directory = directory
        self._loaded: dict[str, BollardProfile | PointsProfile] = {}

    def names(self) -> list[str]:
        """Names of the profiles (file names without `.toml`)."""
        return sorted(
            entry.name.removesuffix(".toml")
            for entry in self.directory.iterdir()
            if entry.name.endswith(".toml")
        )

    def load(self, name: str) -> BollardProfile | PointsProfile:
        if name in self._loaded:
            return self._loaded[name]
        known = self.names()
        if name not in known:
            raise ProfileError(f"no profile {name!r} is shipped (known: {', '.join(known)})")
        text = self.directory.joinpath(f"{name}.toml").read_text(encoding="utf-8")
        try:
            profile = _PROFILE.validate_python(tomllib.loads(text))
        except (tomllib.TOMLDecodeError, ValidationError) as exc:
            raise ProfileError(f"profile file {name}.toml is broken: {exc}") from None
        if profile.name != name:
            raise ProfileError(f"profile file {name}.toml says name = {profile.name!r}")
        self._loaded[name] = profile
        return profile

    def bollard_profile(self, name: str) -> BollardProfile:
        profile = self.load(name)
        if not isinstance(profile, BollardProfile):
            raise ProfileError(f"profile {name!r} is a {profile.kind} profile, not a bollard's")
        return profile

    def points_profile(self, name: str) -> PointsProfile:
        profile = self.load(name)
        if not isinstance(profile, PointsProfile):
            raise ProfileError(f"profile {name!r} is a {profile.kind} profile, not a points one")
        return profile


SHIPPED = ProfileDirectory(resources.files("edge_config") / "profiles")
"""The profiles in the package (inside the wheel, as package data)."""


def validation_context(profiles: ProfileDirectory = SHIPPED) -> dict[str, Any]:
    """The pydantic validation context that lets device models resolve their profiles:
    `BollardDevice.model_validate(data, context=validation_context())`."""
    return {PROFILES_CONTEXT_KEY: profiles}


def profile_names() -> list[str]:
    """Names of the shipped profiles."""
    return SHIPPED.names()


def load_profile(name: str) -> BollardProfile | PointsProfile:
    return SHIPPED.load(name)


def bollard_profile(name: str) -> BollardProfile:
    return SHIPPED.bollard_profile(name)


def points_profile(name: str) -> PointsProfile:
    return SHIPPED.points_profile(name)
