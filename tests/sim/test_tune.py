"""The relay autotune from the host, over the protocol (TUNE), on a fast sim plant: the
API and `cyphy tune` run it, show progress and the result; an abort, Ctrl-C or a host that
goes away returns the loop to its previous gains and mode."""

from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "sim"))
from benches import THERMAL  # noqa: E402
from protonode import KEY_HEX, boot  # noqa: E402
from test_node_runtime import CONFIG  # noqa: E402

import cyphy  # noqa: E402
from cyphy.client import Session  # noqa: E402
from cyphy.links import SerialLink  # noqa: E402
from cyphy import codec as P  # noqa: E402
from helpers import tool  # noqa: E402

# A fast oven: gain 0.9 degC/%, time constant 1.5 s, dead time 0.3 s, a 40 Hz loop.
BENCH = copy.deepcopy(THERMAL)
BENCH["plant"].update({"tau_s": 1.5, "dead_time_s": 0.3})
FAST = copy.deepcopy(CONFIG)
FAST["loops"][0].update({"rate_hz": 40})
FAST["loops"][0].pop("filter", None)
FAST["loops"][0]["controller"].update({"kp": 2.0, "ki": 0.5, "kd": 0.0, "setpoint": 40.0})


@pytest.fixture
def node(sim_nodes, cyphy_home):
    port = boot(sim_nodes, "tune", config=FAST, bench=BENCH)
    return f"serial://{port}"


def settle(n, loop="oven", seconds=16.0):
    """Until the loop is steady at its setpoint: within 0.5 degC for 3 s in a row (the
    relay swings around the output the loop has when the tune starts, and a tune started
    while the loop still moves drifts: its first cycles are longer than its last)."""
    t0 = time.monotonic()
    since = None
    while time.monotonic() < t0 + seconds:
        if abs(n.get(f"{loop}.measurement") - 40.0) < 0.5:
            since = since or time.monotonic()
            if time.monotonic() - since >= 3.0:
                return
        else:
            since = None
        time.sleep(0.25)


def test_tune_from_the_api_and_the_cli(node, cyphy_home):
    """One node: the API's tune shows progress and applies a stable result; `cyphy tune
    --no-apply --json` reports one without applying it; Ctrl-C in `cyphy tune` stops it."""
    import os

    with cyphy.connect(node, key=KEY_HEX) as n:
        settle(n)
        seen = []
        r = n.tune("oven", amplitude=20.0, progress=seen.append, poll_s=0.25)
        assert r["stable"] and r["applied"], r
        for k in ("ku", "pu_s", "rule", "kp", "ki", "kd", "model", "why"):
            assert k in r, k
        assert seen and all(s["running"] for s in seen)
        assert any(s["period_s"] for s in seen)        # a measured cycle's period was shown
        st = n.get("oven")
        assert (st["kp"], st["ki"], st["kd"]) == pytest.approx((r["kp"], r["ki"], r["kd"]), rel=1e-6)
        assert st["mode"] == "auto"
        tuned = st["kp"]
        # the loop goes on: back near its setpoint under the new gains
        time.sleep(4)
        assert abs(n.get("oven.measurement") - 40.0) < 2.0
    env = dict(os.environ, CYPHY_KEY=KEY_HEX)
    p = subprocess.run([tool("cyphy"), "tune", node, "oven", "--amplitude", "20", "--json",
                        "--no-apply"], capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    for k in ("ku", "pu_s", "rule", "kp", "ki", "kd", "applied", "stable"):
        assert k in r, k
    assert r["stable"] and r["applied"] is False
    # Ctrl-C while it runs: one line, exit 130, the loop as it was
    p = subprocess.Popen([tool("cyphy"), "tune", node, "oven", "--amplitude", "20"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(4)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=20)
    assert p.returncode == 130, (out, err)
    assert "Traceback" not in err and "previous gains" in err, err
    with cyphy.connect(node, key=KEY_HEX) as n:
        st = n.get("oven.tune")
        assert not st["running"] and st["result"]["reason"] == "stopped by the host"
        assert n.get("oven")["kp"] == tuned


def test_an_abort_and_a_lost_host_give_the_loop_back(node):
    with cyphy.connect(node, key=KEY_HEX) as n:
        settle(n)
        before = n.get("oven")
        n.session.tune_start("oven", amplitude=20.0)
        time.sleep(1.5)
        assert n.get("oven.tune")["running"]
        n.session.tune_abort("oven")
        st = n.get("oven.tune")
        assert not st["running"] and st["result"]["reason"] == "stopped by the host"
        after = n.get("oven")
        assert (after["kp"], after["ki"], after["kd"], after["mode"]) == (
            before["kp"], before["ki"], before["kd"], "auto")
    # a host that starts a tune and goes away without a word: the node stops it by itself
    link = SerialLink(node.removeprefix("serial://"))
    s = Session(link, P.key_from_hex(KEY_HEX))
    s.open()
    s.tune_start("oven", amplitude=20.0)
    s._closed.set()          # the host dies: no BYE, no heartbeats, the port left open
    time.sleep(7)            # the session ends after 5 s of silence
    link.close()
    with cyphy.connect(node, key=KEY_HEX) as n:
        st = n.get("oven.tune")
        assert not st["running"] and "went away" in st["result"]["reason"], st
        assert n.get("oven")["kp"] == before["kp"]


def test_a_tune_whose_end_fails_on_the_node_gives_the_loop_back_and_the_node_answers(node):
    # On the node itself (its service, on MicroPython): a run whose result cannot be
    # computed (here: out of memory when it ends) ends the tune, the loop is back in auto
    # at the output it had, the reason is in the result, and the node goes on answering
    # (the service used to raise on every pass: no answer, the loop left on the relay).
    with cyphy.connect(node, key=KEY_HEX) as n:
        n.exec("from cyphy_node.autotune import DONE\n"
               "node.autotune('oven', high=70, low=10, hyst=0.5)\n"
               "def _boom():\n"
               "    raise MemoryError('memory allocation failed')\n"
               "def _end_badly():\n"
               "    t = node.loop('oven').tuner\n"
               "    t.result = t.follow_up = _boom\n"
               "    t.status = DONE\n"
               "node.soft_call(_end_badly)\n")
        st = n.get("oven.tune")
        assert not st["running"], st
        r = st["result"]
        assert not r["applied"] and "could not be computed" in r["reason"] and \
            "MemoryError" in r["reason"], r
        assert n.get("oven")["mode"] == "auto"
        assert int(n.exec("print(node.comms_errors)").strip()) == 0

