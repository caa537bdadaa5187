"""mpremote, run as a subprocess, against a sim node: exec/run, fs, resume, resets, mount."""

from __future__ import annotations

import hashlib

from cyphy.flashimage import read_vfs
from helpers import mpremote, wait_for_log

PAYLOAD = bytes(range(256)) * 8  # every byte value, Ctrl-A..Ctrl-E (REPL control bytes) included
REPORT_CAUSE = "import machine; print(machine.reset_cause())"


def test_exec_and_run(sim_node, tmp_path):
    assert mpremote(sim_node.port, "exec", "print(6 * 7); import sys; print(sys.platform)") == "42\nesp32\n"
    script = tmp_path / "script.py"
    script.write_text("for i in range(3):\n    print('line', i)\n")
    assert mpremote(sim_node.port, "run", script) == "line 0\nline 1\nline 2\n"


def test_fs_roundtrip(sim_node, tmp_path):
    port = sim_node.port
    (tmp_path / "payload.bin").write_bytes(PAYLOAD)
    (tmp_path / "note.txt").write_text("hello\nflash\n")
    mpremote(port, "fs", "mkdir", ":data")
    mpremote(port, "fs", "cp", tmp_path / "payload.bin", tmp_path / "note.txt", ":data/")
    listing = mpremote(port, "fs", "ls", ":data")
    assert f"{len(PAYLOAD)} payload.bin" in listing and "12 note.txt" in listing
    assert mpremote(port, "fs", "cat", ":data/note.txt").endswith("hello\nflash\n")
    assert hashlib.sha256(PAYLOAD).hexdigest() in mpremote(port, "fs", "sha256sum", ":data/payload.bin")

    back = tmp_path / "back.bin"
    mpremote(port, "fs", "cp", ":data/payload.bin", back)
    assert back.read_bytes() == PAYLOAD
    assert read_vfs(sim_node.node.image)["/data/payload.bin"] == PAYLOAD  # really in the flash image

    mpremote(port, "fs", "rm", ":data/payload.bin", ":data/note.txt")
    mpremote(port, "fs", "rmdir", ":data")
    assert "data" not in mpremote(port, "fs", "ls", ":")
    assert not any(p.startswith("/data") for p in read_vfs(sim_node.node.image))


def test_resume_keeps_globals_and_soft_reset_clears_them(sim_node):
    port = sim_node.port
    mpremote(port, "resume", "exec", "kept = 1234")
    assert mpremote(port, "resume", "exec", "print(kept)") == "1234\n"
    mpremote(port, "soft-reset")
    assert mpremote(port, "resume", "exec", "print('kept' in globals())") == "False\n"
    # machine.SOFT_RESET (5) after a soft reboot
    assert mpremote(port, "resume", "exec", REPORT_CAUSE) == "5\n"
    # plain exec soft-resets first, so globals never survive it
    mpremote(port, "exec", "kept = 1")
    assert mpremote(port, "exec", "print('kept' in globals())") == "False\n"


def test_reset_reboots_the_chip(sim_node):
    port = sim_node.port
    log = sim_node.node.console_log
    assert mpremote(port, "resume", "exec", REPORT_CAUSE) == "1\n"  # PWRON_RESET after power-on
    mpremote(port, "resume", "exec", "kept = 1")
    before = log.stat().st_size
    mpremote(port, "reset")  # machine.reset() 100 ms after mpremote returns
    # ESP32's ROM reports the software CPU reset, then MicroPython boots to the REPL
    boot = wait_for_log(log, b"rst:0xc (SW_CPU_RESET)", after=before)
    wait_for_log(log, b">>> ", after=before + boot.index(b"rst:0xc"))
    assert mpremote(port, "resume", "exec", "print('kept' in globals())") == "False\n"
    # ports/esp32/modmachine.c: esp_reset_reason() == ESP_RST_SW -> machine.HARD_RESET (2);
    # SOFT_RESET (5) is only for a Ctrl-D soft reboot.
    assert mpremote(port, "resume", "exec", REPORT_CAUSE) == "2\n"


def test_mount_host_dir(sim_node, tmp_path):
    host = tmp_path / "host"
    host.mkdir()
    (host / "hostmod.py").write_text("def answer():\n    return 42\n")
    (host / "payload.bin").write_bytes(PAYLOAD)
    code = (
        "import os, hashlib, binascii, hostmod\n"
        "print(os.getcwd(), hostmod.answer())\n"
        "data = open('payload.bin', 'rb').read()\n"
        "print(len(data), binascii.hexlify(hashlib.sha256(data).digest()).decode())\n"
    )
    out = mpremote(sim_node.port, "mount", host, "exec", code)
    assert f"/remote 42\n{len(PAYLOAD)} {hashlib.sha256(PAYLOAD).hexdigest()}\n" in out
    # the mount is the host's dir, not the node's flash
    assert "/hostmod.py" not in read_vfs(sim_node.node.image)
