"""How much slower an ESP32 runs MicroPython than this machine: the sim's speed model.

A sim node's MicroPython runs on the host CPU, tens to hundreds of times faster than a
240 MHz ESP32, so "1 kHz works on the sim" says nothing about the chip. The model:

* Calibration: the same benchmark on both. micropython-lib's `pystone_lowmem` (PyPI
  package micropython-pystone-lowmem 3.4.2-4, fetched by `make` into the venv, checked
  against its SHA-256) runs on the sim's MicroPython here; the chips' figures are public:
  - ESP32 at 240 MHz: 1661 pystones/s (MicroPython v1.12, micropython issue #5673, same
    package and entry point `pystone_lowmem.main()`);
  - ESP32-S3 at 240 MHz and ESP32-C3 at 160 MHz relative to it, from one benchmark run on
    all three (scruss.com "Parallel MicroPython Benchmarking", 2025: ESP32 @ 160 MHz 15.4 s,
    i.e. ~10.3 s at 240 MHz; ESP32-S3 @ 240 MHz 8.9 s; ESP32-C3 @ 160 MHz 13.2 s).
  factor(chip) = host pystones/s / chip pystones/s (about 140 for an ESP32 on a current PC),
  measured on the MicroPython the node runs: the 64-bit Unix port (PSRAM nodes) or the
  32-bit build with the firmware frozen (WROOM nodes, about 1.5 times slower here).
  MicroPython has become faster since v1.12, so an ESP32 with today's firmware is somewhat
  quicker than this model: the sim errs on the strict side.
* Use: every node reports its loops' compute time in chip microseconds (the measured time
  times the factor; `cyphy get URL stats`: `chip_compute_mean_us`, `chip_compute_max_us`,
  `chip_cpu_pct`), and `cyphy sim start --speed chip` makes the node's soft callbacks (the
  control pass, the protocol service) take the chip's time: after each one the node stalls
  for (factor - 1) times what it took, so a loop whose pass does not fit its period at the
  chip's speed shows overruns. Main-thread code (the REPL, tools' raw-REPL code) keeps the
  host's speed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import urllib.request
from io import BytesIO
from pathlib import Path

PACKAGE = "micropython-pystone-lowmem"
VERSION = "3.4.2-4"
SHA256 = "3d5cd43a7b21539d55ad5de85a273c4c4025296a78525774b1583e22b6cd1c5c"
MODULE = "pystone_lowmem.py"

# pystones/s of MicroPython on each chip at its usual clock (see the module docstring)
ESP32_PYSTONES = 1661.0
CHIP_PYSTONES = {
    "esp32": ESP32_PYSTONES,
    "esp32s3": ESP32_PYSTONES * 10.27 / 8.9,
    "esp32c3": ESP32_PYSTONES * 10.27 / 13.2,
}
PASSES = 20000  # ~0.1 s on a PC; the best of RUNS is kept (a busy machine slows some runs)
RUNS = 5


class SpeedError(Exception):
    """The speed model cannot be used here; the message says why and what to do."""


def share_dir() -> Path:
    """Where the venv keeps the benchmark and the calibration (made by `make`)."""
    return Path(sys.prefix) / "share" / "cyphy"


def benchmark_path() -> Path:
    return share_dir() / MODULE


def fetch(dest: Path | None = None) -> Path:
    """Download pystone_lowmem from PyPI (its sdist has no setup.py, so pip cannot install
    it), check its SHA-256 and keep the module. Returns its path."""
    dest = dest or benchmark_path()
    if dest.exists():
        return dest
    meta_url = f"https://pypi.org/pypi/{PACKAGE}/json"  # PyPI's JSON API (the registry)
    try:
        with urllib.request.urlopen(meta_url, timeout=60) as r:
            meta = json.load(r)
        url = next(f["url"] for f in meta["releases"][VERSION] if f["digests"]["sha256"] == SHA256)
        with urllib.request.urlopen(url, timeout=60) as r:
            data = r.read()
    except (OSError, ValueError, KeyError, StopIteration) as e:
        raise SpeedError(f"cannot fetch {PACKAGE} {VERSION} from PyPI ({e}); the sim's speed "
                         "model needs it (make fetches it)") from None
    if hashlib.sha256(data).hexdigest() != SHA256:
        raise SpeedError(f"{PACKAGE} {VERSION}: the download does not match its SHA-256")
    with tarfile.open(fileobj=BytesIO(data)) as t:
        member = next(m for m in t.getmembers() if m.name.endswith("/" + MODULE))
        src = t.extractfile(member)
        assert src is not None
        text = src.read()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".tmp")
    tmp.write_bytes(text)
    tmp.replace(dest)
    return dest


def _micropython() -> str:
    exe = Path(sys.executable).with_name("micropython")
    return str(exe) if exe.exists() else "micropython"


def measure(micropython: str | None = None) -> float:
    """This machine's pystones/s on the sim's MicroPython (best of RUNS)."""
    bench = benchmark_path()
    if not bench.exists():
        raise SpeedError(f"{bench} is missing: run `make` (it fetches {PACKAGE}) or "
                         f"`python -m cyphy.sim.speed fetch`")
    best = 0.0
    for _ in range(RUNS):
        p = subprocess.run([micropython or _micropython(), "-c",
                            f"import sys; sys.path.insert(0, {str(bench.parent)!r}); "
                            f"import pystone_lowmem; pystone_lowmem.main({PASSES})"],
                           capture_output=True, text=True, timeout=120)
        m = re.search(r"benchmarks at (\d+) pystones/second", p.stdout)
        if not m:
            raise SpeedError(f"pystone_lowmem did not run: {p.stdout}{p.stderr}".strip())
        best = max(best, float(m.group(1)))
    return best


def _cache_key() -> str:
    return f"{platform.node()}|{platform.machine()}|{platform.processor()}|{os.cpu_count()}"


def runtime(ram: str) -> tuple[str, str | None]:
    """(name, executable) of the MicroPython a sim node with this board memory runs:
    the 64-bit Unix port for "psram", the 32-bit build with the ROM and the firmware frozen
    in (cyphy.frozen) for "wroom", which runs about 1.5 times slower on the same machine."""
    if ram == "wroom":
        from cyphy import frozen

        return f"wroom-{frozen.VERSION}", str(frozen.binary("sim", rom=True))
    return "unix", None


def host_pystones(ram: str = "psram") -> float:
    """This machine's pystones/s on the MicroPython a node with this board memory runs,
    measured once and kept beside the benchmark (`make` measures both while setting up,
    when the machine is quiet)."""
    name, exe = runtime(ram)
    cache = share_dir() / ("calibration.json" if name == "unix" else f"calibration-{name}.json")
    key = _cache_key()
    try:
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return float(saved["pystones"])
    except (OSError, ValueError, KeyError):
        pass
    value = measure(exe)
    try:
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "pystones": value}))
        tmp.replace(cache)
    except OSError:
        pass
    return value


def factor(chip: str = "esp32", ram: str = "psram") -> float:
    """How many times slower `chip` runs MicroPython than this machine runs a sim node
    with this board memory (its MicroPython: runtime())."""
    try:
        ref = CHIP_PYSTONES[chip]
    except KeyError:
        raise SpeedError(f"no speed figure for chip {chip!r}") from None
    return max(1.0, host_pystones(ram) / ref)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        if args == ["fetch"]:
            print(fetch())
            return 0
        for ram in ("psram", "wroom"):
            name, _ = runtime(ram)
            host = host_pystones(ram)
            for chip, ref in CHIP_PYSTONES.items():
                print(f"{chip}: {ref:.0f} pystones/s; this machine ({name}) {host:.0f}: "
                      f"factor {host / ref:.1f}")
        return 0
    except SpeedError as e:
        print(f"cyphy.sim.speed: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
