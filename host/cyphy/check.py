"""Will a config run on a chip? `cyphy check` and `cyphy provision` ask this before anything
is flashed or written.

    from cyphy import check
    cfg = check.load_config("oven.json")              # CheckUsageError: no file, not JSON...
    r = check.check(cfg, "esp32", psram=False)        # a Report
    r.fits, r.ram_resident_bytes, r.modules, r.loops, r.errors, r.reasons
    r.to_json()                                       # what `cyphy check --json` prints

What it does, in order:

1. The config: the firmware's own validator (cyphy_node.config, the module the node runs,
   on CPython), then the chip check (cyphy.chips.check_config: pins and their functions,
   DAC, ADC2 with Wi-Fi, ADC ranges, PWM frequencies, channels and timers). An error in
   either is reported with its field (Report.errors) and ends the check: a config the node
   refuses has no RAM figure.
2. RAM, on a real 32-bit MicroPython, with the firmware where the board keeps it
   (default_frozen): without PSRAM frozen into MicroPython (cyphy.frozen: a 32-bit build
   of MicroPython's Unix port made here, heap fixed at the chip's, as a custom ESP32 build
   with firmware/manifest.py frozen runs it); with PSRAM, or when told, the firmware's
   compiled .mpy files on /lib (cyphy.mp32: the WebAssembly port, MicroPython 1.29), or
   with `romfs` in a ROMFS image mounted at /rom there. In one batch of snippets. Every
   figure is taken with the heap settled: this port's gc.collect() frees nothing inside
   the call that dropped an object, so the snippet runs in steps and cyphy.mp32's driver
   collects between them in calls of their own (mp32.Result.settled); a figure taken
   inside a step would count every allocation made since it began, garbage included
   (until December 2026 this check did that, and reported 157 KB for the example config
   instead of 110 KB):
   - the stand-in board's modules first (step 1: their heap is left out of the figures);
   - per-module bytes: each firmware module imported in a step of its own, in dependency
     order (a module's imports first), as the settled gc.mem_alloc() delta: the
     bytecode (none from ROMFS), the module's functions, classes and globals and the
     interned names it adds;
   - resident bytes: the node is then started the way boot.py does it
     (cyphy_node.app.boot(): config, board, Node, start(), the protocol endpoint; the
     config module forgotten afterwards), and resident = the settled gc.mem_alloc() less
     what step 1 held, plus the bare interpreter's own use (a separate snippet that
     imports nothing);
   - the heap: the snippet's heap is the chip's typical heap (HEAPS below) plus room for
     the measuring code; free = heap - resident; the largest free block is the longest
     run of free blocks in `micropython.mem_info(1)` ("max free sz", in 16-byte blocks on
     a 32-bit port) once settled, less the part of the snippet's heap beyond the chip's
     and the measuring code's (PAD, and what the port added for a step's garbage),
     capped at the free bytes and at one heap area (ESP32 without PSRAM: two areas of
     55968 bytes, so no block can be larger);
   - the peak while the node boots (garbage not yet collected) cannot be measured on this
     port (it grows its heap instead); the sim's boot in a chip-sized heap is that test
     (tests/sim/test_memory.py).
3. CPU (when `timing`): each loop's tick is run back to back for at least 40 ms on the same
   port and timed with time.ticks_ms (this port's clock has millisecond resolution, hence
   the long runs); the port's own pystones/s are measured in the same snippet with the
   pystone_lowmem benchmark cyphy.sim.speed uses (.venv/share/cyphy/pystone_lowmem.py), so
   chip microseconds = port microseconds x (port pystones/s / the chip's pystones/s,
   cyphy.sim.speed.CHIP_PYSTONES). cyphy.sim.speed.factor() itself is calibrated for the
   Unix port, not this one, so it is not used here. cpu_pct = chip us per tick x rate_hz
   / 10**4. Without the benchmark file, loops have cpu_pct None.

The board: MicroPython's WebAssembly port has no `machine`; the real ESP32 board module
(boards/esp32/board.py, shipped as /lib/board.mpy) runs on a small stand-in `machine`
(and `network` when comms.udp is on) written for this measurement only: pins, ADC (reads
the middle of each channel's valid range), PWM, DAC, Timer (never fires), WDT. Its own
heap is measured and left out of the figures. Nothing here talks to a node.

Fits means: no config or chip error, the heap did not have to grow, resident <= heap - 32
KB, the largest free block >= 32 KB (MARGIN: room for the buffers a node allocates while
it runs, the protocol's frames, a config patch, a REPL session), and the loops' cpu_pct
add up to at most 100 (when known). Issue 12's budget
for an ESP32-WROOM is "resident at most 40 KB, largest free block at least 32 KB in a
110 KB heap": this check is the looser half of it (the fit), and reports the figures to
judge the rest.
"""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cyphy import firmware

# the largest free block a node needs, and the headroom over resident; how the node's own
# refusal of a config that leaves less begins: one place, the firmware's (cyphy_node/app.py)
from cyphy_node.app import MARGIN, REFUSED  # noqa: E402

BLOCK = 16              # GC block size on a 32-bit MicroPython (4 words)
PAD = 16 * 1024         # heap added to the snippet's for the measuring code (measured, reported)
TIMING_MS = 40          # each loop's ticks run at least this long (the port's clock is in ms)
PYSTONE_PASSES = 5000


