"""pyserial opens the sim node's port like a USB-UART bridge and talks to the REPL."""

from __future__ import annotations

import time

import pytest
import serial


def read_until(s: serial.Serial, marker: bytes, timeout: float = 10.0) -> bytes:
    got = b""
    deadline = time.monotonic() + timeout
    while marker not in got:
        assert time.monotonic() < deadline, f"no {marker!r} within {timeout} s; got {got!r}"
        got += s.read(s.in_waiting or 1)
    return got


@pytest.mark.parametrize("baud", [0, 115200])
def test_banner_prompt_and_eval(sim_nodes, baud):
    node = sim_nodes("uart", baud=baud)
    with serial.serial_for_url(node.port, 115200, timeout=0.05) as s:
        s.write(b"\r\x03")  # interrupt whatever runs
        read_until(s, b">>> ")
        s.write(b"\x02")  # Ctrl-B: banner, then a fresh prompt
        got = read_until(s, b'Type "help()" for more information.\r\n>>> ')
        assert b"\r\nMicroPython v" in got and b" with ESP32\r\n" in got
        s.write(b"print(6*7)\r")
        assert read_until(s, b">>> ") == b"print(6*7)\r\n42\r\n>>> "
