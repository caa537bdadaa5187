"""Issue 13, finding 6: a node with a short comms timeout (300 ms) stays out of comms fault
while `cyphy monitor` is connected (the host's heartbeat follows the timeout in the node's
HELLO; with a heartbeat once a second it was in comms fault most of the time)."""

from __future__ import annotations

import copy
import csv
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from helpers import cyphy  # noqa: E402
from protonode import KEY_HEX, boot  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402


def test_monitor_keeps_a_300_ms_comms_timeout_alive(sim_nodes, tmp_path, monkeypatch):
    cfg = copy.deepcopy(CONFIG)
    cfg["comms_timeout_ms"] = 300
    boot(sim_nodes, "hb300", config=cfg)
    monkeypatch.setenv("CYPHY_KEY", KEY_HEX)
    rec = tmp_path / "run.csv"
    cyphy("monitor", "sim://hb300", "--seconds", "4", "--period-ms", "100", "--csv", str(rec))
    rows = list(csv.DictReader(rec.open()))
    assert len(rows) >= 20, rows
    late = rows[5:]  # the first samples may still carry the fault from before the session
    faulted = [r for r in late if "comms" in r["faults"]]
    assert not faulted, f"{len(faulted)} of {len(late)} samples in comms fault"
