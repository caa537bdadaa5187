"""Where sim nodes live on the host, and what identifies each one.

    $CYPHY_HOME/sim/NAME/
        node.json       identity, made once: MAC (machine.unique_id), loopback IP, flash size
        flash.bin       the 4 MB flash image (partition table + LittleFS vfs)
        bench.json      optional: the plant and how the board's pins are wired to it
        state.json      while running: supervisor pid, serial port, line rate
        tty             symlink to the node's PTY: the serial port tools open
        console.log     what the node printed (raw bytes), the node's record
        supervisor.log  resets, crashes, sandbox status
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import secrets
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from cyphy import flashimage

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Each node's "Wi-Fi" address: 127.H.X.Y (Linux routes all of 127/8 to lo, so a node binds
# its own address without any setup). Unique within one $CYPHY_HOME; H comes from the
# home's path, so that separate homes (parallel test runs) rarely share addresses.


def ip_prefix(home: Path) -> str:
    h = int.from_bytes(hashlib.sha256(str(home.resolve()).encode()).digest()[:2], "big")
    return f"127.{2 + h % 250}."


class SimError(Exception):
    """A user-facing problem with a sim node; the message says what to do."""


def cyphy_home() -> Path:
    env = os.environ.get("CYPHY_HOME")
    return Path(env).expanduser() if env else Path(platformdirs.user_data_dir("cyphy"))


def repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def rom_dir() -> Path:
    """The sim board's MicroPython ROM (boards/sim/rom)."""
    return repo_root() / "boards" / "sim" / "rom"


def chips_path() -> Path:
    """boards/esp32/pins.py: what the chip descriptions share (chip names, recognising a
    chip, the DevKit builder, pwm_error), read by the firmware's HAL, the sim ROM and the
    host. Each chip's own description is chip_path(chip)."""
    return repo_root() / "boards" / "esp32" / "pins.py"


def chip_path(chip: str) -> Path:
    """boards/esp32/chip_<chip>.py: the one description of a chip and its DevKit (pins,
    ADC, PWM, timers, esptool identity)."""
    return repo_root() / "boards" / "esp32" / f"chip_{chip}.py"


def chips_source(chip: str | None = None) -> str:
    """What the sim ROM's _hw.py reads (CYPHY_SIM_CHIPS): a JSON object of file name ->
    text, pins.py and the chip's own chip_<chip>.py (every chip's when chip is None)."""
    files = {"pins.py": chips_path().read_text()}
    for c in (chip,) if chip else CHIP_NAMES:
        if c in CHIP_NAMES:
            files[chip_path(c).name] = chip_path(c).read_text()
    return json.dumps(files)


def chips() -> dict:
    """pins.py's namespace with every chip loaded: CHIPS (name -> its CHIP), BOARDS (the
    DevKits, by variant), CHIP_BOARD, pwm_error, chip_of_machine, ..."""
    ns: dict = {"__name__": "pins"}
    exec(compile(chips_path().read_text(), str(chips_path()), "exec"), ns)
    for c in CHIP_NAMES:
        m: dict = {"__name__": f"chip_{c}"}
        exec(compile(chip_path(c).read_text(), str(chip_path(c)), "exec"), m)
        ns["CHIPS"][c] = m["CHIP"]
        ns["board"](ns["CHIP_BOARD"][c], m["BOARD"])
    return ns


CHIP_NAMES = ("esp32", "esp32s3", "esp32c3")
DEFAULT_CHIP = "esp32"
# A new node's board memory: an ESP32-WROOM without PSRAM, the board most users own
# (docs/boards.md "WROOM nodes"); "psram" for an ESP32 with PSRAM (--heap).
DEFAULT_RAM = "wroom"
RAMS = ("psram", "wroom")


HEAP_MIN = 16 * 1024          # no MicroPython starts in less
HEAP_MAX = 256 * 1024 * 1024  # a sim node is a microcontroller
HEAP_RE = re.compile(r"^\s*(\d+)\s*([kKmM]?)\s*$")


