"""`cyphy flash`: MicroPython, the partition table and a filesystem holding the cyphy
firmware (compiled .mpy) and the node's config, written with esptool (chip detection,
erase, write, verify by MD5).

On a sim node (sim://NAME) the same esptool path runs against the sim's ROM download mode
(docs/boards.md): the node is restarted in download mode, written, and booted.
"""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import flashimage as fi

FW_OFFSET = 0x1000          # MicroPython's ESP32 .bin: bootloader, partitions, app, merged
ESP_IMAGE_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
CHIP_ID_ESP32 = 0           # image extended header: which chip the image is for
CHIP_NAMES = {0: "ESP32", 2: "ESP32-S2", 5: "ESP32-C3", 9: "ESP32-S3", 12: "ESP32-C2",
              13: "ESP32-C6", 16: "ESP32-H2"}


class FlashError(Exception):
    """One line saying what went wrong and what to do."""


class FlashInterrupted(Exception):
    """Ctrl-C (SIGINT) while esptool ran; esptool has been stopped. touched: it had begun
    to erase or write the flash (the board is then blank or partly written); verified: how
    many regions it had written and verified."""

    def __init__(self, touched: bool, verified: int = 0) -> None:
        super().__init__("interrupted")
        self.touched = touched
        self.verified = verified


# What a write of the filesystem (and --erase-all) takes away: the node's files that no
# flash image carries. Said before the write (docs/deploy.md, "Flashing").
NODE_FILES = (("/secrets.json", "its key and Wi-Fi credentials"),
              ("/autotune.json", "its persisted tuning (autotune results)"),
              ("/config.json", "its config"))
# esptool's words once it touches the flash (erase, or write: which erases the sectors
# it writes)
_TOUCHED = ("Erasing", "Writing at", "Compressed ")


@dataclass
class FirmwareImage:
    data: bytes
    version: str | None      # MicroPython's version from the app description, if found


