"""Run MicroPython code on a 32-bit MicroPython: the WebAssembly port, under node.

ESP32's MicroPython has 32-bit words and 31-bit small ints: an int outside
[-2**30, 2**30 - 1] is a heap object there. The Unix port the sim board and most tests run
on has 63-bit small ints, so it would hide such an overflow. The WebAssembly port
(npm `@micropython/micropython-webassembly-pyscript`, pinned in package-lock.json and
installed by `make` into ./node_modules) is a real 32-bit MicroPython: sys.maxsize is
2**31 - 1 and 2**30 is a big int, so code run under `micropython.heap_lock()` raises
MemoryError the moment an int leaves the small-int range.

    from cyphy import mp32
    r = mp32.run("import sys; print(sys.maxsize)")          # the firmware's /lib on sys.path
    r.check().stdout                                         # '2147483647\\n'
    rs = mp32.run_many([mp32.Snippet(code1), mp32.Snippet(code2, heap_bytes=mp32.ESP32_WROOM_HEAP)])

Each snippet runs in a fresh interpreter with its own heap; one node process runs a whole
batch (about 20 ms per snippet plus the code's own time). `files` are written into the
port's in-memory filesystem; by default that is the firmware tree's /lib, compiled to .mpy by
cyphy.firmware (the same files `cyphy deploy` sends), and /lib is on the port's sys.path.

What the port offers (MicroPython 1.29, pyscript variant), and how it differs from ESP32:
- `micropython.heap_lock()`/`heap_unlock()`, `gc.mem_alloc()`, `gc.collect()`,
  `micropython.mem_info()`; no `micropython.mem_total()` (use heap_lock, or gc.mem_alloc
  deltas with gc disabled).
- Python frames live on a separate "pystack" (`pystack_words`), never on the heap: a frame
  MicroPython would heap-allocate on ESP32 (more than ~11 words of locals + stack) goes
  unnoticed here; the Unix port's mem_total check covers that.
- Floats are heap objects, as on ESP32 (a list of 100 floats takes 2 KB more than the
  list).
- The heap grows on demand: `heap_bytes` is the heap a snippet starts with; when an
  allocation does not fit after a collection the port adds heap instead of raising
  MemoryError. Since a collection inside a call frees nothing (below), it grows for
  garbage too: growth says nothing about whether the code would fit `heap_bytes`.
- gc.collect() frees nothing while a call into the port is running: an object dropped
  inside the code stays allocated until a later call collects (measured: a 50 KB
  bytearray dropped and collected in the same call is still counted by gc.mem_alloc();
  collected in a later call it is gone). So gc.mem_alloc() inside a snippet counts every
  allocation made since the call began, garbage included, and the port grows its heap
  for garbage too. The driver therefore settles the heap after each step (two
  collections, each in a call of its own) before it measures (Result.settled,
  Result.heap_used): those figures are what stays allocated, as on ESP32 after a
  collection. A peak during one step cannot be measured here.
- Under heap_lock it raises MemoryError as ESP32 does; time.ticks_* wrap at 2**30 as on
  ESP32; there is no `machine`.
- ROMFS (Snippet.romfs, MicroPython 1.29's `romfs` option of loadMicroPython): an image
  (cyphy.romfs) copied outside the GC heap and mounted at /rom, /rom and /rom/lib on
  sys.path ahead of /lib, as MicroPython mounts a ROMFS partition on ESP32: .mpy files in
  it are imported in place, their bytecode never copied into the heap.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cyphy import firmware

PACKAGE = "@micropython/micropython-webassembly-pyscript"
DRIVER = Path(__file__).with_name("mp32_driver.mjs")
ESP32_WROOM_HEAP = 110 * 1024   # about what MicroPython leaves free on an ESP32 without PSRAM
DEFAULT_HEAP = 512 * 1024       # an ESP32 with PSRAM (the sim board's default heap)
DEFAULT_PYSTACK_WORDS = 2048    # the port's default: 8 KB of Python frames
SMALL_MAX = (1 << 30) - 1       # the 31-bit small-int range this port shares with ESP32
SMALL_MIN = -(1 << 30)


# Runs one step's source in the globals g and returns its status: 0, SystemExit's code, or
# 1 for an uncaught exception (traceback on stderr). The heap is unlocked before anything
# is printed: an exception leaving a heap_lock()ed block would otherwise fail to format
# (the WebAssembly port spins forever on it). Defined in each fresh interpreter by both
# 32-bit runners: mp32_driver.mjs (here) and cyphy.frozen's harness.
EXEC_STEP = """
def _cyphy_exec(src, g):
    import micropython, sys
    try:
        exec(compile(src, '<snippet>', 'exec'), g)
        rc = 0
    except SystemExit as e:
        while micropython.heap_unlock():
            pass
        c = e.args[0] if e.args else 0
        if c is None:
            rc = 0
        elif isinstance(c, int):
            rc = c
        else:
            print(c, file=sys.stderr)
            rc = 1
    except BaseException as e:
        while micropython.heap_unlock():
            pass
        sys.print_exception(e, sys.stderr)
        rc = 1
    while micropython.heap_unlock():
        pass
    return rc
