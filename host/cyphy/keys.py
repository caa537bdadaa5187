"""The host's copies of node keys: $CYPHY_HOME/keys/NAME.key (hex, mode 0600).

`cyphy provision` writes a node's key here under the node's name (its config `name`);
`cyphy set/get/monitor` and cyphy.connect() find it by the name the node gives in its
HELLO. A key is never printed: cyphy_node.proto.Key's repr hides it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from . import codec as P

# the config's node-name rule (docs/config.md): safe as a file name
NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")


class KeyStoreError(Exception):
    """A key file that cannot be read, written or used; the message says which."""


def keys_dir(home: Path | None = None) -> Path:
    from cyphy.sim.nodes import cyphy_home

    return (home or cyphy_home()) / "keys"


def key_path(name: str, home: Path | None = None) -> Path:
    if not NAME_RE.match(name or ""):
        raise KeyStoreError(f"invalid node name {name!r}: 1-32 letters, digits, '_' or '-', "
                            f"starting with a letter")
    return keys_dir(home) / f"{name}.key"


def normalise_hex(text: str) -> str:
    """A key's hex text, checked (16 to 64 bytes) and lower-case; ValueError if unusable."""
    t = "".join(text.split()).lower()
    P.key_from_hex(t)  # raises ValueError with the reason
    return t


def load_key_hex(name: str, home: Path | None = None) -> str | None:
    """The stored key's hex for a node name, or None if there is none (or it is unusable)."""
    try:
        text = key_path(name, home).read_text()
    except (OSError, KeyStoreError):
        return None
    try:
        return normalise_hex(text)
    except ValueError:
        return None


def load_key(name: str, home: Path | None = None) -> P.Key | None:
    """The key `cyphy provision` kept for a node name, or None."""
    h = load_key_hex(name, home)
    return P.key_from_hex(h) if h else None


def save_key(name: str, key: str | bytes, home: Path | None = None) -> Path:
    """Keep a node's key (hex text or raw bytes) as $CYPHY_HOME/keys/NAME.key: written to a
    temporary file created with mode 0600, then renamed over the old one."""
    text = key.hex() if isinstance(key, (bytes, bytearray)) else key
    try:
        text = normalise_hex(text)
    except ValueError as e:
        raise KeyStoreError(f"key for {name}: {e}") from None
    path = key_path(name, home)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (text + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        raise KeyStoreError(f"cannot keep the key for {name} in {path}: {e.strerror or e}") from None
    return path
