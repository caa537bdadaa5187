"""Download mode: the real esptool CLI against a sim node started with download=True.

esptool cannot reset a sim node (a PTY has no DTR/RTS), so every run uses
--before no-reset; --after no-reset leaves the node in the loader for the next run.
"""

from __future__ import annotations

import json
import os
import re
import struct

import pytest

from cyphy import flashimage
from cyphy.sim import control
from cyphy.sim.romloader import RomLoader, SlipReader, checksum, slip_encode
from helpers import cyphy, run, tool, wait_for_log

BASE = ["--before", "no-reset", "--after", "no-reset"]
MARKER = "esptool-wrote-this"


def esptool(port: str, *args: object, stub: bool = True, ok: bool = True, after: str = "no-reset",
            baud: int | None = None) -> str:
    """`esptool --port PORT ...`; stdout and stderr together."""
    opts = ["--port", port, "--before", "no-reset", "--after", after]
    if not stub:
        opts.append("--no-stub")
    if baud is not None:
        opts += ["--baud", str(baud)]
    p = run([tool("esptool"), *opts, *args], ok=ok)
    return p.stdout + p.stderr


@pytest.fixture
def dl(sim_nodes):
    """A sim node in download mode, without line-rate emulation."""
    return sim_nodes("dl", baud=0, download=True)


def node_mac(n) -> str:
    return ":".join(re.findall("..", n.node.config()["mac"]))


def flash_bytes(n, addr: int, size: int) -> bytes:
    with open(n.node.image, "rb") as f:
        f.seek(addr)
        return f.read(size)


def vfs_image(files: dict[str, bytes]) -> bytes:
    return flashimage.build_vfs(files, flashimage.find_partition(flashimage.MICROPYTHON_ESP32_4MB, "vfs").size)


def test_rom_banner_chip_and_mac(dl):
    log = dl.node.console_log.read_bytes()
    assert log == (b"ets Jun  8 2016 00:22:57\r\n\r\nrst:0x1 (POWERON_RESET),"
                   b"boot:0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))\r\nwaiting for download\r\n")
    out = esptool(dl.port, "read-mac", stub=False)
    assert "Detecting chip type... ESP32" in out
    assert "Chip type:          ESP32-D0WD-V3 (revision v3.0)" in out
    assert "Crystal frequency:  40MHz" in out
    assert f"MAC:                {node_mac(dl)}" in out  # the node's machine.unique_id()
    out = esptool(dl.port, "--chip", "esp32", "chip-id")  # with the flasher stub
    assert "Stub flasher running." in out
    assert "ESP32 has no chip ID. Reading MAC address instead." in out
    assert f"MAC:                {node_mac(dl)}" in out


def test_flash_id(dl):
    out = esptool(dl.port, "flash-id")
    assert "Manufacturer: ef" in out and "Device: 4016" in out
    assert "Detected flash size: 4MB" in out


def test_wrong_chip_is_refused(dl):
    out = esptool(dl.port, "--chip", "esp32s3", "read-mac", ok=False)
    assert "This chip is ESP32, not ESP32-S3. Wrong chip argument?" in out


@pytest.mark.parametrize("stub", [True, False], ids=["stub", "rom"])
@pytest.mark.parametrize("compress", ["-z", "-u"], ids=["deflate", "plain"])
def test_write_verify_read_back(dl, tmp_path, stub, compress):
    data = os.urandom(20000) + b"\xff" * 3000 + bytes(range(256)) * 40
    addr = 0x100000 + 0x234  # not sector-aligned: esptool pads for the ROM, the stub needs no help
    (tmp_path / "data.bin").write_bytes(data)
    out = esptool(dl.port, "write-flash", compress, hex(addr), tmp_path / "data.bin", stub=stub)
    assert "Hash of data verified." in out
    assert flash_bytes(dl, addr, len(data)) == data
    assert flash_bytes(dl, 0x100000, 0x234) == b"\xff" * 0x234  # the rest of the sector: erased
    out = esptool(dl.port, "verify-flash", hex(addr), tmp_path / "data.bin", stub=stub)
    assert "Verification successful (digest matched)." in out
    esptool(dl.port, "read-flash", hex(addr - 16), len(data) + 32, tmp_path / "back.bin", stub=stub)
    assert (tmp_path / "back.bin").read_bytes() == b"\xff" * 16 + data + b"\xff" * 16


