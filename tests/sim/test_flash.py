"""cyphy flash against a sim node: esptool writes MicroPython, the partition table and the
cyphy filesystem through the sim's ROM download mode; the node then boots the firmware.
Errors are one clear line each."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from helpers import cyphy, wait_for_log  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402

from cyphy import flashimage  # noqa: E402
from cyphy.flash import _explain  # noqa: E402


def esp32_image(chip_id: int = 0, size: int = 4096) -> bytes:
    """A well-formed ESP32 app image (one segment, checksum): what a MicroPython .bin
    starts with. The sim stores it; it never runs it."""
    seg = bytes(range(256)) * (size // 256)
    hdr = bytes([0xE9, 1, 2, 0x20]) + struct.pack("<I", 0x40080000)
    ext = bytes([0xEE, 0, 0, 0]) + struct.pack("<HBHH", chip_id, 0, 0, 0xFFFF) + bytes(4) + b"\0"
    body = hdr + ext + struct.pack("<II", 0x3FFB0000, len(seg)) + seg
    chk = 0xEF
    for b in seg:
        chk ^= b
    pad = (15 - (len(body) % 16)) % 16
    return body + bytes(pad) + bytes([chk])


@pytest.fixture
def node(sim_nodes, tmp_path):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(THERMAL))
    n = sim_nodes("fl", baud=0, bench=THERMAL)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    return n, cfg


def test_flash_firmware_table_and_filesystem_then_boot(node, tmp_path):
    n, cfg = node
    fw = tmp_path / "micropython.bin"
    fw.write_bytes(esp32_image())
    log = n.node.console_log
    before = log.stat().st_size if log.exists() else 0
    p = cyphy("flash", "--port", "sim://fl", "--firmware", str(fw), "--config", str(cfg),
              "--name", "flashed", "--json")
    r = json.loads(p.stdout)
    assert r["verified"] and r["erased"] and r["mac"] == ":".join(
        n.node.config()["mac"][i:i + 2] for i in range(0, 12, 2))
    assert [g["offset"] for g in r["regions"]] == [0x1000, 0x8000, 0x200000]
    image, want = n.node.image.read_bytes(), fw.read_bytes()
    # esptool sets the flash mode and size (header bytes 2 and 3) for the chip it found
    assert image[0x1000:0x1002] == want[:2] and image[0x1004:0x1000 + len(want)] == want[4:]
    files = flashimage.read_vfs(n.node.image)
    assert json.loads(files["/config.json"])["name"] == "flashed"
    assert "/lib/cyphy_node/node.mpy" in files and "/main.py" in files
    wait_for_log(log, b"cyphy: node flashed running 1 loop(s)", after=before, timeout=30)


def test_errors_are_one_clear_line(node, tmp_path):
    n, cfg = node
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x7fELF" + bytes(100))
    s3 = tmp_path / "s3.bin"
    s3.write_bytes(esp32_image(chip_id=9))
    big = tmp_path / "big.bin"
    big.write_bytes(esp32_image() + bytes(0x200000))
    bad_cfg = tmp_path / "bad.json"
    bad_cfg.write_text(json.dumps(dict(CONFIG, comms_timeout_ms=10)))
    for args, want in (
            (["--firmware", str(junk)], "not an ESP32 firmware image"),
            (["--firmware", str(s3)], "this image is for ESP32-S3, not ESP32"),
            (["--firmware", str(big)], "do not fit below the filesystem at 0x200000"),
            (["--config", str(bad_cfg)], "comms_timeout_ms: must be 0"),
    ):
        p = cyphy("flash", "--port", "sim://fl", *args, ok=False)
        assert p.returncode == 1 and want in p.stderr, (args, p.stderr)
        assert "Traceback" not in p.stderr
    p = cyphy("flash", "--port", "/dev/ttyNOPE7", "--config", str(cfg), ok=False)
    assert p.returncode == 1 and "no such port: /dev/ttyNOPE7" in p.stderr
    # a MicroPython REPL is not a ROM loader: nothing answers esptool there
    p = cyphy("flash", "--port", n.port, "--before", "no-reset", "--config", str(cfg), ok=False)
    assert p.returncode == 1 and "no chip answered" in p.stderr, p.stderr


def test_wrong_chip_and_busy_port_messages_from_esptools_own_words(sim_nodes):
    # esptool's real output for a chip of the wrong kind and a port held by someone else
    import serial

    st = sim_nodes("rom", baud=0, download=True)
    esptool = [sys.executable, "-m", "esptool", "--port", st.port, "--before", "no-reset",
               "--after", "no-reset"]
    r = subprocess.run([*esptool, "--chip", "esp32s3", "chip-id"], capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert _explain(out, "P") == ("the chip on P is ESP32, not an ESP32: use cyphy with an "
                                  "ESP32 board (this firmware and layout are for ESP32)")
    with serial.Serial(st.port, exclusive=True):
        r = subprocess.run([*esptool, "--chip", "esp32", "chip-id"], capture_output=True, text=True)
    out = r.stdout + r.stderr
    assert _explain(out, "P").startswith("P is busy: another program")


def test_a_node_without_a_bench_boots_the_firmware(sim_nodes, tmp_path):
    # The sim's default heap is an ESP32 with PSRAM's: the firmware's ~150 KB of bytecode
    # fits (docs/boards.md). No plant here: the sensor reads 0 V, out of its valid range.
    n = sim_nodes("plain", baud=0)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(CONFIG))
    log = n.node.console_log
    before = log.stat().st_size if log.exists() else 0
    cyphy("flash", "--port", "sim://plain", "--config", str(cfg))
    out = wait_for_log(log, b"cyphy: node oven-1 running 1 loop(s)", after=before, timeout=30)
    assert b"MemoryError" not in out
