"""The protocol on a sim node's serial console, against the real firmware (main.py boots
the node, the host opens a session by typing node.serve() at the REPL)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))

from cyphy.client import CommandRejected, Session, status_names  # noqa: E402
from cyphy.links import SerialLink  # noqa: E402
from cyphy import codec as P  # noqa: E402

from protonode import KEY_HEX, boot  # noqa: E402


@pytest.fixture
def node(sim_nodes):
    return boot(sim_nodes)


def test_session_telemetry_and_commands(node):
    key = P.key_from_hex(KEY_HEX)
    with Session(SerialLink(node), key) as s:
        h = s.open()
        assert h.loops == ["oven"] and h.name == "oven-1" and h.authenticated
        assert s.subscribe(100, batch=2) == 100
        got = [next(s.samples()) for _ in range(6)]
        oven = got[-1]["loops"]["oven"]
        assert oven["setpoint"] == 60.0
        assert status_names(oven["status"])["mode"] == "auto"
        s.set("oven", "setpoint", 45.5)
        assert s.read("oven.setpoint") == 45.5
        with pytest.raises(CommandRejected) as e:
            s.set("oven", "setpoint", 1000.0)
        assert e.value.reason == P.R_OUT_OF_RANGE
        assert s.stats.lost == 0 and s.stats.bad_tag == 0


TELEMETRY_ALLOC = """
import micropython, time
from cyphy_node.comms import Session
from cyphy_node import proto as P
ep = node.comms
class Quiet:
    def send(self, frame, addr):
        pass
    def ended(self, s):
        pass
s = Session(Quiet(), None, b'12345678')
s.period_ms = 1
s.batch = 3
ep.sessions.append(s)
ep.update_period()
node.stop()
t = [time.ticks_ms()]
def one():
    t[0] = time.ticks_add(t[0], 1)
    ep.sample(t[0])
def mem(n):
    m0 = micropython.mem_total()
    for k in range(n):
        one()
    return micropython.mem_total() - m0
def locked(n):
    micropython.heap_lock()
    try:
        for k in range(n):
            one()
        r = 'ok'
    except MemoryError:
        r = 'MemoryError'
    micropython.heap_unlock()
    return r
one()
print(mem(3000), locked(3000), ep._ready_len, ep.counters[4])
lp = node.loops[0]
b = ep._ready
print(P.get_u32(b, 0) == time.ticks_add(t[0], -3), P.get_i32(b, 4) == lp.pid.setpoint,
      P.get_i32(b, 8) == lp.y, P.get_i32(b, 12) == lp.u, P.get_i32(b, 16) & 0x80)
"""


def test_telemetry_is_encoded_without_allocating(node):
    # Issue 4, item 9: samples go into preallocated batches inside the pass: not one byte
    # allocated (mem_total) and no MemoryError under heap_lock.
    from serial_console import Console

    with Console(node) as con:
        con.raw()
        first, second = con.run(TELEMETRY_ALLOC).splitlines()
    alloc, locked, ready, dropped = first.split()
    assert alloc == "0" and locked == "ok", (alloc, locked)
    assert int(ready) == 4 + 3 * 16 and int(dropped) > 0
    assert second.split() == ["True"] * 4 + ["128"]  # the batch holds the loop's values
