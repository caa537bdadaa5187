"""The serial session survives the line (issue 13, finding 5 / requirement 3).

Real serial I/O: the host talks to the sim node through cyphy.sim.linenoise, a PTY relay
that drops and corrupts bytes with a seeded RNG and can inject bytes of its own. Stray
bytes, oversize frames and garbage never end the session, never reach the REPL as code and
never soft-reboot the node; only a person's deliberate signal gives the console back."""

from __future__ import annotations

import json
import os
import random
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from protonode import KEY_HEX, boot  # noqa: E402
from serial_console import Console  # noqa: E402

from cyphy import codec as P  # noqa: E402
from cyphy.client import ProtocolError, Session  # noqa: E402
from cyphy.links import SerialLink  # noqa: E402
from cyphy.sim.linenoise import NoisyLine  # noqa: E402

KEY = P.key_from_hex(KEY_HEX)
MARK = "_cy_mark = 1\n"   # a REPL global: gone after a soft reboot


@pytest.fixture
def node(sim_nodes):
    port = boot(sim_nodes, "noisy")
    with Console(port) as con:
        con.raw()
        con.run(MARK)
        con.friendly()
    return port


def node_facts(port: str) -> dict:
    """On a clean console: still the same boot (no soft reboot), loops running, counters."""
    with Console(port) as con:
        con.raw()
        out = con.run("print(repr({'mark': globals().get('_cy_mark', 0), 'running': node.running(),"
                      " 'counters': node.comms.counters_dict()}))")
        con.friendly()
    import ast
    return ast.literal_eval(out.strip().splitlines()[-1])


def console_text(sim_nodes_home: Path) -> str:
    log = sim_nodes_home / "sim" / "noisy" / "console.log"
    return log.read_text(errors="replace") if log.exists() else ""


def session_works(s: Session, n: int = 3) -> None:
    for i in range(n):
        s.set("oven", "setpoint", 40.0 + i)
    assert s.read("oven.setpoint") == 40.0 + n - 1


def garbage(rng: random.Random, n: int) -> bytes:
    # everything but 00 (a 00 would make it a frame, tested apart): all the REPL's
    # control characters (Ctrl-A raw, Ctrl-B, Ctrl-C, Ctrl-D soft reboot, Ctrl-E paste)
    return bytes(rng.randrange(1, 256) for _ in range(n))


def test_stray_bytes_do_not_end_the_session(node):
    with NoisyLine(node) as line, Session(SerialLink(line.port), KEY) as s:
        s.open()
        for stray in (b"x", b"\x03", b"\x01", b"\x05", b"\r", b"\x04", b"\x1b[A", b"a\r", b"\xff"):
            line.inject(stray)
            time.sleep(0.15)
            session_works(s, 1)
        assert s.link.entries == 1, "the session broke and was entered again"
    facts = node_facts(node)
    assert facts["mark"] == 1 and facts["running"], facts


def test_oversize_frames_are_dropped_and_counted(node):
    rng = random.Random(5)
    with NoisyLine(node) as line, Session(SerialLink(line.port), KEY) as s:
        s.open()
        for k in range(10):
            line.inject(b"\x00" + garbage(rng, 300 + 100 * k) + b"\x00")
            session_works(s, 1)
        assert s.link.entries == 1
        bad = s.read("info")["counters"]["bad_frame"]
        assert bad >= 10, bad
    facts = node_facts(node)
    assert facts["mark"] == 1 and facts["running"], facts  # never soft-rebooted


def test_garbage_outside_frames_never_reaches_the_repl(node, cyphy_home):
    rng = random.Random(7)
    with NoisyLine(node) as line, Session(SerialLink(line.port), KEY) as s:
        s.open()
        for k in range(30):
            line.inject(garbage(rng, rng.randrange(1, 80)))
            time.sleep(rng.choice((0.0, 0.06, 0.2)))   # bursts after a pause look typed
        session_works(s, 3)
        assert s.link.entries == 1
    facts = node_facts(node)
    assert facts["mark"] == 1 and facts["running"], facts
    # the REPL is usable at once (not in paste mode, not in the raw REPL)
    with Console(node) as con:
        assert con.line(b"print(6*7)").endswith(b"42\r\n>>> ")


@pytest.mark.parametrize("signal, why", [(b"print(6*7)\r", "console input"), (b"\x03\x03", "Ctrl-C"),
                                         (b"\r\x03", "Ctrl-C"), (b"\x04\x04", "Ctrl-D")])
