"""A 32-bit MicroPython with the cyphy firmware frozen in: built here, run for RAM figures.

On an ESP32-WROOM (no PSRAM, about 110 KB of MicroPython heap) the firmware fits only
frozen: its bytecode, constants and interned names then live in flash, and what stays in
the heap is what the modules create when they run (functions, classes, dicts) and the
node's own objects (issue 12). This module makes that measurable without a board:

- MicroPython's source is Debian's source package of it (`micropython` 1.26.1+ds, the
  upstream release tree; a package registry, pinned by its SHA-256), downloaded once into
  the cache ($CYPHY_MP_SOURCE: a copy of that tarball to use instead);
- its Unix port is built with `MICROPY_FORCE_32BIT=1` (32-bit words, 31-bit small ints,
  objects laid out as on ESP32: the same object model, MICROPY_OBJ_REPR_A, and 16-byte
  GC blocks) and `FROZEN_MANIFEST` = firmware/manifest.py (target esp32, without the
  ESP32 port's own manifest): the firmware frozen exactly as a custom ESP32 build freezes
  it (makemanifest.py compiles it with the tree's own mpy-cross);
- one binary per firmware version (keyed by the compiled firmware's hash), under a lock
  so parallel tests build it once; the C objects are built once and reused, so a change
  of the firmware costs a re-freeze and a link (seconds).

A C compiler with 32-bit support is needed (Debian: gcc-multilib; `make` installs it
where it may, tools/install-debian-packages). unavailable() says what is missing.

run_many() runs mp32.Snippet jobs on it like cyphy.mp32 does on the WebAssembly port:
a fresh process per snippet, its files in a directory mounted as the node's /, its steps
in one globals dict, the heap collected and measured after each (mp32.Result.settled).
Unlike the WebAssembly port this heap never grows: an allocation that does not fit is a
MemoryError, as on the chip. `romfs` is not supported here (the firmware is frozen).

    from cyphy import frozen, mp32
    r = frozen.run_many([mp32.Snippet("import cyphy_node.pid", heap_bytes=112_000, files={})])[0]

Not measured here: the ESP32 port's own frozen modules and C modules (flash), Wi-Fi's and
the IDF's RAM (outside MicroPython's heap on a WROOM since 1.22, issue 12).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from cyphy import firmware, mp32

VERSION = "1.26.1"
SOURCE_URL = ("http://deb.debian.org/debian/pool/main/m/micropython/"
              "micropython_1.26.1+ds.orig.tar.xz")
SOURCE_SHA256 = "f5ad2ec89d3e921f753d448955af98b6005655f84ba26087dde6ba0e8d062f34"
# The Unix port's standard variant, 32-bit, less what needs 32-bit libraries this build
# does not use (libffi) or that the firmware does not import (btree, TLS).
# Linked statically: a sim node's sandbox (Landlock) lets it execute this one file and read
# nothing of the host's libraries.
MAKE_FLAGS = ("VARIANT=standard", "MICROPY_FORCE_32BIT=1", "MICROPY_PY_FFI=0",
              "MICROPY_PY_BTREE=0", "MICROPY_PY_SSL=0", "MICROPY_SSL_AXTLS=0",
              "MICROPY_SSL_MBEDTLS=0", "LDFLAGS_EXTRA=-static")
ROM_DIR = firmware.REPO / "boards" / "sim" / "rom"   # the sim board's ROM (rom=True)
BLOCK = 16          # GC block bytes on a 32-bit port, as on ESP32


class FrozenError(mp32.Mp32Error):
    """The frozen build cannot be made or run (one line says why)."""


def cache_root() -> Path:
    """Where the source, the build and the binaries go: $CYPHY_FROZEN_CACHE, or
    .venv/micropython-frozen in this repository (`make clean` removes it)."""
    env = os.environ.get("CYPHY_FROZEN_CACHE")
    return Path(env) if env else firmware.REPO / ".venv" / "micropython-frozen"


def _cc() -> str:
    return os.environ.get("CC") or "cc"


def _can_compile_32bit() -> str | None:
    """None if the C compiler builds and links a 32-bit program, else why not."""
    if not shutil.which(_cc()):
        return f"no C compiler ({_cc()}) on PATH: install gcc and gcc-multilib"
    if not shutil.which("make"):
        return "no make on PATH"
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "t.c"
        src.write_text("int main(void) { return sizeof(void *) == 4 ? 0 : 1; }\n")
        p = subprocess.run([_cc(), "-m32", str(src), "-o", str(Path(d) / "t")],
                           capture_output=True, text=True)
        if p.returncode != 0:
            return ("the C compiler cannot build 32-bit programs (-m32): install gcc-multilib "
                    "(Debian), e.g. with `make venv` as root")
    return None


def unavailable() -> str | None:
    """Why the frozen 32-bit MicroPython cannot be built here, or None if it can (or is)."""
    if any(cache_root().glob("bin/*/micropython")):
        return None
    return _can_compile_32bit()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tarball(root: Path) -> Path:
    """MicroPython's source tarball, checked against SOURCE_SHA256 (downloaded if needed)."""
    env = os.environ.get("CYPHY_MP_SOURCE")
    path = Path(env) if env else root / Path(SOURCE_URL).name
    if not path.exists():
        if env:
            raise FrozenError(f"CYPHY_MP_SOURCE={env}: no such file")
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(path.name + ".part")
        try:
            with urllib.request.urlopen(SOURCE_URL, timeout=120) as r, open(part, "wb") as f:
                shutil.copyfileobj(r, f)
        except OSError as e:
            raise FrozenError(f"cannot download MicroPython's source from {SOURCE_URL}: {e}; "
                              f"set CYPHY_MP_SOURCE to a copy of that file") from None
        os.replace(part, path)
    got = _sha256(path)
    if got != SOURCE_SHA256:
        raise FrozenError(f"{path}: SHA-256 {got}, expected {SOURCE_SHA256} (a different or "
                          f"damaged file: delete it to download it again)")
    return path