@dataclass(frozen=True)
class Heap:
    bytes: int          # the GC heap MicroPython has there (gc.mem_alloc() + free)
    area: int           # its largest single area (a free block cannot span areas)
    source: str


# The typical MicroPython heap of each chip, with and without PSRAM: the one table.
# - ESP32 without PSRAM: MicroPython 1.22+ starts with a 56 KB heap area
#   (ports/esp32/mpconfigport.h, MICROPY_GC_INITIAL_HEAP_SIZE) and grows it on demand
#   (MICROPY_GC_SPLIT_HEAP_AUTO, micropython PR #12141); after one growth the total is
#   111936 bytes, "with about 40k left for the IDF" (micropython PR #13219): two areas.
# - ESP32-S3 and ESP32-C3 without PSRAM: a 64 KB initial area (mpconfigport.h), grown by
#   one area of the same size (PR #13219's growth rule): 2 x 64000 bytes. These chips
#   have more internal RAM and may grow further; this assumes no more than the ESP32 gets.
# - With PSRAM (ESP32-WROVER, ESP32-S3 N8R2/N8R8...), MicroPython puts its heap in PSRAM:
#   2 MB is assumed (boards carry 2 to 8 MB). The ESP32-C3 has no PSRAM.
HEAPS: dict[tuple[str, bool], Heap] = {
    ("esp32", False): Heap(111936, 55968, "ESP32 without PSRAM: MicroPython 1.22+ grows a 56 KB heap once, "
                                          "to 111936 bytes in two areas (micropython PR #13219)"),
    ("esp32s3", False): Heap(128000, 64000, "ESP32-S3 without PSRAM: a 64 KB heap grown once, two areas of "
                                            "64000 bytes (ports/esp32/mpconfigport.h, micropython PR #13219)"),
    ("esp32c3", False): Heap(128000, 64000, "ESP32-C3: a 64 KB heap grown once, two areas of 64000 bytes "
                                            "(ports/esp32/mpconfigport.h, micropython PR #13219)"),
    ("esp32", True): Heap(2 * 1024 * 1024, 2 * 1024 * 1024, "ESP32 with PSRAM: the heap is in PSRAM, "
                                                            "2 MB assumed"),
    ("esp32s3", True): Heap(2 * 1024 * 1024, 2 * 1024 * 1024, "ESP32-S3 with PSRAM: the heap is in PSRAM, "
                                                              "2 MB assumed"),
}
MCU = {"esp32": "ESP32", "esp32s3": "ESP32-S3", "esp32c3": "ESP32-C3"}
MACHINE = {"esp32": "Generic ESP32 module with ESP32", "esp32s3": "Generic ESP32S3 module with ESP32S3",
           "esp32c3": "ESP32C3 module with ESP32C3"}


class CheckUsageError(ValueError):
    """The check cannot start: no such file, not JSON, unknown chip... (one line)."""


@dataclass
class Report:
    chip: str
    psram: bool
    heap_bytes: int
    heap_source: str
    config_name: str | None = None
    romfs: bool = False             # the firmware's modules measured from a ROMFS image
    frozen: bool = False            # ... frozen into the 32-bit MicroPython (cyphy.frozen)
    romfs_bytes: int | None = None  # that image's size (flash, not RAM)
    errors: list[dict] = field(default_factory=list)   # {"field", "reason", "kind": config|chip}
    ram_resident_bytes: int | None = None
    ram_free_bytes: int | None = None
    ram_largest_free_bytes: int | None = None
    modules: dict[str, int] = field(default_factory=dict)     # import order
    loops: dict[str, dict] = field(default_factory=dict)
    tasks: dict[str, dict] = field(default_factory=dict)       # the graph's tasks (loops + blocks)
    user_blocks: dict[str, dict] = field(default_factory=dict)  # userblock: checks and time
    measuring_bytes: int | None = None
    port_pystones: float | None = None
    seconds: float = 0.0
    reasons: list[str] = field(default_factory=list)         # why it does not fit
    advice: list[str] = field(default_factory=list)          # what to drop
    warnings: list[str] = field(default_factory=list)        # fits, but look (e.g. comms timeout)

    @property
    def fits(self) -> bool:
        return not self.errors and not self.reasons and self.ram_resident_bytes is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "fits": self.fits, "name": self.config_name, "chip": self.chip, "psram": self.psram,
            "romfs": self.romfs, "romfs_bytes": self.romfs_bytes, "frozen": self.frozen,
            "heap_bytes": self.heap_bytes, "heap_source": self.heap_source,
            "margin_bytes": MARGIN,
            "ram_resident_bytes": self.ram_resident_bytes, "ram_free_bytes": self.ram_free_bytes,
            "ram_largest_free_bytes": self.ram_largest_free_bytes,
            "modules": self.modules, "loops": self.loops, "tasks": self.tasks,
            "user_blocks": self.user_blocks, "errors": self.errors,
            "reasons": self.reasons, "advice": self.advice, "warnings": self.warnings,
            "measuring_bytes": self.measuring_bytes, "port_pystones": self.port_pystones,
            "seconds": round(self.seconds, 2),
        }

    def summary(self) -> str:
        """One line: what does not fit (or that it fits)."""
        where = f"{MCU[self.chip]} {'with' if self.psram else 'without'} PSRAM"
        if self.romfs:
            where += f", firmware in a {_kb(self.romfs_bytes)} ROMFS image"
        if self.frozen:
            where += ", firmware frozen"
        if self.errors:
            e = self.errors[0]
            return f"{e['field']}: {e['reason']}"
        if self.fits:
            return f"fits {where}: resident {_kb(self.ram_resident_bytes)}, largest free block " \
                   f"{_kb(self.ram_largest_free_bytes)} of a {_kb(self.heap_bytes)} heap"
        s = f"does not fit {where}: " + "; ".join(self.reasons)
        if self.advice:
            s += "; " + self.advice[0]
        return s


