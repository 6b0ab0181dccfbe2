"""The gateways' public keys a receiver verifies payloads with, read from a directory or a file.

Owns `--gateway-keys PATH`: a directory holds one public key per file, `<key id>.pub` (what
`schoolgate keys new --role gateway` and the fleet simulator write) or `<key id>.pem`, the key id
being the file name without its suffix; a file holds one key a line, `KEY_ID BASE64` or
`KEY_ID=BASE64`, with `#` comments and blank lines. A city's receiving centre keeps thousands
of gateway keys this way instead of one `--gateway-key` flag per gateway. Anything that cannot be
used is refused with `KeyRingError` naming the file (and line): a key silently skipped would
turn every payload of that gateway into an `unknown_key` refusal at the worst moment.
It does not verify anything (`gateway.core.auth`) nor decide which gateways are expected.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.core import keys

_SUFFIXES: Final = (".pub", ".pem")
_LINE: Final = re.compile(r"^([^\s=]+)(?:\s*=\s*|\s+)(\S+)$")


class KeyRingError(Exception):
    """A key directory or file cannot be used as given."""


def _from_directory(directory: Path) -> dict[str, Ed25519PublicKey]:
    found: dict[str, Ed25519PublicKey] = {}
    for path in sorted(directory.iterdir()):
        if path.suffix not in _SUFFIXES or not path.is_file():
            continue  # private keys (.key) and anything else beside them are not read
        key_id = path.stem
        if not keys.KEY_ID.match(key_id):
            raise KeyRingError(f"{path}: {key_id!r} is not a key id (lower-case, digits, _ -)")
        if key_id in found:
            raise KeyRingError(f"{path}: key id {key_id!r} given twice (.pub and .pem)")
        try:
            found[key_id] = keys.load_public_key(path.name, directory)
        except keys.KeyFileError as exc:
            raise KeyRingError(str(exc)) from None
    if not found:
        raise KeyRingError(f"{directory}: no *.pub or *.pem public key files")
    return found


def _from_file(path: Path) -> dict[str, Ed25519PublicKey]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyRingError(f"cannot read {path}: {exc}") from None
    found: dict[str, Ed25519PublicKey] = {}
    for number, raw_line in enumerate(text.splitlines(), start=1):
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        match = _LINE.match(line)
        key_id = match.group(1) if match else ""
        key = keys.parse_public_b64(match.group(2)) if match else None
        if not keys.KEY_ID.match(key_id) or key is None:
            raise KeyRingError(f"{path} line {number}: give KEY_ID BASE64 (or KEY_ID=BASE64)")
        if key_id in found:
            raise KeyRingError(f"{path} line {number}: key id {key_id!r} given twice")
        found[key_id] = key
    if not found:
        raise KeyRingError(f"{path}: no keys")
    return found


def load_gateway_keys(path: Path) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key from a directory of key files or one file of lines."""
    if path.is_dir():
        return _from_directory(path)
    if not path.exists():
        raise KeyRingError(f"{path}: no such file or directory")
    return _from_file(path)