def parse_heap(text: str) -> int:
    """A --heap value in bytes: 110000, 512K, 2M (K = 1024). SimError says what is wrong."""
    m = HEAP_RE.match(str(text))
    if not m:
        raise SimError(f"--heap {text!r}: write a size in bytes, or with K or M, e.g. 512K, 2M "
                       f"or 110000")
    n = int(m.group(1)) * {"": 1, "K": 1024, "M": 1024 * 1024}[m.group(2).upper()]
    if not HEAP_MIN <= n <= HEAP_MAX:
        raise SimError(f"--heap {text}: {n} bytes is outside {HEAP_MIN // 1024}K..{HEAP_MAX // (1024 * 1024)}M "
                       f"(the default 512K is an ESP32 with PSRAM; the sim boots from about 192K)")
    return n


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise SimError(
            f"invalid node name {name!r}: use 1-64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    return name


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie still answers kill(0); it is not running
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


@dataclass
class Node:
    name: str
    root: Path

    @classmethod
    def named(cls, name: str, home: Path | None = None) -> "Node":
        check_name(name)
        return cls(name, (home or cyphy_home()) / "sim" / name)

    image = property(lambda self: self.root / "flash.bin")
    config_path = property(lambda self: self.root / "node.json")
    state_path = property(lambda self: self.root / "state.json")
    tty = property(lambda self: self.root / "tty")
    bench = property(lambda self: self.root / "bench.json")
    console_log = property(lambda self: self.root / "console.log")
    supervisor_log = property(lambda self: self.root / "supervisor.log")

    def exists(self) -> bool:
        return self.config_path.exists()

    def create(self) -> dict:
        """Make the node's identity and a blank flash image (first start only). A node
        made before nodes had IPs gets its IP here, at its next start."""
        self.root.mkdir(parents=True, exist_ok=True)
        # The lock makes choosing an IP and writing it one step for concurrent starts.
        with open(self.root.parent / ".ip.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self.config_path.exists():
                # Locally administered unicast MAC, unique per node: machine.unique_id().
                raw = hashlib.sha256(self.name.encode() + secrets.token_bytes(16)).digest()
                mac = bytes([(raw[0] & 0xFC) | 0x02]) + raw[1:6]
                _write_json_atomic(
                    self.config_path,
                    {"name": self.name, "mac": mac.hex(), "ip": self._free_ip(),
                     "flash_size": flashimage.FLASH_SIZE_4MB, "ram": DEFAULT_RAM,
                     "created": time.time()},
                )
            else:
                cfg = self.config()
                if "ip" not in cfg:
                    cfg["ip"] = self._free_ip()
                    _write_json_atomic(self.config_path, cfg)
        if not self.image.exists():
            flashimage.create_flash_image(self.image)
        return self.config()

    def chip(self) -> str:
        """The node's chip ("esp32", "esp32s3", "esp32c3"): node.json's "chip", made at
        first start (`cyphy sim start --chip`, default esp32)."""
        return self._kept("chip", DEFAULT_CHIP)

    def set_chip(self, chip: str) -> None:
        """Give a stopped node another chip (its flash image stays)."""
        self._keep("chip", chip, CHIP_NAMES, DEFAULT_CHIP)

    def ram(self) -> str:
        """The node's board memory: "psram" (an ESP32 with PSRAM: the 64-bit Unix port, the
        firmware from its filesystem, --heap) or "wroom" (an ESP32-WROOM without PSRAM: the
        32-bit MicroPython with the ROM and the firmware frozen in, the chip's heap);
        node.json's "ram", made at first start (`cyphy sim start --wroom/--psram`)."""
        return self._kept("ram", DEFAULT_RAM)

    def set_ram(self, ram: str) -> None:
        """Give a stopped node another board memory (its flash image stays)."""
        self._keep("ram", ram, RAMS, DEFAULT_RAM)

    def _kept(self, key: str, default: str) -> str:
        try:
            return self.config().get(key, default)
        except (OSError, ValueError):
            return default

    def _keep(self, key: str, value: str, allowed: tuple[str, ...], default: str) -> None:
        # one of the node's kept hardware settings (node.json), changed only while stopped
        if value not in allowed:
            raise SimError(f"unknown {key} {value!r}; use one of: {', '.join(allowed)}")
        cfg = self.config()
        now = cfg.get(key, default)
        if now == value:
            return
        if self.state() is not None:
            raise SimError(f"node {self.name} is running as {now}: stop it first "
                           f"(cyphy sim stop {self.name}) to start it as {value}")
        cfg[key] = value
        _write_json_atomic(self.config_path, cfg)

    def _free_ip(self) -> str:
        """The first loopback address no other node of this $CYPHY_HOME has."""
        taken = set()
        for other in self.root.parent.iterdir():
            if other.name == self.name:
                continue
            try:
                taken.add(json.loads((other / "node.json").read_text()).get("ip"))
            except (OSError, ValueError, AttributeError):
                continue
        prefix = ip_prefix(self.root.parent)
        for third in range(256):
            for fourth in range(1, 255):  # .0 and .255 look like network/broadcast addresses
                ip = f"{prefix}{third}.{fourth}"
                if ip not in taken:
                    return ip
        raise SimError(f"no free node IP left in {prefix}0.0/16 under {self.root.parent}")

    def config(self) -> dict:
        return json.loads(self.config_path.read_text())

    def state(self) -> dict | None:
        """Runtime state if the node's supervisor is alive, else None (stale state removed)."""
        try:
            st = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return None
        if not pid_alive(int(st.get("pid", 0))):
            self.state_path.unlink(missing_ok=True)
            return None
        return st

    def write_state(self, st: dict) -> None:
        _write_json_atomic(self.state_path, st)

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the node (power off). False if it was not running."""
        st = self.state()
        if st is None:
            return False
        pid = int(st["pid"])
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.02)
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            while pid_alive(pid):
                time.sleep(0.01)
        self.state_path.unlink(missing_ok=True)
        return True


def delete(node: Node, force: bool = False, timeout: float = 5.0) -> bool:
    """Remove a sim node: its identity, flash image, bench and logs (keys kept by `cyphy
    provision` are the node name's, not the sim node's, and stay). A running node is
    refused unless force (then it is powered off first). False if there was no such node."""
    import shutil

    if not node.root.exists():
        return False
    if node.state() is not None:
        if not force:
            raise SimError(f"node {node.name} is running: stop it first (cyphy sim stop {node.name}) "
                           f"or delete it with --force")
        node.stop(timeout)
    shutil.rmtree(node.root)
    return True


def all_nodes(home: Path | None = None) -> list[Node]:
    base = (home or cyphy_home()) / "sim"
    if not base.is_dir():
        return []
    return [Node(p.name, p) for p in sorted(base.iterdir()) if (p / "node.json").exists()]