def test_erase_region_and_erase_flash(dl, tmp_path):
    data = os.urandom(3 * 4096)
    (tmp_path / "data.bin").write_bytes(data)
    esptool(dl.port, "write-flash", "0x180000", tmp_path / "data.bin")
    esptool(dl.port, "erase-region", "0x181000", "0x1000")
    assert flash_bytes(dl, 0x180000, 3 * 4096) == data[:4096] + b"\xff" * 4096 + data[8192:]
    assert flash_bytes(dl, 0x8000, 2) == b"\xaa\x50"  # the partition table is still there
    out = esptool(dl.port, "erase-flash")
    assert "Flash memory erased successfully" in out
    assert dl.node.image.read_bytes() == b"\xff" * flashimage.FLASH_SIZE_4MB
    out = esptool(dl.port, "erase-flash", stub=False, ok=False)  # as on a real ESP32
    assert "ESP32 ROM does not support function erase_flash" in out
    # "run user code" with no partition table: the ROM reports it and resets into the loader
    before = dl.node.console_log.stat().st_size
    esptool(dl.port, "run", stub=False)
    log = wait_for_log(dl.node.console_log, b"waiting for download", after=before)
    assert log.startswith(b"flash read err, 1000\r\n") and b"rst:0x3 (SW_RESET)" in log
    assert "ESP32-D0WD-V3" in esptool(dl.port, "read-mac", stub=False)


def test_flash_partition_table_and_filesystem_then_boot(dl, tmp_path):
    """What flashing a board from scratch does: erase, write the partition table and the
    vfs partition; powered on normally, the node boots MicroPython from that flash."""
    (tmp_path / "table.bin").write_bytes(flashimage.encode_partition_table(flashimage.MICROPYTHON_ESP32_4MB))
    (tmp_path / "vfs.bin").write_bytes(vfs_image({"/main.py": f"print({MARKER!r})\n".encode()}))
    esptool(dl.port, "erase-flash")
    out = esptool(dl.port, "write-flash", "0x8000", tmp_path / "table.bin", "0x200000", tmp_path / "vfs.bin")
    assert out.count("Hash of data verified.") == 2
    dl.restart()  # stop, then power on normally
    assert control.listing(dl.home)[0]["download"] is False
    log = wait_for_log(dl.node.console_log, MARKER.encode())
    assert b"SPI_FAST_FLASH_BOOT" in log and b"Performing initial setup" not in log


def test_rom_run_user_code_boots_the_app(dl, tmp_path):
    """--no-stub --after soft-reset ends with FLASH_END "run user code": the ROM leaves the
    loader and the node boots MicroPython from the new flash, without a restart."""
    (tmp_path / "vfs.bin").write_bytes(vfs_image({"/main.py": f"print({MARKER!r} * 2)\n".encode()}))
    before = dl.node.console_log.stat().st_size
    out = esptool(dl.port, "write-flash", "-z", "0x200000", tmp_path / "vfs.bin", stub=False, after="soft-reset")
    assert "Hash of data verified." in out and "Soft resetting..." in out
    wait_for_log(dl.node.console_log, (MARKER * 2).encode(), after=before)
    state = json.loads(dl.node.state_path.read_text())
    assert state["download"] is False


def test_stub_left_running_is_reused(dl):
    esptool(dl.port, "flash-id", after="no-reset-stub")
    out = esptool(dl.port, "flash-id")
    assert "Stub flasher is already running. No upload is necessary." in out
    assert "Detected flash size: 4MB" in out


def test_line_rate_follows_autobaud_and_change_baudrate(sim_nodes, tmp_path):
    n = sim_nodes("paced", baud=115200, download=True)
    out = esptool(n.port, "read-mac", stub=False, baud=9600)  # the ROM autobauds at 9600
    assert "Crystal frequency:  40MHz" in out and "quite different" not in out
    data = os.urandom(64 * 1024)
    (tmp_path / "data.bin").write_bytes(data)
    out = esptool(n.port, "write-flash", "-u", "0x100000", tmp_path / "data.bin", baud=921600)
    assert "Changing baud rate to 921600..." in out and "Hash of data verified." in out
    assert "download mode: line rate 921600" in n.node.supervisor_log.read_text()
    assert flash_bytes(n, 0x100000, len(data)) == data
    # payload rate: above what 115200 baud could carry (92 kbit/s), below 921600 baud 8N1
    kbits = float(re.search(r"Wrote 65536 bytes .* \(([\d.]+) kbit/s\)", out)[1])
    assert 200 < kbits < 921.6 * 0.8