def _kb(n: int | None) -> str:
    return "?" if n is None else f"{n / 1024:.1f} KB"


def default_frozen(psram: bool) -> bool:
    """Where a board keeps the firmware, as the check assumes unless told: frozen into
    MicroPython without PSRAM (the firmware's bytecode alone is about 110 KB of heap on a
    32-bit MicroPython: more than such a board has), on the filesystem with PSRAM."""
    return not psram


def heap_for(chip: str, psram: bool) -> Heap:
    if chip not in MCU:
        raise CheckUsageError(f"unknown chip {chip!r}; use one of: {', '.join(MCU)}")
    try:
        return HEAPS[(chip, psram)]
    except KeyError:
        raise CheckUsageError(f"{MCU[chip]} has no PSRAM: leave out --psram") from None


def load_config(path: str | Path) -> dict:
    """The config file as a dict; CheckUsageError (one line) if it cannot be one."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise CheckUsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CheckUsageError(f"{path}: is a directory, not a config file") from None
    except OSError as e:
        raise CheckUsageError(f"{path}: {e.strerror or e}") from None
    if b"\0" in data:
        raise CheckUsageError(f"{path}: is a binary file, not a JSON config")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CheckUsageError(f"{path}: is not UTF-8 text, not a JSON config") from None
    try:
        cfg = json.loads(text)
    except ValueError as e:
        raise CheckUsageError(f"{path}: is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise CheckUsageError(f"{path}: the config must be a JSON object")
    return cfg


def config_errors(cfg: dict, chip: str) -> list[dict]:
    """The first config error (cyphy_node.config), else the first chip error
    (cyphy.chips), as [{"field", "reason", "kind"}]; [] when the node would take it."""
    from cyphy import chips
    from cyphy_node import config as C

    try:
        C.validate(cfg)
    except C.ConfigError as e:
        return [{"field": e.path, "reason": e.reason, "kind": "config"}]
    try:
        chips.check_config(cfg, chip)
    except chips.ChipConfigError as e:
        return [{"field": e.path, "reason": e.reason, "kind": "chip"}]
    return []


# ---------------------------------------------------------------- the firmware's modules

def _sources() -> dict[str, Path]:
    """Module name on the node -> its source, for the modules /lib holds on an ESP32."""
    r = firmware.REPO
    out = {"cyphy_node": r / "firmware/lib/cyphy_node/__init__.py"}
    for p in sorted((r / "firmware/lib/cyphy_node").glob("*.py")):
        if p.stem != "__init__":
            out["cyphy_node." + p.stem] = p
    out["board"] = r / "boards/esp32/board.py"
    out["boards.hal"] = r / "boards/hal.py"
    for p in sorted((r / "boards/esp32").glob("*.py")):
        out["boards.esp32." + p.stem] = p
    return out


def _module_imports(name: str, src: Path, known: dict[str, Path]) -> list[str]:
    """The firmware modules `name` imports at module level (not inside functions)."""
    tree = ast.parse(src.read_text(), str(src))
    pkg = name if src.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []

    def add(mod: str) -> None:
        if mod in known and mod not in found and mod != name:
            found.append(mod)

    def walk(stmts: list[ast.stmt]) -> None:
        for st in stmts:
            if isinstance(st, ast.Import):
                for a in st.names:
                    add(a.name)
            elif isinstance(st, ast.ImportFrom):
                base = st.module or ""
                if st.level:
                    parts = pkg.split(".")
                    up = parts[:len(parts) - st.level + 1]
                    base = ".".join(up + ([st.module] if st.module else []))
                add(base)
                for a in st.names:
                    add(f"{base}.{a.name}")
            elif isinstance(st, (ast.Try, ast.If)):
                walk(st.body)
                for h in getattr(st, "handlers", []):
                    walk(h.body)
                walk(st.orelse)
    walk(tree.body)
    if "." in name:
        parent = name.rpartition(".")[0]
        if parent in known:
            found.insert(0, parent)
    return found


def import_order(roots: list[str]) -> list[str]:
    """The firmware modules reachable from roots, each after the modules it imports."""
    known = _sources()
    order: list[str] = []
    seen: set[str] = set()

    def visit(m: str) -> None:
        if m in seen or m not in known:
            return
        seen.add(m)
        for d in _module_imports(m, known[m], known):
            visit(d)
        order.append(m)

    for r in roots:
        visit(r)
    return order


# a device channel's kind -> the driver module a node loads for it (devices.py)
DEVICE_MODULES = {"ds18b20": "cyphy_node.ds18b20", "tpo": "cyphy_node.tpo",
                  "sht3x": "cyphy_node.sht3x", "max31855": "cyphy_node.max31855",
                  "counter": "cyphy_node.pulse", "encoder": "cyphy_node.pulse",
                  "modbus_in": "cyphy_node.modbus", "modbus_out": "cyphy_node.modbus"}


def boot_roots(cfg: dict) -> list[str]:
    """What a node with this config imports while it boots (app.py), in that order."""
    # (no cyphy_node.config: the node boots from the compiled config, /config.node.json,
    # which cyphy provision writes; cyphy_node/cfgview.py)
    roots = ["cyphy_node", "cyphy_node.app", "cyphy_node.cfgview", "cyphy_node.node", "cyphy_node.comms",
             "cyphy_node.proto", "board"]
    if cfg.get("tasks"):
        roots.append("cyphy_node.graph")     # the signal graph: only when the config has one
    kinds = {c.get("kind") for c in cfg.get("channels", [])}
    if kinds & set(DEVICE_MODULES):          # device channels: their drivers, the buses
        roots += ["cyphy_node.devices", "boards.esp32.buses"]
        roots += sorted({DEVICE_MODULES[k] for k in kinds if k in DEVICE_MODULES})
    comms = cfg.get("comms") or {}
    if comms.get("udp"):
        roots += ["cyphy_node.net", "boards.esp32.wifi"]
        if comms.get("follow"):
            roots.append("cyphy_node.peer")
    return roots


# ---------------------------------------------------------------- the measuring snippets

FAKE_MACHINE = '''\
# A stand-in for the chip's machine module: only for measuring RAM and CPU (cyphy check).
UV = {}
class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 2
    PULL_DOWN = 1
    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self.v = value or 0
    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    def __init__(self, pin, atten=3):
        self.uv = UV.get(pin.id, 1000000)
    def read_uv(self):
        return self.uv
    def read_u16(self):
        return self.uv // 51
class PWM:
    def __init__(self, pin, freq=1000, duty_u16=0):
        self.d = duty_u16
    def duty_u16(self, d=None):
        if d is None:
            return self.d
        self.d = d
    def deinit(self):
        pass
class DAC:
    def __init__(self, pin):
        self.v = 0
    def write(self, v):
        self.v = v
class Timer:
    PERIODIC = 1
    ONE_SHOT = 0
    def __init__(self, id=0):
        self.cb = None
    def init(self, mode=1, callback=None, period=None, freq=None):
        self.cb = callback
    def deinit(self):
        self.cb = None
class WDT:
    def __init__(self, id=0, timeout=5000):
        pass
    def feed(self):
        pass
def unique_id():
    return b"\\x24\\x0a\\xc4\\x00\\x00\\x01"
def reset():
    raise SystemExit(99)
def reset_cause():
    return 1
def freq(f=None):
    return 240000000
class I2C:
    # an SHT3x's answer: 25.0 degC, 50 %RH, good CRCs
    _R = bytes((0x66, 0x66, 0x93, 0x80, 0x00, 0xA2))
    def __init__(self, id=0, scl=None, sda=None, freq=400000):
        pass
    def writeto(self, addr, buf, stop=True):
        return len(buf)
    def readfrom_into(self, addr, buf, stop=True):
        for i in range(len(buf)):
            buf[i] = self._R[i % 6]
    def scan(self):
        return [0x44]
SoftI2C = I2C
class Counter:
    # machine.Counter / Encoder on a PCNT unit: no edges while measuring
    RISING = 1
    FALLING = 2
    def __init__(self, id, *pins, **kw):
        pass
    def value(self, v=None):
        return 0
Encoder = Counter
class SPI:
    # a MAX31855's answer: thermocouple 100.0 degC, internal 25.0 degC, no fault
    _R = bytes((0x06, 0x40, 0x19, 0x00))
    def __init__(self, id, baudrate=1000000, **kw):
        pass
    def readinto(self, buf, write=0):
        for i in range(len(buf)):
            buf[i] = self._R[i % 4]
    def write(self, buf):
        pass
class UART:
    # a Modbus RTU slave's answer at once: every register reads 256, a write is echoed
    def __init__(self, id, baudrate=115200, bits=8, parity=None, stop=1, **kw):
        self.rx = bytearray()
    def _crc(self, b):
        c = 0xFFFF
        for x in b:
            c ^= x
            for _ in range(8):
                c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        return bytes((c & 0xFF, c >> 8))
    def write(self, req):
        if req[1] == 6:
            a = bytes(req[:6])
        else:
            a = bytes((req[0], req[1], 2 * req[5])) + bytes((1, 0)) * req[5]
        self.rx = bytearray(a + self._crc(a))
        return len(req)
    def any(self):
        return len(self.rx)
    def readinto(self, buf, n=-1):
        if not self.rx:
            return None
        n = min(len(buf) if n < 0 else n, len(self.rx))
        for i in range(n):
            buf[i] = self.rx[i]
        self.rx = self.rx[n:]
        return n
    def flush(self):
        pass
    def txdone(self):
        return True
'''

FAKE_NETWORK = '''\
# A stand-in for the chip's network module: only for measuring (cyphy check). It joins
# (at once, as 127.0.0.1) only where the measuring code has a socket for the board's UDP
# port (CONNECTS, set by the stand-in socket on the frozen build); otherwise it never does.
CONNECTS = False
STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_CONNECT_FAIL = 203
class WLAN:
    def __init__(self, iface=0):
        self.on = False
        self.up = False
    def active(self, v=None):
        if v is None:
            return self.on
        self.on = v
    def connect(self, ssid, key=None):
        self.up = CONNECTS
    def disconnect(self):
        self.up = False
    def isconnected(self):
        return self.up
    def status(self, *a):
        return STAT_GOT_IP if self.up else STAT_CONNECTING
    def ifconfig(self, *a):
        if self.up:
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
    def config(self, *a, **kw):
        return None
'''

# The stand-in board's modules, before anything of the firmware (its own heap is measured
# and left out).
STANDIN = '''
import gc, sys, micropython
import machine
machine.UV.update(UVS)
if UDP:
    import network
    # Where MicroPython has sockets (the frozen build: the Unix port), the node's UDP port
    # really opens: ESP32's socket API (addresses as (ip, port), select.poll on sockets)
    # over the Unix port's (addresses as sockaddr bytes), in sys.modules before the board.
    try:
        import socket as _rs, select as _rp
    except ImportError:
        _rs = None
    if _rs is not None:
        class _Sock:
            def __init__(self, af=2, kind=2, *a):
                self.s = _rs.socket(af, kind)
            def setsockopt(self, *a):
                self.s.setsockopt(*a)
            def setblocking(self, f):
                self.s.setblocking(f)
            def bind(self, a):
                self.s.bind(_rs.getaddrinfo(a[0], a[1])[0][-1])
            def sendto(self, d, a):
                return self.s.sendto(d, _rs.getaddrinfo(a[0], a[1])[0][-1])
            def recvfrom(self, n):
                d, a = self.s.recvfrom(n)
                return d, ("%d.%d.%d.%d" % (a[4], a[5], a[6], a[7]), a[2] << 8 | a[3])
            def close(self):
                self.s.close()
        class _Poll:
            def __init__(self):
                self.p = _rp.poll()
            def register(self, s, ev=1):
                self.p.register(s.s, ev)
            def ipoll(self, t=-1):
                return self.p.ipoll(t)
        class _M:
            pass
        _ms = _M()
        for _k in dir(_rs):
            if _k.isupper():
                setattr(_ms, _k, getattr(_rs, _k))
        _ms.socket = _Sock
        _ms.getaddrinfo = _rs.getaddrinfo
        _mp = _M()
        _mp.POLLIN, _mp.POLLOUT, _mp.poll = _rp.POLLIN, _rp.POLLOUT, _Poll
        sys.modules["socket"], sys.modules["select"] = _ms, _mp
        network.CONNECTS = True
# ESP32 has binascii built in; this port would load micropython-lib's binascii.py (7 KB of
# heap) from its frozen path first: take the built-in, as a node would.
_p = sys.path[:]
sys.path[:] = []
import binascii
sys.path[:] = _p
del _p
'''

# Starts the node as boot.py does, on the stand-in board.
BOOT = '''
import board
board._machine_name = lambda: MACHINE
from cyphy_node import app
node = app.boot()
if node is None:
    raise SystemExit("the node did not start")
if UDP and network.CONNECTS:
    # Wi-Fi joins and the UDP port opens in the node's passes: run a few, then go on
    # in the background as boot.py leaves it
    node.stop()
    node.run(0.3)
    node.start()
    if node.comms is not None and node.comms.net is not None and node.comms.net.udp is None:
        raise SystemExit("the UDP port did not open: %s" % (node.comms.net.error,))
'''

# For the CPU snippet: everything in one step (its heap figures are not used).
SETUP = STANDIN + '''
for _n in ORDER:
    __import__(_n)
''' + BOOT


def _ram_steps(order: list[str]) -> tuple[str, ...]:
    """The RAM snippet's further steps (after STANDIN): each module imported on its own, in
    dependency order, then the boot; the driver measures the heap after each, settled."""
    return tuple(f"__import__({n!r})\n" for n in order) + (BOOT,)


CPU = SETUP + '''
import time
import pystone_lowmem
_best = 0
for _i in range(2):
    _t, _s = pystone_lowmem.pystones(PASSES)
    if _s > _best:
        _best = _s
_L = []
for _lp in node.loops:
    _n = 0
    _t0 = time.ticks_ms()
    while True:
        _k = 0
        while _k < 50:
            _lp.tick()
            _k += 1
        _n += 50
        _dt = time.ticks_diff(time.ticks_ms(), _t0)
        if _dt >= TIMING_MS:
            break
    _L.append((_lp.name, _lp.rate_hz, _dt * 1000 / _n))
def _time(f):
    _n = 0
    _t0 = time.ticks_ms()
    while True:
        _k = 0
        while _k < 20:
            f()
            _k += 1
        _n += 20
        _dt = time.ticks_diff(time.ticks_ms(), _t0)
        if _dt >= TIMING_MS:
            return _dt * 1000 / _n
_T = [(_t.name, _t.rate_hz, _time(_t.tick)) for _t in node.tasks]
_U = []
if node.graph is not None:
    for _b in node.graph.blocks.values():
        if hasattr(_b, "impl"):
            _U.append((_b.name, _time(_b.tick)))
print("@cyphy-check " + repr([_best, _L, _T, _U]))
'''

FAKE_ONEWIRE = '''\
# A stand-in for the onewire module: only for measuring RAM and CPU (cyphy check). Every
# sensor answers 25.0 degC, with a good CRC.
class OneWireError(Exception):
    pass
_PAD = bytes((0x90, 0x01, 0x4B, 0x46, 0x7F, 0xFF, 0x0C, 0x10))
def _crc(data):
    crc = 0
    for b in data:
        for _ in range(8):
            mix = (crc ^ b) & 1
            crc >>= 1
            if mix:
                crc ^= 0x8C
            b >>= 1
    return crc
class OneWire:
    SEARCH_ROM = 0xF0
    MATCH_ROM = 0x55
    SKIP_ROM = 0xCC
    def __init__(self, pin):
        self.pin = pin
    def reset(self, required=False):
        return True
    def writebyte(self, b):
        pass
    def write(self, buf):
        pass
    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = _PAD[i] if i < 8 else _crc(_PAD)
    def select_rom(self, rom):
        pass
    def scan(self):
        return []
    def crc8(self, data):
        return _crc(data)
'''

BARE = "import gc\n"   # the bare interpreter: what it holds once settled (Result.heap_used)


def _mid_uv(cfg: dict) -> dict[int, int]:
    """Each ADC pin's reading at the middle of its channel's valid range (microvolts)."""
    out = {}
    for ch in cfg.get("channels", []):
        if ch.get("kind") != "adc":
            continue
        s = ch["scale"]
        lo, hi = ch["valid"]
        e = (lo + hi) / 2
        mv = s["mv_min"] + (e - s["eng_min"]) * (s["mv_max"] - s["mv_min"]) / (s["eng_max"] - s["eng_min"])
        out[ch["pin"]] = int(mv * 1000)
    return out


def _prelude(cfg: dict, chip: str, order: list[str]) -> str:
    udp = bool((cfg.get("comms") or {}).get("udp"))
    return (f"UVS = {_mid_uv(cfg)!r}\nUDP = {udp!r}\nORDER = {order!r}\nMACHINE = {MACHINE[chip]!r}\n"
            f"PASSES = {PYSTONE_PASSES}\nTIMING_MS = {TIMING_MS}\n")


def _files(cfg: dict, with_pystone: bool, with_firmware: bool = True) -> dict[str, bytes]:
    """The node's filesystem for the measurement: the stand-in board's modules, the config
    as provisioned, secrets; the firmware's /lib unless it is in ROMFS or frozen."""
    from cyphy import mp32

    files = dict(mp32.firmware_files("esp32")) if with_firmware else {}
    files["/lib/machine.py"] = FAKE_MACHINE.encode()
    files["/lib/network.py"] = FAKE_NETWORK.encode()
    files["/lib/onewire.py"] = FAKE_ONEWIRE.encode()
    files["/config.json"] = json.dumps(cfg).encode()
    from .provision import compiled_config   # as cyphy provision leaves the node

    # forced: the node boots whatever it holds (it would refuse a config that does not fit,
    # app.py); this check measures it and judges the fit itself
    files["/config.node.json"] = compiled_config(files["/config.json"], cfg, force=True)
    secrets: dict[str, Any] = {"key": "5a" * 32}
    if (cfg.get("comms") or {}).get("udp"):
        secrets["wifi"] = {"ssid": "cyphy-check", "password": "measuring-only"}
    files["/secrets.json"] = json.dumps(secrets).encode()
    if with_pystone:
        from cyphy.sim import speed

        bench = speed.benchmark_path()
        if bench.exists():
            files["/lib/pystone_lowmem.py"] = bench.read_bytes()
    return files