def check_firmware(path: Path, limit: int) -> FirmwareImage:
    """A MicroPython ESP32 .bin (as published, for offset 0x1000), or FlashError."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FlashError(f"{path}: {e.strerror}") from None
    if len(data) < 24 or data[0] != ESP_IMAGE_MAGIC:
        raise FlashError(f"{path}: not an ESP32 firmware image (no 0xE9 image header); "
                         f"use MicroPython's ESP32 .bin, e.g. ESP32_GENERIC-<date>-<version>.bin")
    chip = struct.unpack_from("<H", data, 12)[0]
    if chip != CHIP_ID_ESP32:
        raise FlashError(f"{path}: this image is for {CHIP_NAMES.get(chip, f'chip id {chip}')}, "
                         f"not ESP32")
    if len(data) > limit:
        raise FlashError(f"{path}: {len(data)} bytes do not fit below the filesystem at "
                         f"{FW_OFFSET + limit:#x} ({limit} bytes at most)")
    return FirmwareImage(data, _app_version(data))


def _app_version(data: bytes) -> str | None:
    # The app (at 0x10000, so 0xF000 into the file) starts with esp_app_desc_t right after
    # its 24-byte image header and 8-byte segment header: magic, then the version string.
    app = 0x10000 - FW_OFFSET
    d = app + 24 + 8
    if len(data) < d + 48 or data[app] != ESP_IMAGE_MAGIC:
        return None
    if struct.unpack_from("<I", data, d)[0] != APP_DESC_MAGIC:
        return None
    return data[d + 16:d + 48].split(b"\0")[0].decode(errors="replace") or None


def filesystem(config: dict | None, target: str, size: int) -> tuple[bytes, int]:
    """The vfs partition: the firmware tree (.mpy) and /config.json; (image, file count)."""
    import json

    from .firmware import build

    files = {b.dst: b.data for b in build(target)}
    if config is not None:
        from .provision import compiled_config

        files["/config.json"] = json.dumps(config).encode()
        files["/config.node.json"] = compiled_config(files["/config.json"], config)
    return fi.build_vfs(files, size), len(files)


def plan(firmware: Path | None, config: dict | None, target: str) -> list[tuple[int, bytes, str]]:
    """(offset, bytes, what) to write: [MicroPython,] partition table, filesystem."""
    layout = fi.MICROPYTHON_ESP32_4MB
    vfs = fi.find_partition(layout, "vfs")
    out = []
    if firmware is not None:
        fw = check_firmware(firmware, vfs.offset - FW_OFFSET)
        out.append((FW_OFFSET, fw.data, f"MicroPython {fw.version or '(version unknown)'}"))
    out.append((fi.PARTITION_TABLE_OFFSET, fi.encode_partition_table(layout), "partition table"))
    image, n = filesystem(config, target, vfs.size)
    out.append((vfs.offset, image, f"filesystem: {n} files"))
    return out


_PCT = re.compile(rb"(\d{1,3}(?:\.\d)?) ?%")
_ERRORS = (
    (re.compile(r"This chip is ([^,\s]+), not ([^.\s]+)"),
     "the chip on {port} is {1}, not an ESP32: use cyphy with an ESP32 board (this "
     "firmware and layout are for ESP32)"),
    (re.compile(r"exclusively lock|Resource busy|Device or resource busy"),
     "{port} is busy: another program (a terminal, mpremote, cyphy monitor) has it open"),
    (re.compile(r"Failed to connect to|No serial data received"),
     "no chip answered on {port}: put the board in download mode (hold BOOT/IO0, press EN) "
     "or let esptool reset it (--before default-reset); a sim node: use sim://NAME"),
    (re.compile(r"Errno 2\]|No such file or directory"),
     "no such port: {port} (cyphy discover lists the ports it sees)"),
)


def run_esptool(port: str, args: list[str], progress: Callable[[float], None] | None = None,
                before: str = "default-reset", after: str = "hard-reset", baud: int = 460800,
                on_touch: Callable[[], None] | None = None) -> str:
    """esptool --chip esp32 ... (a subprocess: esptool's own exit and output stay apart);
    its output, or FlashError with a one-line reason. on_touch() is called once, when
    esptool says it begins to erase or write the flash."""
    cmd = [sys.executable, "-m", "esptool", "--chip", "esp32", "--port", port, "--baud",
           str(baud), "--before", before, "--after", after, *args]
    started: list[subprocess.Popen] = []
    out = bytearray()
    try:
        # inside the try: a SIGINT landing just after Popen returns (the handler given
        # back) must still stop esptool and say what it had done
        p = _popen_held(cmd, started)
        assert p.stdout is not None
        if p.interrupted:  # Ctrl-C while esptool was starting
            raise KeyboardInterrupt
        while True:
            chunk = p.stdout.read1(4096) if hasattr(p.stdout, "read1") else p.stdout.read(1)
            if not chunk:
                break
            out += chunk
            if on_touch is not None and any(w.encode() in out for w in _TOUCHED):
                on_touch()
                on_touch = None
            if progress is not None:
                for m in _PCT.finditer(chunk):
                    progress(float(m.group(1)))
        rc = p.wait()
    except KeyboardInterrupt:
        # Ctrl-C: a terminal sends esptool its own SIGINT; a `kill -INT` reaches only us.
        # Either way esptool stops now, and we say what it had done.
        if started:
            _stop(started[0])
        text = out.decode(errors="replace")
        raise FlashInterrupted(any(w in text for w in _TOUCHED),
                               text.count("Hash of data verified")) from None
    text = out.decode(errors="replace")
    if rc != 0:
        raise FlashError(_explain(text, port))
    return text


def _popen_held(cmd: list[str], started: list[subprocess.Popen]) -> subprocess.Popen:
    """Popen(cmd), with a SIGINT that comes meanwhile held until it has returned (then
    p.interrupted is True): interrupted inside Popen, the child would run on unseen. The
    process is also appended to `started` while SIGINT is still held, so a caller that
    is interrupted before this returns can still stop it."""
    import signal

    seen: list[int] = []
    try:
        old = signal.signal(signal.SIGINT, lambda *_: seen.append(1))
    except ValueError:  # not the main thread
        old = None
    try:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        started.append(p)
    finally:
        if old is not None:
            signal.signal(signal.SIGINT, old)
    p.interrupted = bool(seen)  # type: ignore[attr-defined]
    return p


def _stop(p: subprocess.Popen) -> None:
    for sig in ("terminate", "kill"):
        if p.poll() is not None:
            break
        try:
            getattr(p, sig)()
            p.wait(0.5)
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        p.stdout.close()  # type: ignore[union-attr]
    except OSError:
        pass


def _explain(text: str, port: str) -> str:
    for pat, msg in _ERRORS:
        m = pat.search(text)
        if m:
            return msg.format(m.group(0), *m.groups(), port=port)
    last = [ln for ln in text.strip().splitlines() if ln.strip()][-1:] or ["(no output)"]
    return f"esptool failed on {port}: {last[0].strip()}"


def flash(port: str, firmware: Path | None, config: dict | None, target: str = "esp32",
          erase: bool = True, before: str = "default-reset", after: str = "hard-reset",
          baud: int = 460800, progress: Callable[[str, float], None] | None = None) -> dict:
    """Write [MicroPython,] the partition table and the filesystem; verified by esptool's
    MD5 check. Returns a report."""
    return write(port, plan(firmware, config, target), erase, before, after, baud, progress)


def write(port: str, parts: list[tuple[int, bytes, str]], erase: bool = True,
          before: str = "default-reset", after: str = "hard-reset", baud: int = 460800,
          progress: Callable[[str, float], None] | None = None,
          on_touch: Callable[[], None] | None = None) -> dict:
    """esptool write-flash of the planned regions, each verified by MD5."""
    with tempfile.TemporaryDirectory() as tmp:
        args = ["write-flash"]
        if erase:
            args.append("--erase-all")
        for off, data, what in parts:
            f = Path(tmp) / f"{off:#x}.bin"
            f.write_bytes(data)
            args += [f"{off:#x}", str(f)]
        cb = (lambda pct: progress("writing", pct)) if progress else None
        text = run_esptool(port, args, cb, before=before, after=after, baud=baud, on_touch=on_touch)
    verified = text.count("Hash of data verified")
    if verified < len(parts):
        raise FlashError(f"esptool did not verify every region on {port} "
                         f"({verified} of {len(parts)}); flash again")
    mac = re.search(r"MAC:\s+([0-9a-f:]{17})", text)
    chip = re.search(r"Chip (?:is|type:)\s+([^\n(]+)", text)
    return {"port": port, "chip": chip.group(1).strip() if chip else None,
            "mac": mac.group(1) if mac else None, "erased": erase,
            "regions": [{"offset": off, "bytes": len(d), "what": w} for off, d, w in parts],
            "verified": True}