"""


class Mp32Error(Exception):
    """The 32-bit MicroPython cannot run, or a snippet failed (Result.check())."""


@dataclass(frozen=True)
class Snippet:
    """One piece of code to run. files None: the firmware's /lib (firmware_files()).
    more: further steps, run after `code` in the same globals, each measured once the
    heap has settled (Result.settled)."""

    code: str
    heap_bytes: int = DEFAULT_HEAP
    files: Mapping[str, bytes] | None = None
    pystack_words: int = DEFAULT_PYSTACK_WORDS
    romfs: bytes | None = None      # a ROMFS image mounted at /rom, outside the heap (1.29+)
    more: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settled:
    """The heap after a step, once collected in calls of its own (see run_many)."""

    used: int           # gc.mem_alloc(): what the step's objects and everything before hold
    max_free: int       # the largest run of free blocks, bytes
    total: int          # the GC arena, bytes (more than the start if the port grew it)


@dataclass(frozen=True)
class Result:
    stdout: str
    stderr: str
    status: int         # 0; SystemExit's code; 1 for an uncaught exception (traceback in stderr)
    heap_bytes: int     # the heap asked for
    heap_initial: int   # GC arena at the start (heap_bytes less the GC's own tables)
    heap_total: int     # GC arena at the end of the code (before collecting): more than
                        # heap_initial if the heap had to grow and is still needed
    heap_used: int      # gc.mem_alloc() after the last step that ran, settled (its globals alive)
    seconds: float
    settled: tuple[Settled, ...] = ()   # one per step that ran (code, then each of `more`)

    @property
    def ok(self) -> bool:
        return self.status == 0

    def check(self) -> Result:
        """self if the code exited 0, else Mp32Error with its output."""
        if not self.ok:
            raise Mp32Error(f"MicroPython (32-bit) exited with {self.status}\n--- stdout\n"
                            f"{self.stdout}\n--- stderr\n{self.stderr}")
        return self


def port_module() -> Path:
    """The port's micropython.mjs: $CYPHY_MP32_PORT, or ./node_modules of this repository."""
    env = os.environ.get("CYPHY_MP32_PORT")
    if env:
        return Path(env)
    return firmware.REPO / "node_modules" / PACKAGE / "micropython.mjs"


def node_exe() -> str:
    exe = os.environ.get("CYPHY_NODE") or shutil.which("node")
    if not exe:
        raise Mp32Error("node (Node.js 18 or later) is not on PATH: the 32-bit MicroPython "
                        "runs on it")
    return exe


def unavailable() -> str | None:
    """Why the 32-bit MicroPython cannot run here, or None if it can."""
    try:
        node_exe()
    except Mp32Error as e:
        return str(e)
    if not port_module().exists():
        return (f"{port_module()} is missing: install the MicroPython WebAssembly port with "
                f"`make venv` (npm ci in {firmware.REPO})")
    return None