def _marker(stdout: str) -> Any:
    for ln in reversed(stdout.splitlines()):
        if ln.startswith("@cyphy-check "):
            return ast.literal_eval(ln[len("@cyphy-check "):])
    return None


def _arena_request(total: int) -> int:
    """The heap to ask the port for so that its GC arena is about `total` bytes (the GC's
    own tables take the rest: asking for 65536 gives a 64000-byte arena on this port)."""
    return int(math.ceil(total * 65536 / 64000 / BLOCK)) * BLOCK


def check(cfg: dict, chip: str = "esp32", psram: bool = False, timing: bool = True,
          heap: Heap | None = None, base: Path | None = None, romfs: bool = False,
          frozen: bool | None = None) -> Report:
    """Check cfg for a node with this chip (psram: with PSRAM); heap: override the table;
    base: the config file's directory (where its user blocks' modules are).
    Where the firmware is, as the board runs it (frozen None): frozen into MicroPython
    without PSRAM (such a heap cannot hold the firmware's bytecode), its .mpy files on the
    filesystem with PSRAM. frozen True: frozen into a 32-bit MicroPython built here
    (cyphy.frozen); False: the .mpy files on the WebAssembly port's filesystem, or with
    romfs in a ROMFS image there.
    Raises CheckUsageError for an unknown chip or both romfs and frozen, mp32.Mp32Error
    (frozen.FrozenError) if the 32-bit MicroPython cannot run (or the firmware fails on it)."""
    from cyphy import userblock
    import time as _time

    from cyphy import mp32

    t0 = _time.monotonic()
    if romfs and frozen:
        raise CheckUsageError("--romfs and --frozen exclude each other: the firmware is in one place")
    if frozen is None:
        frozen = default_frozen(psram) and not romfs
    h = heap or heap_for(chip, psram)
    rep = Report(chip=chip, psram=psram, heap_bytes=h.bytes, heap_source=h.source,
                 config_name=cfg.get("name") if isinstance(cfg.get("name"), str) else None,
                 romfs=romfs, frozen=frozen)
    rep.errors = config_errors(cfg, chip)
    if rep.errors:
        rep.seconds = _time.monotonic() - t0
        return rep
    from cyphy.client import comms_timeout_warning

    w = comms_timeout_warning(cfg.get("comms_timeout_ms"))
    if w:
        rep.warnings.append(w)  # our tools' heartbeat cannot keep such a timeout alive
    from cyphy_node import config as C

    full = C.validate(cfg).to_dict()
    if frozen and (full.get("comms") or {}).get("udp"):
        full["comms"]["udp_port"] = _free_udp_port()  # its UDP port opens there: not a taken one
    order = import_order(boot_roots(full))
    pre = _prelude(full, chip, order)
    want_cpu = timing and _has_pystone()
    files = _files(full, want_cpu, with_firmware=not (romfs or frozen))
    image = None
    if romfs:
        from cyphy import romfs as _romfs

        image = _romfs.image(mp32.firmware_files("esp32"))
        rep.romfs_bytes = len(image)
    try:
        files.update(userblock.node_files(full, base))
        findings = userblock.check(full, base)
    except userblock.UserBlockError as e:
        f, _, why = str(e).partition(": ")
        rep.errors = [{"field": f, "reason": why, "kind": "config"}]
        rep.seconds = _time.monotonic() - t0
        return rep
    for fd in findings:
        if not fd.started:          # the node would not boot: nothing to measure
            i = [b.get("name") for b in full["blocks"]].index(fd.block)
            rep.errors = [{"field": f"blocks[{i}].module", "reason": userblock.describe(fd),
                           "kind": "user block"}]
            rep.seconds = _time.monotonic() - t0
            return rep
        rep.user_blocks[fd.block] = {"module": fd.module, "allocation_free": fd.ok,
                                     "why": fd.why or None, "line": fd.line,
                                     "budget_us": None, "tick_us": None}
        if not fd.ok:
            rep.reasons.append(userblock.describe(fd))
    for b in userblock.blocks(full):
        rep.user_blocks[b["name"]]["budget_us"] = b["budget_us"]
    snippets = [mp32.Snippet(BARE, heap_bytes=64 * 1024, files={}),
                mp32.Snippet(pre + STANDIN, heap_bytes=_arena_request(h.bytes + PAD), files=files,
                             romfs=image, more=_ram_steps(order))]
    if want_cpu and not any(not fd.ok for fd in findings):
        snippets.append(mp32.Snippet(pre + CPU, heap_bytes=max(mp32.DEFAULT_HEAP, _arena_request(h.bytes + PAD)),
                                     files=files, romfs=image))
    if frozen:
        from cyphy import frozen as _frozen

        res = _frozen.run_many(snippets)
    else:
        res = mp32.run_many(snippets)
    bare = res[0].check().heap_used
    ram = res[1]
    refused = [ln for ln in ram.stdout.splitlines() if ln.startswith(REFUSED)]
    if not ram.ok and frozen and ("MemoryError" in ram.stderr or refused):
        # The frozen build's heap is fixed, as the chip's: the firmware ran out of it (and
        # said so, when it was the loops: app.py's refusal)
        last = [ln for ln in ram.stderr.splitlines() if ln.startswith("MemoryError")][-1:]
        if refused:
            what = refused[-1][len(REFUSED):].split(";")[0].strip()
            rep.reasons.append(f"the node did not start in the {_kb(h.bytes)} heap: {what}")
        else:
            where = "while booting" if len(ram.settled) > len(order) else "while importing the firmware"
            rep.reasons.append(f"the node did not start in the {_kb(h.bytes)} heap: "
                               f"{(last or ['MemoryError'])[0]} {where}")
        rep.advice.append("drop loops, blocks or devices" + (
            ", or use a board with PSRAM (--psram)" if not psram and (chip, True) in HEAPS else ""))
        rep.seconds = _time.monotonic() - t0
        return rep
    if not ram.ok:
        raise mp32.Mp32Error(f"the firmware did not start on the 32-bit MicroPython with this config "
                             f"(exit {ram.status}):\n{ram.stdout[-2000:]}\n{ram.stderr[-2000:]}")
    # after each step, the heap settled (mp32: this port frees nothing inside a call)
    used = [st.used for st in ram.settled]
    # a part the boot had to drop (comms for want of memory...) means it does not fit,
    # whatever the figures of what did start say
    for ln in ram.stdout.splitlines():
        if ln.startswith("cyphy: ") and " dropped (" in ln:
            part, _, why = ln[len("cyphy: "):].split(";")[0].partition(" dropped ")
            rep.reasons.append(f"at boot the node dropped {part} {why}")
    rep.measuring_bytes = used[0] - bare
    rep.modules = {n: used[i + 1] - used[i] for i, n in enumerate(order)}
    resident = bare + (used[-1] - used[0])
    rep.ram_resident_bytes = resident
    free = max(0, h.bytes - resident)
    rep.ram_free_bytes = free
    # The snippet's heap is the chip's plus PAD for the measuring code (and the port grows
    # it for the garbage of a step): what it has beyond the chip's heap and that code is
    # free space the chip would not have, taken off the largest free block.
    last = ram.settled[-1]
    excess = max(0, last.total - h.bytes - rep.measuring_bytes)
    largest = max(0, last.max_free - excess)
    rep.ram_largest_free_bytes = min(largest, free, h.area)
    rep.loops = {lp["name"]: {"rate_hz": lp["rate_hz"], "cpu_pct": None, "tick_us": None}
                 for lp in full["loops"]}
    if len(res) > 2:
        cpu = res[2]
        if cpu.ok:
            from cyphy.sim import speed

            best, loops, tasks, users = _marker(cpu.stdout)
            rep.port_pystones = float(best)
            k = float(best) / speed.CHIP_PYSTONES[chip]     # chip us per port us
            in_task = {n for t in full.get("tasks") or [] for n in t["order"]}
            for name, rate, us in loops:
                chip_us = us * k
                rep.loops[name] = {"rate_hz": rate, "tick_us": round(chip_us, 1),
                                   "cpu_pct": round(chip_us * rate / 1e4, 2)}
                if name in in_task:
                    rep.loops[name]["in_task"] = True   # counted with its task
            for name, rate, us in tasks:
                chip_us = us * k
                rep.tasks[name] = {"rate_hz": rate, "tick_us": round(chip_us, 1),
                                   "cpu_pct": round(chip_us * rate / 1e4, 2)}
            for name, us in users:
                u = rep.user_blocks[name]
                u["tick_us"] = round(us * k, 1)
                if u["tick_us"] > u["budget_us"]:
                    rep.reasons.append(f'user block "{name}" ({u["module"]}.py) takes '
                                       f'{u["tick_us"]:.0f} us per tick at {MCU[chip]} speed, '
                                       f'over its budget_us {u["budget_us"]}')
    _judge(rep, h)
    rep.seconds = _time.monotonic() - t0
    return rep


