"""User blocks: the user's own MicroPython in the control pass (docs/user-blocks.md).

A config's block `{"type": "user", "module": "mypi", ...}` names a file `mypi.py` next to
the config; on the node it is `/lib/cyphy_user/mypi.mpy`, imported as `cyphy_user.mypi`
(firmware/lib/cyphy_node/graph.py, UserBlock). This module finds those files, gives what
`cyphy provision` writes to the node, and runs the check `cyphy check` makes before any of
it reaches a node:

- allocation: the block's tick run over inputs swept across their ranges, under
  `micropython.heap_lock()`, on the 32-bit MicroPython (cyphy.mp32: an int beyond 31 bits
  allocates there, as on ESP32) and on the Unix port (floats and frames too big for the C
  stack allocate there, as on ESP32; the WebAssembly port hides both). A MemoryError
  names the line of the module where it happened, from the traceback;
- an exception in tick (it would latch a fault on the node) is refused the same way;
- its time per tick at the chip's speed: measured by cyphy.check with the node booted on
  the 32-bit port (pystones-scaled, like the loops), against the block's `budget_us`.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

NODE_DIR = "/lib/cyphy_user"
SWEEP = 7            # values per input, across its range
TICKS = 400          # ticks under heap_lock per port


class UserBlockError(Exception):
    """A user block's module cannot be used (missing, unreadable, not compilable)."""


@dataclass
class Finding:
    block: str
    module: str
    ok: bool
    why: str = ""                   # what is wrong, one line, naming the line if known
    line: int | None = None
    port: str = ""                  # which MicroPython showed it: "32-bit" or "unix"
    started: bool = True            # False: Block(params, dt) or the import failed


def blocks(cfg: dict) -> list[dict]:
    """The config's user blocks (as given, or validated)."""
    return [b for b in cfg.get("blocks") or [] if isinstance(b, dict) and b.get("type") == "user"]


def sources(cfg: dict, base: Path | None) -> dict[str, Path]:
    """module name -> its source file: <module>.py in base (the config file's directory)."""
    out: dict[str, Path] = {}
    for i, b in enumerate(cfg.get("blocks") or []):
        if not isinstance(b, dict) or b.get("type") != "user" or not isinstance(b.get("module"), str):
            continue
        m = b["module"]
        where = f"blocks[{i}].module"
        if base is None:
            raise UserBlockError(f"{where}: user block \"{b.get('name')}\" needs its module "
                                 f"{m}.py: give the config as a file (the module sits next to it)")
        p = Path(base) / f"{m}.py"
        if not p.is_file():
            raise UserBlockError(f"{where}: no file {p} (a user block's module is <module>.py "
                                 f"next to the config)")
        out[m] = p
    return out


def node_files(cfg: dict, base: Path | None) -> dict[str, bytes]:
    """What goes on the node for the config's user blocks: {node path: .mpy bytes}."""
    from cyphy import firmware

    out = {}
    for m, p in sources(cfg, base).items():
        try:
            out[f"{NODE_DIR}/{m}.mpy"] = firmware.compile_mpy(p)
        except firmware.FirmwareError as e:
            raise UserBlockError(f"{p}: does not compile: {str(e).splitlines()[0]}") from None
    return out


def _ranges(cfg: dict) -> dict[str, tuple[float, float]]:
    """Each signal's range (engineering units) as the validated config gives it."""
    r: dict[str, tuple[float, float]] = {}
    for ch in cfg.get("channels", []):
        if "valid" in ch:
            r[ch["name"]] = tuple(ch["valid"])
        elif "range" in ch:
            r[ch["name"]] = tuple(ch["range"])
    for lp in cfg.get("loops", []):
        c = lp["controller"]
        if "out_min" in c:
            r[lp["name"]] = (c["out_min"], c["out_max"])
    for b in cfg.get("blocks") or []:
        rng = b.get("range") or (-1000, 1000)
        r[b["name"]] = tuple(rng)
        for o in b.get("outputs", []) if b["type"] == "user" else []:
            r[f"{b['name']}.{o}"] = tuple(rng)
    return r


