"""A deploy killed at a random moment (the host process gets SIGKILL) leaves the node ready
for the next one at once (issue 13, finding 8). The node's receiver (_cyrx) reads the file
stream with Ctrl-C disabled, so the next host's Ctrl-C goes in as file data; the next host
frees it by feeding it zeros under its flow control, whatever point of a piece it is in."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from helpers import cyphy, tool  # noqa: E402

from cyphy.device import Device  # noqa: E402

SENDER = """
import sys, random
from cyphy.device import Device
port, compress = sys.argv[1], sys.argv[2] == "1"
data = random.Random(3).randbytes(6000) + bytes(12000) if compress else random.Random(3).randbytes(24000)
with Device.open(port) as dev:
    print("open", flush=True)
    dev.send("/killed.tmp", data, compress=compress)
"""


def started(p: subprocess.Popen, timeout: float = 20.0) -> None:
    line = p.stdout.readline()
    assert line.strip() == "open", line


@pytest.mark.parametrize("compress", [False, True])
def test_a_transfer_killed_anywhere_frees_the_node_at_once(sim_nodes, compress):
    n = sim_nodes("kill", baud=115200)
    rng = random.Random(11 + compress)
    for k in range(3):
        p = subprocess.Popen([sys.executable, "-c", SENDER, n.port, "1" if compress else "0"],
                             stdout=subprocess.PIPE, text=True)
        started(p)
        time.sleep(rng.uniform(0.2, 1.2))         # somewhere in the stream (about 2 s)
        p.send_signal(signal.SIGKILL)
        p.wait()
        t0 = time.monotonic()
        with Device.open(n.port) as dev:
            assert dev.exec("print(6*7)").strip() == "42"
            took = time.monotonic() - t0
            # and a transfer works again
            dev.write_atomic("/after", b"x" * 5000)
            assert dev.read("/after") == b"x" * 5000
        assert took < 5.0, f"kill {k}: the console was unusable for {took:.1f} s"


@pytest.mark.slow
def test_the_deploy_after_a_killed_deploy_succeeds(sim_nodes):
    n = sim_nodes("killdep", baud=460800)      # the line rate matters not here: where the kill lands
    url = f"sim://{n.name}"
    rng = random.Random(23)
    cyphy("deploy", "--port", url)               # the compile cache warm, a tree in place
    for k in range(3):
        p = subprocess.Popen([tool("cyphy"), "deploy", "--port", url, "--force"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(1.0, 6.0))
        p.send_signal(signal.SIGKILL)
        p.wait()
        t0 = time.monotonic()
        r = json.loads(cyphy("deploy", "--port", url, "--json").stdout)
        took = time.monotonic() - t0
        assert r["deleted"] == sum(1 for f in r["files"] if f["reason"] == "leftover"), r
        assert took < 30.0, took
        assert json.loads(cyphy("deploy", "--port", url, "--json").stdout)["sent"] == 0


def test_cyphy_get_right_after_a_killed_transfer(sim_nodes, cyphy_home, monkeypatch):
    """The protocol link (cyphy get) frees a receiver a killed host left running too: it
    sees the receiver's acknowledgements instead of serve()'s ready mark."""
    from protonode import KEY_HEX, boot

    from cyphy.sim import control

    boot(sim_nodes, "killget")
    control.stop("killget", home=cyphy_home)
    control.start("killget", baud=115200, home=cyphy_home)
    monkeypatch.setenv("CYPHY_KEY", KEY_HEX)
    from cyphy.sim.nodes import Node

    port = str(Node.named("killget", cyphy_home).tty)
    p = subprocess.Popen([sys.executable, "-c", SENDER, port, "0"], stdout=subprocess.PIPE, text=True)
    started(p)
    time.sleep(0.6)                              # mid-stream (24 KB: about 2 s)
    p.send_signal(signal.SIGKILL)
    p.wait()
    t0 = time.monotonic()
    r = cyphy("get", "sim://killget", "oven.setpoint", ok=False)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert took < 8.0, f"cyphy get took {took:.1f} s after the kill"
