"""The protocol shares the serial console with the REPL (docs/protocol.md, "Serial").

A session runs inside node.serve(), started at the REPL by the host. Anything typed
outside a frame ends the session at once: Enter runs the typed line at the prompt, a
control character (mpremote's and ampy's Ctrl-C) just returns to it. A host that vanishes
leaves at most idle_ms (3 s) of frames. The loops run on throughout."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from helpers import ampy, mpremote  # noqa: E402
from protonode import KEY_HEX, boot  # noqa: E402
from serial_console import Console  # noqa: E402
from test_pytest_embedded import run_inner  # noqa: E402

from cyphy.client import Session  # noqa: E402
from cyphy.links import SerialLink  # noqa: E402
from cyphy import codec as P  # noqa: E402


def abandon_streaming(port: str) -> None:
    """A host opens a session, streams telemetry every 10 ms, then dies without BYE."""
    s = Session(SerialLink(port), P.key_from_hex(KEY_HEX))
    s.open()
    s.subscribe(10)
    next(s.samples())
    s._closed.set()           # no BYE: the process is gone
    s.link.ser.close()


def ticks(port: str) -> int:
    # `resume`: no soft reset (which would end main.py's loops, as on any board)
    return int(mpremote(port, "resume", "exec", "print(node.loop('oven').ticks)").split()[-1])


@pytest.fixture
def node(sim_nodes):
    return boot(sim_nodes)


def test_mpremote_and_ampy_on_a_streaming_node(node):
    abandon_streaming(node)
    assert mpremote(node, "resume", "exec", "print(6*7)").strip().endswith("42")
    t0 = ticks(node)
    time.sleep(0.3)
    assert ticks(node) > t0    # the loops never stopped
    abandon_streaming(node)
    # ampy always soft-resets (main.py, and so the loops, end: boot.py leaves outputs safe)
    assert "boot.py" in ampy(node, "ls")


def test_pytest_embedded_on_a_streaming_node(node, tmp_path):
    abandon_streaming(node)
    p = run_inner(tmp_path, node)
    assert p.returncode == 0 and "1 passed" in p.stdout, p.stdout + p.stderr


def test_a_typed_line_ends_the_session_and_runs(node):
    abandon_streaming(node)
    with Console(node) as con:
        con.write(b"print(6*7)\r")
        out = con.read_until(b">>> ")
    text = out.split(b"print(6*7)", 1)[1]
    assert b"protocol session ended (console input)" in text
    assert text.endswith(b"\r\n42\r\n>>> "), out
    assert b"\x00" not in text          # no frame after the first typed character


def test_frames_stop_when_the_host_vanishes(node):
    abandon_streaming(node)
    with Console(node) as con:
        time.sleep(3.5)                  # idle_ms: 3 s without a host frame
        con.read_for(0.2)
        assert con.read_for(1.0) == b""  # quiet: no frames, no text
        assert con.line(b"1+1") .endswith(b"2\r\n>>> ")


def test_mpremote_leaves_a_usable_session_path(node):
    # after mpremote, a new session starts cleanly (the node is back at its prompt)
    abandon_streaming(node)
    mpremote(node, "resume", "exec", "x = 1")
    with Session(SerialLink(node), P.key_from_hex(KEY_HEX)) as s:
        assert s.open().loops == ["oven"]
        assert s.read("oven.mode") == "auto"


def test_stock_mpremote_and_ampy_soft_resets_leave_the_node_running(sim_nodes, tmp_path):
    # mpremote and ampy soft-reset the node into the raw REPL. The watchdog survives that
    # (as on ESP32) and main.py does not run: boot.py restarts the loops, which feed it.
    # Afterwards `cyphy get` answers cleanly (it used to print the REPL's traceback bytes).
    import subprocess
    import time as _time

    from helpers import ampy, mpremote, tool

    port = boot(sim_nodes, "softreset")
    assert "config.json" in mpremote(port, "fs", "ls")
    assert "config.json" in ampy(port, "ls")
    _time.sleep(3)  # longer than the node's 2 s watchdog: only a running node feeds it
    cause = mpremote(port, "resume", "exec", "import machine; print(machine.reset_cause(), node.running())")
    assert cause.split() == ["5", "True"], cause  # SOFT_RESET (the tools'), not WDT_RESET (3)
    key = tmp_path / "k.hex"
    key.write_text(KEY_HEX)
    p = subprocess.run([tool("cyphy"), "get", f"serial://{port}", "oven", "--json", "--key-file", str(key)],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    state = json.loads(p.stdout)
    assert state["mode"] == "auto" and state["ticks"] > 0, state