def test_a_person_gets_the_repl_back(node, signal, why):
    with NoisyLine(node) as line:
        s = Session(SerialLink(line.port), KEY)
        s.open()
        s.subscribe(50)
        next(s.samples())
        time.sleep(0.1)
        s._closed.set()               # the host stops (no BYE), the node keeps streaming
        s.link.ser.close()
        with Console(line.port) as con:
            time.sleep(0.1)
            con.write(signal)
            out = con.read_until(b">>> ")
            assert f"protocol session ended ({why})".encode() in out, out
            tail = out.split(b"protocol session ended", 1)[1]
            assert b"\x00" not in tail
            if why == "console input":
                assert out.endswith(b"\r\n42\r\n>>> "), out
            assert con.line(b"print(7*6)").endswith(b"42\r\n>>> ")
    assert node_facts(node)["mark"] == 1   # Ctrl-D ended the session: no soft reboot


def run_commands(port: str, n: int, drop: float, corrupt: float, seed: int, fec: bool = True) -> dict:
    """n `set` commands of distinct values through a noisy line. A command whose session
    broke is retried in a new session (as the API does); the node's `applied` counter must
    grow by exactly the number of commands the host saw acknowledged."""
    before = node_facts(port)["counters"]["applied"]
    ok = failed = sessions = 0
    t0 = time.monotonic()
    with NoisyLine(port, drop, corrupt, seed) as line:
        link = SerialLink(line.port, enter_s=60, fec=fec)
        s = Session(link, KEY, timeout=2.0)
        try:
            i = 0
            while i < n:
                try:
                    if s.hello is None or sessions == 0:
                        sessions += 1
                        s.open(attempts=20)
                    s.set("oven", "setpoint", 20.0 + i * 0.01)
                    ok += 1
                    i += 1
                except ProtocolError:
                    failed += 1
                    s.hello = None
                    if failed > n:
                        break
        finally:
            s.close()
        stats = line.stats()
    after = node_facts(port)
    return {"ok": ok, "failed": failed, "sessions": sessions, "applied": after["counters"]["applied"] - before,
            "mark": after["mark"], "seconds": round(time.monotonic() - t0, 1), "line": stats,
            "entries": link.entries}


@pytest.mark.parametrize("drop, corrupt", [(0.05, 0.05)])
def test_commands_through_a_noisy_line_apply_exactly_once(node, drop, corrupt):
    n = int(os.environ.get("CYPHY_NOISE_N", "100"))
    r = run_commands(node, n, drop, corrupt, seed=13)
    print(r)
    report = os.environ.get("CYPHY_NOISE_REPORT")    # make bench's attack section reads it
    if report:
        Path(report).write_text(json.dumps({k: r[k] for k in ("ok", "failed", "applied",
                                                               "sessions", "entries", "seconds")}))
    assert r["mark"] == 1, r
    assert r["ok"] == n, r
    assert r["applied"] == r["ok"], r


def test_the_session_goes_on_after_breaks(node):
    # A host that stalls longer than serve()'s 2 s breaks the console session (the node is
    # back at its REPL, saying so). Its link notices (the node's end mark, or its own
    # silence) and types node.serve() again before the next frame; the new serve() takes
    # over the waiting session, so the host goes on with no new HELLO, exactly once.
    before = node_facts(node)["counters"]["applied"]
    breaks = 3
    with NoisyLine(node, 0.05, 0.05, seed=29) as line:
        link = SerialLink(line.port, fec=True)
        # timeout 4 s: a request says HELLO again after half its patience (4 s here, 2 s
        # with timeout 2); the link's re-entry after a break (end mark, serve() typed
        # again, 5 % noise) must not race that on a loaded machine: what this test shows
        # is that no new HELLO is needed, so the session must not give up early
        with Session(link, KEY, timeout=4.0) as s:
            hello = s.open(attempts=20)
            for b in range(breaks):
                for i in range(10):
                    s.set("oven", "setpoint", 30.0 + b + i * 0.01)
                with link._wlock:        # the host stalls: not a byte, heartbeats included
                    time.sleep(2.5)
            s.set("oven", "setpoint", 50.0)
            assert s.hello is hello                  # the same session throughout
            assert link.entries == breaks + 1, link.entries
            line.set_noise(0, 0)
            assert s.read("oven.setpoint") == 50.0
    facts = node_facts(node)
    assert facts["mark"] == 1
    assert facts["counters"]["applied"] - before == breaks * 10 + 2   # 31 sets and the read