SOAK = """
import gc
node.stop()
gc.collect()
_before = gc.mem_alloc()
node.run(SOAK_S)
gc.collect()
print('@soak', _before, gc.mem_alloc(), gc.mem_free(), node.comms_errors, node.dropped,
      node.comms_last_error)
"""


def frozen_soak(cfg: dict, seconds: float, chip: str = "esp32", psram: bool = False,
                extra_heap: int = 8 * 1024) -> tuple[Any, int]:
    """A snippet for cyphy.frozen.run_many that boots cfg (its comms.udp on) frozen, in the
    chip's heap plus extra_heap for the measuring code, then runs the node in the
    foreground for `seconds` (the stand-in board's timers never fire: the service runs
    after every pass) and prints one line, "@soak <heap before> <after> <free>
    <comms_errors> <dropped> <last error>" (parse_soak). Returns (snippet, its UDP port):
    a host can talk to the node there meanwhile (key "5a" * 32)."""
    from cyphy import mp32
    from cyphy_node import config as C

    full = C.validate(cfg).to_dict()
    if not (full.get("comms") or {}).get("udp"):
        raise ValueError("frozen_soak needs comms.udp on")
    port = _free_udp_port()
    full["comms"]["udp_port"] = port
    order = import_order(boot_roots(full))
    snip = mp32.Snippet(_prelude(full, chip, order) + f"SOAK_S = {seconds!r}\n" + STANDIN,
                        heap_bytes=_arena_request(heap_for(chip, psram).bytes + extra_heap),
                        files=_files(full, False, with_firmware=False),
                        more=_ram_steps(order) + (SOAK,))
    return snip, port


