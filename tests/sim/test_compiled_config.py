"""The node boots from the config the host compiled (issue 12: the node need not carry the
validator): /config.node.json holds the validated config with its defaults and the SHA-256
of the /config.json it came from; a /config.json edited on the node is validated there."""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from test_node_runtime import CONFIG, node_for, put, reset  # noqa: E402

from cyphy.provision import compiled_config  # noqa: E402
from cyphy_node import cfgview  # noqa: E402
from cyphy_node import config as C  # noqa: E402


def test_compiled_config_reads_as_the_validated_one(tmp_path):
    data = json.dumps(CONFIG).encode()
    (tmp_path / "config.json").write_bytes(data)
    (tmp_path / "config.node.json").write_bytes(compiled_config(data, CONFIG))
    view = cfgview.load(str(tmp_path / "config.json"), str(tmp_path / "config.node.json"))
    full = C.validate(CONFIG)
    assert view is not None
    assert view.name == full.name and view.comms_timeout_ms == full.comms_timeout_ms
    lc, lf = view.loops[0], full.loops[0]
    assert (lc.rate_hz, lc.controller.kp, lc.controller.out_max, lc.filter.tau_s) == \
           (lf.rate_hz, lf.controller.kp, lf.controller.out_max, lf.filter.tau_s)
    assert view.channels[0].scale.mv_max == full.channels[0].scale.mv_max
    assert view.channels[1].get("invert", False) == full.channels[1].get("invert", False)
    # a /config.json that changed after compiling is not trusted
    (tmp_path / "config.json").write_bytes(data + b" ")
    assert cfgview.load(str(tmp_path / "config.json"), str(tmp_path / "config.node.json")) is None


def test_a_node_boots_from_the_compiled_config_and_validates_an_edited_one(sim_nodes):
    con = node_for(sim_nodes, "compiled", THERMAL, CONFIG)
    data = json.dumps(CONFIG).encode()
    put(con, "/config.json", data)
    put(con, "/config.node.json", compiled_config(data, CONFIG))
    out = reset(con)
    assert "running 1 loop(s)" in out and "not compiled" not in out, out
    # edited on the node: validated there (the node says what that costs)
    edited = dict(CONFIG, comms_timeout_ms=7000)
    con.raw()
    put(con, "/config.json", json.dumps(edited).encode())
    out = reset(con)
    assert "not compiled" in out and "running 1 loop(s)" in out, out
    # an invalid edit is refused as before, naming the field
    bad = json.loads(json.dumps(CONFIG))
    bad["loops"][0]["rate_hz"] = 5000
    con.raw()
    put(con, "/config.json", json.dumps(bad).encode())
    out = reset(con)
    assert "cyphy: config error: loops[0].rate_hz" in out, out
    con.close()
