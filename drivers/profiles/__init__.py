"""Device profiles as data: the register maps of bollard controller models, one TOML file per
model in this package (`generic_bollard.toml`, `vendor_b.toml`, ...). A new vendor is a new file
here, no code.

Owns finding the shipped profiles and reading one into its schema
(`edge_config.devices_modbus.BollardProfile`). It does not merge a device's overrides into a
profile (`BollardDevice.register_map` does) and does not talk to any device.
"""

from __future__ import annotations

import functools
import tomllib
from importlib import resources

from pydantic import ValidationError

from edge_config.devices_modbus import BollardProfile

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
def load_profile(name: str) -> BollardProfile:
    """The shipped profile `name`; cached, as profiles are read-only package data."""
    known = profile_names()
    if name not in known:
        raise ProfileError(f"no profile {name!r} is shipped (known: {', '.join(known)})")
    text = PROFILES.joinpath(f"{name}.toml").read_text(encoding="utf-8")
    try:
        profile = BollardProfile.model_validate(tomllib.loads(text))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise ProfileError(f"profile file {name}.toml is broken: {exc}") from None
    if profile.name != name:
        raise ProfileError(f"profile file {name}.toml says name = {profile.name!r}")
    return profile