def parse_soak(stdout: str) -> dict[str, Any]:
    """frozen_soak's line as a dict (KeyError if the run printed none)."""
    for ln in stdout.splitlines():
        if ln.startswith("@soak "):
            before, after, free, errors, rest = ln.split(" ", 5)[1:]
            dropped, _, last = rest.partition("] ")
            return {"heap_before": int(before), "heap_after": int(after), "free": int(free),
                    "comms_errors": int(errors), "dropped": dropped + "]", "last_error": last}
    raise KeyError("no @soak line: the run did not finish")


def _free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bare_bytes() -> int:
    """What a plain MicroPython holds in its heap before any code runs (the 32-bit port)."""
    from cyphy import mp32

    return mp32.run(BARE, heap_bytes=64 * 1024, files={}).check().heap_used


def _has_pystone() -> bool:
    from cyphy.sim import speed

    return speed.benchmark_path().exists()


def _judge(rep: Report, h: Heap) -> None:
    before = len(rep.reasons)           # (user blocks' own reasons come first)
    budget = h.bytes - MARGIN
    assert rep.ram_resident_bytes is not None and rep.ram_largest_free_bytes is not None
    if rep.ram_resident_bytes > budget:
        rep.reasons.append(f"resident {_kb(rep.ram_resident_bytes)} is over {_kb(budget)} "
                           f"(the {_kb(h.bytes)} heap less a {_kb(MARGIN)} margin)")
    if rep.ram_largest_free_bytes < MARGIN:
        rep.reasons.append(f"largest free block {_kb(rep.ram_largest_free_bytes)} is under {_kb(MARGIN)}")
    ram_short = len(rep.reasons) > before
    busy = sum(v["cpu_pct"] for v in rep.loops.values()
               if v.get("cpu_pct") is not None and not v.get("in_task"))
    busy += sum(v["cpu_pct"] for v in rep.tasks.values() if v.get("cpu_pct") is not None)
    if busy > 100:
        rep.reasons.append(f"the loops need {busy:.0f} % of the CPU at {MCU[rep.chip]} speed")
    if ram_short:
        big = sorted(rep.modules.items(), key=lambda kv: -kv[1])[:3]
        rep.advice.append("drop or shrink the biggest modules: " + ", ".join(f"{n} {_kb(b)}" for n, b in big))
    if busy > 100:
        heavy = sorted(((v["cpu_pct"], n) for n, v in rep.loops.items() if v.get("cpu_pct") is not None),
                       reverse=True)[:3]
        rep.advice.append("slow down or drop the busiest loops: "
                          + ", ".join(f"{n} {p:.1f} % CPU" for p, n in heavy))
    if ram_short and not rep.psram and (rep.chip, True) in HEAPS:
        rep.advice.append("or use a board with PSRAM (--psram)")