def _sweep(cfg: dict, b: dict) -> list[list[int]]:
    """Rows of input values (milli-units): each input walks its range's SWEEP points, the
    inputs out of step with one another, ends included."""
    rng = _ranges(cfg)
    cols = []
    for n in b["inputs"]:
        lo, hi = rng.get(n, (-1000, 1000))
        cols.append([round((lo + (hi - lo) * k / (SWEEP - 1)) * 1000) for k in range(SWEEP)])
    rows = []
    for k in range(SWEEP * 3):
        rows.append([c[(k * (i + 1) + i) % SWEEP] for i, c in enumerate(cols)])
    return rows


SNIPPET = """
import sys, micropython
from array import array
try:
    sys.path.insert(0, ROOT)
except NameError:
    pass
def line():
    m = sys.modules.get("cyphy_user." + MODULE)
    return m._cy_line[0] if m is not None else 0
try:
    mod = getattr(__import__("cyphy_user." + MODULE), MODULE)
    blk = mod.Block(PARAMS, DT)
except Exception as e:
    print("@cyphy-user start-fail line %d" % line())
    sys.print_exception(e)
    raise SystemExit(0)
x = array("i", [0] * NIN)
y = array("i", [0] * NOUT)
rows = [array("i", r) for r in ROWS]
try:
    for r in rows:                       # warm up outside the lock (first-call caches)
        x[:] = r
        blk.tick(x, y)
except Exception as e:
    print("@cyphy-user fail line %d" % line())
    sys.print_exception(e)
    raise SystemExit(0)
def run():
    k = 0
    while k < TICKS:
        r = rows[k % len(rows)]
        i = 0
        while i < NIN:
            x[i] = r[i]
            i += 1
        blk.tick(x, y)
        k += 1
micropython.heap_lock()
try:
    run()
    err = None
except Exception as e:
    err = e
micropython.heap_unlock()
if err is not None:
    # under the lock a traceback cannot be stored: the module's marker says the line
    print("@cyphy-user fail line %d" % line())
    sys.print_exception(err)
    raise SystemExit(0)
# heap_lock hides a frame MicroPython heap-allocates (it then falls back to the C stack):
# count every byte handed out, where the port can (Unix); the marker after the growth is
# the first statement of the function whose frame it was
total = getattr(micropython, "mem_total", None)
if total is not None:
    cy = sys.modules["cyphy_user." + MODULE]._cy_line
    def counted():
        cy[1] = total()
        cy[2] = 0
        m0 = total()
        run()
        return total() - m0
    counted()
    if counted():
        print("@cyphy-user frame line %d" % cy[2])
        raise SystemExit(0)
print("@cyphy-user ok")
"""


# _cy_line: [the line running, mem_total at the last marker, the first marker's line after
# mem_total grew (0: none)]; list stores of small ints allocate nothing
MARKER = """
import micropython as _cy_mp
_cy_line = [0, 0, 0]
_cy_total = getattr(_cy_mp, "mem_total", None)
def _cy_at(n):
    _cy_line[0] = n
    if _cy_total is not None:
        t = _cy_total()
        if t != _cy_line[1]:
            if _cy_line[2] == 0:
                _cy_line[2] = n
            _cy_line[1] = t
"""


def instrumented(text: str) -> str:
    """The module with `_cy_at(N)` before every statement inside its functions (a call
    that stores small ints into a list: it allocates nothing), so that when the tick
    raises under heap_lock (where MicroPython cannot record a traceback) the marker still
    names the statement that ran, and the first statement after an unseen allocation (a
    heap-allocated frame) is known. Only for the check; the node gets the module as
    written."""
    import ast

    tree = ast.parse(text)

    def mark(body: list[ast.stmt]) -> list[ast.stmt]:
        out: list[ast.stmt] = []
        for st in body:
            for field in ("body", "orelse", "finalbody"):
                if isinstance(getattr(st, field, None), list) and not isinstance(st, ast.ClassDef):
                    setattr(st, field, mark(getattr(st, field)))
            if isinstance(st, ast.Try):
                for h in st.handlers:
                    h.body = mark(h.body)
            out.append(ast.parse(f"_cy_at({st.lineno})").body[0])
            out.append(st)
        return out

    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            node.body = mark(node.body)
    head = ast.parse(MARKER).body
    tree.body = head + tree.body
    return ast.unparse(ast.fix_missing_locations(tree))



