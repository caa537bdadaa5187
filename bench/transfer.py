"""Section 3, serial transfer: the firmware tree (cyphy.firmware: the compiled .mpy files,
main.py and boot.py) put on a sim node whose UART is emulated at 115200 baud (8N1:
11.52 KB/s of payload at most), by three tools, each from a blank flash:

- cyphy deploy --force (binary stream with flow control, deflate, each file verified
  by SHA-256 and renamed into place);
- mpremote connect PORT fs cp -r lib main.py boot.py :   (one invocation);
- ampy --port PORT put ...   (one invocation per top-level entry: ampy takes one).

Each figure is the wall time of the whole command(s), tool start-up and REPL entry
included, for the file bytes the node ends up with (checked afterwards in the node's
flash image). KB = 1000 bytes. cyphy deploy compresses, so its rate of file bytes can
exceed the line rate. Quick mode puts a subset of the tree (about 16 KB) with every tool.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import common as C

BAUD = 115200
LINE_KBPS = BAUD / 10 / 1000  # 8N1: ten bits a byte
QUICK_FILES = ("/lib/cyphy_node/sched.mpy", "/lib/cyphy_node/pid.mpy",
               "/lib/cyphy_node/fixed.mpy", "/lib/cyphy_node/blocks.mpy",
               "/lib/cyphy_node/io.mpy", "/lib/cyphy_node/faults.mpy", "/boot.py", "/main.py")

# `cyphy deploy` sends the whole tree; to put the same subset as the other tools in quick
# mode, the command runs with cyphy.firmware.files() narrowed to it (same process start-up
# and code path as the installed command).
DEPLOY = """\
import sys, json
from cyphy import firmware
keep = set(json.loads(sys.argv[1]))
if keep:
    _files = firmware.files
    firmware.files = lambda target='sim': [f for f in _files(target) if f.dst in keep]
from cyphy.cli import main
sys.argv = ['cyphy', 'deploy', '--port', sys.argv[2], '--force', '--json', '--target', 'sim']
main()
"""


def stage(tree: dict[str, bytes], root: Path) -> None:
    for path, data in tree.items():
        p = root / path.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


def _run(args: list[str], cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{Path(args[0]).name} exited {r.returncode}: "
                           f"{(r.stderr or r.stdout).strip()[-300:]}")
    return r


def cyphy_deploy(port: str, files: list[str], quick: bool) -> dict:
    try:
        import cyphy.deploy  # noqa: F401
    except ImportError:
        raise LookupError("cyphy deploy not available yet") from None
    r = _run([sys.executable, "-c", DEPLOY, json.dumps(files if quick else []), port])
    rep = json.loads(r.stdout)
    return {"wire_bytes": rep.get("wire_bytes"), "transfer_seconds": rep.get("transfer_seconds")}


def mpremote(port: str, root: Path) -> dict:
    tops = sorted(p.name for p in root.iterdir())
    _run([str(C.BIN / "mpremote"), "connect", port, "fs", "cp", "-r", "-f", *tops, ":"], cwd=root)
    return {}


def ampy(port: str, root: Path) -> dict:
    for p in sorted(root.iterdir()):
        _run([str(C.BIN / "ampy"), "--port", port, "put", str(p), "/" + p.name])
    return {}


TOOLS = [("cyphy", "cyphy deploy --force"), ("mpremote", "mpremote fs cp -r"),
         ("ampy", "ampy put")]


def run(ctx) -> list[dict]:
    from cyphy import flashimage

    full = C.firmware_tree()
    tree = {k: v for k, v in full.items() if k in QUICK_FILES} if ctx.quick else full
    nbytes = sum(map(len, tree.values()))
    blank = C.flash_image(None, tree=False)
    root = ctx.lab.root / "stage"
    stage(tree, root)
    out: list[dict] = []
    name = "xfer"
    for system, tool in TOOLS:
        params = {"tool": tool, "baud": BAUD, "files": len(tree), "bytes": nbytes}
        ctx.log(f"transfer: {tool}, {len(tree)} files, {nbytes} B at {BAUD} baud")
        try:
            ctx.lab.stop(name)
            ctx.lab.write_image(name, blank)
            st = ctx.lab.start(name, baud=BAUD)
            port = st["port"]
            t0 = time.monotonic()
            if system == "cyphy":
                extra = cyphy_deploy(port, list(tree), ctx.quick)
            elif system == "mpremote":
                extra = mpremote(port, root)
            else:
                extra = ampy(port, root)
            secs = time.monotonic() - t0
            ctx.lab.stop(name)
            got = flashimage.read_vfs(ctx.lab.node(name).image)
            bad = [p for p, d in tree.items() if got.get(p) != d]
            if bad:
                raise RuntimeError(f"{len(bad)} file(s) not on the node afterwards, e.g. {bad[0]}")
        except Exception as e:  # noqa: BLE001 - recorded, the other tools go on
            ctx.error(e)
            reason = str(e) if isinstance(e, LookupError) else C.why(e)
            ctx.log(f"transfer: {tool}: {reason}")
            out.append(C.skipped("deploy_kbytes_per_s", "KB/s", reason, system, **params))
            continue
        finally:
            ctx.lab.stop(name)
        kbps = nbytes / secs / 1000
        if extra.get("wire_bytes"):
            params["wire_bytes"] = extra["wire_bytes"]
        out += [C.record("deploy_kbytes_per_s", round(kbps, 2), "KB/s", system, **params),
                C.record("deploy_line_rate_pct", round(100 * kbps / LINE_KBPS, 1), "%", system,
                         **params),
                C.record("deploy_seconds", round(secs, 2), "s", system, **params)]
    return out
