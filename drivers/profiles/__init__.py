"""Device profiles as data: the register maps of bollard controller models and the points of
other device models, one TOML file per model in this package (`generic_bollard.toml`,
`vendor_b.toml`, `power_meter_generic.toml`, ...). A new vendor is a new file here, no code.

Owns finding the shipped profiles and reading one into its schema by its `kind`
(`edge_config.devices_modbus.BollardProfile` or `PointsProfile`). It does not merge a device's
overrides into a profile (the device models do) and does not talk to any device.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources
from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

from edge_config.devices_modbus import BollardProfile, PointsProfile

Profile = Annotated[BollardProfile | PointsProfile, Field(discriminator="kind")]
_PROFILE = TypeAdapter[BollardProfile | PointsProfile](Profile)

PROFILES = resources.files(__name__)
"""Where the profile files are: this package's directory (inside the wheel, as package data)."""


class ProfileError(ValueError):
    """A profile is unknown or its file is not a valid profile."""


def profile_names() -> list[str]:
    """Names of the shipped profiles (file names without `.toml`)."""
    return sorted(
        entry.name.removesuffix(".toml")
        for entry in PROFILES.iterdir()
        if entry.name.endswith(".toml")
    )


@functools.cache
def load_profile(name: str) -> BollardProfile | PointsProfile:
    """The shipped profile `name`; cached, as profiles are read-only package data."""
    known = profile_names()
    if name not in known:
        raise ProfileError(f"no profile {name!r} is shipped (known: {', '.join(known)})")
    text = PROFILES.joinpath(f"{name}.toml").read_text(encoding="utf-8")
    try:
        profile = _PROFILE.validate_python(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ProfileError(f"profile file {name}.toml is broken: {exc}") from None
    if profile.name != name:
        raise ProfileError(f"profile file {name}.toml says name = {profile.name!r}")
    return profile


def bollard_profile(name: str) -> BollardProfile:
    profile = load_profile(name)
    if not isinstance(profile, BollardProfile):
        raise ProfileError(f"profile {name!r} is a {profile.kind} profile, not a bollard's")
    return profile


def points_profile(name: str) -> PointsProfile:
    profile = load_profile(name)
    if not isinstance(profile, PointsProfile):
        raise ProfileError(f"profile {name!r} is a {profile.kind} profile, not a points one")
    return profile