def test_cli_download_mode(cyphy_home):
    try:
        p = cyphy("sim", "start", "clidl", "--download", "--baud", "0")
        assert "download mode" in p.stdout and "--before no-reset" in p.stdout
        port = p.stdout.splitlines()[-1]
        assert "ESP32-D0WD-V3" in esptool(port, "read-mac", stub=False)
        [row] = json.loads(cyphy("sim", "list", "--json").stdout)
        assert row["download"] is True and row["port"] == port
        p = cyphy("sim", "start", "clidl", "--baud", "0", ok=False)
        assert p.returncode != 0 and "is running in download mode: stop it first" in p.stderr
        assert "--before no-reset" in " ".join(cyphy("sim", "start", "--help").stdout.split())
    finally:
        control.stop("clidl", home=cyphy_home)


# ---------------------------------------------------------------- protocol details esptool never hits


def command(op: int, data: bytes = b"", chk: int = 0) -> bytes:
    return slip_encode(struct.pack("<BBHI", 0x00, op, len(data), chk) + data)


def replies(out: bytes) -> list[tuple[int, int, bytes]]:
    """(op, value, data) of each response packet."""
    return [(p[1], struct.unpack_from("<I", p, 4)[0], p[8:]) for p in SlipReader().feed(out)]


@pytest.fixture
def loader(tmp_path):
    image = tmp_path / "flash.bin"
    flashimage.create_flash_image(image)
    ld = RomLoader(image, bytes.fromhex("021122334455"))
    yield ld
    ld.close()


def test_status_bytes_and_error_codes(loader):
    sync = command(0x08, b"\x07\x07\x12\x20" + 32 * b"\x55")
    rom = replies(loader.feed(sync))
    assert len(rom) == 8 and rom[0] == (0x08, 0x55201207, b"\x00\x00\x00\x00")  # ROM: 4 status bytes
    block = b"\x01\x02\x03\x04"
    bad = struct.pack("<4I", len(block), 0, 0, 0) + block
    loader.feed(command(0x02, struct.pack("<4I", 0x1000, 1, 0x400, 0x10000)))
    [(op, _, status)] = replies(loader.feed(command(0x03, bad, checksum(block) ^ 1)))
    assert (op, status) == (0x03, b"\x01\x07\x00\x00")  # "invalid CRC in message"
    [(_, _, status)] = replies(loader.feed(command(0xD0)))  # ERASE_FLASH: the ROM has none
    assert status == b"\x01\x05\x00\x00"
    loader.stub = True  # as after the flasher stub's OHAI
    assert replies(loader.feed(sync))[0] == (0x08, 0, b"\x00\x00")  # stub: value 0, 2 bytes
    [(_, _, status)] = replies(loader.feed(command(0x03, bad, checksum(block) ^ 1)))
    assert status == b"\xc1\x00"  # ESP_BAD_DATA_CHECKSUM
    [(_, _, status)] = replies(loader.feed(command(0x14)))
    assert status == b"\xff\x00"  # GET_SECURITY_INFO: not on ESP32
    [(_, _, status)] = replies(loader.feed(command(0xD1, struct.pack("<II", 0x1800, 0x1000))))
    assert status == b"\xc0\x00"  # ERASE_REGION needs sector-aligned offset and size


def test_slip_across_reads_and_escapes(loader):
    data = bytes([0xC0, 0xDB, 0xDC, 0xDD]) * 300  # every byte that needs escaping, and look-alikes
    loader.stub = True
    wire = command(0x02, struct.pack("<5I", len(data), 1, 0x4000, 0x20000, 0))
    wire += command(0x03, struct.pack("<4I", len(data), 0, 0, 0) + data, checksum(data))
    wire += command(0x04, struct.pack("<I", 1))
    out = b"".join(loader.feed(wire[i:i + 7]) for i in range(0, len(wire), 7))  # 7-byte reads
    assert [(op, status) for op, _, status in replies(out)] == [(2, b"\0\0"), (3, b"\0\0"), (4, b"\0\0")]
    assert loader.flash.read(0x20000, len(data)) == data