def source_dir() -> Path:
    """MicroPython's source tree, extracted once into the cache."""
    root = cache_root()
    tree = root / f"micropython-{VERSION}"
    if (tree / ".cyphy-extracted").exists():
        return tree
    tar = _tarball(root)
    tmp = root / f".extract-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(tar) as t:
        t.extractall(tmp, filter="data")
    (top,) = list(tmp.iterdir())
    shutil.rmtree(tree, ignore_errors=True)
    os.replace(top, tree)
    shutil.rmtree(tmp, ignore_errors=True)
    # the manifest names no micropython-lib package; the build only wants the directory
    (tree / "lib" / "micropython-lib").mkdir(parents=True, exist_ok=True)
    (tree / "lib" / "micropython-lib" / "README.md").touch()
    (tree / ".cyphy-extracted").touch()
    return tree


@contextmanager
def _locked() -> Iterator[None]:
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def firmware_key(target: str = "esp32", rom: bool = False) -> str:
    """A hash of what gets frozen: the manifest and the firmware's sources for target (and
    the sim's ROM with rom)."""
    h = hashlib.sha256(VERSION.encode() + " ".join(MAKE_FLAGS).encode()
                       + firmware.MANIFEST.read_bytes())
    for b in sorted(firmware.build(target), key=lambda b: b.dst):
        if b.dst.startswith("/lib/"):
            h.update(b.dst.encode() + b"\0" + hashlib.sha256(b.data).digest())
    if rom:
        for f in sorted(ROM_DIR.glob("*.py")):
            h.update(f.name.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return h.hexdigest()[:16]


def _make(args: list[str], cwd: Path, what: str) -> None:
    jobs = str(max(1, min(4, os.cpu_count() or 1)))
    p = subprocess.run(["make", "-j", jobs, *args], cwd=cwd, capture_output=True, text=True)
    if p.returncode != 0:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-15:])
        raise FrozenError(f"building {what} failed (make in {cwd}):\n{tail}")


