"""Issue 13, finding 3, against the real firmware: a sim node without a key named like a node
this host holds a key for is refused by cyphy.connect and `cyphy set` unless --unprovisioned."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from helpers import cyphy as cli  # noqa: E402
from protonode import KEY_HEX, boot  # noqa: E402

import cyphy  # noqa: E402
from cyphy import keys  # noqa: E402
from cyphy.api import ProtocolError  # noqa: E402


def test_a_keyless_node_is_refused_when_the_store_holds_its_names_key(sim_nodes, cyphy_home, monkeypatch):
    for v in ("CYPHY_KEY", "CYPHY_KEY_FILE"):
        monkeypatch.delenv(v, raising=False)
    boot(sim_nodes, "nokey", key_hex=None)        # the node calls itself oven-1, and has no key
    url = "sim://nokey"
    with cyphy.connect(url) as n:                 # nothing held for oven-1: an unprovisioned node
        assert n.name == "oven-1" and not n.hello.authenticated
    keys.save_key("oven-1", KEY_HEX)
    with pytest.raises(ProtocolError, match="'oven-1' is unauthenticated.*--unprovisioned"):
        cyphy.connect(url)
    p = cli("set", url, "oven.setpoint=33", ok=False)
    assert p.returncode == 1 and "--unprovisioned" in p.stderr and "Traceback" not in p.stderr
    with cyphy.connect(url, unprovisioned=True) as n:
        assert n.get("oven.setpoint") == 60.0     # the refused set changed nothing
    p = cli("set", url, "oven.setpoint=33", "--unprovisioned")
    with cyphy.connect(url, unprovisioned=True) as n:
        assert n.get("oven.setpoint") == 33.0
