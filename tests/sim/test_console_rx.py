"""The node's console receive buffer is ESP32's: 259 bytes (stdin_ringbuf[260] in
ports/esp32/mphalport.c, one slot kept free by py/ringbuf.h), and bytes arriving while
it is full and user code is busy are dropped and counted (docs/boards.md, "Console RX")."""

from __future__ import annotations

import hashlib
import time
import re

import pytest

from cyphy.sim.bench_control import SerialLinkFaults
from benches import THERMAL
from serial_console import Console

RING = 259


@pytest.fixture
def con(sim_node):
    with Console(sim_node.port) as c:
        c.raw()
        yield c


def overflow(node) -> int:
    with SerialLinkFaults.connect(node.name, node.home) as link:
        return link.stats()["to_node"]["overflow"]


def test_busy_node_keeps_259_bytes_and_drops_the_rest(sim_nodes):
    sim_node = sim_nodes("busy", baud=115200)
    with Console(sim_node.port) as con:
        con.raw()
        _busy_node_drops(sim_node, con)


def _busy_node_drops(sim_node, con):
    assert overflow(sim_node) == 0
    con.write(b"import time, sys, select\n"
              b"time.sleep(1)\n"
              b"p = select.poll()\n"
              b"p.register(sys.stdin, select.POLLIN)\n"
              b"n = 0\n"
              b"while p.poll(0):\n"
              b"    n += len(sys.stdin.buffer.read(1))\n"
              b"print('got', n)\x04")
    con.read_until(b"OK")
    con.write(b"x" * 600)  # arrives (in 52 ms) while the node sleeps: nobody empties its buffer
    assert con.read_until(b"\x04") == b"got %d\r\n\x04" % RING
    con.read_until(b">")
    assert overflow(sim_node) == 600 - RING
    log = sim_node.node.supervisor_log.read_text()
    assert re.search(r"console RX buffer full \(259 bytes\): %d bytes dropped" % (600 - RING), log)


def test_a_node_waiting_for_input_loses_nothing(sim_nodes):
    # at the line rate: bytes come faster than a busy node could take them only at --baud 0
    node = sim_nodes("rx", baud=115200)
    with Console(node.port) as con:
        con.raw()
        _waiting_node_gets_everything(node, con)


def _waiting_node_gets_everything(sim_node, con):
    data = bytes(b for b in range(256) if b != 3) * 24  # 6120 bytes; no Ctrl-C (an interrupt)
    con.write(b"import sys, hashlib, binascii\n"
              b"h = hashlib.sha256()\n"
              b"left = %d\n"
              b"print('ready')\n"
              b"while left:\n"
              b"    b = sys.stdin.buffer.read(min(left, 100))\n"
              b"    h.update(b)\n"
              b"    left -= len(b)\n"
              b"print(binascii.hexlify(h.digest()).decode())\x04" % len(data))
    con.read_until(b"ready\r\n")
    con.write(data)  # far more than the buffer holds, while the node reads
    got = con.read_until(b"\x04", timeout=30)
    assert got == hashlib.sha256(data).hexdigest().encode() + b"\r\n\x04"
    assert overflow(sim_node) == 0


def test_baud_0_holds_instead_of_dropping(sim_node, con):
    # no line rate: whether the node could have kept up is undefined, so nothing is lost
    con.write(b"import time, sys\ntime.sleep(0.5)\nprint(len(sys.stdin.buffer.read(600)))\x04")
    con.read_until(b"OK")
    con.write(b"x" * 600)
    assert con.read_until(b"\x04") == b"600\r\n\x04"
    assert overflow(sim_node) == 0


def test_repl_takes_a_long_line_without_loss(sim_node, con):
    line = b"s = '" + b"0123456789" * 800 + b"'\nprint(len(s))"
    out, err = con.raw_exec(line, timeout=30)
    assert (out, err) == (b"8000\r\n", b"")
    assert overflow(sim_node) == 0


def test_raw_paste_window_is_esp32s(con):
    # pyexec.c: window = MICROPY_REPL_STDIN_BUFFER_MAX (256) / 2, then 0x01 (a second one free)
    con.write(b"\x05A\x01")
    assert con.read_until(b"\x80\x00\x01", timeout=5) == b"R\x01\x80\x00\x01"
    con.write(b"\x03")
    con.read_until(b">")


def test_input_taken_while_a_callback_sleeps_is_not_left_waiting(sim_nodes):
    # A node on a bench (whose real-time sleeps serve the test equipment, _gear.py).
    # A soft callback that sleeps (here 3 ms every 4 ms) runs while the REPL waits for
    # input; the sim's real-time sleep reads the console pipe meanwhile. The REPL then
    # waited for *more* bytes although the code was already queued: provision and the
    # HIL console stalled until the host retried ("unexpected read during raw paste").
    node = sim_nodes("sleeper", bench=THERMAL)
    with Console(node.port) as con:
        con.raw()
        _callback_sleeps(con)


def _callback_sleeps(con):
    con.run("import machine, time\n"
            "_t = machine.Timer(0)\n"
            "_t.init(period=4, callback=lambda t: time.sleep_ms(3))")
    try:
        for k in range(40):
            t0 = time.monotonic()
            src = "x = %d\n" % k + "# pad\n" * (k * 7 % 60)
            assert con.run(src + "print(x)", timeout=5).strip() == str(k)
            assert time.monotonic() - t0 < 2.0, k
    finally:
        con.run("_t.deinit()")
