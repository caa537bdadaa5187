"""Sync the firmware tree (cyphy.firmware) to a node, sending only what changed.

    with Device.open("sim://oven") as dev:
        result = deploy(dev)                   # target detected from the node
        result["sent"], result["kb_per_s"]

Steps (docs/deploy.md):
1. one exec hashes every file of the tree already on the node (and everything under
   /lib/cyphy_node and /lib/boards);
2. files whose SHA-256 differs are sent, each to PATH.tmp, read back and hashed on the node;
3. one exec renames every PATH.tmp over PATH and removes files of the managed directories
   that the tree does not have any more (and sources that would shadow a .mpy), so the
   node switches from the old tree to the new one in a few milliseconds; a power loss
   before that leaves the old firmware whole (a later deploy cleans up the .tmp files).

Ctrl-C (KeyboardInterrupt) at any moment stops the deploy within a second or so and leaves
the node's console free (cyphy.device stops a transfer, cyphy.rawrepl an exec); the
renames of step 3 take milliseconds and are finished first, so every file is either old or
new. state["phase"] says how far it got, and interrupted() says it in words.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from cyphy import firmware
from cyphy.device import Device, DeviceError


@dataclass
class Action:
    path: str
    action: str      # "send", "skip" or "delete"
    reason: str      # new, changed, same, forced; stale, shadows, leftover
    size: int = 0    # bytes of the file (sent or kept)
    sha256: str = ""

    def as_dict(self) -> dict:
        return {"path": self.path, "action": self.action, "reason": self.reason, "bytes": self.size}


def _parents(path: str) -> list[str]:
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[:i]) for i in range(1, len(parts) + 1)]


def plan(dev: Device, target: str | None = None, force: bool = False) -> tuple[str, list, list[Action], list[str]]:
    """(target, built files, actions, directories to remove) for this node."""
    info = dev.info()
    if target is None:
        target = info.get("target")
        if target is None:
            raise DeviceError(f"{dev.port}: cannot tell the board from the node "
                              f"({info.get('machine')!r}); give --target esp32 or --target sim")
    built = firmware.build(target, info)
    want = {b.dst: b for b in built}
    shadows = [b.dst[:-4] + ".py" for b in built if b.dst.endswith(".mpy")]
    leftovers = [p + ".tmp" for p in want]
    have = dev.hashes(paths=list(want) + shadows + leftovers, dirs=firmware.MANAGED_DIRS)
    actions: list[Action] = []
    for b in built:
        old = have.get(b.dst)
        if old is None:
            actions.append(Action(b.dst, "send", "new", len(b.data), b.sha256))
        elif force:
            actions.append(Action(b.dst, "send", "forced", len(b.data), b.sha256))
        elif old[1] != b.sha256:
            actions.append(Action(b.dst, "send", "changed", len(b.data), b.sha256))
        else:
            actions.append(Action(b.dst, "skip", "same", len(b.data), b.sha256))
    needed_dirs = {d for p in want for d in _parents(p)}
    stale_dirs = []
    for path, v in sorted(have.items()):
        if path in want:
            continue
        if v is None:  # a directory under a managed one
            if path not in needed_dirs and path not in firmware.MANAGED_DIRS:
                stale_dirs.append(path)
            continue
        if path in shadows:
            reason = "shadows"
        elif path.endswith(".tmp"):
            reason = "leftover"
        else:
            reason = "stale"
        actions.append(Action(path, "delete", reason, v[0], v[1]))
    stale_dirs.sort(key=lambda d: -d.count("/"))  # deepest first
    return target, built, actions, stale_dirs


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Ctrl-C waits until the block is done (milliseconds), then raises KeyboardInterrupt.
    Only in the main thread (elsewhere Python delivers no SIGINT anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    old = signal.signal(signal.SIGINT, lambda sig, frame: got.append(sig))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
    if got:
        raise KeyboardInterrupt


def deploy(dev: Device, target: str | None = None, dry_run: bool = False, force: bool = False,
           reset: bool = False, progress: Callable[[int, int, str], None] | None = None,
           state: dict | None = None) -> dict:
    """Deploy the firmware tree; returns the report (see cyphy deploy --json).
    progress(done_bytes, total_bytes, path) is called as file bytes go out. state (a dict
    the caller keeps) tells an interrupted caller how far it got: "phase" is "plan"
    (nothing written), "send" ("sent": the PATH.tmp files written so far; every PATH still
    old), "switched" ("replaced": every PATH new; stale files may remain), "done"."""
    if state is None:
        state = {}
    state.update(phase="plan", sent=[], replaced=[])
    t0 = time.monotonic()
    target, built, actions, stale_dirs = plan(dev, target, force)
    data = {b.dst: b.data for b in built}
    send = [a for a in actions if a.action == "send"]
    delete = [a for a in actions if a.action == "delete"]
    total = sum(a.size for a in send)
    wire = 0
    t_send = 0.0
    if not dry_run:
        state["phase"] = "send"
        if send:
            dev.mkdirs({d for a in send for d in _parents(a.path)})
        done = 0
        for a in send:
            def cb(n: int, a: Action = a, base: int = done) -> None:
                if progress is not None:
                    progress(base + n, total, a.path)

            state["sent"].append(a.path)  # its PATH.tmp is (being) written
            r = dev.send(a.path + ".tmp", data[a.path], cb)
            wire += r["wire"]
            t_send += r["seconds"]
            done += a.size
            if progress is not None:
                progress(done, total, a.path)
        # the switch: every rename in one exec, not cut short by Ctrl-C (milliseconds)
        with sigint_deferred():
            dev.rename([(a.path + ".tmp", a.path) for a in send])
            state["phase"] = "switched"
            state["replaced"] = [a.path for a in send]
        if delete or stale_dirs:
            dev.remove([a.path for a in delete], stale_dirs)
        if send or delete or stale_dirs:
            after = dev.hashes(paths=[a.path for a in send])
            for a in send:
                got = after.get(a.path)
                if got is None or got[1] != a.sha256:
                    raise DeviceError(f"{dev.port}: {a.path} does not have the content sent after the rename")
    seconds = time.monotonic() - t0
    line = dev.line_rate()
    kbps = total / t_send / 1000 if t_send > 0 else None
    report = {
        "port": dev.port,
        "target": target,
        "dry_run": dry_run,
        "files": [a.as_dict() for a in actions],
        "sent": len(send),
        "skipped": sum(1 for a in actions if a.action == "skip"),
        "deleted": len(delete),
        "removed_dirs": stale_dirs,
        "bytes": total,
        "wire_bytes": wire,
        "seconds": round(seconds, 3),
        "transfer_seconds": round(t_send, 3),
        "kb_per_s": round(kbps, 2) if kbps else None,
        "line_kb_per_s": round(line / 1000, 2) if line else None,
        "reset": False,
    }
    if reset and not dry_run:
        report["boot"] = boot_lines(dev.reset())
        report["reset"] = True
    state["phase"] = "done"
    return report


def interrupted(state: dict) -> str:
    """What the node holds after a deploy stopped by Ctrl-C (state from deploy())."""
    phase = state.get("phase", "plan")
    if phase == "plan":
        return "nothing on the node was changed"
    if phase == "send":
        n = len(state.get("sent", []))
        if not n:
            return "the node keeps its previous files (nothing was replaced)"
        return (f"the node keeps its previous files (nothing was replaced); {n} .tmp "
                f"file{'s' if n != 1 else ''} left there, which the next deploy removes")
    n = len(state.get("replaced", []))
    if phase == "switched":
        return (f"the new files are in place ({n} replaced, each whole); stale files may "
                f"remain: run cyphy deploy again to finish")
    return "the deploy had finished"


def boot_lines(text: str) -> list[str]:
    """The firmware's own lines ("cyphy: ...") and any traceback from a boot's output."""
    out = []
    for line in text.replace("\r", "").split("\n"):
        if line.startswith(("cyphy:", "Traceback", "  File ")) or "Error" in line:
            out.append(line.strip())
    return out
