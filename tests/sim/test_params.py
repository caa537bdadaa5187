"""Issue 15, item 4: one truth for a loop's setpoint and gains. Layers, later winning:
config < persisted (an applied autotune, `cyphy set --save`) < runtime change; `cyphy get
URL LOOP` shows each value's source; `cyphy tune --clear` forgets the persisted layer;
`cyphy provision` says which one will be in force and --keep-tuning/--clear-tuning decide.
A real sim node running the firmware, the real CLI."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from helpers import cyphy  # noqa: E402
from protonode import KEY_HEX, boot  # noqa: E402
from serial_console import Console  # noqa: E402
from test_node_runtime import CONFIG, reset  # noqa: E402

URL = "sim://params"
CFG = CONFIG["loops"][0]["controller"]          # kp, ki, kd, setpoint of loop "oven"


@pytest.fixture
def node(sim_nodes, monkeypatch):
    port = boot(sim_nodes, "params")
    monkeypatch.setenv("CYPHY_KEY", KEY_HEX)
    return port


def loop_state() -> dict:
    # the Python API (what `cyphy get URL oven --json` prints, without a process per read)
    from cyphy.api import connect

    with connect(URL) as n:
        return n.get("oven")


def sources() -> dict:
    return loop_state()["sources"]


def reboot(port: str) -> None:
    with Console(port) as con:
        con.raw()
        out = reset(con)
    assert "running 1 loop(s)" in out, out


def persisted(port: str) -> dict | None:
    with Console(port) as con:
        con.raw()
        out = con.run("try:\n    print(open('/autotune.json').read())\nexcept OSError:\n"
                      "    print('null')")
    return json.loads(out)


def test_layers_sources_and_save(node):
    s = loop_state()
    assert s["sources"] == {"setpoint": "config", "kp": "config", "ki": "config", "kd": "config"}
    assert (s["kp"], s["setpoint"]) == (pytest.approx(CFG["kp"]), CFG["setpoint"])
    text = cyphy("get", URL, "oven").stdout
    assert "source" in text and "config" in text

    # a runtime change: in force now, gone after a reset
    cyphy("set", URL, "oven.kp=3.25", "oven.setpoint=55")
    s = loop_state()
    assert s["kp"] == pytest.approx(3.25) and s["setpoint"] == 55
    assert s["sources"] == {"setpoint": "runtime", "kp": "runtime", "ki": "config", "kd": "config"}
    assert persisted(node) is None
    reboot(node)
    s = loop_state()
    assert s["kp"] == pytest.approx(CFG["kp"]) and s["sources"]["kp"] == "config"

    # --save: persisted, in force after a reset, over the config
    p = cyphy("set", URL, "oven.kp=3.25", "oven.setpoint=55", "--save")
    assert "persisted" in p.stdout
    assert sources()["kp"] == "saved"
    assert persisted(node)["oven"]["saved"] == {"kp": 3.25, "setpoint": 55.0}
    reboot(node)
    s = loop_state()
    assert s["kp"] == pytest.approx(3.25) and s["setpoint"] == 55
    assert s["sources"] == {"setpoint": "saved", "kp": "saved", "ki": "config", "kd": "config"}

    # a runtime change wins over the persisted value until the reset
    cyphy("set", URL, "oven.setpoint=50")
    assert sources()["setpoint"] == "runtime"

    # --save keeps setpoints and gains only: a mode is refused, nothing applied
    p = cyphy("set", URL, "oven.ki=0.05", "oven.mode=manual", "--save", ok=False)
    assert p.returncode == 3 and "not persisted" in p.stderr and "Traceback" not in p.stderr
    s = loop_state()
    assert s["mode"] == "auto" and s["ki"] == pytest.approx(CFG["ki"])

    # tune --clear: the persisted values return to the config's now (the runtime setpoint
    # stays: it is above the persisted layer) and at boot
    p = cyphy("tune", URL, "oven", "--clear")
    assert "forgotten" in p.stdout and "kp" in p.stdout
    s = loop_state()
    assert s["kp"] == pytest.approx(CFG["kp"]) and s["sources"]["kp"] == "config"
    assert s["setpoint"] == 50 and s["sources"]["setpoint"] == "runtime"
    assert persisted(node) is None
    reboot(node)
    s = loop_state()
    assert s["setpoint"] == CFG["setpoint"] and s["sources"]["setpoint"] == "config"


def put_tuning(port: str, data: dict) -> None:
    with Console(port) as con:
        con.raw()
        con.run(f"with open('/autotune.json', 'w') as f:\n    f.write({json.dumps(data)!r})")


def test_an_autotune_result_is_a_source_and_a_saved_value_wins_over_it(node):
    put_tuning(node, {"oven": {"ok": True, "stable": True, "applied": True, "rule": "fopdt",
                               "kp": 2.5, "ki": 0.02, "kd": 1.5, "saved": {"ki": 0.03}}})
    reboot(node)
    s = loop_state()
    assert (s["kp"], s["ki"], s["kd"]) == (pytest.approx(2.5), pytest.approx(0.03), pytest.approx(1.5))
    assert s["sources"] == {"setpoint": "config", "kp": "tune", "ki": "saved", "kd": "tune"}
    st = json.loads(cyphy("get", URL, "oven.tune", "--json").stdout)
    assert st["running"] is False and st["result"]["rule"] == "fopdt"


def _provision(*args: str, ok: bool = True):
    return cyphy("provision", "--port", URL, *args, ok=ok)


def test_provision_says_which_values_are_in_force(node, tmp_path):
    put_tuning(node, {"oven": {"ok": True, "applied": True, "rule": "fopdt",
                               "kp": 2.5, "ki": 0.02, "kd": 1.5}})
    cfg = copy.deepcopy(CONFIG)
    cfg["name"] = "oven-1"
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps(cfg))
    # default: the persisted tuning stays, and provision says so
    p = _provision("--config", str(f))
    assert "persisted tuning stays in force" in p.stderr and "--clear-tuning" in p.stderr
    assert "kp 2.5 (autotune) over the config's %g" % CFG["kp"] in p.stderr
    assert "/autotune.json (persisted tuning): kept" in p.stdout
    r = json.loads(_provision("--config", str(f), "--keep-tuning", "--json").stdout)
    assert r["tuning"]["in_force"] == "persisted" and "kp" in r["tuning"]["differs"]["oven"]
    assert not any("persisted tuning" in w for w in r["warnings"])
    assert persisted(node) is not None
    # a dry run clears nothing
    r = json.loads(_provision("--config", str(f), "--clear-tuning", "--dry-run", "--json").stdout)
    assert r["tuning"]["action"] == "would clear" and persisted(node) is not None
    p = _provision("--config", str(f), "--clear-tuning", "--reset")
    assert "cleared" in p.stdout
    assert persisted(node) is None
    s = loop_state()
    assert s["kp"] == pytest.approx(CFG["kp"]) and s["sources"]["kp"] == "config"
    p = _provision("--keep-tuning", "--clear-tuning", ok=False)
    assert p.returncode == 2 and "not both" in p.stderr
