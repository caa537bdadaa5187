"""Issue 14, item 5: `cyphy discover` judges a node on UDP by the key store's keys for its
name, the old and the pending one of a key change not yet confirmed, even when a key is
also given ($CYPHY_KEY for another node): "key ok", or "key WRONG" when none verifies."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from protonode import KEY_HEX, boot  # noqa: E402
from test_protocol_udp import WIFI, free_udp_port, udp_config, wait_online  # noqa: E402

from cyphy import keys  # noqa: E402
from cyphy.sim.nodes import Node  # noqa: E402
from helpers import tool  # noqa: E402

NAME = "oven-d"


def discover(port: int, **env: str) -> str:
    e = {k: v for k, v in os.environ.items() if not k.startswith("CYPHY_KEY")}
    e.update(env)
    p = subprocess.run([tool("cyphy"), "discover", "--udp-port", str(port), "--timeout", "1"],
                       capture_output=True, text=True, timeout=60, env=e)
    assert p.returncode == 0, p.stderr
    (line,) = [ln for ln in p.stdout.splitlines() if ln.startswith("udp") and NAME in ln]
    return line


@pytest.fixture
def udp_node(sim_nodes, cyphy_home, monkeypatch):
    for v in ("CYPHY_KEY", "CYPHY_KEY_FILE"):
        monkeypatch.delenv(v, raising=False)
    port = free_udp_port()
    boot(sim_nodes, "dk", config=udp_config(NAME, port), secrets=WIFI)  # runs KEY_HEX
    wait_online([Node.named("dk").config()["ip"]], port)
    return port


def test_discover_verifies_with_the_old_and_the_pending_key(udp_node):
    port = udp_node
    keys.save_key(NAME, KEY_HEX)
    assert discover(port).endswith("key ok")
    # a key change without reset: the host's primary is the new key, the node runs the old
    p = subprocess.run([tool("cyphy"), "provision", "--port", "sim://dk", "--new-key"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert keys.load_key_hex(NAME) != KEY_HEX and KEY_HEX in keys.load_key_hexes(NAME)
    assert discover(port).endswith("key ok")
    # a key given for another node does not hide the key store's keys for this one
    assert discover(port, CYPHY_KEY="5a" * 32).endswith("key ok")
    # the store holds only keys the node does not run: WRONG
    keys.pending_path(NAME).unlink()
    assert discover(port).endswith("key WRONG")
    assert discover(port, CYPHY_KEY=KEY_HEX).endswith("key ok")   # the given key verifies
