"""Noise, garbage and hosts that vanish mid-command never crash or wedge the node."""

from __future__ import annotations

import random
import subprocess

import serial

from helpers import tool


def mpremote_exec_works(port: str) -> None:
    r = subprocess.run([tool("mpremote"), "connect", port, "exec", "print(6 * 7)"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "42"


def test_random_bytes(sim_node):
    rng = random.Random(1234)
    with serial.serial_for_url(sim_node.port, 115200, timeout=0.05) as s:
        for _ in range(20):
            s.write(bytes(rng.randrange(256) for _ in range(1000)))
            s.read(100000)
    mpremote_exec_works(sim_node.port)


def test_line_noise_in_raw_repl_commands(sim_node):
    rng = random.Random(99)
    cmd = bytearray(b"\x01print('hello world' * 3)\x04")
    with serial.serial_for_url(sim_node.port, 115200, timeout=0.05) as s:
        for _ in range(50):
            noisy = bytearray(cmd)
            for _ in range(3):
                noisy[rng.randrange(len(noisy))] ^= 1 << rng.randrange(8)
            s.write(bytes(noisy))
            s.read(10000)
    mpremote_exec_works(sim_node.port)


def test_host_disconnects_mid_command(sim_node):
    for partial in (b"\r\x03\x01print('half", b"\r\x03\x01\x05A\x01x = [1, 2,", b"\r\x05def f():\r", b"\r\x03\x01"):
        with serial.serial_for_url(sim_node.port, 115200, timeout=0.2) as s:
            s.write(partial)
            s.read(1000)
        mpremote_exec_works(sim_node.port)


def test_host_disconnects_while_node_streams(sim_node):
    with serial.serial_for_url(sim_node.port, 115200, timeout=0.2) as s:
        s.write(b"\r\x03\x01for i in range(100000): print(i)\x04")
        s.read(2000)
    mpremote_exec_works(sim_node.port)


def test_paste_larger_than_the_heap_is_reported_not_fatal(sim_node):
    with serial.serial_for_url(sim_node.port, 115200, timeout=0.2) as s:
        s.write(b"\r\x03\x01")
        s.write(b"x = '" + b"y" * 120_000 + b"'\x04")
        s.read(100_000)
    mpremote_exec_works(sim_node.port)
    log = sim_node.node.supervisor_log.read_text()
    assert "exited unexpectedly" not in log


def test_long_bench_file_boots(sim_nodes):
    bench = {
        "plant": {"type": "fotd", "gain": 0.9, "tau_s": 160, "dead_time_s": 12, "ambient": 20.0,
                  "noise": {"std": 0.05}},
        "wiring": [{"pin": 34, "kind": "adc", "signal": "temperature", "range": [0, 150], "volts": [0.0, 2.45]},
                   {"pin": 25, "kind": "pwm", "signal": "heater", "range": [0, 100]}] * 4,
        "seed": 7,
    }
    node = sim_nodes("longbench", bench=bench)
    mpremote_exec_works(node.port)