def binary(target: str = "esp32", rom: bool = False) -> Path:
    """The 32-bit MicroPython with this firmware (target's board modules) frozen in, built
    if it is not in the cache yet; rom: the sim board's ROM (boards/sim/rom) frozen in too,
    as the chip's is in its flash (target "sim": a sim node's runtime, sim_launcher()).
    FrozenError with one reason if it cannot be built."""
    key = f"{target}{'-rom' if rom else ''}-{firmware_key(target, rom)}"
    out = cache_root() / "bin" / key / "micropython"
    if out.exists():
        return out
    why = _can_compile_32bit()
    if why:
        raise FrozenError(why)
    with _locked():
        if out.exists():
            return out
        src = source_dir()
        if not (src / "mpy-cross" / "build" / "mpy-cross").exists():
            _make([], src / "mpy-cross", "mpy-cross")
        manifest = cache_root() / f"manifest-{key}.py"
        manifest.write_text(f"# written by cyphy.frozen: the firmware for {target}, frozen\n"
                            f"include({str(firmware.MANIFEST.parent)!r}, target={target!r}, "
                            f"port_manifest=False)\n"
                            + "".join(f"module({f.name!r}, base_path={str(ROM_DIR)!r})\n"
                                      for f in sorted(ROM_DIR.glob("*.py")) if rom))
        unix = src / "ports" / "unix"
        # makemanifest.py recompiles a module only when its source is newer than the .mpy
        # it left in the build: with another manifest (another target) the same name can
        # come from another file (`board`), so every freeze starts from nothing
        shutil.rmtree(unix / "build-standard" / "frozen_mpy", ignore_errors=True)
        _make([*MAKE_FLAGS, f"FROZEN_MANIFEST={manifest}"], unix, "the 32-bit Unix port")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        shutil.copy2(unix / "build-standard" / "micropython", tmp)
        os.replace(tmp, out)
    return out


def sim_launcher(exe: Path) -> Path:
    """The script a sim node's frozen runtime (binary("sim", rom=True)) starts: the ROM's
    simboot, frozen, with sys.argv[0] where the ROM's files are (the ROM finds the chip
    descriptions and its traceback prefix from it). Written next to the binary."""
    path = exe.with_name("simboot_frozen.py")
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"import sys\nsys.argv[0] = {str(ROM_DIR / 'simboot.py')!r}\n"
                       "import simboot\nsimboot.main(globals())\n")
        os.replace(tmp, path)
    return path


# Runs in the frozen MicroPython: mounts the snippet's files as /, then runs the steps
# (files in /.cyphy-steps, read one at a time so none stays in the heap) in one globals
# dict; after each the heap is collected and measured between marker lines.
_HARNESS = r'''
import gc, sys, micropython, vfs, os
vfs.umount('/')
vfs.mount(vfs.VfsPosix(ROOT), '/')
os.chdir('/')
sys.path[:] = ['', '.frozen', '/lib']
def _cyphy_run(i, g):
    with open('/.cyphy-steps/%d.py' % i) as f:
        src = f.read()
    return _cyphy_exec(src, g)
def _cyphy_main():
    g = {'__name__': '__main__'}
    i = 0
    while i < STEPS:
        rc = _cyphy_run(i, g)
        if rc:
            print('\n@cyphy-rc %d' % rc)
            return
        gc.collect()
        gc.collect()
        print('\n@cyphy-settled %d' % gc.mem_alloc())
        micropython.mem_info()
        print('@cyphy-end')
        i += 1
    print('\n@cyphy-rc 0')
_cyphy_main()
'''