def firmware_files(target: str = "esp32") -> dict[str, bytes]:
    """The firmware tree's /lib files (cyphy_node and the board modules), compiled to .mpy
    by cyphy.firmware: what a node imports. Rebuilt from the sources on each call (compiled
    files come from cyphy.firmware's cache)."""
    return {b.dst: b.data for b in firmware.build(target) if b.dst.startswith("/lib/")}


def run(code: str, heap_bytes: int = DEFAULT_HEAP, files: Mapping[str, bytes] | None = None,
        *, pystack_words: int = DEFAULT_PYSTACK_WORDS, timeout: float = 60.0) -> Result:
    """Run code as __main__ on a fresh 32-bit MicroPython with a heap of heap_bytes and
    `files` in its filesystem (None: the firmware's /lib). Never raises for the code's own
    failure (see Result.status, Result.check()); Mp32Error if the port cannot run or the
    code does not finish within timeout seconds."""
    return run_many([Snippet(code, heap_bytes, files, pystack_words)], timeout=timeout)[0]


def run_many(snippets: Iterable[Snippet], timeout: float = 120.0) -> list[Result]:
    """Run each snippet on its own fresh interpreter, all in one node process, in order.
    timeout: for the whole batch."""
    jobs = list(snippets)
    if not jobs:
        return []
    why = unavailable()
    if why:
        raise Mp32Error(why)
    blobs: dict[str, str] = {}
    specs = []
    fw: dict[str, bytes] | None = None
    for s in jobs:
        if s.heap_bytes < 16 * 1024:
            raise ValueError(f"heap_bytes {s.heap_bytes}: at least 16 KB")
        files = s.files
        if files is None:
            fw = firmware_files() if fw is None else fw
            files = fw
        refs = {}
        for path, data in files.items():
            if not path.startswith("/"):
                raise ValueError(f"{path!r}: files need absolute paths in the port's filesystem")
            key = hashlib.sha256(data).hexdigest()[:16]
            blobs.setdefault(key, base64.b64encode(data).decode())
            refs[path] = key
        spec = {"steps": [s.code, *s.more], "heap": s.heap_bytes, "pystack": s.pystack_words,
                "files": refs}
        if s.romfs is not None:
            key = hashlib.sha256(s.romfs).hexdigest()[:16]
            blobs.setdefault(key, base64.b64encode(s.romfs).decode())
            spec["romfs"] = key
        specs.append(spec)
    batch = json.dumps({"exec_step": EXEC_STEP, "blobs": blobs, "jobs": specs})
    try:
        p = subprocess.run([node_exe(), str(DRIVER), str(port_module())], input=batch,
                           capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        done = len([ln for ln in out.splitlines() if ln.strip()])
        raise Mp32Error(f"snippet {done + 1} of {len(jobs)} did not finish within {timeout} s "
                        f"(the batch took too long):\n{jobs[done].code[:2000]}") from None
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    if p.returncode != 0 or len(lines) != len(jobs):
        raise Mp32Error(f"the 32-bit MicroPython driver failed (exit {p.returncode}, "
                        f"{len(lines)} of {len(jobs)} results):\n{p.stderr[-4000:]}")
    out: list[Result] = []
    for s, ln in zip(jobs, lines):
        d = json.loads(ln)
        out.append(Result(stdout=d["stdout"], stderr=d["stderr"], status=int(d["status"]),
                          heap_bytes=s.heap_bytes, heap_initial=int(d["heap_initial"]),
                          heap_total=int(d["heap_total"]), heap_used=int(d["heap_used"]),
                          seconds=float(d["ms"]) / 1000,
                          settled=tuple(Settled(int(x["used"]), int(x["max_free"]), int(x["total"]))
                                        for x in d.get("settled", ()))))
    return out