def _snippet(cfg: dict, b: dict, dt: float) -> str:
    rows = _sweep(cfg, b) or [[]]
    return (f"import json\nMODULE = {b['module']!r}\n"
            f"PARAMS = json.loads({json.dumps(b.get('params') or {})!r})\n"
            f"DT = {dt!r}\nNIN = {len(b['inputs'])}\nNOUT = {len(b['outputs'])}\n"
            f"ROWS = {rows!r}\nTICKS = {TICKS}\n" + SNIPPET)


def _judge(b: dict, stdout: str, stderr: str, src: Path, port: str) -> Finding:
    if "@cyphy-user ok" in stdout:
        return Finding(b["name"], b["module"], True, port=port)
    text = stdout + stderr
    m = re.search(r"@cyphy-user (start-fail|fail|frame) line (\d+)", text)
    line = int(m.group(2)) if m and int(m.group(2)) > 0 else None
    last = [ln for ln in text.strip().splitlines() if ln.strip()]
    exc = last[-1].strip() if last else "no output"
    code = ""
    if line is not None:
        try:
            code = src.read_text().splitlines()[line - 1].strip()
        except (OSError, IndexError):
            code = ""
    at = f" at {src.name} line {line}" + (f": {code}" if code else "") if line else ""
    if m is not None and m.group(1) == "frame":
        fn = f" (the function starting{at.replace(' at ', ' at ', 1)})" if at else ""
        why = (f"allocates in tick on the {port} MicroPython: a function's frame is heap-"
               f"allocated on every call (more than 11 words of locals and stack: split it "
               f"into smaller methods){fn}")
    elif m is None or m.group(1) == "start-fail":
        why = f"does not start on the {port} MicroPython{at} ({exc})"
        return Finding(b["name"], b["module"], False, why, line, port, started=False)
    elif exc.startswith("MemoryError"):
        why = f"allocates in tick on the {port} MicroPython{at}"
    else:
        why = f"raises in tick on the {port} MicroPython{at} ({exc})"
    return Finding(b["name"], b["module"], False, why, line, port)


def check(cfg: dict, base: Path | None) -> list[Finding]:
    """Each user block of a validated config, run under heap_lock on the 32-bit and on the
    Unix MicroPython: the first problem per block (or ok)."""
    from cyphy import firmware, mp32

    ub = blocks(cfg)
    if not ub:
        return []
    srcs = sources(cfg, base)
    rates = {n: t["rate_hz"] for t in cfg.get("tasks") or [] for n in t["order"]}
    out: list[Finding] = []
    fw = {k: v for k, v in mp32.firmware_files().items() if k.startswith("/lib/cyphy_node/")}
    snippets = []
    for b in ub:
        files = dict(fw)
        files[f"{NODE_DIR}/{b['module']}.py"] = instrumented(srcs[b["module"]].read_text()).encode()
        snippets.append(mp32.Snippet(_snippet(cfg, b, 1.0 / rates[b["name"]]),
                                     heap_bytes=256 * 1024, files=files))
    res32 = mp32.run_many(snippets)
    for b, r in zip(ub, res32):
        f = _judge(b, r.stdout, r.stderr, srcs[b["module"]], "32-bit")
        if f.ok:
            f = _unix(cfg, b, srcs[b["module"]], 1.0 / rates[b["name"]], firmware.REPO)
        out.append(f)
    return out


def _unix(cfg: dict, b: dict, src: Path, dt: float, repo: Path) -> Finding:
    exe = Path(sys.executable).with_name("micropython")
    if not exe.exists():
        return Finding(b["name"], b["module"], True, "the Unix MicroPython is not installed: "
                       "floats and big frames were not checked", port="unix")
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp) / "cyphy_user"
        d.mkdir()
        (d / src.name).write_text(instrumented(src.read_text()))
        env = dict(os.environ, MICROPYPATH=f"{tmp}:{repo / 'firmware' / 'lib'}:.frozen")
        r = subprocess.run([str(exe), "-X", "heapsize=1M", "-c", _snippet(cfg, b, dt)],
                           capture_output=True, text=True, timeout=60, env=env)
    return _judge(b, r.stdout, r.stderr, src, "unix")


def describe(f: Finding) -> str:
    return f'user block "{f.block}" ({f.module}.py) {f.why}'


def as_json(findings: list[Finding]) -> list[dict[str, Any]]:
    return [{"block": f.block, "module": f.module, "ok": f.ok, "why": f.why, "line": f.line,
             "port": f.port} for f in findings]
