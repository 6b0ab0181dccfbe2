"""Ed25519 key files: creating a key pair, and reading private and public keys.

Owns the on-disk forms: a private key is PEM PKCS#8 in a file only its owner can read (0600,
created exclusively, never overwritten); a public key is the 32 raw bytes in base64 (one line,
easy to paste into TOML), or a PEM file. `schoolgate keys` and `gateway.security` use it.
It does not sign or verify anything (that is `gateway.core.auth`) nor decide which keys are trusted.

Importing it loads `cryptography` (about 7 MB resident), so its users import it where keys are
used (`gateway.security.load_security`, the `keys` and `console` commands), never at start-up.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

KEY_ID: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
"""Key ids follow the config's id rule (edge_config.models.Ident): they are written in TOML and
MQTT payloads, and they name the key files."""

_RAW_PUBLIC_BYTES: Final = 32


class KeyFileError(Exception):
    """A key file cannot be used: missing, unreadable, open to others, or not an Ed25519 key."""


@dataclass(frozen=True, slots=True)
class KeyPairFiles:
    private_key: Path
    public_key: Path
    public_b64: str


def public_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    # O_EXCL: never replace an existing key; the mode is set at creation, so the private key is
    # never readable by others, not even for a moment.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, mode)  # the umask may have removed bits we asked for; set exactly


def write_key_pair(out_dir: Path, key_id: str) -> KeyPairFiles:
    """Create `<key_id>.key` (0600) and `<key_id>.pub` in `out_dir`; refuse if either exists."""
    if not KEY_ID.match(key_id):
        raise KeyFileError(
            f"key id {key_id!r}: use lower-case letters, digits, _ and - (at most 63)"
        )
    key_path = out_dir / f"{key_id}.key"
    pub_path = out_dir / f"{key_id}.pub"
    for path in (key_path, pub_path):
        if path.exists():
            raise KeyFileError(f"{path} exists; refusing to overwrite a key")
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = public_b64(private_key.public_key())
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        _write_exclusive(key_path, pem, 0o600)
        _write_exclusive(pub_path, (pub + "\n").encode("ascii"), 0o644)
    except FileExistsError as exc:  # created between our check and our write
        raise KeyFileError(f"{exc.filename} exists; refusing to overwrite a key") from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {exc.filename}: {exc.strerror or exc}") from None
    return KeyPairFiles(key_path, pub_path, pub)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key in PEM file `path`, refused if group or others may access it."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(
                f"{path} is accessible by others (mode {stat.S_IMODE(mode):04o}); "
                f"run: chmod 600 {path}"
            )
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def parse_public_b64(text: str) -> Ed25519PublicKey | None:
    """An Ed25519 public key from base64 of its 32 raw bytes, or None if `text` is not that."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) != _RAW_PUBLIC_BYTES:
        return None
    return Ed25519PublicKey.from_public_bytes(raw)


def load_public_key(value: str, base_dir: Path) -> Ed25519PublicKey:
    """`value` is base64 raw key bytes, or a path (relative to `base_dir`) to a PEM public key
    or to a `.pub` file written by `write_key_pair`."""
    inline = parse_public_b64(value)
    if inline is not None:
        return inline
    path = base_dir / value
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(
            f"{value!r} is neither a base64 Ed25519 public key nor a readable file "
            f"({exc.strerror or exc})"
        ) from None
    from_pub = parse_public_b64(data.decode("ascii", errors="replace"))
    if from_pub is not None:
        return from_pub
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path} is not a PEM or base64 public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def config_snippet(role: str, key_id: str, files: KeyPairFiles) -> str:
    """What to paste into schoolgate.toml for a new key (printed by `schoolgate keys new`)."""
    if role == "gateway":
        return (
            "# in this gateway's schoolgate.toml:\n"
            "[security]\n"
            f'gateway_key_file = "{files.private_key.resolve()}"\n'
            f'gateway_key_id = "{key_id}"\n'
            f"# receivers verify this gateway's events with signer {key_id!r}, "
            f"public key {files.public_b64}\n"
        )
    return (
        "# in each gateway's schoolgate.toml that takes commands from this receiver:\n"
        "[[security.trusted_keys]]\n"
        f'id = "{key_id}"\n'
        f'public_key = "{files.public_b64}"\n'
        'commands = ["acknowledge", "replay"]  # only what this receiver may do; ["*"] for all\n'
    )