def _parse(out: str) -> tuple[str, int, list[mp32.Settled]]:
    """(the snippet's own stdout, its status, the settled figures) from the process output."""
    text: list[str] = []
    settled: list[mp32.Settled] = []
    status = 1
    lines = iter(out.split("\n"))
    for ln in lines:
        if ln.startswith("@cyphy-settled "):
            used = int(ln.split()[1])
            total = max_free = -1
            for m in lines:
                if m.startswith("@cyphy-end"):
                    break
                if m.startswith("GC: total: "):
                    total = int(m.split(",")[0].split()[-1])
                if "max free sz: " in m:
                    max_free = int(m.rsplit("max free sz: ", 1)[1].split()[0]) * BLOCK
            settled.append(mp32.Settled(used, max_free, total))
            if text and text[-1] == "":
                text.pop()      # the marker's own leading newline
        elif ln.startswith("@cyphy-rc "):
            status = int(ln.split()[1])
            if text and text[-1] == "":
                text.pop()
        else:
            text.append(ln)
    return "\n".join(text), status, settled


def run_many(snippets: Iterable[mp32.Snippet], timeout: float = 120.0,
             target: str = "esp32") -> list[mp32.Result]:
    """Run each snippet on a fresh frozen 32-bit MicroPython with a heap of its heap_bytes
    (fixed: an allocation that does not fit raises MemoryError). files None: nothing on
    the filesystem (the firmware is frozen). timeout: for the whole batch."""
    exe = binary(target)
    results: list[mp32.Result] = []
    deadline = time.monotonic() + timeout
    for s in snippets:
        if s.romfs is not None:
            raise ValueError("the frozen build has the firmware in flash already: no romfs")
        with tempfile.TemporaryDirectory(prefix="cyphy-frozen-") as d:
            root = Path(d) / "fs"
            for path, data in (s.files or {}).items():
                if not path.startswith("/"):
                    raise ValueError(f"{path!r}: files need absolute paths")
                f = root / path[1:]
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(data)
            steps = [s.code, *s.more]
            sd = root / ".cyphy-steps"
            sd.mkdir(parents=True)
            for i, code in enumerate(steps):
                (sd / f"{i}.py").write_text(code)
            harness = Path(d) / "harness.py"
            harness.write_text(f"ROOT = {str(root)!r}\nSTEPS = {len(steps)}\n" + mp32.EXEC_STEP
                               + _HARNESS)
            t0 = time.monotonic()
            left = deadline - t0
            if left <= 0:
                raise FrozenError(f"the batch took longer than {timeout} s")
            try:
                p = subprocess.run([str(exe), "-X", f"heapsize={s.heap_bytes}", str(harness)],
                                   capture_output=True, text=True, timeout=left, cwd=d)
            except subprocess.TimeoutExpired:
                raise FrozenError(f"a snippet did not finish within {timeout} s:\n"
                                  f"{s.code[:2000]}") from None
            stdout, status, settled = _parse(p.stdout)
            if p.returncode != 0 and status == 0:
                status = p.returncode
            if "@cyphy-rc" not in p.stdout and status == 0:
                status = p.returncode or 1
            results.append(mp32.Result(
                stdout=stdout, stderr=p.stderr, status=status, heap_bytes=s.heap_bytes,
                heap_initial=settled[0].total if settled else -1,
                heap_total=settled[-1].total if settled else -1,
                heap_used=settled[-1].used if settled else -1,
                seconds=time.monotonic() - t0, settled=tuple(settled)))
    return results


def main() -> int:
    """`python -m cyphy.frozen`: build (or find) the frozen binaries for the firmware as it
    is now (check's, and WROOM sim nodes'); one line on stdout either way (make's setup
    runs it, and never fails on it)."""
    try:
        exe = binary("esp32")
        sim = binary("sim", rom=True)      # WROOM sim nodes' runtime
        sim_launcher(sim)
    except FrozenError as e:
        print(f"setup: the frozen 32-bit MicroPython cannot be built here: {str(e).splitlines()[0]}")
        return 0
    print(f"setup: MicroPython {VERSION} (32-bit, the firmware frozen in): {exe}; for WROOM sim "
          f"nodes, with the sim's ROM: {sim}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
