"""The host's copies of node keys: $CYPHY_HOME/keys/NAME.key (hex, mode 0600).

`cyphy provision` writes a node's key here under the node's name (its config `name`);
`cyphy set/get/monitor` and cyphy.connect() find it by the name the node gives in its
HELLO. A key is never printed: cyphy_node.proto.Key's repr hides it.

A key change is two-phase, so that no power cut or killed process strands a node with a
key no host holds (docs/protocol.md, "Keys and provisioning"):

- NAME.key is the primary key: the one the node's /secrets.json was last verified to hold.
- NAME.pending holds the other keys the node may be using, one "HEX TIME_NS" a line: a new
  key staged *before* it is written to the node (stage()), and the previous primary, which
  the node keeps running until it reboots (commit() moves it here).
- Every lookup (load_key_hexes) offers all of them; the node's HELLO tag says which one it
  runs. When a session verifies with one, confirm() drops every key older than it (a key's
  time: when it was staged, or the primary's file time); the confirmed one becomes primary
  if it is newer than the primary.

Every file is written to a temporary file (mode 0600), flushed to disk, renamed over the
old one, and the directory flushed: a host killed at any moment leaves each file whole.
"""

from __future__ import annotations

import os
import re
import time
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


def pending_path(name: str, home: Path | None = None) -> Path:
    return key_path(name, home).with_suffix(".pending")


def _primary(name: str, home: Path | None) -> tuple[str, int] | None:
    """(hex, time_ns) of NAME.key, or None."""
    path = key_path(name, home)
    try:
        text = path.read_text()
        t = path.stat().st_mtime_ns
    except OSError:
        return None
    try:
        return normalise_hex(text), t
    except ValueError:
        return None


def _pending(name: str, home: Path | None) -> list[tuple[str, int]]:
    """NAME.pending's (hex, time_ns) entries, oldest first; unusable lines are skipped."""
    try:
        text = pending_path(name, home).read_text()
    except (OSError, KeyStoreError):
        return []
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        try:
            out.append((normalise_hex(parts[0]), int(parts[1])))
        except ValueError:
            continue
    return sorted(out, key=lambda e: e[1])


def load_key_hexes(name: str, home: Path | None = None) -> list[str]:
    """Every key this host holds for a node name: the primary first, then the pending
    ones, newest first (empty if none)."""
    try:
        key_path(name, home)
    except KeyStoreError:
        return []
    out = []
    p = _primary(name, home)
    if p is not None:
        out.append(p[0])
    for h, _ in reversed(_pending(name, home)):
        if h not in out:
            out.append(h)
    return out


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
    _write(path, text + "\n", name)
    return path


def _write(path: Path, text: str | None, name: str) -> None:
    """path's new content (None: remove it), atomically and flushed to disk."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        if text is None:
            try:
                path.unlink()
            except FileNotFoundError:
                return
        else:
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        d = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(d)  # the rename itself survives a power cut
        finally:
            os.close(d)
    except OSError as e:
        raise KeyStoreError(f"cannot keep the key for {name} in {path}: {e.strerror or e}") from None


def _write_pending(name: str, entries: list[tuple[str, int]], home: Path | None) -> None:
    seen: dict[str, int] = {}
    for h, t in entries:
        seen[h] = min(t, seen.get(h, t))
    text = "".join(f"{h} {t}\n" for h, t in sorted(seen.items(), key=lambda e: e[1]))
    _write(pending_path(name, home), text or None, name)


def _hex(name: str, key: str | bytes) -> str:
    text = key.hex() if isinstance(key, (bytes, bytearray)) else key
    try:
        return normalise_hex(text)
    except ValueError as e:
        raise KeyStoreError(f"key for {name}: {e}") from None


def stage(name: str, key: str | bytes, home: Path | None = None) -> None:
    """Keep a key the node is about to get (before it is written to the node), next to
    the keys already held for the name."""
    h = _hex(name, key)
    if h in load_key_hexes(name, home):
        return
    _write_pending(name, _pending(name, home) + [(h, time.time_ns())], home)


def commit(name: str, key: str | bytes, home: Path | None = None) -> None:
    """The node's /secrets.json verifiably holds key: it becomes the primary. The previous
    primary stays, pending, until a session confirms the new key: the node runs the old
    one until it reboots."""
    h = _hex(name, key)
    prim = _primary(name, home)
    if prim is not None and prim[0] == h:
        return
    pend = _pending(name, home)
    if prim is not None:
        _write_pending(name, pend + [prim] + [(h, time.time_ns())], home)  # all kept meanwhile
    save_key(name, h, home)
    _write_pending(name, [e for e in pend + ([prim] if prim else []) if e[0] != h], home)


def confirm(name: str, key: str | bytes, home: Path | None = None) -> None:
    """A session's HELLO verified with key: the node runs it. Keys older than it are
    dropped (the node cannot go back to them: any later key was staged here first); it
    becomes the primary unless the primary is newer."""
    h = _hex(name, key)
    prim = _primary(name, home)
    pend = _pending(name, home)
    if prim is not None and prim[0] == h:
        t = prim[1]
    else:
        times = [tt for hh, tt in pend if hh == h]
        if not times:
            return  # not a key of this store (given by the user): nothing to confirm
        t = times[0]
    keep = [e for e in pend if e[1] >= t]
    if prim is None or (prim[0] != h and prim[1] < t):
        save_key(name, h, home)  # newer than the primary: it is the primary now
        keep = [e for e in keep if e[0] != h]
    if keep != pend:
        _write_pending(name, keep, home)
